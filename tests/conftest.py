"""Fixtures of every kind of test: the shared data folder (skip when absent) and one real Whisper model per test
session. Fixtures of one kind live in that kind's conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.paths import SHARED_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA} (set HUIFANG_SHARED_DATA)")
    return SHARED_DATA


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
