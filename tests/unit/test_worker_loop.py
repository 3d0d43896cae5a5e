"""The worker loop (service/workers/loop.py) that recording jobs, the outbox and the retention sweep run on, and
the one name a process leases work under (service.ids.process_name). The lease helper is tested in
integration/test_leased_rows.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from service.ids import process_name
from service.workers.loop import WorkerLoop


async def _until(condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


@pytest.mark.asyncio
async def test_an_idle_loop_wakes_on_notify_long_before_its_poll() -> None:
    queue: list[str] = []
    done: list[str] = []

    async def step(_: int) -> bool:
        if not queue:
            return False
        done.append(queue.pop())
        return True

    loop = WorkerLoop("test", step, concurrency=2, poll_s=60.0)
    await loop.start()
    try:
        await asyncio.sleep(0.05)  # both workers found nothing and wait for the poll
        queue.extend(["a", "b", "c"])
        loop.notify()
        await _until(lambda: len(done) == 3, timeout_s=1.0)
    finally:
        await loop.stop()
    assert sorted(done) == ["a", "b", "c"]


@pytest.mark.asyncio
async def test_an_idle_loop_looks_again_at_each_poll() -> None:
    looks: list[int] = []

    async def step(index: int) -> bool:
        looks.append(index)
        return False

    loop = WorkerLoop("test", step, concurrency=1, poll_s=0.02)
    await loop.start()
    await _until(lambda: len(looks) >= 4)
    await loop.stop()
    assert set(looks) == {0}


@pytest.mark.asyncio
async def test_stop_ends_every_worker_even_inside_a_step() -> None:
    started = asyncio.Event()
    steps = 0

    async def step(_: int) -> bool:
        nonlocal steps
        steps += 1
        started.set()
        await asyncio.sleep(60)  # a long piece of work
        return True

    loop = WorkerLoop("test", step, concurrency=3, poll_s=60.0)
    await loop.start()
    await started.wait()
    async with asyncio.timeout(1.0):
        await loop.stop()
    before = steps
    await asyncio.sleep(0.05)
    assert steps == before == 3


@pytest.mark.asyncio
async def test_a_failing_step_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    async def step(_: int) -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database away")
        return len(calls) < 3

    caplog.set_level(logging.ERROR, logger="service.workers.loop")
    loop = WorkerLoop("flaky", step, concurrency=1, poll_s=0.02)
    await loop.start()
    await _until(lambda: len(calls) >= 4)
    await loop.stop()
    failures = [r for r in caplog.records if r.name == "service.workers.loop"]
    assert len(failures) == 1 and "flaky 0" in failures[0].getMessage()
    assert failures[0].exc_info is not None and "database away" in str(failures[0].exc_info[1])


def test_a_process_name_fits_the_lease_columns_and_differs_per_start() -> None:
    names = {process_name("archive") for _ in range(20)}
    assert len(names) == 20 and all(len(n) <= 64 and n.startswith("archive-") for n in names)
