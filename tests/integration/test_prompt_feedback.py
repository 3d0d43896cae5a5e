"""Agents' verdicts on prompts (issue #31 point 5): who may give them, during a live call and on a stored report,
redaction and audit, the review queue (an upheld dispute corrects the report, the risk and the customer's plan
with the original kept; an overturned one changes nothing), `huifang rescore` keeping the correction, coaching's
counts, and `huifang export-feedback` in nlu_dev's format scored by `bench.nlu_eval --extra`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from starlette.websockets import WebSocketDisconnect

from nlu.dialogue import Turn
from nlu.report import load_risk
from pipeline.call import ROLES, CallPipeline
from pipeline.recording import Scored, finish_report
from service import bootstrap
from service.app import state_of
from service.cli.feedback import export_command
from service.cli.rescore import rescore_command
from service.metrics import REGISTRY
from service.reports import answer_labels
from service.store import Store, audit
from service.store.models import Answer
from service.workers.jobs import JobContext, run_job
from tests.integration.test_live_assist import ScriptedTranscriber, _call
from tests.integration.test_live_socket import FakeTranscriber
from tests.support.server import audited, bearer, tokens_client

TOKENS: dict[str, tuple[str, str | None]] = {"ing": ("ingest", None), "a1": ("agent", "A1"), "a2": ("agent", "A2"),
                                             "sup": ("supervisor", None), "adm": ("admin", None)}
LOAN = {"customer_id": "C1", "loan_id": "L1", "borrower": "赵强", "role": "borrower", "amount_yuan": 650000,
        "term_years": 20, "repay_day": 5, "monthly_yuan": 3900, "rate_pct": 3.7}
ROOT = Path(__file__).resolve().parents[2]


def _turns(script: dict[str, Any]) -> list[Turn]:
    """The shared call's scripted turns, numbered per channel as the live path numbers utterances."""
    counts = {"agent": 0, "customer": 0}
    turns = []
    for t in script["turns"]:
        if t["text"]:
            counts[t["speaker"]] += 1
            turns.append(Turn(f"{t['speaker']}-{counts[t['speaker']]}", t["speaker"], t["text"], t["start_s"],
                              t["end_s"]))
    return turns


def _store_call(client: TestClient, call_id: str, script: dict[str, Any], agent_id: str) -> dict[str, Any]:
    """call_s03's script scored by the app's assessor and stored as the job workers store a report (the
    customer planned)."""
    state = state_of(client.app)  # type: ignore[arg-type]
    settings, store = state.settings, state.store
    assert store is not None and state.loanbook is not None
    pipeline = CallPipeline(call_id, ROLES, state.assessor, LOAN, bootstrap.dialogue_options(settings))
    report = json.loads(json.dumps(finish_report(pipeline, _turns(script), 60.0,
                                                 load_risk(settings.scoring.risk_file), LOAN, [])))
    job = store.create_job(call_id, [], LOAN, agent_id)
    claimed = store.claim(job.id)
    assert claimed is not None
    run_job(JobContext(store, settings.data_dir, lambda *_: Scored(report, []), 30.0,
                       after_report=state.loanbook.plan), claimed)
    return report


@pytest.fixture(params=["sqlite", "postgresql"])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestClient]:
    """The app with TOKENS on SQLite, and on PostgreSQL (the row locks of verdicts and reviews)."""
    database = {} if request.param == "sqlite" else {"database_url": request.getfixturevalue("postgres_schema")}
    with tokens_client(tmp_path, TOKENS, FakeTranscriber(), **database) as c:
        yield c


def _feedback(client: TestClient, token: str, call_id: str, **body: Any) -> Any:
    return client.post(f"/v1/calls/{call_id}/prompts/feedback", headers=bearer(token), json=body)


def _prompt(report: dict[str, Any], topic: str) -> dict[str, Any]:
    return next(p for p in report["agent"]["prompts"] if p["topic"] == topic)


def test_verdicts_on_a_stored_report_roles_redaction_audit_and_the_report(client: TestClient,
                                                                           shared_data: Path) -> None:
    script, _ = _call(shared_data, "call_s03")
    report = _store_call(client, "c1", script, "A1")
    overdue, monthly = _prompt(report, "overdue"), _prompt(report, "monthly")
    assert overdue["question_utterance_id"] == "agent-4" and overdue["label"] == "evasive"
    dispute = {"question_utterance_id": "agent-4", "topic": "overdue", "verdict": "disputed", "reason": "clear",
               "note": "客户说了会按时还，电话13812345678也核实过"}

    # The call's agent, supervisors and admins; not another agent, not a phone switch.
    assert _feedback(client, "ing", "c1", **dispute).status_code == 403
    assert _feedback(client, "a2", "c1", **dispute).status_code == 403
    assert _feedback(client, "a1", "nope", **dispute).status_code == 404
    assert _feedback(client, "a1", "c1", **{**dispute, "topic": "income"}).status_code == 404  # no such prompt
    assert _feedback(client, "a1", "c1", **{**dispute, "question_utterance_id": "customer-2"}).status_code == 404
    assert _feedback(client, "a1", "c1", **{**dispute, "reason": None}).status_code == 422
    first = _feedback(client, "a1", "c1", question_utterance_id="agent-4", topic="overdue", verdict="asked_again")
    assert first.status_code == 200 and first.json()["replaced"] is False
    assert first.json()["review_status"] == "none"
    saved = _feedback(client, "a1", "c1", **dispute)
    assert saved.status_code == 200, saved.text
    body = saved.json()
    # The server's own record of the prompt, not the client's: the report's text, label and redacted utterances.
    assert body["replaced"] is True and body["id"] == first.json()["id"]
    assert (body["label"], body["prompt_text"], body["review_status"]) == ("evasive", overdue["text"], "open")
    assert body["question_text"] == "好的。那未来有没有可能出现还款困难？" and body["answer_text"] == ""
    assert body["assessor_version"] == report["assessor_version"] and body["agent_id"] == "A1"
    assert "13812345678" not in body["note"] and "按时还" in body["note"]
    by_sup = _feedback(client, "sup", "c1", question_utterance_id="agent-2", topic="monthly", verdict="disputed",
                       reason="wrong_topic")
    assert by_sup.status_code == 200 and by_sup.json()["author"] == "supervisor-3"

    entries = audited(client, "prompt_feedback")
    assert [json.loads(e.payload)["verdict"] for e in entries] == ["asked_again", "disputed", "disputed"]
    assert all("13812345678" not in e.payload and "按时还" not in e.payload for e in entries)
    assert json.loads(entries[1].payload)["note_sha256"]

    shown = client.get("/v1/calls/c1/report", headers=bearer("a1")).json()
    by_prompt = {(f["question_utterance_id"], f["topic"]): f for f in shown["prompt_feedback"]}
    assert by_prompt[("agent-4", "overdue")]["reason"] == "clear"
    assert by_prompt[("agent-2", "monthly")]["prompt_text"] == monthly["text"]
    metrics = REGISTRY.get_sample_value("huifang_prompt_feedback_total", {
        "topic": "overdue", "label": "evasive", "verdict": "disputed", "reason": "clear"})
    assert metrics is not None and metrics >= 1


def test_review_upheld_corrects_report_risk_and_plan_overturned_changes_nothing_and_the_export(
        client: TestClient, shared_data: Path, tmp_path: Path) -> None:
    script, _ = _call(shared_data, "call_s03")
    report = _store_call(client, "c1", script, "A1")
    state = state_of(client.app)  # type: ignore[arg-type]
    store = state.store
    assert store is not None
    tier_before = client.get("/v1/customers/C1", headers=bearer("sup")).json()["tier"]
    assert (report["risk_score"], report["tier"], tier_before) == (63, "high", "high")
    upheld = _feedback(client, "a1", "c1", question_utterance_id="agent-4", topic="overdue", verdict="disputed",
                       reason="clear").json()
    overturned = _feedback(client, "a1", "c1", question_utterance_id="agent-2", topic="monthly",
                           verdict="disputed", reason="clear", note="他其实回答了").json()
    _feedback(client, "a1", "c1", question_utterance_id="agent-3", topic="purpose", verdict="asked_again")

    # The queue: supervisors and admins only; the question, answer, label, prompt and the agent's reason.
    for token in ("a1", "ing"):
        assert client.get("/v1/reviews", headers=bearer(token)).status_code == 403
    queue = client.get("/v1/reviews", headers=bearer("sup")).json()
    assert [i["id"] for i in queue["items"]] == [upheld["id"], overturned["id"]] and queue["total"] == 2
    assert all(i["reviewable"] for i in queue["items"]) and queue["items"][1]["note"] == "他其实回答了"
    assert any(t["topic"] == "overdue" for t in queue["topics"])
    assert client.post(f"/v1/reviews/{upheld['id']}", headers=bearer("a1"),
                       json={"decision": "uphold", "label": "clear"}).status_code == 403
    same = client.post(f"/v1/reviews/{upheld['id']}", headers=bearer("sup"),
                       json={"decision": "uphold", "label": "evasive"})
    assert same.status_code == 422  # upheld as the assessor's own label: nothing to correct

    decided = client.post(f"/v1/reviews/{upheld['id']}", headers=bearer("sup"),
                          json={"decision": "uphold", "label": "clear", "note": "确认客户沉默是在思考，后面有回答"})
    assert decided.status_code == 200, decided.text
    outcome = decided.json()
    assert (outcome["risk_before"], outcome["tier_before"]) == (63, "high")
    assert outcome["risk_after"] < 63 and outcome["tier_after"] == "medium" and outcome["report_version"] == 1
    assert outcome["review"]["review_status"] == "upheld" and outcome["review"]["reviewer_label"] == "clear"
    assert client.post(f"/v1/reviews/{upheld['id']}", headers=bearer("sup"),
                       json={"decision": "overturn", "label": "evasive"}).status_code == 409
    assert _feedback(client, "a1", "c1", question_utterance_id="agent-4", topic="overdue",
                     verdict="asked_again").status_code == 409  # reviewed: the verdict stands

    corrected = client.get("/v1/calls/c1/report", headers=bearer("sup")).json()
    topics = {t["topic"]: t["label"] for t in corrected["topics"]}
    assert topics["overdue"] == "clear" and topics["monthly"] == "evasive"
    assert (corrected["risk_score"], corrected["tier"]) == (outcome["risk_after"], "medium")
    [kept] = store.report_versions("c1")
    assert (kept.reason, kept.report) == ("review", report)  # the original, as it was
    # Admins see it among the call's earlier reports, with what replaced it.
    [earlier] = client.get("/v1/calls/c1/versions", headers=bearer("adm")).json()["versions"]
    assert (earlier["version"], earlier["reason"], earlier["report"]["risk_score"]) == (1, "review", 63)
    with store.session() as s:
        answers = {a.topic: a.label for a in s.scalars(select(Answer).where(Answer.call_id == "c1"))}
    assert answers["overdue"] == "clear"
    assert client.get("/v1/customers/C1", headers=bearer("sup")).json()["tier"] == "medium"  # planned again
    [review_entry] = [json.loads(e.payload) for e in audited(client, "prompt_review")]
    assert (review_entry["decision"], review_entry["label"], review_entry["risk_before"]) == ("uphold", "clear", 63)
    assert audit.verify(store, labels_of=answer_labels).ok  # the corrected report is the audited one

    # Overturned: the report stays as it is.
    kept_report = store.get_call("c1").report  # type: ignore[union-attr]
    done = client.post(f"/v1/reviews/{overturned['id']}", headers=bearer("adm"),
                       json={"decision": "overturn", "label": "evasive"})
    assert done.status_code == 200 and done.json()["report_version"] is None
    assert store.get_call("c1").report == kept_report  # type: ignore[union-attr]
    assert len(store.report_versions("c1")) == 1
    assert client.get("/v1/reviews", headers=bearer("sup")).json()["total"] == 0
    assert client.get("/v1/reviews?status=overturned", headers=bearer("sup")).json()["items"][0]["id"] == (
        overturned["id"])

    # Coaching: the agent's verdicts, on the scoreboard and on their own card.
    board = client.get("/v1/agents", headers=bearer("sup")).json()
    row = next(a for a in board["agents"] if a["agent_id"] == "A1")
    counts = {"asked_again": 1, "disputed": 2, "upheld": 1, "overturned": 1}
    assert row["prompt_verdicts"] == counts
    assert client.get("/v1/agents/A1", headers=bearer("a1")).json()["prompt_verdicts"] == counts

    # A forced re-scoring keeps the reviewer's verdict.
    assert rescore_command(state.settings, None, "c1", True, False) == 0
    rescored = store.get_call("c1").report  # type: ignore[union-attr]
    assert {t["topic"]: t["label"] for t in rescored["topics"]}["overdue"] == "clear"
    assert rescored["risk_score"] == outcome["risk_after"] and len(store.report_versions("c1")) == 2

    # The export: nlu_dev's fields, the reviewer's label either way; and nlu_eval scores it.
    out = tmp_path / "feedback.jsonl"
    assert export_command(state.settings, None, out) == 0
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    dev = json.loads((shared_data / "nlu_dev" / "answers_dev.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert all(set(line) == set(dev) for line in lines)
    assert [(x["topic"], x["label"], x["answer"]) for x in lines] == [
        ("overdue", "clear", ""), ("monthly", "evasive", "问这么细干什么，我又没欠你们钱。")]
    assert lines[0]["question"] == "好的。那未来有没有可能出现还款困难？" and lines[0]["source"] == "agent_feedback"
    assert export_command(state.settings, "2999-01-01", out) == 0 and out.read_text(encoding="utf-8") == ""
    assert export_command(state.settings, None, out) == 0
    assert [json.loads(e.payload)["lines"] for e in audited(client, "feedback_export")] == [2, 0, 2]
    scored = subprocess.run([sys.executable, "-m", "bench.nlu_eval", "--extra", str(out), "--classifier", "none",
                             "--bootstrap", "0"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
    results = [json.loads(line) for line in scored.stdout.splitlines() if line.startswith("{")]
    extra = [r for r in results if r["set"] == "extra:feedback.jsonl"]
    assert {r["system"] for r in extra} == {"rules", "default"} and all(r["answers"] == 2 for r in extra)
    assert all(0.0 <= r["macro_f1"] <= 1.0 and "topic_accuracy" in r for r in extra)

    # The verdicts keep the call's redacted question and answer: they go when the customer is erased.
    assert client.delete("/v1/customers/C1", headers=bearer("adm")).status_code in (200, 204)
    assert client.get("/v1/reviews?status=upheld", headers=bearer("sup")).json()["total"] == 0
    assert export_command(state.settings, None, out) == 0 and out.read_text(encoding="utf-8") == ""


def _until(ws: Any, kind: str) -> list[dict[str, Any]]:
    events = []
    while True:
        event = ws.receive_json()
        events.append(event)
        if event["type"] == kind:
            return events


def test_a_verdict_during_the_live_call_reaches_its_screens_and_waits_for_the_report(tmp_path: Path,
                                                                                      shared_data: Path) -> None:
    script, pcm = _call(shared_data, "call_s03")
    with tokens_client(tmp_path, TOKENS, ScriptedTranscriber(script)) as client:
        with client.websocket_connect("/v1/calls/live1/events", headers=bearer("a1")) as screen, \
                client.websocket_connect("/v1/calls/live1/audio", headers=bearer("ing")) as ws:
            ws.send_json({"type": "start", "sample_rate_hz": 16000, "encoding": "pcm16", "agent_id": "A1",
                          "channels": ["agent", "customer"], "loan_file": LOAN})
            for i in range(0, len(pcm), 12800):
                ws.send_bytes(pcm[i: i + 12800])
            prompt = _until(ws, "prompt")[-1]
            body = {"question_utterance_id": prompt["question_utterance_id"], "topic": prompt["topic"],
                    "verdict": "disputed", "reason": "clear", "note": "客户赵强其实说清楚了"}
            assert _feedback(client, "a2", "live1", **body).status_code == 403
            assert _feedback(client, "ing", "live1", **body).status_code == 403
            saved = _feedback(client, "a1", "live1", **body)
            assert saved.status_code == 200, saved.text
            live = saved.json()
            assert (live["label"], live["prompt_text"], live["topic"]) == (prompt["label"], prompt["text"],
                                                                          prompt["topic"])
            assert live["question_text"] and "赵强" not in live["note"]  # the loan file's name redacted
            # Reviewed against the stored report: not while the call streams.
            queue = client.get("/v1/reviews", headers=bearer("sup")).json()
            assert queue["items"][0]["reviewable"] is False
            assert client.post(f"/v1/reviews/{live['id']}", headers=bearer("sup"),
                               json={"decision": "uphold", "label": "clear"}).status_code == 409
            ws.send_json({"type": "stop"})
            with pytest.raises(WebSocketDisconnect):
                while True:
                    ws.receive_json()
            seen = []
            with pytest.raises(WebSocketDisconnect):
                while True:
                    seen.append(screen.receive_json())
        marks = [e for e in seen if e["type"] == "prompt_feedback"]
        assert marks == [{"type": "prompt_feedback", "question_utterance_id": prompt["question_utterance_id"],
                          "topic": prompt["topic"], "verdict": "disputed", "reason": "clear"}]
        report = client.get("/v1/calls/live1/report", headers=bearer("a1")).json()
        assert [f["id"] for f in report["prompt_feedback"]] == [live["id"]]
        assert client.get("/v1/reviews", headers=bearer("sup")).json()["items"][0]["reviewable"] is True
        decided = client.post(f"/v1/reviews/{live['id']}", headers=bearer("sup"),
                              json={"decision": "uphold", "label": "clear"})
        assert decided.status_code == 200, decided.text
        assert [json.loads(e.payload)["verdict"] for e in audited(client, "prompt_feedback")] == ["disputed"]
        store = state_of(client.app).store  # type: ignore[arg-type]
        assert isinstance(store, Store) and len(store.report_versions("live1")) == 1
        # Deleting the call deletes the verdicts on its prompts (they keep its redacted question and answer).
        assert client.delete("/v1/calls/live1", headers=bearer("adm")).status_code == 204
        assert client.get("/v1/reviews?status=upheld", headers=bearer("sup")).json()["total"] == 0


def test_with_redis_the_mark_reaches_a_screen_through_the_calls_stream(tmp_path: Path, shared_data: Path,
                                                                       redis_server: Any) -> None:
    """Replicas sharing Redis: the replica streaming the call appends the mark to the call's stream, which every
    replica's screens read."""
    script, pcm = _call(shared_data, "call_s03")
    with (tokens_client(tmp_path, TOKENS, ScriptedTranscriber(script), redis_url=redis_server.url) as client,
          client.websocket_connect("/v1/calls/r1/events", headers=bearer("sup")) as screen,
          client.websocket_connect("/v1/calls/r1/audio", headers=bearer("ing")) as ws):
        ws.send_json({"type": "start", "sample_rate_hz": 16000, "encoding": "pcm16", "agent_id": "A1",
                      "channels": ["agent", "customer"], "loan_file": LOAN})
        for i in range(0, len(pcm), 12800):
            ws.send_bytes(pcm[i: i + 12800])
        prompt = _until(ws, "prompt")[-1]
        assert _feedback(client, "a1", "r1", question_utterance_id=prompt["question_utterance_id"],
                         topic=prompt["topic"], verdict="asked_again").status_code == 200
        ws.send_json({"type": "stop"})
        with pytest.raises(WebSocketDisconnect):
            while True:
                ws.receive_json()
        seen = []
        with pytest.raises(WebSocketDisconnect):
            while True:
                seen.append(screen.receive_json())
    marks = [e for e in seen if e["type"] == "prompt_feedback"]
    assert [(m["question_utterance_id"], m["topic"], m["verdict"], m["reason"]) for m in marks] == [
        (prompt["question_utterance_id"], prompt["topic"], "asked_again", None)]
