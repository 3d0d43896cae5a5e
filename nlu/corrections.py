"""Reviewed corrections of a report's verdicts (issue #31): a supervisor upheld an agent's dispute of a prompt and
gave the label (and, when the assessor took the question for the wrong topic, the topic) the answer deserves.

`apply_corrections(report, corrections, script, risk)` gives the report with those answers relabelled and its
risk side scored again by `score_topics`, the code that scored it first: the score, tier, contributions and
actions follow from the corrected verdicts exactly as from the assessor's. Applying a correction twice changes
nothing the second time, so the corrections of a call can be applied again to any later scoring of it (re-scoring
keeps them). Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from nlu.report import (
    CALL_EVIDENCE,
    CALLBACK_KEY,
    AnswerRecord,
    Report,
    RiskConfig,
    Span,
    TopicResult,
    score_topics,
)
from nlu.script import CallScript
from nlu.types import Label


@dataclass(frozen=True, slots=True)
class Correction:
    """The reviewed verdict of one answer: the answer to `question_utterance_id` on `topic` is `label`, and is
    about `new_topic` when the reviewer says the question asked another topic (None: the same)."""

    question_utterance_id: str
    topic: str
    label: Label
    new_topic: str | None = None


def _question_span(report: Report, utterance_id: str) -> Span | None:
    for turn in report.utterances:
        if turn.utterance_id == utterance_id:
            return (round(turn.start_s, 3), round(turn.end_s, 3))
    return None


def _same_question(span: Span | None, question_span: Span | None) -> bool:
    """Whether a verdict's question is the corrected one: by its span; a report without utterances (none kept)
    has only the topic to go by."""
    if span is None:
        return True
    return question_span is not None and tuple(question_span) == tuple(span)


def _as_topic(result: TopicResult, answer: AnswerRecord | None) -> TopicResult:
    """`result` standing on `answer` (None: asked, and no answer stands), without the assessor's evidence, which
    was about another verdict."""
    if answer is None:
        return replace(result, label=None, confidence=None, evidence=(), slots=(), mismatch=None, question_text=None,
                       answer_text=None, question_span=None, answer_span=None, stated=None)
    return replace(result, label=answer.label, confidence=None, evidence=(), slots=(), mismatch=None,
                   question_text=answer.question_text, answer_text=answer.answer_text,
                   question_span=answer.question_span, answer_span=answer.answer_span, stated=None)


def _correct(report: Report, topics: list[TopicResult], answers: list[AnswerRecord], c: Correction,
             script: CallScript) -> None:
    span = _question_span(report, c.question_utterance_id)
    target = c.new_topic or c.topic
    spec = script.topics.get(target)
    name = spec.name if spec else (script.other.name if script.other and script.other.id == target else target)
    moved: AnswerRecord | None = None
    for i, a in enumerate(answers):
        if a.topic == c.topic and _same_question(span, a.question_span):
            answers[i] = moved = replace(a, topic=target, name=name if target != c.topic else a.name, label=c.label)
    for i, t in enumerate(topics):
        if t.topic != c.topic or t.label is None or not _same_question(span, t.question_span):
            continue
        if target == c.topic:
            # The assessor's evidence argued for its own label (the version kept has it); what the answer states
            # is read again by score_topics.
            topics[i] = replace(t, label=c.label, confidence=None, evidence=(), stated=None)
            continue
        # The question did not ask this topic: its verdict falls back to the topic's last other answer, if any.
        earlier = [a for a in answers if a.topic == c.topic]
        topics[i] = replace(_as_topic(t, earlier[-1] if earlier else None), times_asked=max(0, t.times_asked - 1),
                            asked=bool(earlier) or t.times_asked > 1)
    if target == c.topic or moved is None:
        return
    for i, t in enumerate(topics):
        if t.topic == target:
            # The moved answer stands unless a later question on the topic was answered.
            later = t.question_span is not None and moved.question_span is not None and (
                t.question_span[0] > moved.question_span[0])
            if not later:
                topics[i] = replace(_as_topic(t, moved), asked=True, times_asked=t.times_asked + 1)
            return
    if target in script.topics:
        topics.append(_as_topic(TopicResult(target, name, True, 1, None, None, (), (), None, None, None, None, None),
                                moved))


def apply_corrections(report: Report, corrections: Sequence[Correction], script: CallScript,
                      risk: RiskConfig) -> Report:
    """The report with each corrected answer relabelled (the standing verdict of its topic too, when it is that
    answer's) and scored again under `risk`. Pure; idempotent."""
    if not corrections:
        return report
    topics, answers = list(report.topics), list(report.answers)
    for c in corrections:
        _correct(report, topics, answers, c, script)
    callback = any(not a.topics and a.evidence == (CALL_EVIDENCE[CALLBACK_KEY],) for a in report.actions)
    scored = score_topics(tuple(topics), tuple(answers), script, risk, (CALLBACK_KEY,) if callback else ())
    labels: dict[str, int] = {}
    for result in scored.topics:
        if result.label:
            labels[result.label] = labels.get(result.label, 0) + 1
    return replace(report, topics=scored.topics, answers=tuple(answers), risk_score=scored.score, tier=scored.tier,
                   contributions=scored.contributions, actions=scored.actions, labels=labels)
