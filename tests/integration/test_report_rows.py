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
