"""The packages' layering: `asr` knows audio and imports neither `nlu` nor `service`; `nlu` knows text and calls
and does not import `service`. Read from the source (every import statement, also inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _imported(package: str) -> dict[str, set[str]]:
    """Top-level module names imported by each file of `package`."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / package).rglob("*.py")):
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
                                                     ("configs", {"asr", "nlu", "service", "bench"})])
def test_layering(package: str, forbidden: set[str]) -> None:
    offenders = {file: sorted(names & forbidden) for file, names in _imported(package).items() if names & forbidden}
    assert not offenders, f"{package} must not import {sorted(forbidden)}: {offenders}"
