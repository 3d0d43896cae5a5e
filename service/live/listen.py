"""Listening in (监听): a supervisor's browser plays a live call's audio, both channels, read-only.

A tap on each live call's audio (`ListenTaps.feed`, called by the session for every `AudioChunk`) does nothing
while nobody listens: one dictionary look-up per chunk. While someone does, it turns the chunk into interleaved
little-endian PCM16 at the call's own rate (no resampling: the browser plays any rate) and hands it to each
listener's bounded queue, never waiting: a listener that falls `LISTENER_QUEUE_S` behind skips to the live edge.
Tracks that arrive one at a time (Twilio) are paired up first (`_Pairing`).

Across replicas (`RedisAudioRelay`, with `HUIFANG_REDIS_URL`): a listener on another replica registers in the
call's listener set (`{prefix}:listeners:{call_id}`, a sorted set of leases renewed while it listens) and
subscribes to the call's audio channel (`{prefix}:audio:{call_id}`, pub/sub: audio has no history worth keeping
and a listener that misses a moment just hears a gap). The replica streaming the call looks at its calls' listener
sets every `POLL_S` and publishes a call's audio only while its set is not empty, so an unheard call costs no
Redis traffic.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from service.live.redis_bus import raise_if_cancelled
from service.live.sources.base import AudioChunk
from service.metrics import LISTEN_SKIPPED

log = logging.getLogger(__name__)

#: Seconds of audio queued for a listener before it counts as behind and skips to the live edge.
LISTENER_QUEUE_S = 3.0
#: Seconds one track of a call sent track by track may run ahead of the other before its excess is dropped.
MAX_TRACK_SKEW_S = 2.0
#: Seconds between the streaming replica's looks at its calls' listener sets (how soon a remote listener hears).
POLL_S = 1.0
#: Seconds a remote listener's lease lasts; it is renewed every third of that while it listens.
LEASE_S = 15.0
#: Audio messages queued for Redis before new ones are dropped (the call never waits on Redis).
RELAY_QUEUE = 500


@dataclass(frozen=True, slots=True)
class TapFormat:
    """What a listener's audio frames are: PCM16 at `sample_rate_hz`, the `roles` interleaved in order."""

    sample_rate_hz: int
    roles: tuple[str, ...]


#: One frame for a listener (its format, interleaved PCM16 bytes), or None: the call ended.
Frame = tuple[TapFormat, bytes] | None


def pcm16_interleaved(samples: np.ndarray) -> bytes:
    """Float32 audio of shape (channels, n) in [-1, 1) as interleaved little-endian PCM16 (the inverse of the
    native protocol's decoding, so streamed PCM16 comes back sample for sample)."""
    scaled = np.rint(np.asarray(samples, dtype=np.float32).T * 32768.0)
    return np.clip(scaled, -32768, 32767).astype("<i2").tobytes()


@dataclass(eq=False)
class Listener:
    """One listener's queue of frames, bounded by `limit_bytes`: a listener that is behind skips what is
    queued (to the live edge) instead of slowing the call or growing without bound."""

    call_id: str
    limit_bytes: int
    frames: deque[Frame] = field(default_factory=deque)
    queued_bytes: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: Seconds of audio skipped because the listener was behind.
    skipped_s: float = 0.0
    #: Set by the relay side to stop a remote listener's work.
    closed: bool = False

    def put(self, frame: Frame) -> None:
        if frame is not None and self.queued_bytes + len(frame[1]) > self.limit_bytes:
            skipped = sum(len(f[1]) / (2 * len(f[0].roles) * f[0].sample_rate_hz) for f in self.frames if f)
            self.skipped_s += skipped
            LISTEN_SKIPPED.inc(skipped)
            self.frames.clear()
            self.queued_bytes = 0
        self.frames.append(frame)
        if frame is not None:
            self.queued_bytes += len(frame[1])
        self.wake.set()

    async def get(self) -> Frame:
        """The next frame, waiting for one."""
        while not self.frames:
            self.wake.clear()
            await self.wake.wait()
        frame = self.frames.popleft()
        if frame is not None:
            self.queued_bytes -= len(frame[1])
        return frame


def listener_for(call_id: str, sample_rate_hz: int = 16000, channels: int = 2) -> Listener:
    """A listener whose queue holds `LISTENER_QUEUE_S` of the call's audio."""
    return Listener(call_id, int(LISTENER_QUEUE_S * sample_rate_hz * channels * 2))


@dataclass(eq=False)
class _Pairing:
    """Tracks sent one at a time, paired into whole frames: what of each track is not yet matched by the other."""

    channels: int
    pending: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pending = [np.zeros(0, dtype=np.float32) for _ in range(self.channels)]

    def add(self, channel: int, samples: np.ndarray, max_ahead: int) -> np.ndarray | None:
        self.pending[channel] = np.concatenate([self.pending[channel], samples])[-max_ahead:]
        n = min(len(p) for p in self.pending)
        if n == 0:
            return None
        block = np.stack([p[:n] for p in self.pending])
        self.pending = [p[n:] for p in self.pending]
        return block


@dataclass(eq=False)
class _Tap:
    call_id: str
    fmt: TapFormat
    listeners: set[Listener] = field(default_factory=set)
    #: Whether a replica elsewhere has listeners on the call (the relay publishes its audio).
    relayed: bool = False
    pairing: _Pairing | None = None

    def frame(self, chunk: AudioChunk) -> bytes | None:
        if chunk.channel is None:
            return pcm16_interleaved(chunk.samples)
        if len(self.fmt.roles) == 1:
            return pcm16_interleaved(chunk.samples[np.newaxis, :])
        if self.pairing is None:
            self.pairing = _Pairing(len(self.fmt.roles))
        block = self.pairing.add(chunk.channel, chunk.samples, int(MAX_TRACK_SKEW_S * chunk.sample_rate_hz))
        return None if block is None else pcm16_interleaved(block)


class ListenTaps:
    """The listening taps of this process's live calls. Used from the event loop only."""

    def __init__(self) -> None:
        self._taps: dict[str, _Tap] = {}
        #: Relays audio to listeners on other replicas (Redis); None in a single process.
        self.relay: RedisAudioRelay | None = None

    def open(self, call_id: str, sample_rate_hz: int, roles: list[str]) -> None:
        """A call starts streaming here (a continued call keeps its listeners)."""
        fmt = TapFormat(sample_rate_hz, tuple(roles))
        tap = self._taps.get(call_id)
        if tap is None:
            self._taps[call_id] = _Tap(call_id, fmt)
        else:
            tap.fmt, tap.pairing = fmt, None

    def close(self, call_id: str) -> None:
        """The call is over here: its listeners' streams end."""
        tap = self._taps.pop(call_id, None)
        if tap is None:
            return
        for listener in tap.listeners:
            listener.put(None)
        if tap.relayed and self.relay is not None:
            self.relay.send_end(call_id)

    def streams(self, call_id: str) -> bool:
        """Whether this process streams the call."""
        return call_id in self._taps

    def calls(self) -> list[str]:
        return list(self._taps)

    def set_relayed(self, call_id: str, relayed: bool) -> None:
        tap = self._taps.get(call_id)
        if tap is not None:
            tap.relayed = relayed

    def feed(self, call_id: str, chunk: AudioChunk) -> None:
        """A chunk of the call's audio: nothing to do unless someone listens."""
        tap = self._taps.get(call_id)
        if tap is None or not (tap.listeners or tap.relayed):
            return
        data = tap.frame(chunk)
        if data is None:
            return
        for listener in tap.listeners:
            listener.put((tap.fmt, data))
        if tap.relayed and self.relay is not None:
            self.relay.send(call_id, tap.fmt, data)

    def listen(self, call_id: str) -> tuple[Listener, TapFormat] | None:
        """Listen to a call streamed here, with its audio's format; None when it is not streamed here."""
        tap = self._taps.get(call_id)
        if tap is None:
            return None
        listener = listener_for(call_id, tap.fmt.sample_rate_hz, len(tap.fmt.roles))
        tap.listeners.add(listener)
        return listener, tap.fmt

    def unlisten(self, listener: Listener) -> None:
        tap = self._taps.get(listener.call_id)
        if tap is not None:
            tap.listeners.discard(listener)


def _encode(fmt: TapFormat, data: bytes) -> str:
    # The client decodes responses as text: audio travels base64-encoded, its format in front of it.
    return f"a|{fmt.sample_rate_hz}|{','.join(fmt.roles)}|{base64.b64encode(data).decode()}"


def _decode(message: str) -> tuple[bool, Frame]:
    """A relayed message: (understood, the frame or None when the call ended)."""
    if message == "e":
        return True, None
    parts = message.split("|", 3)
    if len(parts) != 4 or parts[0] != "a":
        return False, None
    try:
        return True, (TapFormat(int(parts[1]), tuple(parts[2].split(","))), base64.b64decode(parts[3]))
    except ValueError:
        return False, None


class RedisAudioRelay:
    """Live calls' audio to listeners on other replicas, through Redis, only while someone listens: the relay
    of `taps` (it attaches itself)."""

    def __init__(self, redis: aioredis.Redis, taps: ListenTaps, *, prefix: str = "huifang",
                 live_key: Callable[[str], str] | None = None) -> None:
        self._redis = redis
        self._taps = taps
        self.prefix = prefix
        #: The key naming the replica that streams a call (`redis_bus.live_key`): a listener's call still on.
        self._live_key = live_key
        self._out: asyncio.Queue[tuple[str, str]] = asyncio.Queue(maxsize=RELAY_QUEUE)
        self._tasks: list[asyncio.Task[None]] = []
        self._listening: dict[Listener, asyncio.Task[None]] = {}
        self.dropped = 0
        taps.relay = self

    def _listeners_key(self, call_id: str) -> str:
        return f"{self.prefix}:listeners:{call_id}"

    def _channel(self, call_id: str) -> str:
        return f"{self.prefix}:audio:{call_id}"

    # -- the streaming replica's side ----------------------------------------------------------------------------

    def send(self, call_id: str, fmt: TapFormat, data: bytes) -> None:
        self._queue(call_id, _encode(fmt, data))

    def send_end(self, call_id: str) -> None:
        self._queue(call_id, "e")

    def _queue(self, call_id: str, message: str) -> None:
        try:
            self._out.put_nowait((self._channel(call_id), message))
        except asyncio.QueueFull:
            self.dropped += 1  # Redis is slow or away: remote listeners hear a gap, the call goes on

    async def _publish_loop(self) -> None:
        while True:
            batch = [await self._out.get()]
            while not self._out.empty() and len(batch) < 100:
                batch.append(self._out.get_nowait())
            try:
                pipe = self._redis.pipeline(transaction=False)
                for channel, message in batch:
                    pipe.publish(channel, message)
                await pipe.execute()
            except (RedisError, OSError) as e:
                raise_if_cancelled()
                log.warning("listen-in relay: cannot publish audio (%s)", e)
                await asyncio.sleep(POLL_S)

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            calls = self._taps.calls()
            if not calls:
                continue
            try:
                now_ms = int(time.time() * 1000)
                pipe = self._redis.pipeline(transaction=False)
                for call_id in calls:
                    pipe.zremrangebyscore(self._listeners_key(call_id), "-inf", now_ms)
                    pipe.zcard(self._listeners_key(call_id))
                answers = await pipe.execute()
            except (RedisError, OSError) as e:
                raise_if_cancelled()
                log.warning("listen-in relay: cannot read the listener sets (%s)", e)
                continue
            for call_id, count in zip(calls, answers[1::2], strict=True):
                self._taps.set_relayed(call_id, bool(count))

    # -- a listener's side ---------------------------------------------------------------------------------------

    async def listen(self, call_id: str) -> Listener:
        """Listen to a call streamed on another replica: subscribed before the lease is taken, so nothing the
        streaming replica publishes for this listener is missed. `unlisten` when done."""
        listener = listener_for(call_id)
        member = secrets.token_hex(8)
        pubsub = self._redis.pubsub()
        await pubsub.subscribe(self._channel(call_id))
        task = asyncio.create_task(self._receive(listener, pubsub, member))
        self._listening[listener] = task
        return listener

    async def _receive(self, listener: Listener, pubsub: Any, member: str) -> None:
        key = self._listeners_key(listener.call_id)
        renew_at = 0.0
        try:
            while not listener.closed:
                now = time.monotonic()
                if now >= renew_at:
                    renew_at = now + LEASE_S / 3
                    await self._redis.zadd(key, {member: int((time.time() + LEASE_S) * 1000)})
                    await self._redis.pexpire(key, int(LEASE_S * 1000))
                    if self._live_key is not None and not await self._redis.exists(self._live_key(listener.call_id)):
                        listener.put(None)  # the call's replica stopped holding it
                        return
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None or not isinstance(message.get("data"), str):
                    continue
                understood, frame = _decode(message["data"])
                if not understood:
                    continue
                listener.put(frame)
                if frame is None:
                    return
        except (RedisError, OSError) as e:
            log.warning("listen-in relay: lost Redis while relaying call %s (%s)", listener.call_id, e)
            listener.put(None)
        finally:
            with contextlib.suppress(RedisError, OSError):
                await self._redis.zrem(key, member)
            with contextlib.suppress(RedisError, OSError):
                await pubsub.unsubscribe()
                await pubsub.aclose()

    async def unlisten(self, listener: Listener) -> None:
        listener.closed = True
        task = self._listening.pop(listener, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # -- lifecycle -------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._publish_loop()), asyncio.create_task(self._poll_loop())]

    async def stop(self) -> None:
        for listener in list(self._listening):
            await self.unlisten(listener)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
