"""Start `huifang serve` as a real process on a free loopback port, for tests that need a real socket."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.app import state_of
from service.auth import write_tokens_file

#: Tokens a `running_server` accepts, one per role (the agent is A08).
INGEST, AGENT, SUPERVISOR, ADMIN = "t-ingest", "t-agent", "t-super", "t-admin"
AGENT_ID = "A08"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def authed(app: FastAPI) -> Iterator[TestClient]:
    """A TestClient that sends the app's development (admin) token on every request and websocket."""
    with TestClient(app) as client:
        token = state_of(app).dev_token
        if token:
            client.headers["Authorization"] = f"Bearer {token}"
        yield client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(proc: subprocess.Popen[Any], port: int, timeout_s: float = 120) -> None:
    """Return once the server process `proc` answers 200 on /healthz at `port`; fail if it exits or takes longer."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert proc.poll() is None, "the server exited during start-up"
        assert time.monotonic() < deadline, "the server did not become healthy"
        time.sleep(0.2)


@contextmanager
def running_server(data_dir: Path, model_cache: Path, timeout_s: float = 120,
                   env_extra: dict[str, str] | None = None) -> Iterator[int]:
    """A server whose data directory shares the session's joined model; yields its port once /healthz is 200.
    `env_extra`: more settings (HUIFANG_...) for this server."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if not (data_dir / "models").exists():
        (data_dir / "models").symlink_to(model_cache)
    port = free_port()
    tokens = data_dir / "tokens.yaml"
    write_tokens_file(tokens, {INGEST: ("ingest", None), AGENT: ("agent", AGENT_ID), SUPERVISOR: ("supervisor", None),
                               ADMIN: ("admin", None)})
    env = {**os.environ, "HUIFANG_DATA_DIR": str(data_dir), "HUIFANG_AUTH__TOKENS_FILE": str(tokens),
           "HUIFANG_METRICS__PORT": os.environ.get("HUIFANG_METRICS__PORT", "0"), **(env_extra or {})}
    log = open(data_dir / "server.log", "wb")  # noqa: SIM115 - the server writes it until it stops
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            wait_healthy(proc, port, timeout_s)
        except AssertionError as e:
            tail = (data_dir / "server.log").read_text(encoding="utf-8", errors="replace")[-3000:]
            raise AssertionError(f"{e}; the end of its log:\n{tail}") from None
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@contextmanager
def served_app(tmp: Path, transcriber: Any, **live: Any) -> Iterator[tuple[str, FastAPI]]:
    """`create_app` under uvicorn in a thread, with the four role tokens of this module (the agent is AGENT_ID)
    and `transcriber`, its loan book started, and `live` settings: (base URL, app). For browser tests, which
    need a real socket."""
    import threading

    import uvicorn

    from service.app import create_app
    from service.settings import Settings

    tokens = tmp / "tokens.yaml"
    write_tokens_file(tokens, {INGEST: ("ingest", None), AGENT: ("agent", AGENT_ID),
                               SUPERVISOR: ("supervisor", None), ADMIN: ("admin", None)})
    settings = Settings(data_dir=tmp / "data", auth={"tokens_file": tokens}, live={"idle_timeout_s": 120.0, **live})
    app = create_app(settings, transcriber=transcriber)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not (server.started and getattr(app.state, "huifang", None) is not None
                   and state_of(app).loanbook is not None):
            assert thread.is_alive() and time.monotonic() < deadline, "the app did not start"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextmanager
def tokens_client(tmp: Path, tokens: dict[str, tuple[str, str | None]], transcriber: Any,
                  **sections: Any) -> Iterator[TestClient]:
    """The app (started) behind a TestClient, with a tokens file of `tokens` (token -> (role, agent id)), its data
    under `tmp`, `transcriber`, and settings `sections` (auth= is merged with the tokens file)."""
    from service.app import create_app
    from service.settings import Settings

    path = tmp / "tokens.yaml"
    write_tokens_file(path, tokens)  # type: ignore[arg-type]
    auth = {"tokens_file": path, **sections.pop("auth", {})}
    settings = Settings(data_dir=tmp / "data", auth=auth, **sections)
    with TestClient(create_app(settings, transcriber=transcriber)) as c:
        yield c


def audited(client: TestClient, kind: str) -> list[Any]:
    """The audit entries of `kind` the app behind `client` has written."""
    from sqlalchemy import select

    from service.store.models import AuditEntry

    store = state_of(client.app).store  # type: ignore[arg-type]
    assert store is not None
    with store.session() as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.kind == kind)))
