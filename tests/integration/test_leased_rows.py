"""The lease helper (service/store/leases.py) that recording jobs and outbox messages are claimed with, on a table
description of its own and a clock the test moves."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from service.store import Store
from service.store.leases import LeasedRows
from service.store.models import Recording


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
