"""Shared fixtures: the shared data folder (skip when absent) and one real Whisper model per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("HUIFANG_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA} (set HUIFANG_SHARED_DATA)")
    return SHARED_DATA


@contextmanager
def fresh_postgres_schema() -> Iterator[str]:
    """A URL of the test PostgreSQL server whose tables live in a fresh schema, dropped afterwards (for tests
    that need an empty database). Skips without a server, fails where one is required (.ci/run)."""
    url = os.environ.get("HUIFANG_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("HUIFANG_REQUIRE_POSTGRES") == "1":
            raise AssertionError("HUIFANG_TEST_POSTGRES_URL is not set (.ci/run starts a PostgreSQL server)")
        pytest.skip("no PostgreSQL server: set HUIFANG_TEST_POSTGRES_URL (bash .ci/postgres.sh prints one)")
    from bench._common import fresh_schema

    with fresh_schema(url, "t") as schema_url:
        yield schema_url


@pytest.fixture()
def postgres_schema() -> Iterator[str]:
    """`fresh_postgres_schema` for one test."""
    with fresh_postgres_schema() as url:
        yield url


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model cache for the whole session, so the packaged parts are joined once."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def asr_options(model_cache: Path):  # type: ignore[no-untyped-def]
    from asr.domain import load_domain
    from asr.types import AsrOptions

    domain = load_domain()
    return AsrOptions(
        model_cache_dir=str(model_cache),
        initial_prompt=domain.initial_prompt,
        hallucination_phrases=domain.hallucination_phrases,
        lexicon=domain.lexicon,
    )


@pytest.fixture(scope="session")
def transcriber(asr_options):  # type: ignore[no-untyped-def]
    """The real packaged Whisper base, loaded once."""
    from asr.transcribe import Transcriber

    t = Transcriber(asr_options)
    t.load()
    return t


@pytest.fixture()
def make_client(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Factory of TestClients over apps with a scripted recogniser (closed at the end of the test)."""
    clients: list[Any] = []

    from fastapi.testclient import TestClient

    from service.app import create_app, state_of
    from service.settings import Settings
    from tests.test_recordings import ScriptTranscriber

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


#: The browser the page tests drive (never a downloaded one: CI installs Debian's chromium).
CHROMIUM = os.environ.get("HUIFANG_CHROMIUM", "/usr/bin/chromium")
#: Where browser tests save their screenshots.
ARTIFACTS = Path(os.environ.get("HUIFANG_ARTIFACTS", REPO / "artifacts"))


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    """Debian's Chromium driven by Playwright, for the browser tests of one module."""
    # CI installs the browser (.ci/run) and sets HUIFANG_REQUIRE_BROWSER=1 so that a missing one fails there;
    # elsewhere the test skips with the reason.
    required = os.environ.get("HUIFANG_REQUIRE_BROWSER") == "1"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if required:
            raise
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    if not Path(CHROMIUM).exists():
        if required:
            raise AssertionError(f"{CHROMIUM} is missing (apt-get install chromium fonts-wqy-microhei)")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium fonts-wqy-microhei)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()
