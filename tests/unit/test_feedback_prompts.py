"""Finding the prompt an agent's verdict is about in a report (service/feedback/prompts.py, issue #31): by the
question it names, and in a report stored before prompts named their question, by topic and time."""

from __future__ import annotations

from dataclasses import replace

from nlu.assess import Assessor
from nlu.dialogue import Turn
from nlu.report import load_risk, score_call
from service.feedback.prompts import prompt_in_report

TURNS = [Turn("agent-1", "agent", "请问您的月供是多少？", 0.0, 2.0),
         Turn("customer-1", "customer", "问这么细干什么，我又没欠你们钱。", 2.5, 4.5),
         Turn("agent-2", "agent", "您的房子现在是自住吗？", 10.0, 12.0),
         Turn("customer-2", "customer", "房子怎么用是我的自由吧。", 12.5, 14.0),
         Turn("agent-3", "agent", "那月供您现在能按时还上吗？", 20.0, 22.0),
         Turn("customer-3", "customer", "这个你就别管了。", 22.5, 23.5)]


def _report():  # type: ignore[no-untyped-def]
    return score_call("c1", TURNS, Assessor(), None, 40.0, risk=load_risk())


def test_a_prompt_is_found_by_its_question_with_the_redacted_question_and_answer() -> None:
    report = _report()
    prompts = {(p.question_utterance_id, p.topic): p for p in report.agent.prompts}
    assert ("agent-1", "monthly") in prompts and ("agent-2", "purpose") in prompts
    found = prompt_in_report(report, "agent-2", "purpose")
    assert found is not None
    assert (found.label, found.prompt_text) == (prompts[("agent-2", "purpose")].label,
                                                prompts[("agent-2", "purpose")].text)
    assert (found.question_text, found.answer_text) == ("您的房子现在是自住吗？", "房子怎么用是我的自由吧。")
    assert found.assessor_version == report.assessor_version
    assert prompt_in_report(report, "agent-2", "monthly") is None  # that question did not ask it
    assert prompt_in_report(report, "customer-2", "purpose") is None  # not a question
    assert prompt_in_report(report, "agent-9", "purpose") is None


def test_in_a_report_whose_prompts_do_not_name_their_question_topic_and_time_decide() -> None:
    report = _report()
    old = replace(report, agent=replace(report.agent, prompts=tuple(
        replace(p, question_utterance_id=None) for p in report.agent.prompts)))
    for p in report.agent.prompts:
        found = prompt_in_report(old, str(p.question_utterance_id), p.topic)
        assert found is not None and (found.prompt_text, found.label) == (p.text, p.label)
    # Monthly asked again by agent-3 got no prompt of its own (only overdue did): not agent-1's taken for it.
    assert prompt_in_report(old, "agent-3", "monthly") is None
    assert prompt_in_report(report, "agent-3", "monthly") is None
    assert prompt_in_report(old, "agent-3", "purpose") is None
