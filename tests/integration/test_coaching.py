"""Agent coaching (#19): the figures as pure functions over reports made by the real pipeline from text turns
(hand-checked), the stored rows summed in SQL against the same functions (SQLite and PostgreSQL), recomputation
on re-scoring, the rebuild command, and the routes' role checks, CSV export and audit."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from nlu.assess import Assessor
from nlu.dialogue import Turn
from nlu.report import read_report, score_call
from nlu.script import ScriptError, load_script
from nlu.types import LoanRecord
from service.app import create_app, state_of
from service.auth import write_tokens_file
from service.bootstrap import report_rows
from service.coaching.cards import window
from service.coaching.figures import (
    CallStats,
    CoachingRules,
    Rule,
    call_stats,
    figures,
    findings,
    load_rules,
    moments,
    per_topic,
    period_bounds,
    previous_periods,
    review_calls,
    team_median,
    totals,
)
from service.coaching.repository import agent_calls, agent_totals, period_totals
from service.reports import report_row
from service.settings import Settings
from service.store import Store
from service.store.models import AgentCallStats, AuditEntry
from tests.support.postgres import fresh_postgres_schema
from tests.support.server import bearer

LOAN = {"amount_yuan": 900_000, "term_years": 20, "repay_day": 12, "monthly_yuan": 5200, "rate_pct": 3.7,
        "role": "guarantor"}
SENSITIVITY = {t.id: t.sensitivity for t in load_script().topics.values()}
AT = datetime(2026, 12, 1, 9, 0)

# A guarantor's call: the amount stated wrong and left standing, the repayment day evaded and never asked again,
# the monthly payment vague, asked again and then clear; the guarantee itself never asked.
GUARANTOR_CALL = [
    ("a1", "agent", "您好，这里是银行贷后回访。请问您的贷款金额是多少？", 0, 4),
    ("c1", "customer", "八十万吧。", 5, 6),
    ("a2", "agent", "每月几号还款？", 8, 10),
    ("c2", "customer", "这个问它干嘛，不方便说。", 11, 13),
    ("a3", "agent", "每月月供多少钱？", 15, 17),
    ("c3", "customer", "大概五千多吧，记不清了。", 20, 22),
    ("a4", "agent", "每月月供具体是多少？", 23, 25),
    ("c4", "customer", "五千二。", 26, 27),
]
# A borrower's call done well: every answer clear, no prompt needed.
CLEAN_CALL = [
    ("a1", "agent", "请问您的贷款金额是多少？", 0, 3),
    ("c1", "customer", "九十万。", 3.5, 4.5),
    ("a2", "agent", "每月几号还款？", 5, 7),
    ("c2", "customer", "每月十二号。", 9, 10),
]


@pytest.fixture(scope="module")
def assessor() -> Assessor:
    return Assessor()  # the rules alone: deterministic and fast


def report_of(assessor: Assessor, turns: list[tuple[Any, ...]], call_id: str = "c", role: str = "guarantor",
              duration_s: float = 40.0) -> dict[str, Any]:
    """A report as the service stores it, by the real pipeline from text turns."""
    loan = LoanRecord.from_mapping({**LOAN, "role": role})
    return score_call(call_id, [Turn(*t) for t in turns], assessor, loan, duration_s).to_dict()


def _stats(report: dict[str, Any], sensitivity: dict[str, str], **row: Any) -> CallStats:
    """`call_stats` of a report as stored (read by the one reader, as the service reads it)."""
    return call_stats(read_report(report), sensitivity, **row)


# -- pure figures ---------------------------------------------------------------------------------------------


def test_one_calls_figures_by_hand(assessor: Assessor) -> None:
    report = report_of(assessor, GUARANTOR_CALL)
    c = _stats(report, SENSITIVITY, call_id="g1", agent_id="A1", at=AT)
    # 11 topics on a guarantor's checklist; asked: loan_amount, repay_date, monthly.
    assert (c.topics_total, c.topics_asked) == (11, 3) and c.coverage == pytest.approx(3 / 11, abs=1e-3)
    # Never asked and high: purpose, income, overdue, guarantor.
    assert c.high_skipped == 4
    # Prompts: the amount's mismatch and the evaded day (not followed), the vague monthly (followed, then clear).
    assert (c.prompts_shown, c.prompts_followed, c.prompts_clarified) == (3, 1, 1)
    assert c.vague_unresolved == 1 and c.mismatches_standing == 1  # the day evaded; 80 vs 90万 still standing
    # Talk: agent 4+2+2+2 = 10 s, customer 1+2+2+1 = 6 s. Silences after the four questions: 1, 1, 3, 1 s.
    assert (c.agent_talk_s, c.customer_talk_s) == (10.0, 6.0)
    assert (c.questions, c.question_silence_s) == (4, 6.0)
    by_topic = {t.topic: t for t in c.topics}
    assert by_topic["monthly"].challenged and by_topic["monthly"].label == "clear"
    assert not by_topic["repay_date"].challenged and by_topic["repay_date"].label == "evasive"
    assert by_topic["loan_amount"].mismatch_raised and by_topic["loan_amount"].mismatch_standing

    f = figures(totals([c]))
    assert f.calls == 1 and f.prompts_followed_ratio == pytest.approx(1 / 3, abs=1e-4)
    assert f.talk_ratio == 0.625 and f.question_silence_s == 1.5 and f.duration_s == 40.0


def test_a_period_sums_calls_and_divides_once(assessor: Assessor) -> None:
    g = _stats(report_of(assessor, GUARANTOR_CALL), SENSITIVITY, call_id="g", agent_id="A1", at=AT)
    ok = _stats(report_of(assessor, CLEAN_CALL, role="borrower", duration_s=20.0), SENSITIVITY,
                    call_id="ok", agent_id="A1", at=AT)
    # The clean call: 2 of 10 borrower topics asked, both clear; silences 0.5 and 2 s; 3 high topics skipped.
    assert (ok.topics_asked, ok.topics_total, ok.prompts_shown, ok.vague_unresolved) == (2, 10, 0, 0)
    assert ok.question_silence_s == 2.5 and ok.high_skipped == 3
    f = figures(totals([g, ok]))
    assert f.calls == 2
    assert f.coverage == pytest.approx((g.coverage + 0.2) / 2, abs=1e-4)
    assert f.high_skipped_per_call == 3.5  # (4 + 3) / 2
    assert f.prompts_followed_ratio == pytest.approx(1 / 3, abs=1e-4)  # prompts are summed, not averaged per call
    assert f.vague_unresolved_per_call == 0.5 and f.mismatches_standing_per_call == 0.5
    assert f.question_silence_s == pytest.approx((6.0 + 2.5) / 6, abs=1e-4)  # per question over both calls
    assert f.duration_s == 30.0
    assert figures(totals([])).coverage is None  # nothing to divide by: no figure, not zero


def test_team_median_per_figure() -> None:
    from service.coaching.figures import Totals

    cards = [figures(Totals(calls=1, duration_s=d, coverage=cov)) for d, cov in ((60, 0.5), (120, 0.9), (300, 0.7))]
    median = team_median(cards)
    assert median["duration_s"] == 120 and median["coverage"] == 0.7 and median["calls"] == 1
    assert median["talk_ratio"] is None  # nobody has talk time


def test_periods_of_the_calendar() -> None:
    assert period_bounds("day", date(2026, 12, 2)) == (date(2026, 12, 2), date(2026, 12, 3))
    assert period_bounds("week", date(2026, 12, 2)) == (date(2026, 11, 30), date(2026, 12, 7))  # from Monday
    assert period_bounds("month", date(2026, 12, 31)) == (date(2026, 12, 1), date(2027, 1, 1))
    assert previous_periods("month", date(2026, 2, 10), 3) == [
        (date(2025, 12, 1), date(2026, 1, 1)), (date(2026, 1, 1), date(2026, 2, 1)),
        (date(2026, 2, 1), date(2026, 3, 1))]
    # The bank's month of December in Shanghai starts at 16:00 UTC on 30 November.
    w = window("month", date(2026, 12, 15), ZoneInfo("Asia/Shanghai"))
    assert (w.start_utc, w.end_utc) == (datetime(2026, 11, 30, 16), datetime(2026, 12, 31, 16))


def test_per_topic_coverage_and_moments(assessor: Assessor) -> None:
    g = _stats(report_of(assessor, GUARANTOR_CALL), SENSITIVITY, call_id="g", agent_id="A1", at=AT)
    ok = _stats(report_of(assessor, CLEAN_CALL, role="borrower", duration_s=20.0), SENSITIVITY,
                    call_id="ok", agent_id="A1", at=AT)
    topics = {t.topic: t for t in per_topic([g, ok])}
    assert (topics["repay_date"].calls, topics["repay_date"].asked, topics["repay_date"].coverage) == (2, 2, 1.0)
    assert (topics["monthly"].asked, topics["monthly"].coverage) == (1, 0.5)
    assert topics["guarantor"].calls == 1 and topics["guarantor"].asked == 0  # on the guarantor's checklist only
    assert (topics["monthly"].prompts_shown, topics["monthly"].prompts_followed) == (1, 1)
    found = {(m.kind, m.topic): m for m in moments(g, long_silence_s=2.5)}
    assert (found[("unresolved", "repay_date")].start_s, found[("unresolved", "repay_date")].end_s) == (11.0, 13.0)
    assert found[("mismatch_standing", "loan_amount")].start_s == 5.0
    assert found[("skipped", "guarantor")].start_s is None
    assert (found[("silence", "monthly")].start_s, found[("silence", "monthly")].end_s) == (17.0, 20.0)
    assert ("prompt_ignored", "monthly") not in found  # that prompt was followed up


def test_the_coaching_list_ranks_calls_by_the_configured_rules(assessor: Assessor) -> None:
    rules = load_rules()
    g = _stats(report_of(assessor, GUARANTOR_CALL), SENSITIVITY, call_id="g", agent_id="A1", at=AT)
    ok = _stats(report_of(assessor, CLEAN_CALL, role="borrower", duration_s=20.0), SENSITIVITY,
                    call_id="ok", agent_id="A1", at=AT)
    reasons = {f.rule: f for f in findings(g, rules)}
    assert reasons["guarantor_consent_skipped"].topic == "guarantor"
    assert reasons["evasion_unchallenged"].topic == "repay_date" and reasons["evasion_unchallenged"].start_s == 11.0
    assert reasons["mismatch_standing"].topic == "loan_amount"
    assert "担保意愿" in reasons["guarantor_consent_skipped"].reason
    # The guarantor topic is counted once (its first rule), not again as a skipped high-sensitivity topic.
    assert not any(f.topic == "guarantor" and f.rule == "high_sensitivity_skipped" for f in findings(g, rules))
    ranked = review_calls([ok, g], rules)
    assert [r.call_id for r in ranked] == ["g", "ok"] and ranked[0].points > ranked[1].points
    # Only high-sensitivity skips in the clean call: purpose, income, overdue at 15 points each.
    assert ranked[1].points == 45.0
    only_mismatch = CoachingRules((Rule("m", "mismatch_standing", 1.0, "{name}不符"),))
    assert [r.call_id for r in review_calls([ok, g], only_mismatch)] == ["g"]  # nothing found: not listed
    assert review_calls([ok, g], only_mismatch)[0].findings[0].reason == "贷款金额不符"


def test_bad_rules_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "coaching.yaml"
    bad.write_text("rules:\n  - {id: x, kind: nonsense, reason: r}\n", encoding="utf-8")
    with pytest.raises(ScriptError, match="kind"):
        load_rules(bad)


def test_reports_without_the_agent_side_count_as_zero() -> None:
    old = {"call_id": "x", "duration_s": 10.0, "topics": [], "labels": {}, "risk_score": 0, "tier": "low"}
    c = _stats(old, SENSITIVITY, call_id="x", agent_id="A1", at=AT)
    assert (c.topics_total, c.prompts_shown, c.questions, c.agent_talk_s) == (0, 0, 0, 0.0)


# -- storage ------------------------------------------------------------------------------------------------


def _store_call(store: Store, report: dict[str, Any], agent_id: str | None) -> None:
    job = store.create_job(report["call_id"], [], None, agent_id)
    store.complete_job(job.id, report_row(report), agent_id, None, None)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'huifang.db'}", report_rows(Settings(data_dir=tmp_path)))
        s.migrate()
        yield s
        s.close()
        return
    with fresh_postgres_schema() as url:
        s = Store(url, report_rows(Settings(data_dir=tmp_path)))
        s.migrate()
        yield s
        s.close()


def test_stored_rows_sum_to_the_pure_figures_and_follow_rescoring(store: Store, assessor: Assessor) -> None:
    reports = [report_of(assessor, GUARANTOR_CALL, "g1"), report_of(assessor, CLEAN_CALL, "ok1", "borrower", 20.0),
               report_of(assessor, GUARANTOR_CALL, "g2")]
    for r, agent in zip(reports, ["A1", "A1", "A2"], strict=True):
        _store_call(store, r, agent)
    _store_call(store, report_of(assessor, CLEAN_CALL, "nobody", "borrower"), None)  # no agent: not counted
    far = (datetime(2000, 1, 1), datetime(2100, 1, 1))
    sums = agent_totals(store, *far)
    assert set(sums) == {"A1", "A2"}
    expected = totals(_stats(r, SENSITIVITY, call_id=r["call_id"], agent_id="A1", at=AT) for r in reports[:2])
    assert sums["A1"] == expected  # SQL sums are the pure sums
    stored = {c.call_id: c for c in agent_calls(store, "A1", *far)}
    assert set(stored) == {"g1", "ok1"}
    # The row holds everything the card needs: read back, it is the call's pure figures.
    assert stored["g1"] == replace(_stats(reports[0], SENSITIVITY, call_id="g1", agent_id="A1", at=AT),
                                   at=stored["g1"].at)

    # Re-scoring a call replaces its row: g2 scored again as a clean call, A2's figures follow.
    assert sums["A2"].mismatches_standing == 1
    _store_call(store, {**report_of(assessor, CLEAN_CALL, "g2", "borrower", 20.0)}, "A2")
    again = agent_totals(store, *far)["A2"]
    assert again.calls == 1 and again.mismatches_standing == 0 and again.duration_s == 20.0
    # Consecutive periods in one pass: ok1 moved to 2025, g1 stays in 2026.
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE agent_call_stats SET at = :at WHERE call_id = 'ok1'"), {"at": datetime(2025, 6, 1)})
    years = [(datetime(2024, 1, 1), datetime(2025, 1, 1)), (datetime(2025, 1, 1), datetime(2026, 1, 1)),
             (datetime(2026, 1, 1), datetime(2100, 1, 1))]
    by_year = period_totals(store, years, agent_id="A1")
    assert [{a: t.calls for a, t in year.items()} for year in by_year] == [{}, {"A1": 1}, {"A1": 1}]
    assert by_year[1]["A1"] == totals([_stats(reports[1], SENSITIVITY, call_id="ok1", agent_id="A1", at=AT)])
    assert set(period_totals(store, years)[2]) == {"A1", "A2"}
    # Deleting a call removes its row.
    store.delete_call("ok1")
    assert agent_totals(store, *far)["A1"].calls == 1


def test_rebuild_fills_rows_for_calls_scored_before(tmp_path: Path, assessor: Assessor) -> None:
    data = tmp_path / "data"
    data.mkdir()
    store = Store(f"sqlite:///{data / 'huifang.db'}")
    store.migrate()
    for i in range(3):
        _store_call(store, report_of(assessor, GUARANTOR_CALL, f"old{i}"), "A1")
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM agent_call_stats"))  # as if scored before migration 0005
    store.close()
    env = {**os.environ, "HUIFANG_DATA_DIR": str(data)}
    run = subprocess.run([sys.executable, "-m", "service.cli", "coaching", "rebuild"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert run.returncode == 0 and "3 call(s)" in run.stdout, run.stderr
    store = Store(f"sqlite:///{data / 'huifang.db'}")
    with store.session() as s:
        rows = s.scalars(select(AgentCallStats)).all()
        assert sorted(r.call_id for r in rows) == ["old0", "old1", "old2"]
        assert all(r.high_skipped == 4 and r.mismatches_standing == 1 for r in rows)
    run = subprocess.run([sys.executable, "-m", "service.cli", "coaching", "rebuild"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert "0 call(s)" in run.stdout  # idempotent
    store.close()


# -- routes ---------------------------------------------------------------------------------------------------

TOKENS = {"ing": ("ingest", None), "a1": ("agent", "A1"), "a2": ("agent", "A2"), "sup": ("supervisor", None),
          "adm": ("admin", None)}


@pytest.fixture()
def client(tmp_path: Path, assessor: Assessor) -> Any:
    from tests.integration.test_live_socket import FakeTranscriber

    path = tmp_path / "tokens.yaml"
    write_tokens_file(path, TOKENS)  # type: ignore[arg-type]
    settings = Settings(data_dir=tmp_path / "data", auth={"tokens_file": path})
    with TestClient(create_app(settings, transcriber=FakeTranscriber())) as c:  # type: ignore[arg-type]
        store = state_of(c.app).store  # type: ignore[arg-type]
        assert store is not None
        _store_call(store, report_of(assessor, GUARANTOR_CALL, "g1"), "A1")
        _store_call(store, report_of(assessor, CLEAN_CALL, "ok1", "borrower", 20.0), "A1")
        _store_call(store, report_of(assessor, CLEAN_CALL, "b1", "borrower", 20.0), "A2")
        yield c


def test_supervisors_see_every_agent_sorted(client: TestClient) -> None:
    board = client.get("/v1/agents?period=month&sort=high_skipped_per_call&order=desc", headers=bearer("sup"))
    assert board.status_code == 200, board.text
    body = board.json()
    assert [a["agent_id"] for a in body["agents"]] == ["A1", "A2"]  # A1 skipped 3.5 high topics a call, A2 3
    a1, a2 = body["agents"]
    assert a1["figures"]["calls"] == 2 and a2["figures"]["calls"] == 1
    assert body["team_median"]["high_skipped_per_call"] == 3.25  # median of 3.5 and 3
    assert a1["vs_median"]["high_skipped_per_call"] == 0.25
    ascending = client.get("/v1/agents?sort=high_skipped_per_call&order=asc", headers=bearer("sup")).json()
    assert [a["agent_id"] for a in ascending["agents"]] == ["A2", "A1"]
    assert client.get("/v1/agents?period=day", headers=bearer("adm")).status_code == 200
    assert client.get("/v1/agents?sort=nonsense", headers=bearer("sup")).status_code == 422


def test_an_agent_sees_only_their_own_card(client: TestClient) -> None:
    own = client.get("/v1/agents/A1", headers=bearer("a1"))
    assert own.status_code == 200, own.text
    card = own.json()
    assert card["agent_id"] == "A1" and card["figures"]["calls"] == 2
    assert {c["call_id"] for c in card["calls"]} == {"g1", "ok1"}
    assert "b1" not in own.text and "A2" not in own.text  # nothing of another agent, not even an id
    other = client.get("/v1/agents/A2", headers=bearer("a1"))
    assert other.status_code == 403 and other.json()["code"] == "forbidden"
    assert client.get("/v1/agents", headers=bearer("a1")).status_code == 403  # the scoreboard is for supervisors
    assert client.get("/v1/agents/A1", headers=bearer("ing")).status_code == 403
    assert client.get("/v1/agents/A1").status_code == 401
    assert client.get("/v1/agents/A2", headers=bearer("sup")).json()["figures"]["calls"] == 1


def test_the_card_links_figures_to_calls_and_spans(client: TestClient) -> None:
    card = client.get("/v1/agents/A1?period=week", headers=bearer("sup")).json()
    (first, second) = card["review"]
    assert first["call_id"] == "g1" and second["call_id"] == "ok1"
    rules = [f["rule"] for f in first["findings"]]
    assert rules[0] == "guarantor_consent_skipped" and {"evasion_unchallenged", "mismatch_standing"} <= set(rules)
    evasion = next(f for f in first["findings"] if f["rule"] == "evasion_unchallenged")
    assert evasion["url"] == "/calls/g1#t=11-13"
    unresolved = card["moments"]["vague_unresolved_per_call"]
    assert [(m["call_id"], m["topic"], m["url"]) for m in unresolved] == [("g1", "repay_date", "/calls/g1#t=11-13")]
    assert card["moments"]["mismatches_standing_per_call"][0]["url"] == "/calls/g1#t=5-6"
    topics = {t["topic"]: t for t in card["topics"]}
    assert topics["monthly"]["prompts_followed"] == 1 and topics["repay_date"]["coverage"] == 1.0
    assert len(card["trend"]) == 6 and card["trend"][-1]["figures"]["calls"] == 2
    assert card["trend"][0]["figures"]["calls"] == 0
    # Nothing a customer said travels in a card: spans and topic names, no transcript text.
    assert "不方便说" not in str(card) and "八十万" not in str(card)


def test_csv_export_and_every_read_audited(client: TestClient) -> None:
    board = client.get("/v1/agents?format=csv", headers=bearer("sup"))
    assert board.status_code == 200 and board.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(board.text)))
    assert [r["agent_id"] for r in rows] == ["A1", "A2"] and rows[0]["calls"] == "2"
    assert rows[0]["team_median_high_skipped_per_call"] == "3.25"
    card = client.get("/v1/agents/A1?format=csv", headers=bearer("a1"))
    trend = list(csv.DictReader(io.StringIO(card.text)))
    assert len(trend) == 6 and trend[-1]["calls"] == "2" and trend[-1]["agent_id"] == "A1"
    store = state_of(client.app).store  # type: ignore[arg-type]
    assert store is not None
    with store.session() as s:
        reads = s.scalars(select(AuditEntry).where(AuditEntry.kind == "agent_read").order_by(AuditEntry.id)).all()
    assert [(r.actor, '"agent_id":"*"' in r.payload) for r in reads] == [("supervisor-3", True),
                                                                          ("agent-1", False)]
    assert '"format":"csv"' in reads[1].payload
    # Refused reads are not data reads: the 403 above leaves no entry.
    client.get("/v1/agents/A2", headers=bearer("a1"))
    with store.session() as s:
        assert s.scalar(select(AuditEntry.id).where(AuditEntry.kind == "agent_read").order_by(
            AuditEntry.id.desc()).limit(1)) == reads[-1].id


def test_the_pages_are_served(client: TestClient) -> None:
    for path in ("/agents", "/agents/A1"):
        page = client.get(path)
        assert page.status_code == 200 and "/static/agents.js" in page.text
    assert client.get("/static/agents.js").status_code == 200
