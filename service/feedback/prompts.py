"""Where the server finds the prompt an agent's verdict is about: never in what the client sends, always in the
call's own record. Pure, except `live_report`, which scores the stored finals of a streaming call.

A stored call: its report (`nlu.report.Report`), whose prompts name their question (reports stored before that
are matched by topic and time). A call still streaming: the finals its replica writes to the database as it sends
them (redacted, in order; any replica can read them), replayed through the same pipeline that stores the call at
its end (`pipeline.recording.finish_report`), which gives the report the call would have now. The hub's history
would be the other candidate, but only the replica streaming the call holds it without Redis, and prompt events
are not in the audit log (only assessments, without the prompt's text).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nlu.assess import Assessor
from nlu.dialogue import DialogueOptions, PromptRecord
from nlu.report import AnswerRecord, Report, RiskConfig, read_report
from pipeline.call import ROLES, CallPipeline
from pipeline.recording import finish_report
from service.live.books import turns_of
from service.store.store import LiveFinalRecord


@dataclass(frozen=True, slots=True)
class PromptFacts:
    """A prompt of a call as the agent saw it, with the redacted question and answer it was about."""

    question_utterance_id: str
    topic: str
    #: The assessor's label when it prompted, and the prompt's text.
    label: str
    prompt_text: str
    assessor_version: str
    question_text: str | None
    #: "" for a silent non-answer.
    answer_text: str


#: Seconds a prompt's time may precede its question's end in an old report (times are rounded to milliseconds).
_SLACK_S = 0.01


def _prompt(report: Report, question_utterance_id: str, topic: str,
            question_end_s: float | None) -> PromptRecord | None:
    prompts = [p for p in report.agent.prompts if p.topic == topic]
    named = [p for p in prompts if p.question_utterance_id == question_utterance_id]
    if named:
        return named[-1]
    if question_end_s is None or any(p.question_utterance_id is not None for p in prompts):
        return None
    # A report stored before prompts named their question: the first prompt of the topic after the question and
    # before the topic's next question.
    bound = min((a.question_span[0] for a in report.answers if a.topic == topic and a.question_span is not None
                 and a.question_span[0] > question_end_s), default=float("inf"))
    return next((p for p in sorted(prompts, key=lambda p: p.at_s)
                 if question_end_s - _SLACK_S <= p.at_s < bound), None)


def _answer(report: Report, topic: str, span: tuple[float, float] | None) -> AnswerRecord | None:
    found = [a for a in report.answers if a.topic == topic and span is not None and a.question_span is not None
             and tuple(a.question_span) == span]
    return found[-1] if found else None


def prompt_in_report(report: Report, question_utterance_id: str, topic: str) -> PromptFacts | None:
    """The prompt of `topic` after the agent's question `question_utterance_id` in `report`; None when the report
    has no such prompt."""
    question = next((t for t in report.utterances if t.utterance_id == question_utterance_id), None)
    if question is None or question.speaker != "agent":
        return None
    span = (round(question.start_s, 3), round(question.end_s, 3))
    prompt = _prompt(report, question_utterance_id, topic, question.end_s)
    if prompt is None:
        return None
    answer = _answer(report, topic, span)
    return PromptFacts(question_utterance_id, topic, prompt.label, prompt.text, report.assessor_version,
                       answer.question_text if answer and answer.question_text else question.text,
                       (answer.answer_text or "") if answer else "")


def live_report(call_id: str, finals: list[LiveFinalRecord], loan_file: dict[str, Any] | None, assessor: Assessor,
                dialogue: DialogueOptions, risk: RiskConfig) -> Report | None:
    """The report a streaming call would have now, from the finals it has written (None before any turn): the
    same pipeline as the report stored at its end (`LiveBooks.store_call`) when the live dialogue is not at hand."""
    turns = turns_of(finals)
    if not turns:
        return None
    duration_s = max(t.end_s for t in turns)
    pipeline = CallPipeline(call_id, ROLES, assessor, loan_file, dialogue)
    return read_report(finish_report(pipeline, turns, duration_s, risk, loan_file, []))
