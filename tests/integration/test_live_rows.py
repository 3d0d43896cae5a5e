"""A live call's row in the store (issue #29), on SQLite and PostgreSQL: held by the connection streaming it and
refused to any other, released when its socket drops so a reconnect (any replica) continues it with the finals
written so far, taken by a sweep once its lease ran out and stored under that claim only, and refused once stored
or while a recording of the same call is being scored."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

import service.store.store as store_module
from service.store import Store
from service.store.rows import ReportRow
from service.store.store import CallConflict, LeaseLost, LiveFinalRecord
from tests.support.postgres import fresh_postgres_schema


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 6, 9, 0, 0)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    clock = Clock()
    monkeypatch.setattr(store_module, "utcnow", clock)
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'live.db'}")
        s.migrate()
        s.clock = clock  # type: ignore[attr-defined]
        yield s
        s.close()
    else:
        with fresh_postgres_schema() as url:
            s = Store(url)
            s.migrate()
            s.clock = clock  # type: ignore[attr-defined]
            yield s
            s.close()


FILES = [{"path": "audio/r1/agent.flac", "channels": ["agent"], "rate_hz": 8000},
         {"path": "audio/r1/customer.flac", "channels": ["customer"], "rate_hz": 8000}]
LOAN = {"borrower": "王建国", "customer_id": "C1", "loan_id": "L1"}


def _final(seq: int) -> LiveFinalRecord:
    channel = "agent" if seq % 2 else "customer"
    return LiveFinalRecord(seq, channel, f"{channel}-{seq}", seq * 2.0, seq * 2.0 + 1.0, f"第{seq}句", False,
                           seq == 2)


def _row() -> ReportRow:
    return ReportRow(report={"call_id": "c1", "format_version": 2}, duration_s=10.0, risk_score=5, tier="low",
                     answers=())


def test_a_live_call_is_held_released_continued_and_stored_once(store: Store) -> None:
    clock = store.clock  # type: ignore[attr-defined]
    first = store.open_live("c1", "replica-a", 60.0, FILES, LOAN, "A08", "live", "r1")
    assert not first.resumed and first.finals == () and first.job.status == "live"
    assert (first.job.source, first.job.kind, first.job.lease_version) == ("live", "score", 1)
    with pytest.raises(CallConflict) as held:  # another connection, any replica, while it streams
        store.open_live("c1", "replica-b", 60.0, FILES, LOAN, "A08", "live", "r2")
    assert held.value.live
    store.add_live_final("r1", _final(1))
    store.add_live_final("r1", _final(2))
    clock.now += timedelta(seconds=30)
    assert store.renew_live("r1", "replica-a", 1, 60.0)
    assert store.claim_abandoned_live("sweeper", 60.0) is None  # its lease has not run out
    # The socket dropped: released, a reconnect on another replica continues the call at once.
    assert store.release_live("r1", "replica-a", 1)
    again = store.open_live("c1", "replica-b", 60.0, FILES, LOAN, "A08", "live", "r-ignored")
    assert again.resumed and again.job.id == "r1" and again.job.lease_version == 2
    assert again.finals == (_final(1), _final(2))
    assert not store.renew_live("r1", "replica-a", 1, 60.0)  # the first connection's lease is gone
    store.add_live_final("r1", _final(3))
    # Replica b dies: once its lease ran out, a sweep takes the call (once) with everything written.
    clock.now += timedelta(seconds=61)
    taken = store.claim_abandoned_live("sweeper", 60.0)
    assert taken is not None and taken.job.lease_version == 3 and [f.seq for f in taken.finals] == [1, 2, 3]
    assert store.claim_abandoned_live("sweeper-2", 60.0) is None
    with pytest.raises(LeaseLost):  # replica b's outcome, had it come back, is fenced off
        store.complete_job("r1", _row(), "A08", None, None, version=2)
    store.complete_job("r1", _row(), "A08", "audio/r1", None, files=FILES, version=3,
                       loan_file_kept={"customer_id": "C1"}, complete=False)
    call = store.get_call("c1")
    assert call is not None and (call.source, call.complete, call.customer_id) == ("live", False, "C1")
    assert [f.seq for f in store.stored_live_finals("c1")] == [1, 2, 3]
    with pytest.raises(CallConflict) as stored:  # a stored call id is streamed once
        store.open_live("c1", "replica-a", 60.0, FILES, LOAN, "A08", "live", "r3")
    assert not stored.value.live


def test_a_live_call_is_refused_while_a_recording_of_it_is_scored(store: Store) -> None:
    store.create_job("c2", [], None, None, "j1")
    with pytest.raises(CallConflict):
        store.open_live("c2", "replica-a", 60.0, FILES, None, None, "live", "r4")
    footprint = store.call_footprint("c2")
    assert footprint is not None and footprint.pending == ("queued",)


def test_redecode_jobs_are_counted_apart_and_finish_with_the_report(store: Store) -> None:
    store.open_live("c3", "replica-a", 60.0, FILES, LOAN, None, "live", "r5")
    store.complete_job("r5", _row(), None, "audio/r1", None, files=FILES, version=1)
    job = store.create_job("c3", FILES, LOAN, None, "j2", kind="redecode", source="live")
    assert (store.queued_jobs("redecode"), store.queued_jobs("score"), store.queued_jobs()) == (1, 0, 1)
    claimed = store.claim_next("worker")
    assert claimed is not None and claimed.id == job.id and claimed.kind == "redecode"
    call = store.get_call("c3")
    assert call is not None
    newer = ReportRow(report={"call_id": "c3", "format_version": 2, "redecoded": ["customer-2"]},
                      duration_s=10.0, risk_score=9, tier="low", answers=())
    assert store.replace_report("c3", call.report, newer, "v1", reason="redecode", job=claimed) == 1
    done = store.get_job(job.id)
    assert done is not None and done.status == "done" and done.loan_file is None
    [earlier] = store.report_versions("c3")
    assert earlier.reason == "redecode" and earlier.report == call.report
