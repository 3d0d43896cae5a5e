"""A bounded pool for Whisper decodes shared by every live call, with finals before partials.

Decoding never runs on the event loop: jobs go to a fixed number of worker threads. Finals always queue and
run first (priority 0, FIFO); a partial runs only when a worker would otherwise be idle, and is refused at once
when none is. Under load the service therefore drops partials rather than delaying finals, and the caller
tells its client so.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

_FINAL, _PARTIAL = 0, 1


class DecodeScheduler:
    """`workers` decode threads behind a priority queue. Start it inside the running event loop."""

    def __init__(self, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError("at least one decode worker is needed")
        self.workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
        self._queue: asyncio.PriorityQueue[tuple[int, int, Callable[[], Any], asyncio.Future[Any]]] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._seq = itertools.count()
        self._busy = 0
        self.dropped_partials = 0

    async def start(self) -> None:
        self._queue = asyncio.PriorityQueue()
        self._tasks = [asyncio.create_task(self._worker(), name=f"decode-{i}") for i in range(self.workers)]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._executor.shutdown(wait=True, cancel_futures=True)

    @property
    def backlog(self) -> int:
        """Jobs waiting for a worker (readable from a worker thread: a length read under the GIL)."""
        return self._queue.qsize() if self._queue is not None else 0

    @property
    def load(self) -> int:
        """Jobs running or waiting."""
        return self._busy + (self._queue.qsize() if self._queue is not None else 0)

    def submit_final(self, job: Callable[[], T]) -> asyncio.Future[T]:
        """Queue a final decode; it runs before any partial queued now or later."""
        return self._put(_FINAL, job)

    def offer_partial(self, job: Callable[[], T], count_drop: bool = True) -> asyncio.Future[T] | None:
        """Run an optional decode (a partial, a prefetch) if a worker is free; None (counted as dropped) if not."""
        if self.load >= self.workers:
            if count_drop:
                self.dropped_partials += 1
            return None
        return self._put(_PARTIAL, job)

    def _put(self, priority: int, job: Callable[[], Any]) -> asyncio.Future[Any]:
        if self._queue is None:
            raise RuntimeError("DecodeScheduler.start() was not awaited")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((priority, next(self._seq), job, future))
        return future

    async def _worker(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            _priority, _seq, job, future = await self._queue.get()
            if future.cancelled():
                continue
            self._busy += 1
            try:
                result = await loop.run_in_executor(self._executor, job)
            except Exception as e:  # the caller decides what a failed decode means for its call
                if not future.done():
                    future.set_exception(e)
            else:
                if not future.done():
                    future.set_result(result)
            finally:
                self._busy -= 1
