"""Prometheus metrics (issue #17 point 6): what a live call, a verdict, a refusal and a scrape show, with no call
or agent id among the labels; /readyz next to /healthz."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from service.app import create_app
from service.metrics import scrape
from service.settings import Settings
from tests.integration.test_live_socket import START, FakeTranscriber, _drain, _speech, _stereo_pcm16
from tests.support.server import authed


def _value(text: str, name: str) -> float:
    """The sum of a metric's samples in a scrape (0 when it has none yet)."""
    return sum(float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def test_a_call_shows_in_the_metrics_without_its_ids(tmp_path: Path, shared_data: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path), transcriber=FakeTranscriber())  # type: ignore[arg-type]
    before = scrape().decode()
    silence = np.zeros(2 * 16000, dtype=np.float32)
    audio = _stereo_pcm16(np.concatenate([_speech(shared_data), silence]))
    with authed(app) as client:
        with client.websocket_connect("/v1/calls/metrics-call-7/audio") as ws:
            ws.send_json({**START, "agent_id": "A-metrics"})
            assert ws.receive_json()["type"] == "ready"
            during = scrape().decode()
            for i in range(0, len(audio), 6400):
                ws.send_bytes(audio[i: i + 6400])
            ws.send_json({"type": "stop"})
            _drain(ws)
        assert client.get("/v1/calls/x/report", headers={"Authorization": "Bearer nope"}).status_code == 401
        after = scrape().decode()
        assert client.get("/readyz").status_code == 200 and client.get("/healthz").status_code == 200
    assert _value(during, "huifang_live_calls") == 1 and _value(after, "huifang_live_calls") == 0
    assert _value(after, "huifang_final_latency_seconds_count") > _value(before, "huifang_final_latency_seconds_count")
    assert _value(after, "huifang_finals_decoded_total") > _value(before, "huifang_finals_decoded_total")
    assert "huifang_decode_wait_seconds_bucket" in after
    # Where the CPU went (asr/cpu.py): the VAD of this call's audio, against the seconds of audio it had.
    audio_s = _value(after, "huifang_live_audio_seconds_total") - _value(before, "huifang_live_audio_seconds_total")
    assert abs(audio_s - len(audio) / 4 / 16000) < 0.1
    vad = 'huifang_live_cpu_seconds_total{phase="vad",work="listen"}'
    assert _value(after, vad) > _value(before, vad)
    assert _value(after, "huifang_event_loop_cpu_seconds_total") > 0
    assert 'huifang_errors_total{code="unauthorized"}' in after
    assert "process_resident_memory_bytes" in after
    assert "metrics-call-7" not in after and "A-metrics" not in after


def test_readiness_follows_a_stopping_server(tmp_path: Path) -> None:
    from service.app import state_of

    app = create_app(Settings(data_dir=tmp_path), transcriber=FakeTranscriber())  # type: ignore[arg-type]
    with authed(app) as client:
        state_of(app).calls.stopping.set()
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "stopping" in ready.json()["error"]
        assert client.get("/healthz").status_code == 200  # alive: it is finishing its calls


def test_a_failing_floor_stream_degrades_readiness_without_taking_the_replica_out(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from service.app import state_of

    app = create_app(Settings(data_dir=tmp_path), transcriber=FakeTranscriber())  # type: ignore[arg-type]
    with authed(app) as client:
        assert client.get("/readyz").json()["status"] == "ok"

        async def unreachable() -> str:
            return "Redis unreachable: ConnectionError"

        monkeypatch.setattr(state_of(app).floor.bus, "check", unreachable)
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text  # calls and prompts go on
        body = ready.json()
        assert body["status"] == "degraded" and "live floor" in body["warning"] and body["error"] is None
