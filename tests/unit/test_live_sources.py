"""The live audio sources, pure: wire input in (text or binary frames, a recording), typed records out, and the
refusal each malformed input gets (the code, message and close code the client is told)."""

from __future__ import annotations

import ast
import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.errors import ServiceError
from service.live.sources.base import AudioChunk, CallEnd, CallStart, SourceRecord
from service.live.sources.demo import STEP_S, DemoCall, DemoSource, demo_calls
from service.live.sources.native import NativeSource
from service.live.sources.twilio import TwilioSource
from service.protocol import MAX_FRAME_BYTES, CloseCode
from tests.support.paths import REPO

STEREO_PCM = {"type": "start", "sample_rate_hz": 16000, "encoding": "pcm16", "channels": ["agent", "customer"]}


def _refusal(source: Any, frame: str | bytes) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        source.read(frame)
    return caught.value


def _started_native(start: dict[str, Any] | None = None) -> NativeSource:
    source = NativeSource()
    source.read(json.dumps(start or STEREO_PCM))
    return source


def _audio(records: list[SourceRecord]) -> list[AudioChunk]:
    assert all(isinstance(r, AudioChunk) for r in records)
    return [r for r in records if isinstance(r, AudioChunk)]


def _chunk(records: list[SourceRecord]) -> AudioChunk:
    assert len(records) == 1 and isinstance(records[0], AudioChunk)
    return records[0]


# -- native -------------------------------------------------------------------------------------------------

def test_native_start_carries_the_call_parameters_and_no_token() -> None:
    loan = {"customer_id": "C-1", "borrower": "王伟"}
    records = NativeSource().read(json.dumps({**STEREO_PCM, "loan_file": loan, "agent_id": "agent-7"}))
    assert len(records) == 1 and isinstance(records[0], CallStart)
    start = records[0].start
    assert (start.sample_rate_hz, start.encoding, start.channels) == (16000, "pcm16", ["agent", "customer"])
    assert start.agent_id == "agent-7" and start.loan_file is not None
    assert start.loan_file.customer_id == "C-1"
    assert records[0].token is None  # the native socket authenticates by its header or ticket


@pytest.mark.parametrize(("frame", "code", "message"), [
    (b"\x00\x00\x00\x00", "audio_before_start", "the first message must be a JSON text frame of type 'start'"),
    ("{not json", "bad_start", "the start message is not valid JSON (Expecting property name enclosed in double "
                  "quotes)"),
    ('{"type": "stop"}', "bad_start", "the first message must have type 'start'"),
    ("[1, 2]", "bad_start", "the first message must have type 'start'"),
    ("[" * 100_000 + "]" * 100_000, "bad_start", "the start message is nested too deeply"),
])
def test_native_refuses_anything_but_a_start_first(frame: str | bytes, code: str, message: str) -> None:
    error = _refusal(NativeSource(), frame)
    assert (error.code, error.message, error.close_code) == (code, message, CloseCode.BAD_REQUEST)


def test_native_names_the_invalid_field_of_a_start() -> None:
    error = _refusal(NativeSource(), json.dumps({**STEREO_PCM, "sample_rate_hz": 44100}))
    assert error.code == "bad_start" and error.message.startswith("invalid start message:")
    assert "sample_rate_hz" in error.message


def test_native_pcm16_frames_are_deinterleaved_in_channel_order() -> None:
    source = _started_native()
    # agent, customer, agent, customer
    frame = np.array([16384, -32768, 0, 32767], dtype="<i2").tobytes()
    chunk = _chunk(source.read(frame))
    assert chunk.channel is None and chunk.sample_rate_hz == 16000
    assert chunk.samples.dtype == np.float32 and chunk.samples.shape == (2, 2)
    np.testing.assert_allclose(chunk.samples[0], [0.5, 0.0])
    np.testing.assert_allclose(chunk.samples[1], [-1.0, 32767 / 32768])
    assert chunk.duration_s == pytest.approx(2 / 16000)


def test_native_mulaw_frames_decode_at_the_start_rate() -> None:
    source = _started_native({"type": "start", "sample_rate_hz": 8000, "encoding": "mulaw", "channels": ["customer"]})
    chunk = _chunk(source.read(bytes([0xFF, 0x00, 0x7F])))  # u-law: +0, loudest negative, -0
    assert chunk.sample_rate_hz == 8000 and chunk.samples.shape == (1, 3)
    assert chunk.samples[0, 0] == 0.0 and chunk.samples[0, 1] < -0.9 and chunk.samples[0, 2] == 0.0


def test_native_empty_binary_frame_is_an_empty_chunk() -> None:
    # It is activity all the same (the idle timeout counts from it), as before the sources existed.
    assert _chunk(_started_native().read(b"")).samples.shape == (2, 0)


def test_native_refuses_a_frame_of_partial_samples() -> None:
    error = _refusal(_started_native(), b"\x00" * 6)  # 1.5 stereo samples of pcm16
    assert error.code == "bad_frame" and error.close_code == CloseCode.BAD_REQUEST
    assert error.message == ("a binary frame must hold whole samples for every channel: 6 bytes is not a multiple "
                             "of 4")


def test_native_refuses_an_oversized_frame() -> None:
    error = _refusal(_started_native(), b"\x00" * (MAX_FRAME_BYTES + 4))
    assert (error.code, error.status, error.close_code) == ("frame_too_large", 413, CloseCode.FRAME_TOO_LARGE)
    assert error.message == f"binary frames are limited to {MAX_FRAME_BYTES} bytes"


def test_native_stop_ends_the_call() -> None:
    assert _started_native().read('{"type": "stop", "reason": "hung up"}') == [CallEnd()]


@pytest.mark.parametrize("text", ['{"type": "start"}', "stop", "[]", '"stop"', ""])
def test_native_text_after_start_must_be_stop(text: str) -> None:
    error = _refusal(_started_native(), text)
    assert (error.code, error.message) == ("bad_message", 'text frames after start must be {"type":"stop"}')


def test_native_source_authenticates_by_the_socket() -> None:
    assert not NativeSource.token_in_start and not NativeSource.start_deadline


# -- Twilio -------------------------------------------------------------------------------------------------

def _twilio_start(params: Any = None) -> str:
    return json.dumps({"event": "start", "start": {"streamSid": "MZ1", "customParameters": params or {}}})


def _media(track: str, timestamp: float, payload: bytes = b"\xff" * 160) -> str:
    return json.dumps({"event": "media", "media": {"track": track, "timestamp": timestamp,
                                                   "payload": base64.b64encode(payload).decode()}})


def _started_twilio() -> TwilioSource:
    source = TwilioSource(max_call_s=3600)
    source.read(_twilio_start({"token": "t"}))
    return source


def test_twilio_start_carries_its_token_and_agent() -> None:
    records = TwilioSource(3600).read(_twilio_start({"token": "secret", "agent_id": "agent-7"}))
    assert len(records) == 1 and isinstance(records[0], CallStart)
    start = records[0].start
    assert (start.sample_rate_hz, start.encoding, start.channels) == (8000, "mulaw", ["agent", "customer"])
    assert start.agent_id == "agent-7" and records[0].token == "secret"
    assert TwilioSource.token_in_start and TwilioSource.start_deadline


@pytest.mark.parametrize("params", [{"token": 7}, "not a mapping", None])
def test_twilio_start_without_a_usable_token_has_none(params: Any) -> None:
    records = TwilioSource(3600).read(_twilio_start(params))
    assert isinstance(records[0], CallStart) and records[0].token is None


def test_twilio_start_refuses_a_malformed_agent_id() -> None:
    error = _refusal(TwilioSource(3600), _twilio_start({"agent_id": "a b/../c"}))
    assert error.code == "bad_start" and error.close_code == CloseCode.BAD_REQUEST


@pytest.mark.parametrize("event", ["connected", "mark", "dtmf"])
def test_twilio_events_without_audio_give_nothing(event: str) -> None:
    assert TwilioSource(3600).read(json.dumps({"event": event, "sequenceNumber": "1"})) == []


@pytest.mark.parametrize(("frame", "message"), [
    (b"\x00\x01", "Twilio Media Streams messages are JSON text frames"),
    ("not json", "not a Twilio Media Streams message"),
    ('{"media": {}}', "not a Twilio Media Streams message"),
    ("[1]", "not a Twilio Media Streams message"),
])
def test_twilio_refuses_what_is_not_a_message(frame: str | bytes, message: str) -> None:
    error = _refusal(TwilioSource(3600), frame)
    assert (error.code, error.message) == ("bad_message", message)


def test_twilio_refuses_media_before_start() -> None:
    error = _refusal(TwilioSource(3600), _media("inbound", 0))
    assert (error.code, error.message) == ("audio_before_start", "media arrived before the start message")


def test_twilio_tracks_map_to_channel_roles() -> None:
    source = _started_twilio()
    outbound = _chunk(source.read(_media("outbound", 0)))
    inbound = _chunk(source.read(_media("inbound", 0, b"\x00" * 80)))
    assert (outbound.channel, inbound.channel) == (0, 1)  # agent, customer
    assert outbound.sample_rate_hz == inbound.sample_rate_hz == 8000
    assert outbound.samples.shape == (160,) and inbound.samples.shape == (80,)
    assert outbound.samples.dtype == np.float32 and inbound.samples[0] < -0.9
    assert source.read(_media("both_tracks", 0)) == []  # a track huifang does not know carries nothing


def test_twilio_fills_in_skipped_silence_per_track() -> None:
    source = _started_twilio()
    source.read(_media("inbound", 0))  # 20 ms
    gap = _audio(source.read(_media("inbound", 1000, b"\x00" * 160)))  # 980 ms skipped, then loud audio
    assert [len(c.samples) for c in gap] == [980 * 8, 160] and [c.channel for c in gap] == [1, 1]
    assert not gap[0].samples.any() and gap[1].samples.any()
    # The other track keeps its own clock: its first chunk at 20 ms is no gap.
    assert [len(c.samples) for c in _audio(source.read(_media("outbound", 20)))] == [160]


@pytest.mark.parametrize(("media", "code", "message"), [
    ({"track": "inbound", "payload": "@@@"}, "bad_frame", "media payload is not base64"),
    ({"track": "inbound", "payload": 12}, "bad_frame", "media payload is not base64"),
    ({"track": "inbound", "payload": "", "timestamp": "soon"}, "bad_frame", "media timestamp is not a number"),
])
def test_twilio_refuses_malformed_media(media: dict[str, Any], code: str, message: str) -> None:
    error = _refusal(_started_twilio(), json.dumps({"event": "media", "media": media}))
    assert (error.code, error.message, error.close_code) == (code, message, CloseCode.BAD_REQUEST)


@pytest.mark.parametrize("timestamp", [3_600_000, float("nan"), float("inf")])
def test_twilio_refuses_a_clock_past_the_call_limit(timestamp: float) -> None:
    error = _refusal(_started_twilio(), _media("inbound", timestamp))
    assert (error.code, error.status, error.close_code) == ("call_too_long", 413, CloseCode.CALL_TOO_LONG)


def test_twilio_refuses_an_oversized_payload() -> None:
    error = _refusal(_started_twilio(), _media("inbound", 0, b"\xff" * (MAX_FRAME_BYTES + 1)))
    assert (error.code, error.close_code) == ("frame_too_large", CloseCode.FRAME_TOO_LARGE)


def test_twilio_stop_ends_the_call() -> None:
    assert _started_twilio().read('{"event": "stop", "stop": {}}') == [CallEnd()]


# -- demo ---------------------------------------------------------------------------------------------------

def _demo(loan_file: dict[str, object] | None = None) -> DemoCall:
    return DemoCall("overdue", Path("overdue.flac"), loan_file, 0.25)


def test_demo_recording_reads_as_start_chunks_and_end() -> None:
    recording = np.random.default_rng(0).uniform(-1, 1, (2, 4000)).astype(np.float32)  # 0.25 s at 16 kHz
    records = DemoSource(_demo({"customer_id": "C-9"}), agent_id="agent-7").read(recording)
    first, *chunks, last = records
    assert isinstance(first, CallStart) and first.token is None
    assert (first.start.sample_rate_hz, first.start.channels) == (16000, ["agent", "customer"])
    assert first.start.agent_id == "agent-7" and first.start.loan_file is not None
    assert first.start.loan_file.customer_id == "C-9"
    assert last == CallEnd()
    audio = _audio(chunks)
    assert len(audio) == 3
    assert [c.samples.shape for c in audio] == [(2, int(16000 * STEP_S))] * 2 + [(2, 800)]
    assert all(c.channel is None and c.sample_rate_hz == 16000 for c in audio)
    np.testing.assert_array_equal(np.concatenate([c.samples for c in audio], axis=1), recording)


def test_demo_refuses_a_recording_that_is_not_two_channels() -> None:
    with pytest.raises(ValueError, match="must be a two-channel recording"):
        DemoSource(_demo()).read(np.zeros((1, 1600), dtype=np.float32))


def test_demo_calls_pairs_metadata_with_audio(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"loan_file": {"customer_id": "C-1"}, "duration_s": 12.5}))
    (tmp_path / "a.flac").write_bytes(b"")
    (tmp_path / "no_audio.json").write_text("{}")
    (tmp_path / "broken.json").write_text("{")
    (tmp_path / "broken.flac").write_bytes(b"")
    calls = demo_calls(tmp_path)
    assert list(calls) == ["a"]
    assert calls["a"].loan_file == {"customer_id": "C-1"} and calls["a"].duration_s == 12.5


# -- purity -------------------------------------------------------------------------------------------------

def _modules_imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("name", ["base", "native", "twilio"])
def test_wire_sources_know_no_socket_no_loop_and_no_session(name: str) -> None:
    # The demo module also holds the player that drives sessions; the wire formats are plain functions of frames.
    imported = _modules_imported(REPO / "service/live/sources" / f"{name}.py")
    forbidden = {m for m in imported if m.split(".")[0] in {"fastapi", "starlette", "asyncio"}
                 or m in {"service.live.session", "service.live.sockets", "service.live.engine"}}
    assert not forbidden, f"sources/{name}.py imports {sorted(forbidden)}"
