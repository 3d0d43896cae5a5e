"""The `prompt_feedback` table (service/store/models.py `PromptFeedback`): agents' verdicts, the review queue,
the corrections upheld disputes make, and the counts coaching shows. Synchronous (worker threads, commands)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Literal, cast

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from nlu.corrections import Correction, apply_corrections
from nlu.pii import Redactor, loan_file_identities
from nlu.report import RiskConfig, read_report
from nlu.script import CallScript
from nlu.types import Label
from service.feedback.prompts import PromptFacts
from service.store import Store
from service.store.models import Call, PromptFeedback, Recording
from service.store.store import LiveFinalRecord, utcnow

Verdict = Literal["asked_again", "disputed"]
Reason = Literal["clear", "wrong_topic"]
Decision = Literal["uphold", "overturn"]
ReviewStatus = Literal["none", "open", "upheld", "overturned"]
#: Longest note an agent or a reviewer may write (characters).
MAX_NOTE = 500


class FeedbackError(ValueError):
    """A verdict or review the stored state refuses: `code` says which (`reviewed`, `not_open`, `not_found`)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """A row of `prompt_feedback` as read (see `PromptFeedback` for the fields)."""

    id: int
    call_id: str
    question_utterance_id: str
    topic: str
    label: str
    prompt_text: str
    assessor_version: str | None
    verdict: str
    reason: str | None
    note: str | None
    question_text: str | None
    answer_text: str | None
    agent_id: str | None
    author: str
    created_at: datetime
    review_status: str
    reviewer: str | None
    reviewed_at: datetime | None
    reviewer_label: str | None
    reviewer_topic: str | None
    review_note: str | None


_FIELDS = tuple(f.name for f in fields(FeedbackRecord))


def _record(row: PromptFeedback) -> FeedbackRecord:
    return FeedbackRecord(**{name: getattr(row, name) for name in _FIELDS})


def redact_note(text: str | None, loan_file: Mapping[str, Any] | None) -> str | None:
    """A note as it may be stored: through the transcripts' redaction (numbers that identify a person, and the
    loan file's names and addresses), trimmed; None when empty."""
    if text is None or not text.strip():
        return None
    names, addresses = loan_file_identities(dict(loan_file) if loan_file else None)
    return Redactor(names, addresses).redact(text.strip()[:MAX_NOTE])[0]


# -- verdicts ----------------------------------------------------------------------------------------------------


def save_verdict(store: Store, call_id: str, facts: PromptFacts, verdict: Verdict, reason: Reason | None,
                 note: str | None, agent_id: str | None, author: str) -> tuple[FeedbackRecord, bool]:
    """Keep a verdict on one prompt, replacing an earlier one on the same prompt unless that was reviewed
    (`FeedbackError` reviewed). Returns the row and whether it replaced one. `note` is stored as given (redacted
    by the caller)."""
    values: dict[str, Any] = {
        "label": facts.label, "prompt_text": facts.prompt_text, "assessor_version": facts.assessor_version or None,
        "verdict": verdict, "reason": reason if verdict == "disputed" else None, "note": note,
        "question_text": facts.question_text, "answer_text": facts.answer_text, "agent_id": agent_id,
        "author": author, "created_at": utcnow(), "review_status": "open" if verdict == "disputed" else "none",
        "reviewer": None, "reviewed_at": None, "reviewer_label": None, "reviewer_topic": None, "review_note": None}
    for _ in range(3):  # two first clicks at once: the loser of the unique index replaces the winner's
        with store.session() as s:
            row = s.scalars(select(PromptFeedback).where(
                PromptFeedback.call_id == call_id, PromptFeedback.question_utterance_id == facts.question_utterance_id,
                PromptFeedback.topic == facts.topic).with_for_update()).first()
            replaced = row is not None
            if row is not None and row.review_status in ("upheld", "overturned"):
                raise FeedbackError("reviewed", f"this prompt's dispute was already reviewed ({row.review_status})")
            if row is None:
                row = PromptFeedback(call_id=call_id, question_utterance_id=facts.question_utterance_id,
                                     topic=facts.topic, **values)
                s.add(row)
            else:
                for key, value in values.items():
                    setattr(row, key, value)
            try:
                s.commit()
            except IntegrityError:
                s.rollback()
                continue
            return _record(row), replaced
    raise FeedbackError("busy", "the prompt's verdict is being changed by another request; try again")


def call_feedback(store: Store, call_id: str) -> list[FeedbackRecord]:
    """The verdicts on a call's prompts, in the order they were given."""
    with store.session() as s:
        rows = s.scalars(select(PromptFeedback).where(PromptFeedback.call_id == call_id)
                         .order_by(PromptFeedback.created_at, PromptFeedback.id))
        return [_record(r) for r in rows]


def get_feedback(store: Store, feedback_id: int) -> FeedbackRecord | None:
    with store.session() as s:
        row = s.get(PromptFeedback, feedback_id)
        return _record(row) if row is not None else None


# -- the review queue --------------------------------------------------------------------------------------------


def list_reviews(store: Store, status: Literal["open", "upheld", "overturned"], limit: int,
                 offset: int) -> tuple[list[FeedbackRecord], int]:
    """Disputes of a review status: open ones oldest first (the queue), reviewed ones most recent first."""
    where = (PromptFeedback.verdict == "disputed", PromptFeedback.review_status == status)
    order = ((PromptFeedback.created_at, PromptFeedback.id) if status == "open"
             else (PromptFeedback.reviewed_at.desc(), PromptFeedback.id.desc()))
    with store.session() as s:
        total = int(s.scalar(select(func.count()).select_from(PromptFeedback).where(*where)) or 0)
        rows = s.scalars(select(PromptFeedback).where(*where).order_by(*order).limit(limit).offset(offset))
        return [_record(r) for r in rows], total


def calls_stored(store: Store, call_ids: set[str]) -> set[str]:
    """Which of `call_ids` have a stored report that no job is making again now (the ones a review may
    correct)."""
    if not call_ids:
        return set()
    with store.session() as s:
        stored = set(s.scalars(select(Call.call_id).where(Call.call_id.in_(call_ids))))
        busy = set(s.scalars(select(Recording.call_id).where(Recording.call_id.in_(call_ids),
                                                             Recording.status.in_(("queued", "running", "live")))))
    return stored - busy


def claim_review(store: Store, feedback_id: int, decision: Decision, label: Label, topic: str | None,
                 note: str | None, reviewer: str) -> tuple[FeedbackRecord, FeedbackRecord]:
    """Mark an open dispute reviewed (under a row lock, so two reviewers cannot both decide it): (before, after).
    `FeedbackError` not_found / not_open."""
    with store.session() as s, s.begin():
        row = s.get(PromptFeedback, feedback_id, with_for_update=True)
        if row is None or row.verdict != "disputed":
            raise FeedbackError("not_found", f"no disputed prompt {feedback_id}")
        if row.review_status != "open":
            raise FeedbackError("not_open", f"dispute {feedback_id} was already reviewed ({row.review_status})")
        before = _record(row)
        row.review_status = "upheld" if decision == "uphold" else "overturned"
        row.reviewer, row.reviewed_at, row.reviewer_label = reviewer, utcnow(), label
        row.reviewer_topic = topic if topic and topic != row.topic else None
        row.review_note = note
        s.flush()
        return before, _record(row)


def reopen(store: Store, feedback_id: int) -> None:
    """Undo `claim_review` (its correction could not be stored)."""
    with store.session() as s, s.begin():
        row = s.get(PromptFeedback, feedback_id, with_for_update=True)
        if row is not None:
            row.review_status, row.reviewer, row.reviewed_at = "open", None, None
            row.reviewer_label = row.reviewer_topic = row.review_note = None


# -- corrections -------------------------------------------------------------------------------------------------


def correction_of(record: FeedbackRecord) -> Correction:
    """The correction an upheld dispute makes."""
    return Correction(record.question_utterance_id, record.topic, cast(Label, record.reviewer_label),
                      record.reviewer_topic)


def upheld_corrections(store: Store, call_id: str) -> list[Correction]:
    """The corrections of a call's upheld disputes, in the order they were reviewed."""
    with store.session() as s:
        rows = s.scalars(select(PromptFeedback).where(PromptFeedback.call_id == call_id,
                                                      PromptFeedback.review_status == "upheld")
                         .order_by(PromptFeedback.reviewed_at, PromptFeedback.id))
        return [correction_of(_record(r)) for r in rows]


def with_reviews(store: Store, call_id: str, report: dict[str, Any], script: CallScript,
                 risk: RiskConfig) -> dict[str, Any]:
    """A newly made report of a call (re-scored) with the corrections its upheld disputes made: a reviewer's
    verdict outlives a new assessor."""
    corrections = upheld_corrections(store, call_id)
    if not corrections:
        return report
    return apply_corrections(read_report(report), corrections, script, risk).to_dict()


# -- coaching and the export -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeedbackCounts:
    """One agent's verdicts on prompts given in a period: prompts marked asked again, disputed, and of those
    disputed, upheld and overturned by a reviewer so far."""

    asked_again: int = 0
    disputed: int = 0
    upheld: int = 0
    overturned: int = 0


def agent_feedback(store: Store, start: datetime, end: datetime,
                   agent_id: str | None = None) -> dict[str, FeedbackCounts]:
    """Per agent, the verdicts on their calls' prompts given in [start, end) (naive UTC)."""
    t = PromptFeedback
    query = (select(t.agent_id, t.verdict, t.review_status, func.count())
             .where(t.created_at >= start, t.created_at < end, t.agent_id.is_not(None))
             .group_by(t.agent_id, t.verdict, t.review_status))
    if agent_id is not None:
        query = query.where(t.agent_id == agent_id)
    sums: dict[str, dict[str, int]] = {}
    with store.session() as s:
        for agent, verdict, status, count in s.execute(query):
            c = sums.setdefault(str(agent), dict.fromkeys(("asked_again", "disputed", "upheld", "overturned"), 0))
            c[verdict] = c.get(verdict, 0) + int(count)
            if status in ("upheld", "overturned"):
                c[status] += int(count)
    return {a: FeedbackCounts(**c) for a, c in sums.items()}


def reviewed_since(store: Store, since: datetime | None) -> list[FeedbackRecord]:
    """Reviewed disputes (upheld and overturned), reviewed at or after `since` (naive UTC), oldest first."""
    query = select(PromptFeedback).where(PromptFeedback.review_status.in_(("upheld", "overturned")))
    if since is not None:
        query = query.where(PromptFeedback.reviewed_at >= since)
    with store.session() as s:
        return [_record(r) for r in s.scalars(query.order_by(PromptFeedback.reviewed_at, PromptFeedback.id))]


# -- a streaming call --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LiveCallRecord:
    """A call streaming now (its row is `live`): its agent, loan file (redaction needs its names) and finals."""

    recording_id: str
    agent_id: str | None
    loan_file: dict[str, Any] | None
    finals: list[LiveFinalRecord]


def live_call(store: Store, call_id: str) -> LiveCallRecord | None:
    """The call's streaming row with the finals written so far; None when it is not streaming."""
    from service.store.models import LiveFinal

    with store.session() as s:
        row = s.scalars(select(Recording).where(Recording.call_id == call_id, Recording.status == "live")).first()
        if row is None:
            return None
        finals = s.scalars(select(LiveFinal).where(LiveFinal.recording_id == row.id).order_by(LiveFinal.seq))
        return LiveCallRecord(row.id, row.agent_id, row.loan_file, [
            LiveFinalRecord(f.seq, f.channel, f.utterance_id, f.start_s, f.end_s, f.text, f.masked, f.degraded)
            for f in finals])


def recording_loan_file(store: Store, recording_id: str | None) -> dict[str, Any] | None:
    """What a stored call's recording kept of its loan file (for redacting notes on it)."""
    if recording_id is None:
        return None
    with store.session() as s:
        row = s.get(Recording, recording_id)
        return row.loan_file if row is not None else None
