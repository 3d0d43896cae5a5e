"""The packages' layering, read from the source (every import statement, also inside functions):

- `asr` knows audio and imports neither `nlu`, `pipeline` nor `service`;
- `nlu` knows text and calls and imports neither `pipeline` nor `service`;
- `pipeline` (the per-call path shared by live calls and recordings) builds on both and knows no web framework;
- in `service`, only the app and the routes (`service/api/`, a feature's `*_api.py`) know FastAPI; the live calls' websocket handling
  (`service/live/sockets.py`) knows Starlette's socket, nothing below it does;
- no runtime package imports the offline tools (`tools`, `bench`); the domain data and the model cache import
  nothing of the project."""

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


OFFLINE = {"bench", "tools", "tests"}
WEB = {"fastapi", "starlette"}
PROJECT = {"asr", "nlu", "pipeline", "service"}


@pytest.mark.parametrize(("package", "forbidden"), [
    ("asr", {"nlu", "pipeline", "service"} | OFFLINE | WEB),
    ("nlu", {"pipeline", "service"} | OFFLINE | WEB),
    ("pipeline", {"service"} | OFFLINE | WEB),
    ("service", OFFLINE),
    ("configs", PROJECT | OFFLINE),
    ("huifang_cache.py", PROJECT | OFFLINE),
])
def test_layering(package: str, forbidden: set[str]) -> None:
    offenders = {file: sorted(names & forbidden) for file, names in _imported(package).items() if names & forbidden}
    assert not offenders, f"{package} must not import {sorted(forbidden)}: {offenders}"


def test_only_the_app_and_the_routes_know_the_web_framework() -> None:
    allowed = {"service/app.py", "service/server.py", "service/live/sockets.py"}
    offenders = {file: sorted(names & WEB) for file, names in _imported("service").items()
                 if names & WEB and file not in allowed and not file.startswith("service/api/")
                 and not file.endswith("_api.py")}
    assert not offenders, f"FastAPI/Starlette objects belong to the routes: {offenders}"
    sockets = _imported("service/live/sockets.py")["service/live/sockets.py"]
    assert "fastapi" not in sockets, "the socket handling uses Starlette's WebSocket, not FastAPI's app"


def test_the_loan_books_use_cases_and_the_cli_leave_sql_to_the_repositories() -> None:
    """The loan book's SQL lives in its repository and the outbox's queue; the book, the transports and the
    `huifang` command call them (issue #28)."""
    files = {**_imported("service/loanbook/book.py"), **_imported("service/loanbook/transports.py"),
             **_imported("service/cli")}
    assert "service/cli/demo_seed.py" in files  # the walk found the command's modules
    offenders = sorted(file for file, names in files.items() if "sqlalchemy" in names)
    assert not offenders, f"SQL belongs to a repository, not to {offenders}"
