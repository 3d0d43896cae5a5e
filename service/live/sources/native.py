"""The native protocol of `/v1/calls/{call_id}/audio` (docs/protocol.md), as the bank's switch sends it: a JSON
`start` text frame (sample rate, encoding, channel roles, loan file, agent), binary frames of interleaved samples
of every channel, and a `{"type": "stop"}` text frame. Pure: no socket, no event loop."""

from __future__ import annotations

import json

from pydantic import ValidationError

from asr.streaming import decode_mulaw, decode_pcm16
from service.errors import ServiceError
from service.live.sources.base import AudioChunk, AudioSource, CallEnd, CallStart, SourceRecord, WireFrame
from service.protocol import MAX_FRAME_BYTES, CloseCode, StartMessage, validation_problems


def parse_start(text: str | None) -> StartMessage:
    """The native protocol's first frame. Raises `ServiceError` (`audio_before_start`, `bad_start`)."""
    if text is None:
        raise ServiceError("audio_before_start", "the first message must be a JSON text frame of type 'start'")
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as e:
        raise ServiceError("bad_start", f"the start message is not valid JSON ({e.msg})") from e
    except RecursionError as e:
        raise ServiceError("bad_start", "the start message is nested too deeply") from e
    if not isinstance(payload, dict) or payload.get("type") != "start":
        raise ServiceError("bad_start", "the first message must have type 'start'")
    try:
        return StartMessage.model_validate(payload)
    except ValidationError as e:
        raise ServiceError("bad_start", f"invalid start message: {validation_problems(e)}") from e


def decode_frame(data: bytes, start: StartMessage) -> AudioChunk:
    """One binary frame as audio of every channel. Raises `ServiceError` (`frame_too_large`, `bad_frame`)."""
    if len(data) > MAX_FRAME_BYTES:
        raise ServiceError("frame_too_large", f"binary frames are limited to {MAX_FRAME_BYTES} bytes", 413,
                           CloseCode.FRAME_TOO_LARGE)
    frame = start.bytes_per_frame
    if len(data) % frame:
        raise ServiceError("bad_frame", f"a binary frame must hold whole samples for every channel: "
                           f"{len(data)} bytes is not a multiple of {frame}")
    decode = decode_pcm16 if start.encoding == "pcm16" else decode_mulaw
    return AudioChunk(decode(data, len(start.channels)), start.sample_rate_hz)


def _is_stop(text: str) -> bool:
    try:
        return bool(json.loads(text).get("type") == "stop")
    except (json.JSONDecodeError, AttributeError, RecursionError):
        return False


class NativeSource(AudioSource[WireFrame]):
    """One native socket's frames: the start first, then audio until `stop`."""

    def __init__(self) -> None:
        self.start: StartMessage | None = None

    def read(self, frame: WireFrame) -> list[SourceRecord]:
        """The start, a chunk of audio (every binary frame, even an empty one), or the end. Raises
        `ServiceError` for anything else."""
        if self.start is None:
            self.start = parse_start(frame if isinstance(frame, str) else None)
            return [CallStart(self.start)]
        if isinstance(frame, bytes):
            return [decode_frame(frame, self.start)]
        if _is_stop(frame):
            return [CallEnd()]
        raise ServiceError("bad_message", "text frames after start must be {\"type\":\"stop\"}")
