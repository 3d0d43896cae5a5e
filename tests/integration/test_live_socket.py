"""The live call socket: protocol errors, clean closes and no leaks, with a fake recogniser at the seam;
and the real model through a real server socket on shared calls, native and Twilio."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from asr.types import Utterance
from service.app import create_app, state_of
from service.protocol import CloseCode
from service.settings import Settings
from tests.support.server import INGEST, SUPERVISOR, authed, bearer, running_server


class FakeTranscriber:
    """Says "测试" for any audio; the seam between the live pipeline and Whisper."""

    model_path = "fake"

    def load(self) -> None:
        pass

    def transcribe_span(self, samples: np.ndarray, channel: str, offset_s: float, beam_size: int | None = None,
                        min_window_s: float | None = None, provisional: bool = False,
                        abandon: Any = None) -> Utterance | None:
        return Utterance(channel, offset_s, offset_s + len(samples) / 16000, "测试", None, -0.1, 0.0)

    def transcribe_spans(self, spans: Any, beam_size: int | None = None,
                         min_window_s: float | None = None) -> list[Utterance | None]:
        return [self.transcribe_span(samples, channel, offset_s) for samples, channel, offset_s in spans]


@pytest.fixture()
def client(tmp_path: Path) -> TestClient:
    settings = Settings(data_dir=tmp_path, live={"idle_timeout_s": 2.0})
    app = create_app(settings, transcriber=FakeTranscriber())  # type: ignore[arg-type]
    with authed(app) as c:
        yield c  # type: ignore[misc]


START = {"type": "start", "sample_rate_hz": 16000, "encoding": "pcm16", "channels": ["agent", "customer"]}


def _expect_error_close(ws: Any, code: str, close_code: int) -> None:
    events = []
    with pytest.raises(WebSocketDisconnect) as closed:
        while True:
            events.append(ws.receive_json())
    assert closed.value.code == close_code, events
    errors = [e for e in events if e["type"] == "error"]
    assert errors and errors[0]["code"] == code and errors[0]["message"], events


def test_audio_before_start(client: TestClient) -> None:
    with client.websocket_connect("/v1/calls/c1/audio") as ws:
        ws.send_bytes(b"\x00\x00" * 100)
        _expect_error_close(ws, "audio_before_start", CloseCode.BAD_REQUEST)


@pytest.mark.parametrize(
    "start",
    [
        "not json",
        json.dumps({"type": "hello"}),
        json.dumps({**START, "encoding": "opus"}),
        json.dumps({**START, "sample_rate_hz": 44100}),
        json.dumps({**START, "channels": ["agent", "agent"]}),
        json.dumps({**START, "channels": []}),
        json.dumps({**START, "loan_file": {"repay_day": 45}}),
    ],
)
def test_invalid_start(client: TestClient, start: str) -> None:
    with client.websocket_connect("/v1/calls/c2/audio") as ws:
        ws.send_text(start)
        _expect_error_close(ws, "bad_start", CloseCode.BAD_REQUEST)


def test_odd_byte_count(client: TestClient) -> None:
    with client.websocket_connect("/v1/calls/c3/audio") as ws:
        ws.send_json(START)
        assert ws.receive_json()["type"] == "ready"
        ws.send_bytes(b"\x00" * 1001)  # not whole stereo PCM16 samples
        _expect_error_close(ws, "bad_frame", CloseCode.BAD_REQUEST)


def test_oversized_frame(client: TestClient) -> None:
    with client.websocket_connect("/v1/calls/c4/audio") as ws:
        ws.send_json(START)
        assert ws.receive_json()["type"] == "ready"
        ws.send_bytes(b"\x00" * (64 * 1024 + 4))
        _expect_error_close(ws, "frame_too_large", CloseCode.FRAME_TOO_LARGE)


def test_unexpected_text_frame(client: TestClient) -> None:
    with client.websocket_connect("/v1/calls/c5/audio") as ws:
        ws.send_json(START)
        assert ws.receive_json()["type"] == "ready"
        ws.send_text("{\"type\": \"pause\"}")
        _expect_error_close(ws, "bad_message", CloseCode.BAD_REQUEST)


def test_idle_client_is_closed(client: TestClient) -> None:
    with client.websocket_connect("/v1/calls/c6/audio") as ws:
        ws.send_json(START)
        assert ws.receive_json()["type"] == "ready"
        _expect_error_close(ws, "idle_timeout", CloseCode.BAD_REQUEST)


def test_a_call_id_streams_once(client: TestClient) -> None:
    with client.websocket_connect("/v1/calls/same/audio") as first:
        first.send_json(START)
        assert first.receive_json()["type"] == "ready"
        with client.websocket_connect("/v1/calls/same/audio") as second:
            second.send_json(START)
            _expect_error_close(second, "call_in_progress", CloseCode.CALL_IN_PROGRESS)
        first.send_json({"type": "stop"})
        assert [e["type"] for e in _drain(first)][-1] == "end"


def _drain(ws: Any) -> list[dict[str, Any]]:
    events = []
    try:
        while True:
            events.append(ws.receive_json())
    except WebSocketDisconnect as closed:
        assert closed.code == CloseCode.NORMAL
    return events


def _speech(shared_data: Path) -> np.ndarray:
    """Five seconds of real Mandarin (the VAD is real here; only the recogniser is fake)."""
    from asr.audio import decode_audio

    return decode_audio(shared_data / "asr" / "clips" / "rapidasr_paddlespeech_zh.wav").samples[0]


def _stereo_pcm16(agent: np.ndarray) -> bytes:
    return (np.stack([agent, np.zeros_like(agent)]).T.reshape(-1) * 32767).astype("<i2").tobytes()


def test_stop_flushes_one_final_per_utterance(client: TestClient, shared_data: Path) -> None:
    speech = _speech(shared_data)
    silence = np.zeros(2 * 16000, dtype=np.float32)
    # The second utterance is still open when `stop` arrives: it must be finalised, not lost.
    audio = _stereo_pcm16(np.concatenate([silence, speech, silence, speech[: int(1.5 * 16000)]]))
    with client.websocket_connect("/v1/calls/c7/audio") as ws:
        ws.send_json(START)
        assert ws.receive_json() == {"type": "ready", "call_id": "c7", "channels": ["agent", "customer"],
                                     "loan_file": None, "carried_over": []}
        for i in range(0, len(audio), 6400):
            ws.send_bytes(audio[i : i + 6400])
        ws.send_json({"type": "stop"})
        events = _drain(ws)
    finals = [e for e in events if e["type"] == "final"]
    total_s = len(audio) / 4 / 16000
    assert len(finals) >= 2
    assert [f["utterance_id"] for f in finals] == [f"agent-{i + 1}" for i in range(len(finals))]
    assert all(f["channel"] == "agent" and f["text"] == "测试" for f in finals)
    assert abs(finals[0]["start_s"] - 2.0) < 0.5
    assert all(a["end_s"] <= b["start_s"] for a, b in zip(finals, finals[1:], strict=False))
    assert any(abs(f["start_s"] - 9.0) < 0.5 for f in finals)  # the second copy of the clip starts at 9 s
    assert abs(finals[-1]["end_s"] - total_s) < 0.1  # the open utterance was closed at the end of audio
    # The call is in the books when its `end` comes (tests/integration/test_live_books.py has the rest).
    assert events[-1] == {"type": "end", "call_id": "c7", "report_url": "/v1/calls/c7/report", "resumable": False}


def test_vanishing_client_leaks_nothing_and_others_keep_working(client: TestClient, shared_data: Path) -> None:
    with client.websocket_connect("/v1/calls/gone/audio") as ws:
        ws.send_json(START)
        assert ws.receive_json()["type"] == "ready"
        ws.send_bytes(_stereo_pcm16(_speech(shared_data)[: 2 * 16000]))  # mid-utterance, then the socket drops
    deadline = time.monotonic() + 5
    calls = state_of(client.app).calls  # type: ignore[arg-type]
    while calls.active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert calls.active == {}
    assert client.get("/healthz").status_code == 200
    with client.websocket_connect("/v1/calls/gone/audio") as ws:  # the same id is free again
        ws.send_json(START)
        assert ws.receive_json()["type"] == "ready"
        ws.send_json({"type": "stop"})
        assert _drain(ws)[-1]["type"] == "end"


@pytest.mark.asyncio
async def test_a_client_that_stops_reading_is_cut_off() -> None:
    from service.live.sockets import OUTBOX_LIMIT, Connection
    from service.protocol import ReadyEvent

    class StuckSocket:
        client_state = None

        async def send_text(self, text: str) -> None:
            await asyncio.sleep(3600)  # the TCP window is full: send never completes

    async def scenario() -> bool:
        conn = Connection(StuckSocket())  # type: ignore[arg-type]
        for _ in range(OUTBOX_LIMIT + 2):
            await conn.emit(ReadyEvent(call_id="x"))
        await conn.flush_and_close(CloseCode.SLOW_CONSUMER)
        return conn.overflowed

    assert await asyncio.wait_for(scenario(), timeout=10)


# -- the real model through a real server socket --------------------------------------------------------------

@pytest.fixture(scope="module")
def live_server(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    with running_server(tmp_path_factory.mktemp("live-data"), model_cache) as port:
        yield f"ws://127.0.0.1:{port}"  # type: ignore[misc]


def _labels(report: dict[str, Any]) -> dict[str, str]:
    return {t["topic"]: t["label"] for t in report["topics"] if t["label"]}


def _settled_report(base: str, call_id: str) -> dict[str, Any]:
    """The call's report once no job of it is queued or running (its degraded finals re-decoded)."""

    deadline = time.monotonic() + 600
    while True:
        found = httpx.get(f"{base}/v1/calls/{call_id}/report", headers=bearer(SUPERVISOR), timeout=30)
        if found.status_code == 200 and not found.json()["reprocessing"]:
            return dict(found.json())
        assert time.monotonic() < deadline, f"call {call_id} did not settle"
        time.sleep(0.5)


def _check_finals(finals: list[dict[str, Any]], script: dict[str, Any]) -> None:
    spoken = [t for t in script["turns"] if t["text"]]
    for role in ("agent", "customer"):
        expected = [t for t in spoken if t["speaker"] == role]
        got = [f for f in finals if f["channel"] == role and f["text"]]
        assert len(got) == len(expected), (role, got)
        for final, turn in zip(got, expected, strict=True):
            assert abs(final["start_s"] - turn["start_s"]) <= 0.5, (final, turn)
            assert abs(final["end_s"] - turn["end_s"]) <= 0.5, (final, turn)


@pytest.mark.model
@pytest.mark.asyncio
async def test_every_scripted_turn_is_a_final_on_its_channel(live_server: str, shared_data: Path) -> None:
    from asr.audio import load_call_audio
    from service.cli.replay import replay

    script = json.loads((shared_data / "calls" / "call_s03.json").read_text(encoding="utf-8"))
    audio = load_call_audio(str(shared_data / "calls" / "call_s03.flac"), 16000)
    result = await replay(f"{live_server}/v1/calls/s03/audio", audio, 16000, ["agent", "customer"],
                          headers=bearer(INGEST))
    assert result.close_code == CloseCode.NORMAL
    finals = result.finals()
    _check_finals(finals, script)
    assert [e["type"] for e in result.events][0] == "ready" and result.events[-1]["type"] == "end"
    starts = [f["start_s"] for f in finals if f["channel"] == "customer"]
    assert starts == sorted(starts)
    # In the books as it ends (issue #29): listed as live, its audio playable, and once its finals decoded
    # greedily while the call streamed faster than real time are re-decoded, its verdicts are the ones scoring
    # its recording gives.
    base = live_server.replace("ws://", "http://")
    assert result.events[-1]["report_url"] == "/v1/calls/s03/report"
    live = _settled_report(base, "s03")
    assert live["source"] == "live" and live["complete"] and live["utterances"]
    for link in live["audio"]:
        assert httpx.get(base + link["url"], headers=bearer(SUPERVISOR), timeout=30).status_code == 200
    with open(shared_data / "calls" / "call_s03.flac", "rb") as f:
        upload = httpx.post(f"{base}/v1/recordings", headers=bearer(INGEST), timeout=60, data={"call_id": "s03-up"},
                            files={"file": ("call_s03.flac", f, "audio/flac")})
    assert upload.status_code == 202, upload.text
    scored = _settled_report(base, "s03-up")
    topics = set(_labels(live)) | set(_labels(scored))
    agreed = sum(_labels(live).get(t) == _labels(scored).get(t) for t in topics)
    assert topics and agreed / len(topics) >= 0.95, (_labels(live), _labels(scored), live["redecoded"])


@pytest.mark.model
@pytest.mark.asyncio
async def test_twilio_media_streams_give_the_same_finals(live_server: str, shared_data: Path) -> None:
    from asr.audio import load_call_audio
    from service.cli.replay import replay

    script = json.loads((shared_data / "calls" / "call_s03.json").read_text(encoding="utf-8"))
    audio = load_call_audio(str(shared_data / "calls" / "call_s03.8k.wav"), 8000)
    result = await replay(f"{live_server}/v1/calls/s03-twilio/twilio", audio, 8000, ["agent", "customer"],
                          headers=bearer(INGEST), twilio=True)
    assert result.close_code == CloseCode.NORMAL
    _check_finals(result.finals(), script)


class BrokenTranscriber(FakeTranscriber):
    """Fails on every decode, as a corrupted model or an out-of-memory would."""

    def transcribe_span(self, *args: Any, **kwargs: Any) -> Utterance | None:
        raise RuntimeError("decoder exploded")


def test_a_failing_decode_is_reported_and_the_call_goes_on(tmp_path: Path, shared_data: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path), transcriber=BrokenTranscriber())  # type: ignore[arg-type]
    audio = _stereo_pcm16(np.concatenate([_speech(shared_data), np.zeros(2 * 16000, dtype=np.float32)]))
    with authed(app) as client, client.websocket_connect("/v1/calls/broken/audio") as ws:
        ws.send_json(START)
        assert ws.receive_json()["type"] == "ready"
        for i in range(0, len(audio), 6400):
            ws.send_bytes(audio[i : i + 6400])
        ws.send_json({"type": "stop"})
        events = _drain(ws)
    assert any(e["type"] == "error" and e["code"] == "decode_failed" for e in events)
    assert events[-1]["type"] == "end"  # closed normally, not torn down


def test_no_model_means_calls_are_refused_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    app = create_app(Settings(data_dir=tmp_path, asr={"model": "no-such-model"}))
    with authed(app) as client, client.websocket_connect("/v1/calls/x/audio") as ws:
        ws.send_json(START)
        _expect_error_close(ws, "asr_unavailable", CloseCode.UNAVAILABLE)


class BatchRecordingTranscriber(FakeTranscriber):
    """Names the channel in its text and records how many finals each decode call got."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def transcribe_span(self, samples: np.ndarray, channel: str, offset_s: float, beam_size: int | None = None,
                        min_window_s: float | None = None, provisional: bool = False,
                        abandon: Any = None) -> Utterance | None:
        return Utterance(channel, offset_s, offset_s + len(samples) / 16000, f"{channel}说", None, -0.1, 0.0)

    def transcribe_spans(self, spans: Any, beam_size: int | None = None,
                         min_window_s: float | None = None) -> list[Utterance | None]:
        self.batches.append([channel for _, channel, _ in spans])
        time.sleep(0.2)  # a real decode takes time: what ends meanwhile waits and joins the next batch
        return [self.transcribe_span(samples, channel, offset_s) for samples, channel, offset_s in spans]


def test_finals_that_end_together_are_decoded_as_one_batch(tmp_path: Path, shared_data: Path) -> None:
    transcriber = BatchRecordingTranscriber()
    app = create_app(Settings(data_dir=tmp_path, live={"partial_interval_s": 0, "prefetch_silence_ms": 0}),
                     transcriber=transcriber)  # type: ignore[arg-type]
    speech = np.concatenate([np.zeros(16000, dtype=np.float32), _speech(shared_data),
                             np.zeros(2 * 16000, dtype=np.float32)])
    # Both sides speak at once (double talk), so their finals are due at the same moment.
    audio = (np.stack([speech, speech]).T.reshape(-1) * 32767).astype("<i2").tobytes()
    with authed(app) as client, client.websocket_connect("/v1/calls/both/audio") as ws:
        ws.send_json(START)
        assert ws.receive_json()["type"] == "ready"
        for i in range(0, len(audio), 64000):
            ws.send_bytes(audio[i : i + 64000])
        ws.send_json({"type": "stop"})
        events = _drain(ws)
    finals = [e for e in events if e["type"] == "final"]
    assert sorted((f["channel"], f["text"]) for f in finals) == [("agent", "agent说"), ("customer", "customer说")]
    assert ["agent", "customer"] in [sorted(b) for b in transcriber.batches], transcriber.batches


class WindowRecordingTranscriber(FakeTranscriber):
    """Records the shortest encoder window each kind of decode asked for."""

    def __init__(self) -> None:
        self.windows: list[tuple[str, float | None]] = []

    def transcribe_span(self, samples: np.ndarray, channel: str, offset_s: float, beam_size: int | None = None,
                        min_window_s: float | None = None, provisional: bool = False,
                        abandon: Any = None) -> Utterance | None:
        self.windows.append(("partial" if provisional else "ahead", min_window_s))
        return super().transcribe_span(samples, channel, offset_s)

    def transcribe_spans(self, spans: Any, beam_size: int | None = None,
                         min_window_s: float | None = None) -> list[Utterance | None]:
        self.windows.append(("final", min_window_s))
        return [super(WindowRecordingTranscriber, self).transcribe_span(s, c, o) for s, c, o in spans]


def test_partials_are_encoded_at_their_own_shorter_window_and_finals_at_the_finals(tmp_path: Path,
                                                                                  shared_data: Path) -> None:
    transcriber = WindowRecordingTranscriber()
    app = create_app(Settings(data_dir=tmp_path, live={"prefetch_silence_ms": 0}),
                     transcriber=transcriber)  # type: ignore[arg-type]
    audio = _stereo_pcm16(np.concatenate([np.zeros(16000, dtype=np.float32), _speech(shared_data),
                                          np.zeros(2 * 16000, dtype=np.float32)]))
    with authed(app) as client, client.websocket_connect("/v1/calls/windows/audio") as ws:
        ws.send_json(START)
        assert ws.receive_json()["type"] == "ready"
        for i in range(0, len(audio), 3200):  # 0.1 s at a time: partials come every second of speech
            ws.send_bytes(audio[i : i + 3200])
        ws.send_json({"type": "stop"})
        events = _drain(ws)
    assert any(e["type"] == "partial" for e in events)
    kinds = {kind: {w for k, w in transcriber.windows if k == kind} for kind in ("partial", "final")}
    # The shipped defaults: partials 5 s (provisional, half the encoder time), finals 10 s (as after the call).
    assert kinds == {"partial": {5.0}, "final": {10.0}}, transcriber.windows
