"""Fixtures of the integration tests: an empty PostgreSQL schema, a Redis server, and started apps with a scripted
recogniser."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.postgres import fresh_postgres_schema
from tests.support.redis_server import RedisServer


@pytest.fixture()
def postgres_schema() -> Iterator[str]:
    """`fresh_postgres_schema` for one test."""
    with fresh_postgres_schema() as url:
        yield url


@pytest.fixture()
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A password-protected redis-server of the test's own (stopped at its end)."""
    server = RedisServer(tmp_path, password="s3cret-pw")
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def make_client(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Factory of TestClients over apps with a scripted recogniser (closed at the end of the test)."""
    clients: list[Any] = []

    from fastapi.testclient import TestClient

    from service.app import create_app, state_of
    from service.settings import Settings
    from tests.integration.test_recordings import ScriptTranscriber

    def make(script: dict[str, Any], **overrides: Any) -> TestClient:
        """A started app on `tmp_path/data` whose recogniser returns `script`'s text; sends the dev token."""
        settings = Settings(data_dir=tmp_path / "data", **overrides)
        client = TestClient(create_app(settings, transcriber=ScriptTranscriber(script)))  # type: ignore[arg-type]
        client.__enter__()
        client.headers["Authorization"] = f"Bearer {state_of(client.app).dev_token}"  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)
