"""`huifang rescore` (issue #25 point 7): a stored call re-assessed from its stored transcript with a changed
assessor and risk weights, on SQLite and PostgreSQL: the report is replaced, the previous one kept as an earlier
version with its assessor version, the derived rows and the audit follow, and a second run does nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from nlu.dialogue import Turn
from nlu.report import DEFAULT_RISK_FILE, load_risk, read_report
from nlu.script import DEFAULT_CUES_FILE
from pipeline.call import ROLES, CallPipeline
from pipeline.recording import Scored, finish_report, rescore_report
from service import bootstrap
from service.cli.rescore import parse_since, rescore_command
from service.errors import ServiceError
from service.reports import answer_labels
from service.rescore import report_change
from service.settings import Settings
from service.store import Store, audit
from service.store.models import AgentCallStats, Answer, AuditEntry, CallSummary
from service.workers.jobs import JobContext, run_job
from tests.support.reports import stored_report

LOAN = {"customer_id": "C7", "loan_id": "L7", "role": "guarantor", "guarantor_name": "赵六", "monthly_yuan": 5200,
        "repay_day": 12}
#: Only the monthly payment is asked: the call script's other high-sensitivity topics are not, whatever the
#: assessor makes of the answer, so the not-asked weight alone moves the score.
TURNS = [Turn("agent-1", "agent", "您每月的月供是多少？", 0.0, 2.0),
         Turn("customer-1", "customer", "五千二。", 2.5, 3.5)]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'huifang.db'}"
    return str(request.getfixturevalue("postgres_schema"))


def _yaml(path: Path, source: Path, change: dict[str, Any]) -> Path:
    raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    for key, value in change.items():
        raw[key] = value(raw[key]) if callable(value) else value
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def _settings(tmp_path: Path, db_url: str, **nlu: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=db_url,  # type: ignore[arg-type]
                    nlu={"classifier_weight": 0.0, **nlu}, scoring={"risk_file": tmp_path / "risk.yaml"})


def _store_call(settings: Settings, call_id: str) -> dict[str, Any]:
    """Score TURNS with the settings' assessor and weights and store the report as the job workers do."""
    assessor, risk = bootstrap.load_assessor(settings), load_risk(settings.scoring.risk_file)
    pipeline = CallPipeline(call_id, ROLES, assessor, LOAN, bootstrap.dialogue_options(settings))
    report = json.loads(json.dumps(finish_report(pipeline, list(TURNS), 30.0, risk, LOAN, [])))
    store = bootstrap.open_store(settings)
    try:
        job = store.create_job(call_id, [], LOAN, "A1")
        claimed = store.claim(job.id)
        assert claimed is not None
        run_job(JobContext(store, settings.data_dir, lambda *_: Scored(report, []), 30.0), claimed)
    finally:
        store.close()
    return report


def test_rescore_replaces_the_report_keeps_the_old_version_and_a_second_run_does_nothing(
        tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Scored by an older assessor (one more hedge word in its cues) under older weights.
    old_cues = _yaml(tmp_path / "cues_old.yaml", DEFAULT_CUES_FILE,
                     {"conditional_hedges": lambda words: [*words, "说不准吧"]})
    _yaml(tmp_path / "risk.yaml", DEFAULT_RISK_FILE, {"not_asked_points": {"high": 4}})
    old_settings = _settings(tmp_path, db_url, cues_file=old_cues)
    old = _store_call(old_settings, "call-1")
    old_version = bootstrap.load_assessor(old_settings).version

    # The current assessor and weights: default cues, an unasked high-sensitivity topic now weighs 10.
    _yaml(tmp_path / "risk.yaml", DEFAULT_RISK_FILE, {"not_asked_points": {"high": 10}})
    settings = _settings(tmp_path, db_url)
    assessor, risk = bootstrap.load_assessor(settings), load_risk(settings.scoring.risk_file)
    assert assessor.version != old_version
    not_asked = sum(c["evidence"] == "坐席未问及该项" for c in old["contributions"])  # high-sensitivity ones
    assert not_asked >= 3

    assert rescore_command(settings, None, None, False, False) == 0
    out = capsys.readouterr().out.splitlines()
    expected_score = min(100, old["risk_score"] + 6 * not_asked)
    assert out[0].startswith(f"call-1: risk {old['risk_score']} {old['tier']} -> {expected_score} ")
    assert out[-1].startswith("rescore: 1 call(s) re-scored, 1 changed; 0 already at assessor")

    store = Store(settings.db_url)
    try:
        call = store.get_call("call-1")
        assert call is not None
        want = json.loads(json.dumps(rescore_report(read_report(old), assessor, bootstrap.dialogue_options(settings),
                                                    risk)))
        assert call.report == want  # the pipeline's own scoring of the stored utterances
        assert (call.risk_score, call.report["assessor_version"]) == (expected_score, assessor.version)
        assert call.report["risk_version"] == risk.version
        assert call.report["utterances"] == old["utterances"] and call.report["loan_file"] == old["loan_file"]
        [kept] = store.report_versions("call-1")
        assert (kept.version, kept.assessor_version, kept.reason) == (1, old_version, "rescore")
        assert kept.report == old
        with store.session() as s:  # the derived rows follow the new report
            summary = s.get(CallSummary, "call-1")
            assert summary is not None and summary.risk_score == expected_score
            assert summary.customer_id == "C7" and summary.loan_id == "L7"
            assert summary.facts["loan"]["name_masked"] == "赵*"  # kept, though the stored loan file lost the name
            assert s.get(AgentCallStats, "call-1") is not None
            answers = s.scalars(select(Answer).where(Answer.call_id == "call-1")).all()
            assert sorted((a.topic, a.label) for a in answers) == sorted(
                (t["topic"], t["label"]) for t in want["topics"] if t.get("label"))
            runs = s.scalars(select(AuditEntry).where(AuditEntry.kind == "rescore")).all()
            assert [json.loads(r.payload)["rescored"] for r in runs] == [1]
        assert audit.verify(store, labels_of=answer_labels).ok  # the new report is the audited one

        # Nothing to do the second time; a dry run with --force prints the call and stores nothing.
        assert rescore_command(settings, None, None, False, False) == 0
        out = capsys.readouterr().out.splitlines()
        assert out == [f"rescore: 0 call(s) re-scored, 0 changed; 1 already at assessor {assessor.version} "
                       f"(risk {risk.version}) skipped"]
        assert rescore_command(settings, None, "call-1", True, True) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0] == f"call-1: risk {expected_score} {call.tier}; unchanged"
        assert out[-1].endswith("(dry run: nothing stored)")
        assert len(store.report_versions("call-1")) == 1 and store.get_call("call-1").report == want  # type: ignore[union-attr]
        # --since after the call selects nothing.
        assert rescore_command(settings, "2999-01-01", None, True, False) == 0
        assert capsys.readouterr().out.startswith("rescore: 0 call(s) re-scored")
        assert len(store.report_versions("call-1")) == 1
        store.delete_call("call-1")  # erasing a call erases its earlier reports too
        assert store.report_versions("call-1") == []
    finally:
        store.close()


def test_rescore_refuses_an_unknown_call_and_a_bad_date(tmp_path: Path) -> None:
    _yaml(tmp_path / "risk.yaml", DEFAULT_RISK_FILE, {})
    settings = _settings(tmp_path, f"sqlite:///{tmp_path / 'huifang.db'}")
    with pytest.raises(ServiceError, match="no stored call 'nope'"):
        rescore_command(settings, None, "nope", False, False)
    with pytest.raises(ServiceError, match="--since 'last week' is not a date"):
        rescore_command(settings, "last week", None, False, False)


def test_since_is_midnight_in_the_banks_time_zone() -> None:
    assert parse_since("2026-12-01", "Asia/Shanghai").isoformat() == "2026-11-30T16:00:00"
    assert parse_since("2026-12-01T08:30", "UTC").isoformat() == "2026-12-01T08:30:00"


def test_the_change_line_names_score_tier_topics_and_actions() -> None:
    before = read_report(stored_report("c", "low", 18, {"overdue": "unclear", "purpose": "clear"},
                                       actions={"second_call": []}, assessor_version="v1"))
    after = read_report(stored_report("c", "high", 50, {"overdue": "clear", "purpose": "clear"},
                                      stated={"overdue": "yes", "purpose": "let"},
                                      actions={"second_call": [], "verify_purpose": []}))
    change = report_change(before, after)
    assert change.changed and change.assessor_before == "v1"
    assert change.line() == ("c: risk 18 low -> 50 high; overdue unclear -> clear:yes, purpose clear -> clear:let, "
                             "+verify_purpose")
    assert not report_change(before, before).changed
