"""How floor messages reach the other replicas: not at all when the process is alone (`LocalFloorBus`), or
through one Redis Stream, `{prefix}:floor`, that every replica writes its calls' messages to and reads the
others' from (`RedisFloorBus`, with `HUIFANG_REDIS_URL`).

One stream for the whole floor, not one per call as the events have: a wallboard wants every call, so each
replica reads one key, in one order, and a replica starting reads the stream's recent history (it is bounded,
MAXLEN `floor.history`) to rebuild the board before it follows new entries. Owners republish their tiles and
open alerts every `floor.refresh_s`, so the history always holds every live call however quiet it is.

As for the events bus: publishing never waits (a bounded queue that one writer task sends, pipelined); Redis
unreachable, messages are held up to `QUEUE_LIMIT` and sent when it is back, the reader resumes from the last
entry it saw, and `/readyz` says so meanwhile. Whether a call is still held by a replica is its claim
(`live_key`, service/live/redis_bus.py): a replica that died leaves tiles whose claims are gone.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any, Protocol, cast

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from service.live.redis_bus import BATCH, QUEUE_LIMIT, backoff, live_key, raise_if_cancelled, write_in_batches
from service.metrics import BUS_ERRORS

log = logging.getLogger(__name__)

#: Longest a blocking read of the floor waits (milliseconds): the reader looks at its stop flag this often.
BLOCK_MS = 1000

#: Delivers a message of another replica (its JSON form, and that replica's name) to this process's floor.
Deliver = Callable[[dict[str, Any], str], None]


class FloorBus(Protocol):
    """What the floor needs of the replicas' shared transport."""

    shared: bool

    def publish(self, message: dict[str, Any]) -> None:
        """Send a message of this replica's calls to the others (never waits)."""

    async def start(self, deliver: Deliver) -> None:
        """Start reading the others' messages (the recent history first) into `deliver`."""

    async def stop(self) -> None:
        """Send what was published (a few seconds at most), then stop."""

    async def held(self, call_ids: list[str]) -> list[bool]:
        """Whether each call is still held by a replica (its claim exists)."""

    async def check(self) -> str | None:
        """Why the floor cannot reach the other replicas now, or None."""


class LocalFloorBus:
    """One process: there is nobody else to tell, and every call on the board is this process's own."""

    shared = False

    def publish(self, message: dict[str, Any]) -> None:
        return None

    async def start(self, deliver: Deliver) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def held(self, call_ids: list[str]) -> list[bool]:
        return [True] * len(call_ids)

    async def check(self) -> str | None:
        return None


class RedisFloorBus:
    """The floor of replicas sharing a Redis server: one stream, `{prefix}:floor`, bounded to `history`."""

    shared = True

    def __init__(self, redis: aioredis.Redis, replica: str, *, prefix: str = "huifang", history: int = 10_000) -> None:
        self._redis = redis
        self.replica = replica
        self.prefix = prefix
        self.key = f"{prefix}:floor"
        self.history = history
        self._outbox: asyncio.Queue[str] = asyncio.Queue(maxsize=QUEUE_LIMIT)
        self._tasks: list[asyncio.Task[None]] = []
        self.write_problem: str | None = None
        self.read_problem: str | None = None
        self.dropped = 0
        #: Set once the history has been read (the board is rebuilt).
        self.caught_up = asyncio.Event()

    def publish(self, message: dict[str, Any]) -> None:
        try:
            self._outbox.put_nowait(json.dumps(message, ensure_ascii=False))
        except asyncio.QueueFull:
            self.dropped += 1
            BUS_ERRORS.labels("dropped").inc()
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("floor: %d message(s) dropped, Redis has been unreachable too long", self.dropped)

    async def _write_loop(self) -> None:
        await write_in_batches(self._outbox, self._send, self, "floor", "messages")

    async def _send(self, batch: list[str]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for text in batch:
            pipe.xadd(self.key, {"r": self.replica, "m": text}, maxlen=self.history, approximate=True)
        await pipe.execute()

    def _deliver(self, deliver: Deliver, entries: list[tuple[str, dict[str, str]]]) -> None:
        for _, fields in entries:
            if fields.get("r") == self.replica:
                continue  # this replica's own: its board took them when they were made
            try:
                message = json.loads(fields.get("m", ""))
            except ValueError:
                log.warning("floor: an entry that is not JSON in %s; skipped", self.key)
                continue
            if isinstance(message, dict):
                deliver(message, fields.get("r", ""))

    async def _read_loop(self, deliver: Deliver) -> None:
        last: str | None = None
        attempt = 0
        while True:
            try:
                if last is None:
                    # The recent history first: the board of a replica that has just started.
                    history = cast(list[tuple[str, dict[str, str]]], await self._redis.xrange(self.key, "-", "+"))
                    last = history[-1][0] if history else "0-0"
                    self._deliver(deliver, history)
                    self.caught_up.set()
                    continue
                answer = await self._redis.xread({self.key: last}, count=BATCH, block=BLOCK_MS)
            except (RedisError, OSError) as e:
                raise_if_cancelled()
                if self.read_problem is None:
                    log.error("floor: cannot read the other replicas' calls from Redis (%s)", e)
                self.read_problem = f"Redis unreachable: {type(e).__name__}"
                BUS_ERRORS.labels("read").inc()
                await asyncio.sleep(backoff(attempt))
                attempt += 1
                continue
            attempt = 0
            if self.read_problem is not None:
                log.info("floor: reading the other replicas' calls again")
                self.read_problem = None
            for _, entries in cast(list[tuple[str, list[tuple[str, dict[str, str]]]]], answer or []):
                if entries:
                    last = entries[-1][0]
                    self._deliver(deliver, entries)

    async def start(self, deliver: Deliver) -> None:
        self._tasks = [asyncio.create_task(self._write_loop()), asyncio.create_task(self._read_loop(deliver))]

    async def stop(self) -> None:
        deadline = asyncio.get_running_loop().time() + 5.0
        while not self._outbox.empty() and self.write_problem is None \
                and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def held(self, call_ids: list[str]) -> list[bool]:
        pipe = self._redis.pipeline(transaction=False)
        for call_id in call_ids:
            pipe.exists(live_key(self.prefix, call_id))
        return [bool(held) for held in await pipe.execute()]

    async def check(self) -> str | None:
        return self.write_problem or self.read_problem
