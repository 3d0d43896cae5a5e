"""The one loop of the service's background workers (recording jobs, the outbox, the retention sweep).

`concurrency` tasks each run a step again and again: a step that did some work runs again at once; one that
found nothing to do (or failed) waits until `notify()` is called or `poll_s` has passed, so work queued by this
process starts at once and work queued by another process (a replica, the CLI) within a poll. A step that raises
is logged and the loop goes on: a database hiccup must not stop a worker for good. `stop()` cancels the tasks and
waits for them; what a step had under way is for its owner to settle (hand its jobs back, let its threads
finish).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

#: One step of worker `index`: True when it did some work (run it again at once), False when there was none.
Step = Callable[[int], Awaitable[bool]]


class WorkerLoop:
    """`concurrency` asyncio tasks running `step`, woken by `notify()` or every `poll_s`."""

    def __init__(self, name: str, step: Step, concurrency: int, poll_s: float) -> None:
        #: Says whose loop it is in the log (`recording worker`, `outbox`).
        self.name = name
        self.step = step
        self.concurrency = concurrency
        self.poll_s = poll_s
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(i)) for i in range(self.concurrency)]

    def notify(self) -> None:
        """Work was queued: idle workers look now rather than at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        """Cancel the workers and wait until they have stopped."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _run(self, index: int) -> None:
        while True:
            try:
                worked = await self.step(index)
            except Exception:  # noqa: BLE001 - a database hiccup or a bug in one step: log it and go on
                log.exception("%s %d: a step failed; trying again", self.name, index)
                worked = False
            if not worked:
                # Cleared after the wait, not before: a notify that came while the step ran is not lost.
                # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation (stop) that
                # arrives as the wake-up does.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_s):
                        await self._wake.wait()
                self._wake.clear()
