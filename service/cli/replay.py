"""`huifang replay`: stream a recording through the live socket as a phone switch would, printing events.

The client side of docs/protocol.md, also used by the tests and bench/stream_latency.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asr.audio import load_call_audio

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
) -> ReplayResult:
    """Stream `audio` (channels, n) to `url` and collect every event until the server closes."""
    import websockets

    result = ReplayResult()
    frame_len = int(rate_hz * FRAME_S)
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
                await asyncio.sleep(max(0.0, started + sent_s - time.monotonic()))
            else:
                await asyncio.sleep(0)
        await ws.send(json.dumps({"event": "stop"} if twilio else {"type": "stop"}))
        await receiver
        result.close_code = ws.close_code
    return result


def format_event(event: dict[str, Any]) -> str:
    """One line per event, for a person watching a replay."""
    kind = event.get("type")
    if kind in ("partial", "final"):
        mark = "…" if kind == "partial" else "✓"
        end = f"-{event['end_s']:.2f}" if "end_s" in event else ""
        return f"{mark} [{event['start_s']:.2f}{end}] {event['channel']}: {event['text']}"
    return json.dumps(event, ensure_ascii=False)


def run_replay_command(path: str, call_id: str, url: str, realtime: bool, twilio: bool, rate_hz: int | None,
                       channels: list[str], as_json: bool, token: str | None = None) -> int:
    """Body of `huifang replay`."""
    rate = 8000 if twilio else (rate_hz or 16000)
    audio = load_call_audio(path, rate)
    if audio.shape[0] != len(channels):
        from service.errors import ServiceError

        raise ServiceError("usage", f"the recording has {audio.shape[0]} channel(s) but {len(channels)} roles "
                           "were given")
    endpoint = f"{url.rstrip('/')}/v1/calls/{call_id}/{'twilio' if twilio else 'audio'}"

    def show(event: dict[str, Any]) -> None:
        print(json.dumps(event, ensure_ascii=False) if as_json else format_event(event), flush=True)

    result = asyncio.run(replay(endpoint, audio, rate, channels, realtime=realtime, twilio=twilio,
                                encoding="mulaw" if rate == 8000 else "pcm16", on_event=show,
                                headers={"Authorization": f"Bearer {token}"} if token else None))
    return 0 if result.close_code in (1000, None) else 1
