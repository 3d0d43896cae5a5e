"""The service: settings from HUIFANG_* variables, /healthz, and `huifang serve` on a real socket."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from asr.transcribe import Transcriber
from service import bootstrap
from service.app import create_app
from service.settings import Settings
from tests.support.server import running_server


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HUIFANG_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HUIFANG_PORT", "9123")
    monkeypatch.setenv("HUIFANG_ASR__MODEL", "small")
    monkeypatch.setenv("HUIFANG_TRANSCRIBE__MIN_SILENCE_MS", "800")
    s = Settings()
    assert (s.data_dir, s.port, s.asr.model, s.transcribe.min_silence_ms) == (tmp_path, 9123, "small", 800)
    assert s.model_cache_dir == tmp_path / "models"
    options = bootstrap.asr_options(s)
    assert options.model == "small" and options.min_silence_ms == 800
    assert options.initial_prompt is None or "贷" in options.initial_prompt
    assert "逾期" in options.lexicon


def test_renamed_settings_keep_their_old_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """`HUIFANG_ASR__BEAM_SIZE` (now `HUIFANG_TRANSCRIBE__BEAM_SIZE`) and `HUIFANG_RECORDINGS__*` (now
    `HUIFANG_SCORING__*`) still work; where both names are set, the new one wins."""
    monkeypatch.setenv("HUIFANG_ASR__BEAM_SIZE", "3")
    monkeypatch.setenv("HUIFANG_ASR__MIN_WINDOW_S", "12")
    monkeypatch.setenv("HUIFANG_RECORDINGS__WORKERS", "2")
    monkeypatch.setenv("HUIFANG_RECORDINGS__RETENTION_DAYS", "7")
    monkeypatch.setenv("HUIFANG_SCORING__RETENTION_DAYS", "30")
    s = Settings()
    assert (s.transcribe.beam_size, s.transcribe.min_window_s) == (3, 12.0)
    assert (s.scoring.workers, s.scoring.retention_days) == (2, 30.0)
    assert bootstrap.asr_options(s).beam_size == 3 and s.recordings is None
    assert Settings(recordings={"min_retention_days": 5}).scoring.min_retention_days == 5
    from service.settings import LEGACY_NAMES

    for (old, key), new in LEGACY_NAMES.items():  # every alias points at a real setting
        assert key in type(getattr(s, new)).model_fields, (old, key, new)


def test_every_setting_says_where_it_applies() -> None:
    for section in ("asr", "transcribe", "live", "scoring", "nlu"):
        model = type(getattr(Settings(), section))
        undocumented = [name for name, field in model.model_fields.items() if not field.description]
        assert not undocumented, f"{section}: {undocumented} have no description"


def test_settings_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("HUIFANG_ASR__MIN_SILENCE_MS", "5")
    with pytest.raises(ValidationError):
        Settings()


def test_healthz_with_model(transcriber: Transcriber, tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path), transcriber=transcriber)
    with TestClient(app) as client:
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok" and response.json()["asr_model"]


def test_healthz_says_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    settings = Settings(data_dir=tmp_path, asr={"model": "no-such-model"})
    with TestClient(create_app(settings)) as client:
        response = client.get("/healthz")
    assert response.status_code == 503
    assert "no-such-model" in response.json()["error"]


@pytest.mark.model
def test_serve_answers_healthz_on_a_real_socket(model_cache: Path, tmp_path: Path) -> None:
    with running_server(tmp_path / "data", model_cache) as port:
        response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    assert response.status_code == 200 and response.json()["status"] == "ok"
