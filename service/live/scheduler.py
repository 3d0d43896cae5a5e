"""A bounded pool for Whisper decodes shared by every live call, with finals before partials.

Decoding never runs on the event loop: jobs go to a fixed number of worker threads. Finals always queue and
run first (priority 0, FIFO); a partial runs only when a worker would otherwise be idle, and is refused at once
when none is. Under load the service therefore drops partials rather than delaying finals, and the caller
tells its client so.

Finals submitted with a batch runner are decoded together: when a worker takes one, it also takes the other
finals waiting for the same runner (up to `max_batch`) and hands them over in one call. On two cores Whisper's
text decoder costs far less per utterance in a batch, which is what keeps four calls that start together on
time (see `asr.decoder.WindowDecoder.decode_batch`).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from service.metrics import DECODE_WAIT

log = logging.getLogger(__name__)

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741 - the item type of a batch

_FINAL, _PARTIAL = 0, 1

#: Decodes a batch of items, one result per item in order.
BatchRunner = Callable[[Sequence[Any]], list[Any]]


@dataclass(order=True)
class _Entry:
    priority: int
    seq: int
    job: Callable[[], Any] | None = field(compare=False)
    future: asyncio.Future[Any] = field(compare=False)
    #: For batchable finals: the item and the runner that decodes a list of them.
    item: Any = field(default=None, compare=False)
    runner: BatchRunner | None = field(default=None, compare=False)
    queued_at: float = field(default_factory=time.monotonic, compare=False)


class DecodeScheduler:
    """`workers` decode threads behind a priority queue. Start it inside the running event loop."""

    def __init__(self, workers: int = 1, max_batch: int = 8) -> None:
        if workers < 1:
            raise ValueError("at least one decode worker is needed")
        if max_batch < 1:
            raise ValueError("a batch holds at least one decode")
        self.workers = workers
        self.max_batch = max_batch
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
        self._heap: list[_Entry] = []
        self._waiting: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._seq = itertools.count()
        self._busy = 0
        self.dropped_partials = 0
        #: Finals queued or being decoded, and an event set while there are none: recordings scored on the same
        #: machine wait for it before each batch of theirs (`yield_to_live`), so a live call's finals are not
        #: queued behind an upload's decoding.
        self._finals = 0
        self.live_idle = threading.Event()
        self.live_idle.set()
        #: Sizes of the most recent batches (for benchmarks and logs; bounded, the service runs for months).
        self.batch_sizes: deque[int] = deque(maxlen=1024)

    async def start(self) -> None:
        self._waiting = asyncio.Event()
        self._tasks = [asyncio.create_task(self._worker(), name=f"decode-{i}") for i in range(self.workers)]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._executor.shutdown(wait=True, cancel_futures=True)

    @property
    def backlog(self) -> int:
        """Jobs waiting for a worker (readable from a worker thread: a length read under the GIL)."""
        return len(self._heap)

    @property
    def load(self) -> int:
        """Jobs running or waiting."""
        return self._busy + len(self._heap)

    def submit_batchable(self, item: I, runner: Callable[[Sequence[I]], list[T]]) -> asyncio.Future[T]:
        """Queue a final decode of `item`; it runs before any partial queued now or later, possibly in one
        `runner` call with other finals waiting for the same runner (compared with ==, so a bound method of one
        object is one runner)."""
        future = self._put(_Entry(_FINAL, next(self._seq), None, self._future(), item, runner))
        self._finals += 1
        self.live_idle.clear()
        return future

    def yield_to_live(self, max_wait_s: float) -> bool:
        """Called from another thread before it decodes a recording: wait until no live final is queued or
        being decoded, at most `max_wait_s` (so that scoring is slowed by live calls, never starved). Returns
        whether the live side was idle."""
        return self.live_idle.wait(max_wait_s)

    def _finals_done(self, count: int) -> None:
        self._finals = max(0, self._finals - count)
        if self._finals == 0:
            self.live_idle.set()

    def offer_partial(self, job: Callable[[], T], count_drop: bool = True) -> asyncio.Future[T] | None:
        """Run an optional decode (a partial, a prefetch) if a worker is free; None (counted as dropped) if not."""
        if self.load >= self.workers:
            if count_drop:
                self.dropped_partials += 1
            return None
        return self._put(_Entry(_PARTIAL, next(self._seq), job, self._future()))

    def _future(self) -> asyncio.Future[Any]:
        if self._waiting is None:
            raise RuntimeError("DecodeScheduler.start() was not awaited")
        return asyncio.get_running_loop().create_future()

    def _put(self, entry: _Entry) -> asyncio.Future[Any]:
        assert self._waiting is not None
        heapq.heappush(self._heap, entry)
        self._waiting.set()
        return entry.future

    async def _next(self) -> list[_Entry]:
        """The next job, with the finals that can join its batch."""
        assert self._waiting is not None
        while True:
            while not self._heap:
                self._waiting.clear()
                await self._waiting.wait()
            entry = heapq.heappop(self._heap)
            if entry.future.cancelled():
                if entry.runner is not None:
                    self._finals_done(1)
                continue
            if entry.runner is None:
                return [entry]
            runner = entry.runner
            peers = sorted(e for e in self._heap if e.runner is not None and e.runner == runner
                           and not e.future.cancelled())[: self.max_batch - 1]
            if peers:
                taken = {id(e) for e in peers}
                self._heap = [e for e in self._heap if id(e) not in taken]
                heapq.heapify(self._heap)
            return [entry, *peers]

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            entries = await self._next()
            self._busy += 1
            try:
                if entries[0].runner is None:
                    assert entries[0].job is not None
                    await self._run(loop, entries[0].job, entries)
                else:
                    try:
                        await self._run_batch(loop, entries[0].runner, entries)
                    finally:
                        self._finals_done(len(entries))
            finally:
                self._busy -= 1

    async def _run(self, loop: asyncio.AbstractEventLoop, job: Callable[[], Any], entries: list[_Entry]) -> None:
        try:
            result = await loop.run_in_executor(self._executor, job)
        except Exception as e:  # the caller decides what a failed decode means for its call
            _settle(entries[0].future, exception=e)
        else:
            _settle(entries[0].future, result)

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, runner: BatchRunner, entries: list[_Entry]) -> None:
        now = time.monotonic()
        for entry in entries:
            DECODE_WAIT.observe(now - entry.queued_at)
        items = [e.item for e in entries]
        self.batch_sizes.append(len(items))
        try:
            results = await loop.run_in_executor(self._executor, runner, items)
            if len(results) != len(items):
                raise RuntimeError(f"batch runner gave {len(results)} results for {len(items)} items")
        except Exception as e:
            if len(entries) == 1:
                _settle(entries[0].future, exception=e)
                return
            # One undecodable item must not fail the others: run them one by one to find out whose it is.
            log.warning("batch of %d decodes failed (%s); retrying one by one", len(entries), e)
            for entry in entries:
                await self._run_batch(loop, runner, [entry])
            return
        for entry, result in zip(entries, results, strict=True):
            _settle(entry.future, result)


def _settle(future: asyncio.Future[Any], result: Any = None, exception: BaseException | None = None) -> None:
    if future.done():
        return  # cancelled meanwhile: nobody is waiting
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)
