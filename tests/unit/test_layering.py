"""The packages' layering, read from the source (every import statement, also inside functions):

- `asr` knows audio and imports neither `nlu`, `pipeline` nor `service`;
- `nlu` knows text and calls and imports neither `pipeline` nor `service`;
- `pipeline` (the per-call path shared by live calls and recordings) builds on both and knows no web framework;
- in `service`, only the app and the routes (`service/api/`, a feature's `*_api.py`) know FastAPI; the live
  calls' websocket handling (`service/live/sockets.py`) knows Starlette's socket, nothing below it does;
- no runtime package imports the offline tools (`tools`, `bench`); the domain data and the model cache import
  nothing of the project;
- the tests import nothing of the benchmarks: what both need lives in `tests/support` or `tools`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


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
    ("tests", {"bench"}),
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


# -- the module graph: no cycles, storage below the features, plain settings ------------------------------------

#: The installed top-level packages and modules (pyproject.toml), and where their files are.
INSTALLED = {"asr": "asr", "nlu": "nlu", "pipeline": "pipeline", "service": "service", "huifang_configs": "configs",
             "huifang_cache": "huifang_cache.py"}


def _modules() -> dict[str, Path]:
    """Every installed module by its dotted name (a package by its `__init__.py`)."""
    found: dict[str, Path] = {}
    for name, place in INSTALLED.items():
        root = REPO / place
        if root.is_file():
            found[name] = root
            continue
        for path in root.rglob("*.py"):
            parts = [name, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _graph() -> dict[str, set[str]]:
    """Module -> the installed modules it imports, every import counted: at the top, inside functions and under
    `TYPE_CHECKING` (a cycle dodged with a lazy or type-only import is still a cycle)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != module:
                    edges.add(target)
        graph[module] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for w in graph[todo.pop()] - seen:
            seen.add(w)
            todo.append(w)
    return seen


def test_no_import_cycles() -> None:
    cycles = _cycles(_graph())
    assert not cycles, f"modules that import each other (directly or round a loop): {cycles}"


FEATURES = ("service.loanbook", "service.coaching", "service.workers", "service.live", "service.api",
            "service.cli", "service.bootstrap", "service.app", "service.server", "service.reports")


def test_storage_knows_no_features() -> None:
    graph = _graph()
    for module in [m for m in graph if m == "service.store" or m.startswith("service.store.")]:
        reached = _reach(graph, module)
        bad = sorted(m for m in reached if m.split(".")[0] in {"nlu", "asr", "pipeline"} or m == "service.settings"
                     or any(m == f or m.startswith(f + ".") for f in FEATURES))
        assert not bad, f"{module} reaches {bad}: storage is handed what it stores, features register with it"


def test_settings_are_plain_configuration() -> None:
    reached = _reach(_graph(), "service.settings")
    assert not reached, f"service/settings.py imports {sorted(reached)}; building belongs to service/bootstrap.py"


def test_the_loan_books_use_cases_and_the_cli_leave_sql_to_the_repositories() -> None:
    """The loan book's SQL lives in its repository and the outbox's queue; the book, the transports and the
    `huifang` command call them (issue #28)."""
    files = {**_imported("service/loanbook/book.py"), **_imported("service/loanbook/transports.py"),
             **_imported("service/cli")}
    assert "service/cli/demo_seed.py" in files  # the walk found the command's modules
    offenders = sorted(file for file, names in files.items() if "sqlalchemy" in names)
    assert not offenders, f"SQL belongs to a repository, not to {offenders}"
