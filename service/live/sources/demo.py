"""Demo mode of the agent console: replay a sample call through the live pipeline at real-time pace.

The call goes through the same path as a phone switch's stream (VAD, decoding, turn pairing, assessment), only
fed from a file inside the server, so `make run` shows the product working with no switch attached.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asr.audio import load_call_audio
from service.errors import ServiceError
from service.live.session import CallSession, LiveCalls
from service.live.sources.base import AudioChunk, AudioSource, CallEnd, CallStart, SourceRecord
from service.protocol import CloseCode, StartMessage

log = logging.getLogger(__name__)

#: Audio per step of the replay, as a switch would packetise it.
STEP_S = 0.1
#: The rate the sample calls are read at (the models' own: nothing is resampled on the way).
SAMPLE_RATE_HZ = 16000


@dataclass(frozen=True, slots=True)
class DemoCall:
    """A sample call: stereo recording (agent, customer) and the loan file that goes with it."""

    name: str
    audio: Path
    loan_file: dict[str, object] | None
    duration_s: float


def demo_calls(folder: Path) -> dict[str, DemoCall]:
    """The sample calls in `folder`: each NAME.flac with a NAME.json carrying `loan_file` and `duration_s`."""
    calls = {}
    for meta_path in sorted(folder.glob("*.json")):
        audio = meta_path.with_suffix(".flac")
        if not audio.exists():
            continue
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            log.warning("demo call %s: unreadable metadata; skipped", meta_path)
            continue
        calls[meta_path.stem] = DemoCall(meta_path.stem, audio, meta.get("loan_file"), float(meta.get("duration_s", 0)))
    return calls


class DemoSource(AudioSource[np.ndarray]):
    """A sample call's recording (float32, shape (2, n) at SAMPLE_RATE_HZ, agent then customer) read as a live
    call: the start with the sample's loan file, the audio in STEP_S chunks of both channels, the end. The
    recording is a file of the server's own, so a malformed one raises `ValueError` (a fault of the install),
    not a client's `ServiceError`."""

    def __init__(self, demo: DemoCall, agent_id: str | None = None) -> None:
        self.demo = demo
        self.agent_id = agent_id

    def read(self, frame: np.ndarray) -> list[SourceRecord]:
        """The whole call; the chunks are views of `frame` (no copy of the recording)."""
        if frame.ndim != 2 or frame.shape[0] != 2:
            raise ValueError(f"demo call {self.demo.name} must be a two-channel recording")
        start = StartMessage.model_validate({"type": "start", "sample_rate_hz": SAMPLE_RATE_HZ, "encoding": "pcm16",
                                             "channels": ["agent", "customer"], "loan_file": self.demo.loan_file,
                                             "agent_id": self.agent_id})
        step = int(SAMPLE_RATE_HZ * STEP_S)
        chunks = [AudioChunk(frame[:, offset: offset + step], SAMPLE_RATE_HZ)
                  for offset in range(0, frame.shape[1], step)]
        return [CallStart(start), *chunks, CallEnd()]


class DemoPlayer:
    """Replays sample calls as live calls (the console's demo mode); owns the replay tasks."""

    def __init__(self, calls: LiveCalls, max_running: int) -> None:
        self._calls = calls
        self._max_running = max_running
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, demo: DemoCall, speed: float, owner: str, agent_id: str | None = None) -> str:
        """Start replaying `demo` as a new live call of `owner` (it counts against that token's live calls);
        returns its call id at once (watch it on the events socket). Raises `ServiceError` when the call cannot
        start: no speech model, the owner's call limit, or `max_running` demos already playing (a demo decodes
        like a real call and must not starve them)."""
        if self._max_running == 0:
            raise ServiceError("demos_disabled", "demo calls are turned off on this server "
                               "(HUIFANG_LIVE__MAX_DEMO_CALLS)", 403, CloseCode.FORBIDDEN)
        call_id = f"demo-{demo.name}-{secrets.token_hex(3)}"
        claims = self._calls.claims
        # The cap holds across replicas (with Redis): a demo decodes like a real call and must not starve them.
        await claims.claim_demo(call_id, self._max_running)
        try:
            samples = await asyncio.to_thread(load_call_audio, str(demo.audio), SAMPLE_RATE_HZ)
            start, *records = DemoSource(demo, agent_id).read(samples)
            if not isinstance(start, CallStart):
                raise TypeError("a demo source begins with the call's start")
            session = await self._calls.open(call_id, start.start, None, owner, source="demo")
        except BaseException:
            claims.release_demo(call_id)
            raise
        task = asyncio.create_task(self._play(session, records, speed))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: claims.release_demo(call_id))
        return call_id

    @staticmethod
    async def _play(session: CallSession, records: list[SourceRecord], speed: float) -> None:
        try:
            await session.ready()
            played = 0  # samples per channel
            began = time.monotonic()
            for record in records:
                if session.stopping or isinstance(record, CallEnd):
                    break  # the recording is over, or the server is stopping: end the replay where it is
                if isinstance(record, AudioChunk):
                    await session.feed(record)
                    # Real-time pace (or `speed` times it): the latency the agent sees is the product's.
                    played += record.samples.shape[-1]
                    due = began + played / record.sample_rate_hz / speed
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
            await session.end()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("demo call %s failed", session.call_id)
        finally:
            session.close()

    def close(self) -> None:
        """Stop every replay (shutdown)."""
        for task in list(self._tasks):
            task.cancel()
