"""Twilio Media Streams (`connected` / `start` / `media` / `stop`, base64 8 kHz u-law per track) read into the
records every source gives: the start (with the token Twilio passed as a custom parameter), then audio per
channel, then the end. Pure: no socket, no event loop."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import numpy as np

from asr.streaming import MULAW_TO_FLOAT
from service.errors import ServiceError
from service.ids import id_problem
from service.live.sources.base import AudioChunk, AudioSource, CallEnd, CallStart, SourceRecord, WireFrame
from service.protocol import MAX_FRAME_BYTES, CloseCode, StartMessage

#: Twilio's audio: 8 kHz u-law, whatever the call.
SAMPLE_RATE_HZ = 8000
_SAMPLES_PER_MS = SAMPLE_RATE_HZ // 1000
#: Twilio's track names mapped to huifang's channel roles: inbound is the caller, outbound the agent side.
TWILIO_TRACKS = {"outbound": 0, "inbound": 1}
#: A gap in a track's timestamps longer than this is silence Twilio skipped (a muted track): it is filled in.
_GAP_MS = 40
#: Skipped silence is filled in blocks of at most this much audio, so a large gap never allocates at once.
_FILL_BLOCK_S = 10.0


class TwilioSource(AudioSource[WireFrame]):
    """Reads one stream's messages in order; keeps each track's clock to fill in skipped silence, and refuses a
    clock past `max_call_s` before allocating anything for it."""

    token_in_start = True
    start_deadline = True

    def __init__(self, max_call_s: float) -> None:
        self._expected_ms = {0: 0.0, 1: 0.0}
        self._max_ms = max_call_s * 1000.0
        self.started = False

    def read(self, frame: WireFrame) -> list[SourceRecord]:
        """What a text frame means for the call, in order; empty for frames that carry nothing for it
        (`connected`, `mark`, `dtmf`, an unknown track). Raises `ServiceError` for a frame that breaks the
        protocol or a timestamp past the call's length limit."""
        if not isinstance(frame, str):
            raise ServiceError("bad_message", "Twilio Media Streams messages are JSON text frames")
        try:
            payload = json.loads(frame)
            event = payload["event"]
        except (json.JSONDecodeError, KeyError, TypeError, RecursionError) as e:
            raise ServiceError("bad_message", "not a Twilio Media Streams message") from e
        if event == "start":
            self.started = True
            return [self._start(payload)]
        if event == "stop":
            return [CallEnd()]
        if event != "media":
            return []
        if not self.started:
            raise ServiceError("audio_before_start", "media arrived before the start message")
        return self._media(payload.get("media") or {})

    @staticmethod
    def _start(payload: dict[str, Any]) -> CallStart:
        # Twilio cannot add headers or a query string to a stream URL; its <Parameter>s arrive here.
        params = (payload.get("start") or {}).get("customParameters") or {}
        if not isinstance(params, dict):
            params = {}
        agent_id = str(params["agent_id"]) if params.get("agent_id") else None
        problem = id_problem(agent_id, "agent") if agent_id is not None else None
        if problem is not None:
            raise ServiceError("bad_start", problem)
        start = StartMessage(type="start", sample_rate_hz=SAMPLE_RATE_HZ, encoding="mulaw",
                             channels=["agent", "customer"], agent_id=agent_id)
        token = params.get("token")
        return CallStart(start, token if isinstance(token, str) else None)

    def _media(self, media: dict[str, Any]) -> list[SourceRecord]:
        track = TWILIO_TRACKS.get(media.get("track", "inbound"))
        if track is None:
            return []
        if not isinstance(media.get("payload", ""), str):
            raise ServiceError("bad_frame", "media payload is not base64")
        try:
            raw = base64.b64decode(media.get("payload", ""), validate=True)
        except (binascii.Error, ValueError) as e:
            raise ServiceError("bad_frame", "media payload is not base64") from e
        if len(raw) > MAX_FRAME_BYTES:
            raise ServiceError("frame_too_large", "media payload too large", 413, CloseCode.FRAME_TOO_LARGE)
        samples = MULAW_TO_FLOAT[np.frombuffer(raw, dtype=np.uint8)]
        # Twilio skips silence on a muted track; its timestamp says where this chunk belongs.
        expected = self._expected_ms[track]
        try:
            stamp = float(media.get("timestamp", expected))
        except (TypeError, ValueError) as e:
            raise ServiceError("bad_frame", "media timestamp is not a number") from e
        if not stamp < self._max_ms:  # also NaN and infinity
            raise ServiceError("call_too_long", f"media timestamp {stamp:.0f} ms is past the call length limit",
                               413, CloseCode.CALL_TOO_LONG)
        out: list[SourceRecord] = []
        # Samples of skipped silence.
        gap = int((stamp - expected) * _SAMPLES_PER_MS) if stamp - expected > _GAP_MS else 0
        block = int(_FILL_BLOCK_S * SAMPLE_RATE_HZ)
        for start in range(0, gap, block):
            out.append(AudioChunk(np.zeros(min(block, gap - start), dtype=np.float32), SAMPLE_RATE_HZ, track))
        self._expected_ms[track] = expected + (gap + len(samples)) / float(_SAMPLES_PER_MS)
        out.append(AudioChunk(samples, SAMPLE_RATE_HZ, track))
        return out
