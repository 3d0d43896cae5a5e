"""The service: settings from HUIFANG_* variables, /healthz, and `huifang serve` on a real socket."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from asr.transcribe import Transcriber
from service.app import create_app
from service.settings import Settings
from tests.server import running_server


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HUIFANG_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HUIFANG_PORT", "9123")
    monkeypatch.setenv("HUIFANG_ASR__MODEL", "small")
    monkeypatch.setenv("HUIFANG_ASR__MIN_SILENCE_MS", "800")
    s = Settings()
    assert (s.data_dir, s.port, s.asr.model, s.asr.min_silence_ms) == (tmp_path, 9123, "small", 800)
    assert s.model_cache_dir == tmp_path / "models"
    options = s.asr_options()
    assert options.model == "small" and options.min_silence_ms == 800
    assert options.initial_prompt is None or "贷" in options.initial_prompt
    assert "逾期" in options.lexicon


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
