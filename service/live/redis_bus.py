"""The event bus and call claims shared by replicas, in Redis (`HUIFANG_REDIS_URL`; AUTH and TLS through the URL,
e.g. `rediss://:secret@redis.internal:6380/0`).

Events: one Redis Stream per call (`{prefix}:events:{call_id}`), written by the replica that holds the call and
read by every replica with a screen on it. A stream is the history (a late screen reads it from the start,
skipping partials) and the live feed (XREAD from the last entry seen) in one ordered log, so "history first, then
live, nothing lost or doubled in between" is an entry id comparison, and a reader that lost Redis for a while
resumes where it was. Streams are bounded (MAXLEN, approximate) and expire (`max_call_s` while live, then
`keep_s` after the end). Pub/sub was the other candidate: it would need a stored history beside it and a
handover between the two, and it drops what a subscriber misses while disconnected (docs/scale-out.md).

Writes never wait on Redis: the call's `publish` puts the entry on a bounded in-process queue that one writer
task sends in order, pipelined. Reads are multiplexed: one XREAD per process blocks on every followed stream
plus a wake-up stream of this replica (written when a screen starts following a new call).

Posted events (a supervisor's note written on any replica): the replica that streams the call (its claim says
which) is sent the event on its inbox stream (`{prefix}:inbox:{replica}`, read with the wake-up stream), and
publishes it into the call's stream itself. Only that replica writes a call's stream, so entry ids stay its own
and in order (an id made elsewhere, by another clock, could be refused or refuse the call's next entries).

Claims: `{prefix}:live:{call_id}` (which replica streams the call) and `{prefix}:owner:{token}` (a sorted set
of the token's live calls, scored by expiry) are taken by one Lua script, so two replicas never both accept a
call id or a token's call past its limit; `{prefix}:demos` counts demo replays the same way. Claims are leases
renewed by a heartbeat: a replica that dies frees its calls within `lease_s`.

Redis unreachable: calls go on (their own socket still gets every event), the writer keeps up to
`QUEUE_LIMIT` entries and sends them when Redis is back; screens are told (`events_unavailable`) and resume
when it returns; new calls are claimed on this replica's counts only (refusing them would lose the analysis of
real customer calls), and `/readyz` reports the problem.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from service.live.claims import LocalClaims, call_in_progress, too_many_calls, too_many_demos
from service.live.hub import BusUnavailable, Streaming, Subscription
from service.metrics import BUS_DELAY, BUS_ERRORS
from service.protocol import ErrorEvent, dump

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Entries the writer holds while Redis is unreachable before it drops new ones (a few minutes of many calls).
QUEUE_LIMIT = 50_000
#: Entries sent per pipeline round trip.
BATCH = 500
#: Longest a blocking XREAD waits before the reader looks at its followed calls again (milliseconds).
BLOCK_MS = 5_000
#: Seconds between attempts while Redis is unreachable, doubling up to the last.
RETRY_S = (0.2, 0.5, 1.0, 2.0, 5.0)
#: Seconds a Redis command may take before Redis counts as unreachable.
COMMAND_TIMEOUT_S = 5.0

#: Seconds between checks that the calls followed here are still held by a replica, and how many checks in a row
#: must find a call's claim gone (its replica died) before its screens are told and closed.
LOST_CHECK_S = 5.0
LOST_AFTER = 3

#: Seconds a claim waits for Redis while it is known to be unreachable.
CLAIM_TIMEOUT_DOWN_S = 0.3

#: Entries kept in a replica's inbox of posted events (it reads them as they come; this bounds a dead one's).
INBOX_LIMIT = 1000

#: Stream entry kinds besides the events' own types.
OPEN, END = "__open__", "__end__"


def raise_if_cancelled() -> None:
    """Re-raise a cancellation that a Redis error stands for. redis-py answers a cancellation that lands during a
    command by dropping the connection and raising a connection error, so a loop that catches Redis errors and
    goes on would outlive its own stop (a claims heartbeat renewing the claims of a replica that stopped). Call
    first in such an except block."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def connect(url: str) -> aioredis.Redis:
    """A client for `url` (redis:// or rediss://, with password and database in the URL); connects lazily."""
    return aioredis.Redis.from_url(url, decode_responses=True, socket_timeout=BLOCK_MS / 1000 + COMMAND_TIMEOUT_S,
                                   socket_connect_timeout=COMMAND_TIMEOUT_S, health_check_interval=30)


#: A stream entry as read with decode_responses: (id, fields).
Entry = tuple[str, dict[str, str]]


async def _xrange(redis: aioredis.Redis, key: str, end: str) -> list[Entry]:
    return cast(list[Entry], await redis.xrange(key, "-", end))


async def _last(redis: aioredis.Redis, key: str) -> str:
    """Id of the stream's last entry, "0-0" when it has none (or does not exist yet)."""
    last = cast(list[Entry], await redis.xrevrange(key, count=1))
    return last[0][0] if last else "0-0"


async def _xread(redis: aioredis.Redis, streams: dict[str, str]) -> list[tuple[str, list[Entry]]]:
    # Never block past the next lost-call check: the check runs between reads, so a longer block would stretch
    # `LOST_AFTER` checks well past LOST_AFTER * LOST_CHECK_S.
    answer = await redis.xread(cast(Any, streams), count=BATCH, block=min(BLOCK_MS, int(LOST_CHECK_S * 1000)))
    return cast(list[tuple[str, list[Entry]]], answer or [])


def _newer(entry_id: str, than: str) -> bool:
    """Whether stream entry `entry_id` comes after `than` (ids are "milliseconds-sequence")."""
    a, _, b = entry_id.partition("-")
    c, _, d = than.partition("-")
    return (int(a), int(b or 0)) > (int(c), int(d or 0))


def backoff(attempt: int) -> float:
    """Seconds to wait before attempt `attempt` (from 0) at reaching Redis again."""
    return RETRY_S[min(attempt, len(RETRY_S) - 1)]


class Writer(Protocol):
    """What `write_in_batches` keeps up to date: why writes cannot reach Redis now, or None."""

    write_problem: str | None


async def write_in_batches(outbox: asyncio.Queue[T], send: Callable[[list[T]], Awaitable[None]], writer: Writer,
                           what: str, items: str) -> None:
    """The one writer task of a bounded in-process queue: up to `BATCH` queued items at a time sent by `send`,
    in order; while Redis is unreachable the batch is retried with `backoff` (the queue keeps filling, its
    producers never wait), `writer.write_problem` says why, and the log says so once each way."""
    while True:
        batch = [await outbox.get()]
        while len(batch) < BATCH and not outbox.empty():
            batch.append(outbox.get_nowait())
        for attempt in range(1_000_000):
            try:
                await send(batch)
            except (RedisError, OSError) as e:
                raise_if_cancelled()
                if writer.write_problem is None:
                    log.error("%s: Redis unreachable (%s); holding %s until it is back", what, e, items)
                writer.write_problem = f"Redis unreachable: {type(e).__name__}"
                BUS_ERRORS.labels("write").inc()
                await asyncio.sleep(backoff(attempt))
                continue
            if writer.write_problem is not None:
                log.info("%s: Redis reachable again", what)
                writer.write_problem = None
            break


@dataclass(eq=False)
class _Follow:
    """A call this process has screens on: the last entry delivered and who gets the next ones."""

    call_id: str
    #: Id of the last stream entry handed to `subs` (None until the history cut is known).
    last_id: str | None = None
    subs: set[Subscription] = field(default_factory=set)
    #: Subscribers still reading their history, with the live entries that came meanwhile.
    joining: dict[Subscription, list[tuple[str, dict[str, str]]]] = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    #: When the last entry came (loop time), and how many checks in a row found the call's claim gone.
    last_seen: float = 0.0
    missing: int = 0


@dataclass(frozen=True, slots=True)
class _Out:
    """A stream entry on its way to Redis, with the id it was given when the call published it."""

    kind: str
    call_id: str
    entry_id: str
    fields: dict[str, str]


def live_key(prefix: str, call_id: str) -> str:
    """The claim naming the replica that streams `call_id` (`RedisClaims`); the hub checks that it still exists."""
    return f"{prefix}:live:{call_id}"


class RedisHub:
    """The `EventBus` of replicas sharing a Redis server."""

    def __init__(self, redis: aioredis.Redis, replica: str, *, prefix: str = "huifang", history_limit: int = 20_000,
                 live_ttl_s: float = 3 * 3600.0, keep_s: float = 3600.0) -> None:
        self._redis = redis
        self.replica = replica
        self.prefix = prefix
        self.history_limit = history_limit
        self.live_ttl_s = live_ttl_s
        self.keep_s = keep_s
        self._outbox: asyncio.Queue[_Out] = asyncio.Queue(maxsize=QUEUE_LIMIT)
        #: (milliseconds, sequence) of the last entry id given to each live call's stream.
        self._clock: dict[str, tuple[int, int]] = {}
        self._follows: dict[str, _Follow] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._joins: set[asyncio.Task[None]] = set()
        self._wake_key = f"{prefix}:wake:{replica}"
        self._wake_id = "$"
        self._inbox_key = self.inbox_key(replica)
        self._inbox_id = "$"
        #: Why events cannot go through Redis now (write or read side), or None.
        self.write_problem: str | None = None
        self.read_problem: str | None = None
        self.dropped = 0

    def _stream(self, call_id: str) -> str:
        return f"{self.prefix}:events:{call_id}"

    @property
    def redis(self) -> aioredis.Redis:
        """The client the bus reads and writes with (shared with the listening relay)."""
        return self._redis

    def inbox_key(self, replica: str) -> str:
        """The stream of events posted to `replica`'s calls from other replicas."""
        return f"{self.prefix}:inbox:{replica}"

    def _agent_key(self, call_id: str) -> str:
        return f"{self.prefix}:agent:{call_id}"

    # -- the calls' side: never waits -------------------------------------------------------------------------

    def _queue(self, kind: str, call_id: str, fields: dict[str, str]) -> None:
        """Stamp the entry with its stream id now (so that a batch sent again after a failure cannot add it
        twice) and queue it for the writer."""
        ms = max(int(time.time() * 1000), self._clock.get(call_id, (0, 0))[0])
        last_ms, last_seq = self._clock.get(call_id, (0, -1))
        seq = last_seq + 1 if ms == last_ms else 0
        self._clock[call_id] = (ms, seq)
        try:
            self._outbox.put_nowait(_Out(kind, call_id, f"{ms}-{seq}", {"k": kind, **fields}))
        except asyncio.QueueFull:
            self.dropped += 1
            BUS_ERRORS.labels("dropped").inc()
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("event bus: %d event(s) dropped, Redis has been unreachable too long", self.dropped)

    def open(self, call_id: str, agent_id: str | None = None) -> None:
        self._clock.pop(call_id, None)  # a fresh stream
        self._queue(OPEN, call_id, {"a": agent_id or ""})

    def publish(self, call_id: str, text: str, kind: str) -> None:
        # The wall clock, not the loop's: the reader may be another machine (its delay is a metric).
        self._queue(kind, call_id, {"t": text, "q": repr(time.time())})

    def close(self, call_id: str) -> None:
        self._queue(END, call_id, {})
        self._clock.pop(call_id, None)

    async def streaming(self, call_id: str) -> Streaming | None:
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.get(live_key(self.prefix, call_id))
            pipe.get(self._agent_key(call_id))
            holder, agent = await asyncio.wait_for(pipe.execute(), COMMAND_TIMEOUT_S)
        except (RedisError, OSError, TimeoutError) as e:
            raise BusUnavailable(f"Redis unreachable: {type(e).__name__}") from e
        if holder is None:
            return None
        return Streaming(call_id, str(agent) if agent else None)

    async def post(self, call_id: str, text: str, kind: str) -> bool:
        try:
            holder = await asyncio.wait_for(self._redis.get(live_key(self.prefix, call_id)), COMMAND_TIMEOUT_S)
            if holder is None:
                return False
            if holder == self.replica:
                return self._post_here(call_id, text, kind)
            inbox = self.inbox_key(str(holder))
            await asyncio.wait_for(self._redis.xadd(inbox, {"c": call_id, "t": text, "k": kind},
                                                    maxlen=INBOX_LIMIT, approximate=True), COMMAND_TIMEOUT_S)
            await asyncio.wait_for(self._redis.expire(inbox, 86400), COMMAND_TIMEOUT_S)
        except (RedisError, OSError, TimeoutError) as e:
            raise BusUnavailable(f"Redis unreachable: {type(e).__name__}") from e
        return True

    def _post_here(self, call_id: str, text: str, kind: str) -> bool:
        if call_id not in self._clock:
            return False  # ended meanwhile
        self.publish(call_id, text, kind)
        return True

    # -- the writer ---------------------------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        await write_in_batches(self._outbox, self._send, self, "event bus", "events")

    async def _send(self, batch: list[_Out]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        live_ttl, keep = int(self.live_ttl_s + self.keep_s), int(self.keep_s)
        for out in batch:
            key = self._stream(out.call_id)
            if out.kind == OPEN:
                pipe.delete(key)  # a restarted call id starts a fresh history
            pipe.xadd(key, cast(Any, out.fields), id=out.entry_id, maxlen=self.history_limit, approximate=True)
            if out.kind == OPEN:
                pipe.expire(key, live_ttl)
                pipe.set(self._agent_key(out.call_id), out.fields["a"], ex=live_ttl)
            elif out.kind == END:
                pipe.expire(key, keep)
                pipe.expire(self._agent_key(out.call_id), keep)
        for answer in await pipe.execute(raise_on_error=False):
            # An entry already there (its batch was sent before and the reply lost) is refused by its id: fine.
            # Any other refusal (Redis out of memory, a key of another type under our prefix) would be refused
            # again: it is counted and logged, not retried.
            if isinstance(answer, Exception) and "equal or smaller" not in str(answer):
                BUS_ERRORS.labels("refused").inc()
                log.error("event bus: Redis refused a write: %s", answer)

    # -- the screens' side --------------------------------------------------------------------------------------

    def subscribe(self, call_id: str, agent_id: str | None = None) -> Subscription:
        sub = Subscription(call_id=call_id, agent_id=agent_id)
        task = asyncio.create_task(self._join(sub))
        self._joins.add(task)
        task.add_done_callback(self._joins.discard)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        follow = self._follows.get(sub.call_id)
        if follow is None:
            return
        follow.subs.discard(sub)
        follow.joining.pop(sub, None)
        if not follow.subs and not follow.joining and follow.ready.is_set():
            del self._follows[sub.call_id]  # the reader drops the stream at its next round

    async def _join(self, sub: Subscription) -> None:
        """Deliver the history up to the follow's cut, then what came live meanwhile, then hand over to the
        reader. Retries while Redis is unreachable (the screen was told)."""
        key = self._stream(sub.call_id)
        follow = self._follows.get(sub.call_id)
        try:
            if follow is None:
                follow = self._follows[sub.call_id] = _Follow(sub.call_id,
                                                              last_seen=asyncio.get_running_loop().time())
                follow.joining[sub] = []
                follow.last_id = await self._retry(sub, lambda: _last(self._redis, key))
                follow.ready.set()
                await self._wake()  # the reader blocks on the streams it knew: have it follow this one too
            else:
                follow.joining[sub] = []
                await follow.ready.wait()
            cut = follow.last_id or "0-0"
            history = [] if cut == "0-0" else await self._retry(sub, lambda: _xrange(self._redis, key, cut))
            if history and history[0][1].get("k") != OPEN and sub.agent_id is not None:
                # A very long call's start was trimmed from its stream: its agent is kept beside it.
                agent = await self._retry(sub, lambda: self._redis.get(self._agent_key(sub.call_id)))
                history.insert(0, ("0-0", {"k": OPEN, "a": str(agent or "")}))
            if sub not in follow.joining:
                return  # unsubscribed meanwhile
            live = [(i, f) for i, f in follow.joining[sub] if _newer(i, cut)]  # the reader may have overlapped
            entries = [(fields, True) for _, fields in history] + [(fields, False) for _, fields in live]
            for fields, past in entries:
                if not self._deliver(sub, fields, history=past):
                    return
            follow.subs.add(sub)
        finally:
            if follow is not None:
                follow.joining.pop(sub, None)
                if not follow.subs and not follow.joining and self._follows.get(sub.call_id) is follow:
                    del self._follows[sub.call_id]

    async def _retry(self, sub: Subscription, read: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(1_000_000):
            try:
                return await read()
            except (RedisError, OSError) as e:
                self._tell(sub, e)
                await asyncio.sleep(backoff(attempt))
        raise AssertionError("unreachable")

    def _tell(self, sub: Subscription, error: BaseException) -> None:
        if self.read_problem is None:
            log.error("event bus: cannot read events from Redis (%s)", error)
        self.read_problem = f"Redis unreachable: {type(error).__name__}"
        BUS_ERRORS.labels("read").inc()
        if not sub.interrupted:
            sub.interrupted = True
            sub.put(dump(ErrorEvent(code="events_unavailable", message="the event bus (Redis) cannot be reached: "
                                    "this screen resumes when it is back; the call itself goes on")))

    def _deliver(self, sub: Subscription, fields: dict[str, str], history: bool) -> bool:
        """Hand one stream entry to `sub`; False once its stream is over (ended, or not its call)."""
        kind = fields.get("k", "")
        if kind == OPEN:
            sub.started = True
            if sub.agent_id is not None and fields.get("a") != sub.agent_id:
                sub.forbidden = True  # an agent may watch only the calls assigned to them
                sub.put(None)
                return False
            return True
        if kind == END:
            sub.put(None)
            return False
        if history and kind == "partial":
            return True  # a late screen gets the transcript, not the guesses that came before it
        sub.started = True
        sub.interrupted = False
        sub.put(fields.get("t", ""))
        return True

    async def _wake(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._redis.xadd(self._wake_key, {"w": "1"}, maxlen=10, approximate=False)
            await self._redis.expire(self._wake_key, 86400)

    async def _read_loop(self) -> None:
        reader = self._redis
        attempt = 0
        checked = asyncio.get_running_loop().time()
        while True:
            if asyncio.get_running_loop().time() - checked >= LOST_CHECK_S:
                checked = asyncio.get_running_loop().time()
                with contextlib.suppress(RedisError, OSError):
                    await self._check_lost()
            streams = {self._wake_key: self._wake_id, self._inbox_key: self._inbox_id}
            streams |= {self._stream(cid): f.last_id for cid, f in self._follows.items() if f.last_id is not None}
            try:
                answer = await _xread(reader, streams)
            except (RedisError, OSError) as e:
                raise_if_cancelled()
                for follow in list(self._follows.values()):
                    for sub in list(follow.subs):
                        self._tell(sub, e)
                await asyncio.sleep(backoff(attempt))
                attempt += 1
                continue
            attempt = 0
            if self.read_problem is not None:
                log.info("event bus: reading events from Redis again")
                self.read_problem = None
            now = time.time()
            for key, entries in answer:
                if key == self._wake_key:
                    self._wake_id = entries[-1][0]
                    continue
                if key == self._inbox_key:
                    self._inbox_id = entries[-1][0]
                    for _, posted in entries:
                        if not self._post_here(posted.get("c", ""), posted.get("t", ""), posted.get("k", "")):
                            log.info("event bus: an event posted to call %s came after it ended here",
                                     posted.get("c"))
                    continue
                found = self._follows.get(key[len(self.prefix) + len(":events:"):])
                if found is None or found.last_id is None:
                    continue
                follow = found
                follow.last_seen, follow.missing = asyncio.get_running_loop().time(), 0
                for entry_id, fields in entries:
                    follow.last_id = entry_id
                    for buffered in follow.joining.values():
                        buffered.append((entry_id, fields))
                    for sub in list(follow.subs):
                        if not self._deliver(sub, fields, history=False):
                            follow.subs.discard(sub)
                    sent = fields.get("q")
                    if sent is not None and follow.subs:
                        BUS_DELAY.observe(max(0.0, now - float(sent)))
                if not follow.subs and not follow.joining:
                    self._follows.pop(follow.call_id, None)

    async def _check_lost(self) -> None:
        """End the screens of calls whose replica died: no entry for a while, no `end`, and the call's claim gone
        on `LOST_AFTER` checks in a row (a live call's claim is renewed every few seconds; one taken while Redis
        was away is put back by its replica's heartbeat)."""
        now = asyncio.get_running_loop().time()
        quiet = [f for f in self._follows.values()
                 if now - f.last_seen >= LOST_CHECK_S and any(sub.started for sub in f.subs)]
        if not quiet:
            return
        pipe = self._redis.pipeline(transaction=False)
        for follow in quiet:
            pipe.exists(live_key(self.prefix, follow.call_id))
        for follow, held in zip(quiet, await pipe.execute(), strict=True):
            follow.missing = 0 if held else follow.missing + 1
            if follow.missing < LOST_AFTER:
                continue
            log.warning("event bus: call %s is held by no replica any more and never ended; closing its screens",
                        follow.call_id)
            for sub in follow.subs:
                sub.put(dump(ErrorEvent(code="call_lost", message="the server streaming this call stopped without "
                                        "ending it; its events so far are in the call's history")))
                sub.put(None)
            follow.subs.clear()
            if not follow.joining:
                self._follows.pop(follow.call_id, None)

    # -- lifecycle -------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        # The wake-up stream is read from its current end; "$" on the first XREAD means "only newer".
        with contextlib.suppress(RedisError, OSError):
            self._wake_id = await _last(self._redis, self._wake_key)
            self._inbox_id = await _last(self._redis, self._inbox_key)
        self._tasks = [asyncio.create_task(self._write_loop()), asyncio.create_task(self._read_loop())]

    async def stop(self) -> None:
        """Send what the calls published (a few seconds at most), then stop."""
        deadline = asyncio.get_running_loop().time() + 5.0
        while not self._outbox.empty() and self.write_problem is None \
                and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        for task in [*self._tasks, *self._joins]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._joins, return_exceptions=True)
        if not self._outbox.empty():
            log.warning("event bus: %d event(s) not sent to Redis at shutdown", self._outbox.qsize())

    async def check(self) -> str | None:
        try:
            await asyncio.wait_for(self._redis.ping(), timeout=2.0)
        except (RedisError, OSError, TimeoutError) as e:
            return f"Redis unreachable: {type(e).__name__}"
        return self.write_problem or self.read_problem


# Claims: the script sees Redis's own clock, so replicas' clocks do not matter.
_CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 1 then return 'in_progress' end
local limit = tonumber(ARGV[3])
if limit > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= limit then return 'too_many' end
  redis.call('ZADD', KEYS[2], now + lease, ARGV[4])
  redis.call('PEXPIRE', KEYS[2], lease)
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', lease)
return 'ok'
"""

_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
local held = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], lease)
  held = 1
end
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[2], now + lease, ARGV[4])
  redis.call('PEXPIRE', KEYS[2], lease)
end
return held
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
"""

_CLAIM_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""

_RENEW_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
"""


class RedisClaims:
    """`CallClaims` across replicas, as leases in Redis renewed every `lease_s / 3` by this process."""

    def __init__(self, redis: aioredis.Redis, replica: str, *, prefix: str = "huifang", lease_s: float = 30.0) -> None:
        self._redis = redis
        self.replica = replica
        self.prefix = prefix
        self.lease_ms = int(lease_s * 1000)
        self._claim = redis.register_script(_CLAIM)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._claim_slot = redis.register_script(_CLAIM_SLOT)
        self._renew_slot = redis.register_script(_RENEW_SLOT)
        #: Calls and demos this process holds (renewed by the heartbeat), and the fallback counts.
        self.local = LocalClaims()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self.problem: str | None = None

    def _keys(self, call_id: str, owner: str | None) -> list[str]:
        return [live_key(self.prefix, call_id), f"{self.prefix}:owner:{owner or '-'}"]

    def _timeout(self) -> float:
        """How long a claim may wait for Redis: briefly while it is known to be away (a call must not wait
        seconds to start; the heartbeat finds out when it is back)."""
        return CLAIM_TIMEOUT_DOWN_S if self.problem else COMMAND_TIMEOUT_S

    def _unreachable(self, what: str, error: BaseException) -> None:
        if self.problem is None:
            log.error("call claims: Redis unreachable (%s); %s on this replica's counts only", error, what)
        self.problem = f"Redis unreachable: {type(error).__name__}"
        BUS_ERRORS.labels("claims").inc()

    async def claim(self, call_id: str, owner: str | None, max_per_owner: int) -> None:
        self.local.check(call_id, owner, max_per_owner)
        limit = max_per_owner if owner is not None else 0
        try:
            answer = await asyncio.wait_for(self._claim(keys=self._keys(call_id, owner), args=[
                self.replica, self.lease_ms, limit, call_id]), timeout=self._timeout())
        except (RedisError, OSError, TimeoutError) as e:
            self._unreachable("calls are admitted", e)
        else:
            self.problem = None
            if answer == "in_progress":
                raise call_in_progress(call_id)
            if answer == "too_many":
                raise too_many_calls()
        self.local.add(call_id, owner)

    def release(self, call_id: str, owner: str | None) -> None:
        self.local.release(call_id, owner)
        self._spawn(self._release(keys=self._keys(call_id, owner), args=[self.replica, call_id]))

    async def claim_demo(self, call_id: str, cap: int) -> None:
        await self.local.claim_demo(call_id, cap)
        try:
            ok = await asyncio.wait_for(self._claim_slot(keys=[f"{self.prefix}:demos"], args=[
                cap, self.lease_ms, call_id]), timeout=self._timeout())
        except (RedisError, OSError, TimeoutError) as e:
            self._unreachable("demo replays are admitted", e)
            return
        if not ok:
            self.local.release_demo(call_id)
            raise too_many_demos(cap)

    def release_demo(self, call_id: str) -> None:
        self.local.release_demo(call_id)
        self._spawn(self._redis.zrem(f"{self.prefix}:demos", call_id))

    def _spawn(self, work: Awaitable[Any]) -> None:
        async def run() -> None:
            try:
                await asyncio.wait_for(work, timeout=COMMAND_TIMEOUT_S)
            except (RedisError, OSError, TimeoutError) as e:
                # The lease runs out by itself.
                log.warning("call claims: could not release a claim (%s); it expires", e)
        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _beat(self) -> None:
        while True:
            raise_if_cancelled()  # a cancellation a Redis call swallowed whole
            await asyncio.sleep(self.lease_ms / 3000)
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancellation that arrives as the
                # ping completes, and a heartbeat that outlives its replica's stop keeps its claims alive.
                async with asyncio.timeout(COMMAND_TIMEOUT_S):
                    await self._redis.ping()
                for call_id, owner in self.local.held():
                    held = await self._renew(keys=self._keys(call_id, owner), args=[
                        self.replica, self.lease_ms, "1" if owner is not None else "0", call_id])
                    if not held:
                        # The lease ran out while Redis was away and may be someone else's now: take it back if free.
                        await self._redis.set(self._keys(call_id, owner)[0], self.replica, px=self.lease_ms, nx=True)
                for call_id in list(self.local.demos):
                    await self._renew_slot(keys=[f"{self.prefix}:demos"], args=[self.lease_ms, call_id])
                self.problem = None
            except (RedisError, OSError, TimeoutError) as e:
                raise_if_cancelled()
                self._unreachable("claims are kept", e)

    async def start(self) -> None:
        self._heartbeat = asyncio.create_task(self._beat())

    async def stop(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        for call_id, owner in self.local.held():
            self.release(call_id, owner)
        for call_id in list(self.local.demos):
            self.release_demo(call_id)
        await asyncio.gather(*self._tasks, return_exceptions=True)
