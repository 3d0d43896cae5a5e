"""The stored report's format: `Report.to_dict` writes `format_version`, `read_report` is the one reader of a
stored report, and a report stored before the version existed (format 1: what main stored at d03c83a, frozen
in tests/data/report_format1.json from a synthetic call scored by that code) reads into the same typed report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nlu.assess import Assessor
from nlu.dialogue import PromptRecord, Turn
from nlu.report import REPORT_FORMAT, Report, ReportFormatError, SilencedSpan, read_report, score_call
from nlu.types import LoanRecord, Mismatch

FORMAT_1 = Path(__file__).parent.parent / "data" / "report_format1.json"


def _stored_1() -> dict:
    return json.loads(FORMAT_1.read_text(encoding="utf-8"))


def test_a_report_stored_by_format_1_reads_typed() -> None:
    stored = _stored_1()
    assert "format_version" not in stored
    report = read_report(stored)
    assert report.call_id == "fixture-call-1" and report.duration_s == 20.0
    assert (report.risk_score, report.tier) == (65, "high")
    assert report.utterances[3] == Turn("customer-2", "customer", "四千块。", 6.8, 7.6)
    by_topic = {t.topic: t for t in report.topics}
    assert by_topic["monthly"].mismatch == Mismatch("monthly_yuan", 4000.0, 5200.0)
    assert by_topic["monthly"].slots[0].value == 4000.0 and by_topic["monthly"].question_span == (4.0, 6.0)
    assert by_topic["purpose"].label == "unclear" and by_topic["overdue"].stated == "yes"
    assert not by_topic["loan_amount"].asked and "loan_amount" in report.agent.not_asked
    assert report.agent.prompts[0] == PromptRecord("monthly", "clear", stored["agent"]["prompts"][0]["text"], 7.6,
                                                   False)
    assert report.actions[0].id == "send_schedule" and report.actions[0].spans == ((6.8, 7.6),)
    assert [a.label for a in report.answers] == ["clear", "unclear", "clear"]
    assert report.labels == {"clear": 2, "unclear": 1} and report.assessor_version and report.risk_version
    assert report.loan_file is not None and report.loan_file["borrower"] == "王**"
    assert report.silenced_audio == (SilencedSpan("customer", 6.9, 7.3),)


def test_format_1_written_again_is_format_2_with_nothing_else_changed() -> None:
    stored = _stored_1()
    data = read_report(stored).to_dict()
    assert data.pop("format_version") == REPORT_FORMAT == 2
    # Fields format 2 gained since (a live call's re-decoding, #29) come at their defaults.
    assert (data.pop("live_labels"), data.pop("redecoded")) == ({}, ())
    for prompt in data["agent"]["prompts"]:  # prompts name their question since #31
        assert prompt.pop("question_utterance_id") is None
    assert json.loads(json.dumps(data)) == stored


def test_an_older_format_1_report_reads_with_what_was_added_since_at_its_defaults() -> None:
    """Reports of the first stored version lack answers, versions, a topic's `stated`, the loan file and the
    silenced audio; one without `agent` gets the agent's side its topics imply."""
    stored = _stored_1()
    for key in ("answers", "assessor_version", "risk_version", "loan_file", "silenced_audio", "agent"):
        del stored[key]
    for topic in stored["topics"]:
        del topic["stated"]
    report = read_report(stored)
    assert report.answers == () and report.assessor_version == "" and report.loan_file is None
    assert all(t.stated is None for t in report.topics) and report.silenced_audio == ()
    assert (report.agent.asked, report.agent.total) == (3, len(report.topics))
    assert report.agent.coverage == pytest.approx(3 / len(report.topics)) and report.agent.prompts == ()


def test_round_trip() -> None:
    assessor = Assessor()
    turns = [Turn("a1", "agent", "您每月的月供是多少？", 0.0, 2.0), Turn("c1", "customer", "四千。", 2.5, 3.5)]
    loan = LoanRecord.from_mapping({"role": "borrower", "monthly_yuan": 5200})
    scored = score_call("rt", turns, assessor, loan, 10.0)
    assert any(t.mismatch for t in scored.topics)
    assert read_report(scored.to_dict()) == scored
    again = read_report(json.loads(json.dumps(scored.to_dict(), ensure_ascii=False)))
    assert again == scored and isinstance(again, Report)


@pytest.mark.parametrize(("change", "message"), [
    ({"format_version": 3}, "format 3"), ({"tier": "extreme"}, "tier"),
    ({"format_version": 2, "topics": None}, "topics"), ({"topics": None}, "topics"),
    ({"risk_score": "a lot"}, "risk_score")])
def test_what_no_format_describes_is_refused(change: dict, message: str) -> None:
    with pytest.raises(ReportFormatError, match=message):
        read_report({**_stored_1(), **change})
