"""Reviewed corrections of a report (nlu/corrections.py, issue #31): the risk side scored again by the code that
scored it, a relabelled answer, an answer moved to the topic the reviewer names, idempotence."""

from __future__ import annotations

from nlu.assess import Assessor
from nlu.corrections import Correction, apply_corrections
from nlu.dialogue import Turn
from nlu.report import Report, load_risk, score_call

TURNS = [Turn("agent-1", "agent", "请问您的月供是多少？", 0.0, 2.0),
         Turn("customer-1", "customer", "问这么细干什么，我又没欠你们钱。", 2.5, 4.5),
         Turn("agent-2", "agent", "那未来有没有可能出现还款困难？", 10.0, 12.0),
         Turn("customer-2", "customer", "这个不好说吧，看情况。", 12.5, 14.0)]


def _report() -> tuple[Report, Assessor]:
    assessor = Assessor()
    return score_call("c1", TURNS, assessor, None, 40.0, risk=load_risk()), assessor


def test_no_correction_and_one_that_matches_nothing_leave_the_report_as_scored() -> None:
    report, assessor = _report()
    risk = load_risk()
    assert apply_corrections(report, [], assessor.script, risk) == report
    # Scoring the stored verdicts again gives the same score: the correction path adds nothing of its own.
    assert apply_corrections(report, [Correction("agent-9", "income", "clear")], assessor.script, risk) == report


def test_a_relabelled_answer_moves_score_tier_and_actions_and_twice_is_once() -> None:
    report, assessor = _report()
    risk = load_risk()
    labels = {t.topic: t.label for t in report.topics if t.label}
    assert labels["monthly"] != "clear"
    fixed = apply_corrections(report, [Correction("agent-1", "monthly", "clear")], assessor.script, risk)
    assert {t.topic: t.label for t in fixed.topics if t.label}["monthly"] == "clear"
    assert [a.label for a in fixed.answers if a.topic == "monthly"] == ["clear"]
    assert fixed.risk_score < report.risk_score
    assert not any(c.topic == "monthly" for c in fixed.contributions if c.label not in (None, "clear", "mismatch"))
    assert fixed.labels.get("clear", 0) == report.labels.get("clear", 0) + 1
    again = apply_corrections(fixed, [Correction("agent-1", "monthly", "clear")], assessor.script, risk)
    assert again == fixed


def test_an_answer_moved_to_another_topic_leaves_its_first_topic_unanswered() -> None:
    report, assessor = _report()
    risk = load_risk()
    moved = apply_corrections(report, [Correction("agent-2", "overdue", "clear", "income")], assessor.script, risk)
    topics = {t.topic: t for t in moved.topics}
    assert topics["income"].label == "clear" and topics["income"].asked
    assert topics["income"].answer_text == "这个不好说吧，看情况。"
    assert topics["overdue"].label is None and not topics["overdue"].asked  # asked once, by a question it was not
    assert [(a.topic, a.label) for a in moved.answers if a.question_text == TURNS[2].text] == [("income", "clear")]
    # Not asked now: it weighs what an unasked topic of its sensitivity weighs.
    sensitivity = assessor.script.topics["overdue"].sensitivity
    assert any(c.topic == "overdue" and c.reason.endswith("未询问") for c in moved.contributions) == (
        sensitivity in risk.not_asked_points)
