"""`huifang replay`: stream a recording through the live socket as a phone switch would, printing events.

The client side of docs/protocol.md, also used by the tests and bench/stream_latency.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asr.audio import load_call_audio
from service.protocol import CloseCode

#: Audio per binary frame: 100 ms, a typical switch packetisation (Twilio uses 20 ms).
FRAME_S = 0.1


@dataclass
class ReplayResult:
    """Events received, each with the wall-clock time (time.monotonic) it arrived, and when audio was sent."""

    events: list[dict[str, Any]] = field(default_factory=list)
    arrival: list[float] = field(default_factory=list)
    #: time.monotonic() when the audio up to each call second had been sent: sent_at(t) interpolates.
    send_marks: list[tuple[float, float]] = field(default_factory=list)
    close_code: int | None = None

    def sent_at(self, audio_s: float) -> float:
        """Wall time when the call audio up to `audio_s` had been sent."""
        for audio_mark, wall in self.send_marks:
            if audio_mark >= audio_s:
                return wall
        return self.send_marks[-1][1] if self.send_marks else 0.0

    def finals(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == "final"]


def _mulaw_encode(samples: np.ndarray) -> bytes:
    x = np.clip(samples, -1.0, 1.0) * 32767.0
    sign = np.where(x < 0, 0x80, 0x00)
    magnitude = np.minimum(np.abs(x) + 0x84, 32767).astype(np.int32)
    exponent = np.floor(np.log2(np.maximum(magnitude, 1))).astype(np.int32) - 7
    exponent = np.clip(exponent, 0, 7)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def _pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()


async def replay(
    url: str,
    audio: np.ndarray,
    rate_hz: int,
    channels: list[str],
    encoding: str = "pcm16",
    realtime: bool = False,
    twilio: bool = False,
    loan_file: dict[str, Any] | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    headers: dict[str, str] | None = None,
    speed: float = 1.0,
) -> ReplayResult:
    """Stream `audio` (channels, n) to `url` and collect every event until the server closes. With `realtime`,
    audio is sent at `speed` times real-time pace; without, as fast as the socket takes it. A server that closes
    the socket early (a refused token, a protocol error) ends the sending: its close code is in the result."""
    import websockets

    result = ReplayResult()
    async with websockets.connect(url, max_size=2**22, additional_headers=headers) as ws:

        async def receive() -> None:
            try:
                async for message in ws:
                    event = json.loads(message)
                    result.events.append(event)
                    result.arrival.append(time.monotonic())
                    if on_event is not None:
                        on_event(event)
            except websockets.ConnectionClosed:
                pass

        receiver = asyncio.create_task(receive())
        # A server that ends the call early (a refused token, a protocol error) stops the sending: what it said is
        # in the events, why in the close code.
        with contextlib.suppress(websockets.ConnectionClosed):
            await _send_call(ws, audio, rate_hz, channels, encoding, realtime, twilio, loan_file, speed, result)
        await receiver
        result.close_code = ws.close_code
    return result


async def _send_call(ws: Any, audio: np.ndarray, rate_hz: int, channels: list[str], encoding: str, realtime: bool,
                     twilio: bool, loan_file: dict[str, Any] | None, speed: float, result: ReplayResult) -> None:
    """The client's half of the protocol: start, the audio in 100 ms frames, stop."""
    frame_len = int(rate_hz * FRAME_S)
    if twilio:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(json.dumps({"event": "start", "start": {
            "streamSid": "MZreplay", "callSid": "CAreplay", "tracks": ["inbound", "outbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))
    else:
        start: dict[str, Any] = {"type": "start", "sample_rate_hz": rate_hz, "encoding": encoding,
                                 "channels": channels}
        if loan_file is not None:
            start["loan_file"] = loan_file
        await ws.send(json.dumps(start, ensure_ascii=False))
    started = time.monotonic()
    for i, offset in enumerate(range(0, audio.shape[1], frame_len)):
        block = audio[:, offset : offset + frame_len]
        if twilio:
            for track, index in (("outbound", 0), ("inbound", 1)):
                payload = base64.b64encode(_mulaw_encode(block[index])).decode()
                await ws.send(json.dumps({"event": "media", "streamSid": "MZreplay", "media": {
                    "track": track, "chunk": str(i), "timestamp": str(int(offset * 1000 / rate_hz)),
                    "payload": payload}}))
        else:
            interleaved = block.T.reshape(-1)
            await ws.send(_pcm16(interleaved) if encoding == "pcm16" else _mulaw_encode(interleaved))
        sent_s = (offset + block.shape[1]) / rate_hz
        result.send_marks.append((sent_s, time.monotonic()))
        if realtime:
            await asyncio.sleep(max(0.0, started + sent_s / speed - time.monotonic()))
        else:
            await asyncio.sleep(0)
    await ws.send(json.dumps({"event": "stop"} if twilio else {"type": "stop"}))


def format_event(event: dict[str, Any]) -> str:
    """One line per event, for a person watching a replay."""
    kind = event.get("type")
    if kind in ("partial", "final"):
        mark = "…" if kind == "partial" else "✓"
        end = f"-{event['end_s']:.2f}" if "end_s" in event else ""
        return f"{mark} [{event['start_s']:.2f}{end}] {event['channel']}: {event['text']}"
    return json.dumps(event, ensure_ascii=False)


#: Close codes that refuse the call itself (nothing was transcribed): `huifang replay` says why in one line and
#: exits with 2, as for any error the user can fix.
_REFUSALS = {CloseCode.BAD_REQUEST, CloseCode.UNAUTHORIZED, CloseCode.FORBIDDEN, CloseCode.CALL_IN_PROGRESS,
             CloseCode.TOO_MANY_CALLS, CloseCode.UNAVAILABLE}


def refusal(result: ReplayResult, token_given: bool) -> str | None:
    """Why the server refused the call, in one line for a person, or None when it took the call."""
    if result.close_code not in _REFUSALS or any(e.get("type") == "ready" for e in result.events):
        return None
    said = next((e for e in result.events if e.get("type") == "error"), {})
    detail = f"{said.get('code', 'refused')}: {said.get('message', '')}".rstrip(": ")
    if result.close_code == CloseCode.UNAUTHORIZED:
        if not token_given:
            return ("the server needs a token: export HUIFANG_TOKEN=... (`make run` and `huifang serve` print one) "
                    "or pass --token")
        return "the server does not know this token (HUIFANG_TOKEN or --token): use the one the server printed"
    if result.close_code == CloseCode.FORBIDDEN:
        return f"this token may not stream calls (an ingest or admin token can): {detail}"
    return f"the server refused the call ({result.close_code} {detail})"


def run_replay_command(path: str, call_id: str, url: str, realtime: bool, twilio: bool, rate_hz: int | None,
                       channels: list[str], as_json: bool, token: str | None = None) -> int:
    """Body of `huifang replay`: 0 when the call ran to its end, 1 when the server ended it early; a refused
    call (no or unknown token, busy call id, ...) raises `ServiceError` (one line, exit code 2)."""
    from websockets.exceptions import InvalidHandshake, InvalidURI

    from service.errors import ServiceError

    rate = 8000 if twilio else (rate_hz or 16000)
    audio = load_call_audio(path, rate)
    if audio.shape[0] != len(channels):
        raise ServiceError("usage", f"the recording has {audio.shape[0]} channel(s) but {len(channels)} roles "
                           "were given")
    endpoint = f"{url.rstrip('/')}/v1/calls/{call_id}/{'twilio' if twilio else 'audio'}"
    started = False

    def show(event: dict[str, Any]) -> None:
        nonlocal started
        started = started or event.get("type") == "ready"
        if event.get("type") == "error" and not started:
            return  # a refusal: said once, as the command's error line
        print(json.dumps(event, ensure_ascii=False) if as_json else format_event(event), flush=True)

    try:
        result = asyncio.run(replay(endpoint, audio, rate, channels, realtime=realtime, twilio=twilio,
                                    encoding="mulaw" if rate == 8000 else "pcm16", on_event=show,
                                    headers={"Authorization": f"Bearer {token}"} if token else None))
    except InvalidURI as e:
        raise ServiceError("usage", f"--url must be ws://HOST:PORT or wss://HOST:PORT (got {url!r})") from e
    except InvalidHandshake as e:  # an HTTP answer instead of a websocket (a proxy, another service)
        raise ServiceError("usage", f"{url} did not accept a websocket: {e}") from e
    why = refusal(result, bool(token))
    if why is not None:
        raise ServiceError("usage", why)
    return 0 if result.close_code in (1000, None) else 1
