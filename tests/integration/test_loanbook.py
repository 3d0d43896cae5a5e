"""The loan book through the service (issue #18 points 1, 2 and 4): calls linked to customers by their loan file,
planning when a report is stored, the customer view, the work queue, contact details, erasure, roles on every
route and audited reads; the daily planning shared by replicas; what earlier calls left open shown when a live
call of the same customer starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from nlu.report import Tier
from pipeline.recording import Scored
from service.app import state_of
from service.bootstrap import report_rows
from service.loanbook.book import LoanBook
from service.reports import report_row
from service.settings import Settings
from service.store import Store
from service.store.models import Customer, FollowUp
from service.workers.jobs import JobContext, run_job
from tests.integration.test_live_socket import START, FakeTranscriber
from tests.support.reports import stored_report
from tests.support.server import audited, bearer, tokens_client

TOKENS = {"ing": ("ingest", None), "a1": ("agent", "A1"), "a2": ("agent", "A2"), "sup": ("supervisor", None),
          "adm": ("admin", None)}
LOAN = {"customer_id": "C100", "loan_id": "L100", "role": "borrower", "repay_day": 15, "monthly_yuan": 4200}


def report(call_id: str, tier: Tier, labels: dict[str, str], mismatch: tuple[str, ...] = (),
           actions: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """A stored report (nlu.report.Report.to_dict) with what the loan book reads."""
    return stored_report(call_id, tier, {"high": 70, "medium": 40}.get(tier, 5), labels, mismatch=mismatch,
                         actions=actions, duration_s=60.0)


def score(client: TestClient, call_id: str, rep: dict[str, Any], loan: dict[str, Any] | None = LOAN,
          agent_id: str = "A1") -> None:
    """Store a report the way the job workers do (run_job), so planning runs as it does after a real scoring."""
    state = state_of(client.app)
    store, book = state.store, state.loanbook
    assert store is not None and book is not None
    job = store.create_job(call_id, [], loan, agent_id)
    claimed = store.claim(job.id)
    assert claimed is not None
    ctx = JobContext(store, state.settings.data_dir, lambda *_: Scored(rep, []), 30.0, after_report=book.plan)
    run_job(ctx, claimed)


@pytest.fixture()
def client(tmp_path: Path) -> Any:
    with tokens_client(tmp_path, TOKENS, FakeTranscriber()) as c:
        yield c


def test_a_vague_call_makes_a_tier_and_a_second_call_and_a_later_call_closes_it(client: TestClient) -> None:
    score(client, "call-1", report("call-1", "medium", {"overdue": "unclear", "income": "evasive", "term": "clear",
                                                       "monthly": "clear"}, mismatch=("monthly",),
                                   actions={"second_call": ["overdue", "income"]}))
    view = client.get("/v1/customers/C100", headers=bearer("sup")).json()
    assert view["tier"] == "medium" and [t["tier"] for t in view["tiers"]] == ["medium"]
    assert [c["call_id"] for c in view["calls"]] == ["call-1"]
    assert {t["topic"] for t in view["never_clear"]} == {"overdue", "income", "monthly"}
    assert view["mismatches"][0]["topic"] == "monthly" and view["mismatches"][0]["stated"] == 3000.0
    (second,) = [f for f in view["followups"] if f["reason"] == "second_call"]
    assert second["status"] == "open" and set(second["topics"]) == {"overdue", "income", "monthly"}
    assert second["loan_id"] == "L100" and second["source_call_id"] == "call-1"

    # The next call answers everything clearly: the second call is done, linked to it; the tier drops.
    score(client, "call-2", report("call-2", "low", {"overdue": "clear", "income": "clear", "monthly": "clear"}))
    view = client.get("/v1/customers/C100", headers=bearer("sup")).json()
    (second,) = [f for f in view["followups"] if f["reason"] == "second_call"]
    assert second["status"] == "done" and second["call_id"] == "call-2"
    assert [c["call_id"] for c in view["calls"]] == ["call-1", "call-2"]
    assert view["tier"] == "low" and [t["tier"] for t in view["tiers"]] == ["medium", "low"]
    assert view["never_clear"] == []
    assert len(audited(client, "customer_read")) == 2


def test_a_call_without_customer_still_scores(client: TestClient) -> None:
    score(client, "anon", report("anon", "high", {"guarantor": "evasive"}), loan=None)
    assert client.get("/v1/calls/anon/report", headers=bearer("sup")).status_code == 200
    assert client.get("/v1/customers", headers=bearer("sup")).json()["total"] == 0


def test_the_work_queue_assignment_and_outcomes_by_role(client: TestClient) -> None:
    score(client, "call-1", report("call-1", "high", {"guarantor": "unclear"}, actions={"legal_review": ["guarantor"]}))
    queue = client.get("/v1/followups", headers=bearer("sup")).json()
    assert queue["total"] == 2 and {f["channel"] for f in queue["items"]} == {"call", "letter"}
    assert all(f["tier"] == "high" for f in queue["items"])
    call = next(f for f in queue["items"] if f["channel"] == "call")
    # An agent sees nothing of a customer until a follow-up of theirs is assigned to them.
    assert client.get("/v1/customers/C100", headers=bearer("a1")).status_code == 403
    assert client.get("/v1/followups", headers=bearer("a1")).json()["total"] == 0
    assert client.post(f"/v1/followups/{call['id']}/assign", json={"assignee": "A1"},
                       headers=bearer("a1")).status_code == 403  # agents do not assign
    assigned = client.post(f"/v1/followups/{call['id']}/assign", json={"assignee": "A1"}, headers=bearer("sup"))
    assert assigned.status_code == 200 and assigned.json()["status"] == "assigned"
    assert client.get("/v1/customers/C100", headers=bearer("a1")).status_code == 200
    mine = client.get("/v1/followups", headers=bearer("a1")).json()
    assert [f["id"] for f in mine["items"]] == [call["id"]]
    assert client.get("/v1/followups?assignee=A2", headers=bearer("a1")).status_code == 403
    assert client.get("/v1/customers/C100", headers=bearer("a2")).status_code == 403
    assert client.get("/v1/customers", headers=bearer("a2")).json()["total"] == 0
    assert client.get("/v1/customers", headers=bearer("a1")).json()["items"][0]["customer_id"] == "C100"
    # Only the assignee records the outcome; the note keeps no phone number.
    assert client.post(f"/v1/followups/{call['id']}/outcome", json={"status": "done"},
                       headers=bearer("a2")).status_code == 403
    done = client.post(f"/v1/followups/{call['id']}/outcome",
                       json={"status": "unreachable", "note": "打了13812345678没人接"}, headers=bearer("a1"))
    assert done.status_code == 200 and done.json()["status"] == "unreachable"
    assert "13812345678" not in done.json()["outcome_note"] and "没人接" in done.json()["outcome_note"]
    again = client.post(f"/v1/followups/{call['id']}/outcome", json={"status": "done"}, headers=bearer("a1"))
    assert again.status_code == 409
    assert client.post("/v1/followups/nope/outcome", json={"status": "done"}, headers=bearer("sup")).status_code == 404
    assert client.post(f"/v1/followups/{call['id']}/outcome", json={"status": "open"},
                       headers=bearer("sup")).status_code == 422
    filtered = client.get("/v1/followups?status=unreachable&tier=high", headers=bearer("sup")).json()
    assert [f["id"] for f in filtered["items"]] == [call["id"]]
    assert client.get("/v1/followups?due_before=2000-01-01", headers=bearer("sup")).json()["total"] == 0
    assert {e.kind for e in audited(client, "followup_assigned") + audited(client, "followup_outcome")} == {
        "followup_assigned", "followup_outcome"}


def test_every_new_route_checks_roles(client: TestClient) -> None:
    score(client, "call-1", report("call-1", "high", {"guarantor": "unclear"}))
    fid = client.get("/v1/followups", headers=bearer("sup")).json()["items"][0]["id"]
    contact = {"phone": "13812345678", "consent": ["sms"]}
    routes = [("GET", "/v1/customers/C100", None, {"ing": 403, "a1": 403, "sup": 200, "adm": 200}),
              ("GET", "/v1/customers", None, {"ing": 403, "a1": 200, "sup": 200, "adm": 200}),
              ("GET", "/v1/followups", None, {"ing": 403, "a1": 200, "sup": 200, "adm": 200}),
              ("PUT", "/v1/customers/C100/contact", contact, {"ing": 200, "a1": 403, "sup": 200, "adm": 200}),
              ("POST", f"/v1/followups/{fid}/assign", {"assignee": "A2"}, {"ing": 403, "a1": 403, "sup": 200}),
              ("POST", f"/v1/followups/{fid}/outcome", {"status": "done"}, {"ing": 403, "a1": 403, "adm": 200}),
              ("DELETE", "/v1/customers/C100", None, {"ing": 403, "a1": 403, "sup": 403, "adm": 204})]
    for method, url, body, expected in routes:
        assert client.request(method, url, json=body).status_code == 401, url
        for token, status in expected.items():
            got = client.request(method, url, json=body, headers=bearer(token)).status_code
            assert got == status, (method, url, token, got)


def test_contact_details_are_stored_encrypted_and_shown_masked(client: TestClient) -> None:
    body = {"phone": "13812345678", "email": "zhang.san@example.com", "consent": ["sms", "email"],
            "opted_out": ["email"]}
    answer = client.put("/v1/customers/C7/contact", json=body, headers=bearer("ing")).json()
    assert answer["contact"] == {"phone": "138****5678", "email": "z***@example.com", "consent": ["email", "sms"],
                                 "opted_out": ["email"]}
    store = state_of(client.app).store
    assert store is not None
    with store.session() as s:
        row = s.get(Customer, "C7")
        assert row is not None and row.contact_encrypted is not None
        assert b"13812345678" not in row.contact_encrypted and b"example" not in row.contact_encrypted
    assert client.get("/v1/customers/C7", headers=bearer("sup")).json()["contact"]["phone"] == "138****5678"
    bad = client.put("/v1/customers/C7/contact", json={"phone": "call me"}, headers=bearer("ing"))
    assert bad.status_code == 422
    audit_payloads = [e.payload for e in audited(client, "contact_set")]
    assert audit_payloads and all("13812345678" not in p for p in audit_payloads)


def test_a_loan_file_brings_contact_details_and_consent(client: TestClient, tmp_path: Path) -> None:
    from service.loanbook.book import update_contact_from_loan_file
    from service.loanbook.repository import get_contact

    book = state_of(client.app).loanbook
    assert book is not None
    assert update_contact_from_loan_file(book, {**LOAN, "mobile": "13900001111", "consent": ["sms"]})
    assert not update_contact_from_loan_file(book, LOAN)  # nothing about contact: nothing changes
    contact = get_contact(book.store, book.cipher, "C100")
    assert contact is not None and contact.phone == "13900001111" and contact.allows("sms")
    # Messages go out over what the customer allows: the schedule by SMS now, not by letter.
    score(client, "call-1", report("call-1", "medium", {"repay_date": "unclear"},
                                   actions={"send_schedule": ["repay_date"]}))
    channels = {f["reason"]: f["channel"] for f in
                client.get("/v1/customers/C100", headers=bearer("sup")).json()["followups"]}
    assert channels["send_schedule"] == "sms"
    view = client.get("/v1/customers/C100", headers=bearer("sup")).json()
    (sms,) = [m for m in view["messages"] if m["action"] == "send_schedule"]
    assert sms["channel"] == "sms" and sms["status"] == "queued" and sms["destination_masked"] == "139****1111"
    assert "13900001111" not in str(view)


def test_erasing_a_customer_removes_calls_followups_and_contact(client: TestClient) -> None:
    score(client, "call-1", report("call-1", "high", {"guarantor": "unclear"}))
    score(client, "other", report("other", "low", {"term": "clear"}), loan={**LOAN, "customer_id": "C200"})
    client.put("/v1/customers/C100/contact", json={"phone": "13812345678"}, headers=bearer("ing"))
    assert client.delete("/v1/customers/C100", headers=bearer("adm")).status_code == 204
    assert client.get("/v1/customers/C100", headers=bearer("sup")).status_code == 404
    assert client.get("/v1/calls/call-1/report", headers=bearer("sup")).status_code == 404
    assert client.get("/v1/calls/other/report", headers=bearer("sup")).status_code == 200  # others stay
    store = state_of(client.app).store
    assert store is not None
    with store.session() as s:
        assert not list(s.scalars(select(FollowUp).where(FollowUp.customer_id == "C100")))
    (erased,) = audited(client, "customer_erased")
    assert "call-1" in erased.payload
    assert client.delete("/v1/customers/C100", headers=bearer("adm")).status_code == 404


def test_a_new_live_call_shows_what_the_last_one_left_open(client: TestClient) -> None:
    score(client, "call-1", report("call-1", "medium", {"overdue": "unclear", "term": "clear"}))
    start = {**START, "loan_file": {"customer_id": "C100", "loan_id": "L100"}, "agent_id": "A1"}
    with client.websocket_connect("/v1/calls/live-2/audio", headers=bearer("ing")) as ws:
        ws.send_json(start)
        ready = ws.receive_json()
        # The phone switch streaming the call reads nothing of the loan book (#26, point 6); the call's agent does.
        assert ready["type"] == "ready" and ready["carried_over"] == []
        with client.websocket_connect("/v1/calls/live-2/events", headers=bearer("a1")) as events:
            seen = events.receive_json()
            assert seen["type"] == "ready"
            assert [(i["topic"], i["label"], i["call_id"]) for i in seen["carried_over"]] == [
                ("overdue", "unclear", "call-1")]
            assert seen["carried_over"][0]["name"] == "还款困难风险"
        ws.send_json({"type": "stop"})
    with client.websocket_connect("/v1/calls/live-3/audio", headers=bearer("ing")) as ws:
        ws.send_json(START)  # no customer: nothing carried over
        assert ws.receive_json()["carried_over"] == []
        ws.send_json({"type": "stop"})


def test_the_daily_planning_runs_once_across_replicas_on_sqlite(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("service.loanbook.book.PLAN_BATCH", 40)  # several batches each
    _plan_twice_at_once(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}")


def test_the_daily_planning_runs_once_across_replicas_on_postgresql(tmp_path: Path, postgres_schema: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("service.loanbook.book.PLAN_BATCH", 40)
    _plan_twice_at_once(tmp_path, postgres_schema)


def _plan_twice_at_once(tmp_path: Path, url: str) -> None:
    """Two loan books on one database (two replicas) plan every customer once a day between them."""
    import threading

    from service.loanbook.policy import load_policy
    from service.privacy import RawTextCipher

    store = Store(url, report_rows(Settings(data_dir=tmp_path)))
    store.migrate()
    customers = 90
    for i in range(customers):
        job = store.create_job(f"c{i}", [], {"customer_id": f"K{i:04d}"}, "A1")
        assert store.claim(job.id) is not None
        store.complete_job(job.id, report_row(report(f"c{i}", "medium", {"overdue": "unclear"})), "A1", None, None)
    from zoneinfo import ZoneInfo

    books = [LoanBook(store, RawTextCipher(tmp_path / "k"), load_policy(), ZoneInfo("Asia/Shanghai"), {}, {})
             for _ in range(2)]
    counts = [0, 0]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            counts[i] = books[i].plan_due()
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sum(counts) == customers, (errors, counts)
    with store.session() as s:
        followups = list(s.scalars(select(FollowUp)))
    assert len(followups) == len({f.customer_id for f in followups}) == customers  # one second call each
    assert books[0].plan_due() == 0  # planned today already
    store.close()
