"""The background workers' shared parts: the worker loop (service/workers/loop.py) that recording jobs, the
outbox and the retention sweep run on, and the lease helper (service/store/leases.py) that jobs and outbox
messages are claimed with."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from service.ids import process_name
from service.store import Store
from service.store.leases import LeasedRows
from service.store.models import Recording
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


# -- leases ----------------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 9, 0, 0)

    def __call__(self) -> datetime:
        return self.now


#: Jobs of agent "a" only, newest first, stamped when taken: a table description other than the job store's.
ROWS = LeasedRows(Recording, "running", lambda now: Recording.status == "queued",
                  (Recording.created_at.desc(), Recording.id), lambda now: {"started_at": now})


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'leases.db'}")
    store.migrate()
    for job_id, agent in (("j1", "a"), ("j2", "a"), ("j3", "b")):
        store.create_job(f"call-{job_id}", [], None, agent, job_id)
    return store


def _row(store: Store, job_id: str) -> Recording:
    with store.session() as s:
        row = s.scalar(select(Recording).where(Recording.id == job_id))
        assert row is not None
        return row


def test_a_lease_goes_to_one_owner_until_it_runs_out(store: Store) -> None:
    clock = Clock()
    mine = (Recording.agent_id == "a",)
    first = ROWS.claim_next(store.session, "w1", 30.0, clock, lambda s, i: i, where=mine)
    assert first == "j2"  # the order given (newest first), among the rows `where` allows
    row = _row(store, "j2")
    assert (row.status, row.lease_owner, row.lease_version, row.attempts) == ("running", "w1", 1, 1)
    assert row.started_at == clock.now and row.lease_expires_at == clock.now + timedelta(seconds=30)
    assert ROWS.claim(store.session, "j2", "w2", 30.0, clock, lambda s, i: i) is None  # leased
    assert ROWS.claim_next(store.session, "w2", 30.0, clock, lambda s, i: i, where=mine) == "j1"
    assert ROWS.claim_next(store.session, "w3", 30.0, clock, lambda s, i: i, where=mine) is None  # none left

    clock.now += timedelta(seconds=20)
    assert ROWS.renew(store.session, "j2", "w1", 1, 30.0, clock)  # its own: extended to 50 s
    assert not ROWS.renew(store.session, "j2", "w2", 1, 30.0, clock)  # another owner's
    clock.now += timedelta(seconds=29)
    assert ROWS.claim(store.session, "j2", "w2", 30.0, clock, lambda s, i: i) is None  # renewed: still w1's

    clock.now += timedelta(seconds=2)  # w1's lease ran out (it died)
    taken = ROWS.claim(store.session, "j2", "w2", 30.0, clock, lambda s, i: _row(store, i))
    assert taken is not None
    row = _row(store, "j2")
    assert (row.lease_owner, row.lease_version, row.attempts) == ("w2", 2, 2)
    assert not ROWS.renew(store.session, "j2", "w1", 1, 30.0, clock)  # w1 learns it lost the job


def test_a_row_read_under_an_old_version_is_not_taken(store: Store) -> None:
    clock = Clock()
    assert ROWS.claim(store.session, "j3", "w1", 30.0, clock, lambda s, i: i) == "j3"
    with store.session() as s, s.begin():
        assert not ROWS.take(s, "j3", 0, "w2", 30.0, clock())  # w2 read version 0 before w1 took it
    assert _row(store, "j3").lease_owner == "w1"


def test_a_process_name_fits_the_lease_columns_and_differs_per_start() -> None:
    names = {process_name("archive") for _ in range(20)}
    assert len(names) == 20 and all(len(n) <= 64 and n.startswith("archive-") for n in names)
