"""Features add rows to a stored report through `ReportRows`, in the report's own transaction."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from service.reports import report_row
from service.store import Store
from service.store.models import Call, CallSummary
from tests.support.reports import stored_report


class Seen:
    """A feature that remembers what it was handed."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None, dict[str, Any] | None]] = []

    def write(self, s: Session, call: Call, loan_file: Mapping[str, Any] | None) -> None:
        assert s.get(Call, call.call_id) is call  # the call is in the transaction before the feature's rows
        self.calls.append((call.call_id, call.customer_id, dict(loan_file) if loan_file else None))


class Broken:
    def write(self, s: Session, call: Call, loan_file: Mapping[str, Any] | None) -> None:
        raise RuntimeError("the feature's row could not be written")


def _store(tmp_path: Path, *rows: Any) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'r.db'}", rows)
    store.migrate()
    return store


def test_each_registered_feature_writes_with_the_report_and_is_handed_the_jobs_loan_file(tmp_path: Path) -> None:
    seen, later = Seen(), Seen()
    store = _store(tmp_path, seen)
    store.add_report_rows(later)
    loan = {"customer_id": "K1", "loan_id": "L1", "name": "张三"}
    job = store.create_job("c1", [], loan, "A1")
    store.complete_job(job.id, report_row(stored_report("c1", labels={"loan_term": "clear"})), "A1", None, None,
                       loan_file_kept={"customer_id": "K1", "loan_id": "L1"})
    assert seen.calls == later.calls == [("c1", "K1", loan)]  # the whole loan file: redaction needs the names
    kept = store.get_job(job.id)
    assert kept is not None and kept.loan_file == {"customer_id": "K1", "loan_id": "L1"}  # what the caller kept
    call = store.get_call("c1")
    assert call is not None and (call.customer_id, call.loan_id) == ("K1", "L1")
    # A store built without features stores the report and its answers, and nothing of any feature.
    with store.session() as s:
        assert s.get(CallSummary, "c1") is None
        assert [(a.topic, a.label) for a in s.get(Call, "c1").answers] == [("loan_term", "clear")]  # type: ignore[union-attr]
    store.close()


def test_a_feature_that_fails_leaves_no_report_behind(tmp_path: Path) -> None:
    store = _store(tmp_path, Broken())
    job = store.create_job("c2", [], {"customer_id": "K2"}, None)
    claimed = store.claim(job.id)
    assert claimed is not None
    with pytest.raises(RuntimeError):
        store.complete_job(job.id, report_row(stored_report("c2")), None, None, None,
                           version=claimed.lease_version)
    assert store.get_call("c2") is None
    after = store.get_job(job.id)
    assert after is not None and after.status == "running" and after.loan_file == {"customer_id": "K2"}
    store.close()


def test_a_demo_call_is_stored_without_coaching_or_loan_book_rows(tmp_path: Path) -> None:
    """The console's demo replay is stored like any live call, marked `demo`: nobody's scorecard counts it and no
    customer is re-planned from it (issue #29); the same report as a live call has both rows."""
    from service.bootstrap import report_rows
    from service.settings import Settings
    from service.store.models import AgentCallStats

    store = _store(tmp_path, *report_rows(Settings(data_dir=tmp_path)))
    loan = {"customer_id": "K1", "loan_id": "L1"}
    for call_id, source in (("demo-1", "demo"), ("live-1", "live")):
        claim = store.open_live(call_id, "replica", 60.0, [], loan, "A1", source)
        store.complete_job(claim.job.id, report_row(stored_report(call_id, labels={"loan_term": "clear"})), "A1",
                           None, None, version=claim.job.lease_version, loan_file_kept=loan)
    with store.session() as s:
        demo, live = s.get(Call, "demo-1"), s.get(Call, "live-1")
        assert demo is not None and live is not None and (demo.source, live.source) == ("demo", "live")
        assert s.get(AgentCallStats, "demo-1") is None and s.get(CallSummary, "demo-1") is None
        assert s.get(AgentCallStats, "live-1") is not None and s.get(CallSummary, "live-1") is not None
    store.close()
