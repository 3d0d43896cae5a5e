"""The packages' layering: `asr` knows audio and imports neither `nlu` nor `service`; `nlu` knows text and calls
and does not import `service`; the domain data and the model cache import none of them. Read from the source
(every import statement, also inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _imported(package: str) -> dict[str, set[str]]:
    """Top-level module names imported by each file of `package` (a folder, or a module file)."""
    found: dict[str, set[str]] = {}
    root = REPO / package
    for path in sorted(root.rglob("*.py") if root.is_dir() else [root]):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(REPO))] = names
    return found


@pytest.mark.parametrize(("package", "forbidden"), [("asr", {"nlu", "service", "bench"}),
                                                     ("nlu", {"service", "bench"}),
                                                     ("configs", {"asr", "nlu", "service", "bench"}),
                                                     ("huifang_cache.py", {"asr", "nlu", "service", "bench"})])
def test_layering(package: str, forbidden: set[str]) -> None:
    offenders = {file: sorted(names & forbidden) for file, names in _imported(package).items() if names & forbidden}
    assert not offenders, f"{package} must not import {sorted(forbidden)}: {offenders}"
