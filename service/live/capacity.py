"""How many live calls this process decodes at once, and where a call beyond that goes (issue #30).

A box that decodes more live calls than its cores carry makes every call on it late, not only the last one. So
each process knows its capacity (`live.capacity`: by default `live.calls_per_core` times the cores it may use)
and keeps it: a call that would go past it is not decoded here. When another replica has room (each publishes
its load in Redis, `LoadBoard`), the websocket upgrade is answered 503 `at_capacity` and the front proxy
(deploy/nginx.conf, `proxy_next_upstream http_503`) tries the next replica; when none has room, the call is taken
record-only: its audio is kept and it is scored after the call as a recording, never dropped.

The figures and the decision are pure functions (`usable_cores`, `live_capacity`, `admit`); `LiveLoad` counts
this process's calls; the boards read and write the other replicas' loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from service.errors import ServiceError
from service.live.redis_bus import raise_if_cancelled
from service.metrics import LIVE_ADMISSIONS
from service.protocol import CloseCode

log = logging.getLogger(__name__)

#: The cgroup v2 CPU limit of the process's container ("QUOTA PERIOD" or "max PERIOD"; Kubernetes' limits.cpu).
CPU_MAX = Path("/sys/fs/cgroup/cpu.max")

#: How a live call is taken: decoded here, sent on to another replica (503 at the upgrade), or recorded only.
Admission = Literal["decoded", "redirected", "record_only"]
#: How a call admitted here is carried.
Mode = Literal["decoded", "record_only"]


def quota_cores(cpu_max: str | None) -> float | None:
    """The cores a cgroup v2 `cpu.max` text allows ("200000 100000" -> 2.0); None for no quota ("max ...", no
    file, or text that is not a quota)."""
    parts = (cpu_max or "").split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = float(parts[0]), float(parts[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def usable_cores(affinity: int, cpu_max: str | None) -> float:
    """The cores a process may use: those it may run on (`os.sched_getaffinity`), lowered by a cgroup CPU quota
    when one is set (a container limited to 1.5 cores on a 16-core node has 1.5)."""
    quota = quota_cores(cpu_max)
    return min(float(affinity), quota) if quota is not None else float(affinity)


def live_capacity(setting: str, calls_per_core: float, cores: float) -> int | None:
    """The live calls a process decodes at once: `setting` is `auto` (`calls_per_core` x `cores`, rounded down,
    at least 1), `off` (None: no limit) or a number of calls."""
    if setting == "off":
        return None
    if setting == "auto":
        return max(1, math.floor(calls_per_core * cores + 1e-9))
    return int(setting)


def process_cores() -> float:
    """The cores this process may use (its CPU affinity and its container's quota)."""
    try:
        cpu_max: str | None = CPU_MAX.read_text(encoding="ascii")
    except OSError:
        cpu_max = None
    return usable_cores(len(os.sched_getaffinity(0)), cpu_max)


def at_capacity(capacity: int | None) -> ServiceError:
    """A call refused because this process decodes its capacity of live calls (a demo replay on a full box)."""
    return ServiceError("at_capacity", f"this server is decoding its capacity of live calls ({capacity}); try again "
                        "later", 503, CloseCode.UNAVAILABLE, {"Retry-After": str(RETRY_AFTER_S)})


#: What a call sent on to another replica is told to wait before trying again itself (the proxy tries at once).
RETRY_AFTER_S = 2


def admit(decoded: int, capacity: int | None, others_have_room: bool | None, can_record: bool) -> Admission:
    """Where a new live call goes: decoded here while this process has room (`decoded` calls of `capacity`;
    None: no limit); else to another replica when one is known to have room (`others_have_room`: True, False, or
    None when unknown: a single replica, or Redis unreachable); else recorded only. A process that cannot record
    (no database) decodes the call anyway: a late call is better than a lost one."""
    if capacity is None or decoded < capacity:
        return "decoded"
    if others_have_room:
        return "redirected"
    return "record_only" if can_record else "decoded"


@dataclass(frozen=True, slots=True)
class LoadFigures:
    """A replica's live calls as it publishes them: calls decoded, calls recorded only, and its capacity (None:
    no limit)."""

    calls: int
    record_only: int
    capacity: int | None

    @property
    def full(self) -> bool:
        return self.capacity is not None and self.calls >= self.capacity

    def to_json(self) -> str:
        return json.dumps({"calls": self.calls, "record_only": self.record_only, "capacity": self.capacity})

    @classmethod
    def from_json(cls, text: str) -> LoadFigures | None:
        """A published load; None for text that is not one (another version's, a stray key)."""
        try:
            data = json.loads(text)
            capacity = data["capacity"]
            return cls(int(data["calls"]), int(data.get("record_only", 0)),
                       None if capacity is None else int(capacity))
        except (ValueError, KeyError, TypeError):
            return None


class LoadBoard(Protocol):
    """Where replicas tell each other how full they are."""

    def changed(self) -> None:
        """This process's load changed: publish it soon (not waiting for the next beat)."""

    async def others_have_room(self) -> bool | None:
        """Whether another replica has room for a decoded call; None when that cannot be known."""

    async def start(self) -> None:
        """Start publishing."""

    async def stop(self) -> None:
        """Stop publishing and withdraw this process's load."""


@dataclass
class LiveLoad:
    """This process's live calls against its capacity: seats are taken when a call is admitted (at the
    websocket upgrade, or when a demo starts) and given back when it ends."""

    #: Calls decoded at once (None: no limit).
    capacity: int | None
    decoded: int = 0
    record_only: int = 0
    #: Told of every change (the Redis board publishes it at once).
    board: LoadBoard | None = None

    @property
    def full(self) -> bool:
        return self.capacity is not None and self.decoded >= self.capacity

    def figures(self) -> LoadFigures:
        return LoadFigures(self.decoded, self.record_only, self.capacity)

    def take(self, mode: Mode) -> Seat:
        """A seat for a call carried as `mode`."""
        seat = Seat(self, mode)
        self._count(mode, +1)
        return seat

    def _count(self, mode: Mode, step: int) -> None:
        if mode == "decoded":
            self.decoded += step
        else:
            self.record_only += step
        if self.board is not None:
            self.board.changed()


@dataclass(eq=False)
class Seat:
    """One admitted call's place in its process's `LiveLoad` (given back once, by `release`)."""

    load: LiveLoad
    mode: Mode
    released: bool = False

    def move(self, mode: Mode) -> None:
        """The call is carried as `mode` from now (a reconnect of a call recorded only stays recorded only)."""
        if self.released or mode == self.mode:
            return
        self.load._count(self.mode, -1)
        self.load._count(mode, +1)
        self.mode = mode

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.load._count(self.mode, -1)


def count_admission(outcome: Admission) -> None:
    LIVE_ADMISSIONS.labels(outcome).inc()


class LocalBoard:
    """The board of a single process: no other replica is known."""

    def changed(self) -> None:
        return None

    async def others_have_room(self) -> bool | None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


#: Seconds between publications of a replica's load (and at each admission and end); a load not renewed for
#: LOAD_TTL_S is gone (its replica died).
LOAD_BEAT_S = 2.0
LOAD_TTL_S = 3 * LOAD_BEAT_S
#: Longest an admission on a full replica waits for the other replicas' loads before it counts them as unknown.
READ_TIMEOUT_S = 0.5


class RedisLoadBoard:
    """Replicas' loads in Redis: `{prefix}:load:{replica}` (the replica's `LoadFigures` as JSON, expiring after
    LOAD_TTL_S unless renewed) and `{prefix}:loads` (the set of replicas that published; a member whose key
    expired is dropped by the next reader)."""

    def __init__(self, redis: aioredis.Redis, replica: str, load: LiveLoad | None = None, *,
                 prefix: str = "huifang") -> None:
        self._redis = redis
        self.replica = replica
        self.prefix = prefix
        #: The load published (set by the app once it is built).
        self.load = load
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def _key(self, replica: str) -> str:
        return f"{self.prefix}:load:{replica}"

    @property
    def _members(self) -> str:
        return f"{self.prefix}:loads"

    def changed(self) -> None:
        self._wake.set()

    async def _publish(self) -> None:
        if self.load is None:
            return
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(self._key(self.replica), self.load.figures().to_json(), px=int(LOAD_TTL_S * 1000))
        pipe.sadd(self._members, self.replica)
        await pipe.execute()

    async def _beat(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation (stop) that arrives
            # as the awaited thing completes, and the loop would go on.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LOAD_BEAT_S):
                    await self._wake.wait()
            self._wake.clear()
            try:
                async with asyncio.timeout(READ_TIMEOUT_S * 4):
                    await self._publish()
            except (RedisError, OSError, TimeoutError) as e:
                raise_if_cancelled()
                # The others then count this replica as gone (its key expires) and send it nothing.
                log.debug("live load: could not publish (%s)", e)

    async def others_have_room(self) -> bool | None:
        try:
            return await asyncio.wait_for(self._read_others(), timeout=READ_TIMEOUT_S)
        except (RedisError, OSError, TimeoutError) as e:
            log.warning("live load: the other replicas' loads cannot be read (%s); taking the call here", e)
            return None

    async def _read_others(self) -> bool:
        members = sorted(str(m) for m in await self._redis.smembers(self._members) if str(m) != self.replica)
        if not members:
            return False
        values = await self._redis.mget([self._key(m) for m in members])
        gone = [m for m, v in zip(members, values, strict=True) if v is None]
        if gone:
            await self._redis.srem(self._members, *gone)
        loads = [LoadFigures.from_json(str(v)) for v in values if v is not None]
        return any(load is not None and not load.full for load in loads)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._beat())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await asyncio.wait_for(self._redis.delete(self._key(self.replica)), timeout=READ_TIMEOUT_S * 4)
