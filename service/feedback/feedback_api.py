"""`POST /v1/calls/{call_id}/prompts/feedback` (the call's agent, supervisors): a verdict on a prompt, during the
call or after it; `GET /v1/reviews` and `POST /v1/reviews/{id}` (supervisors): the review queue of disputed
prompts. Every verdict, review and read of the queue is audited (`prompt_feedback`, `prompt_review`,
`reviews_read`). docs/floor.md."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from nlu.report import load_risk, read_report
from nlu.types import Label
from service import bootstrap
from service.api.deps import MAX_OFFSET, CallIdPath, State, StoreDep, Supervisor, Viewer
from service.errors import ServiceError, forbidden
from service.feedback import repository as feedback
from service.feedback.prompts import PromptFacts, live_report, prompt_in_report
from service.feedback.repository import MAX_NOTE, FeedbackError, FeedbackRecord, Reason, Verdict
from service.feedback.review import review
from service.live.hub import BusUnavailable
from service.metrics import PROMPT_FEEDBACK, PROMPT_REVIEWS
from service.protocol import PromptFeedbackEvent, dump
from service.state import AppState
from service.store import Store, audit

log = logging.getLogger(__name__)

router = APIRouter(tags=["feedback"])

#: Refusals of the stored state, as HTTP statuses.
_STATUS = {"not_found": 404, "reviewed": 409, "not_open": 409, "not_stored": 409, "conflict": 409, "busy": 409,
           "unchanged": 422}


def _refused(e: FeedbackError) -> ServiceError:
    return ServiceError(e.code, str(e), _STATUS.get(e.code, 409))


class FeedbackBody(BaseModel):
    """An agent's verdict on one prompt: which (the question's utterance id and the topic, as the prompt event
    named them) and what. The prompt's text, label and the answer are looked up by the server."""

    question_utterance_id: str = Field(max_length=40)
    topic: str = Field(max_length=32)
    verdict: Verdict
    #: Why a prompt is disputed: the answer was in fact clear, or the question was taken for the wrong topic.
    reason: Reason | None = None
    note: str | None = Field(default=None, max_length=MAX_NOTE)


class FeedbackItem(BaseModel):
    """A verdict on a prompt as stored (texts redacted), with its review."""

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


def item(record: FeedbackRecord) -> FeedbackItem:
    return FeedbackItem(**asdict(record))


class FeedbackSaved(FeedbackItem):
    #: An earlier verdict on the same prompt was replaced.
    replaced: bool


async def tell_screens(state: AppState, call_id: str, event: PromptFeedbackEvent) -> bool:
    """The call's other screens learn that the card was marked, through the call's event feed; whether it was
    published. The bus hands the event to the replica that streams the call (with Redis, whichever replica the
    request reached), which publishes it like the call's own events, so a console opened later shows the card
    marked too. A call no replica streams any more has no screens to tell; an unreachable bus loses only this
    courtesy (the verdict is stored, the report shows it)."""
    try:
        return await state.hub.post(call_id, dump(event), event.type)
    except BusUnavailable:
        log.warning("call %s: the event bus is unreachable; other screens do not see the prompt marked", call_id)
        return False


def _find(store: Store, state: AppState, call_id: str, body: FeedbackBody,
          may_see: Callable[[str | None], bool]) -> tuple[PromptFacts | None, str | None, dict[str, object] | None]:
    """The prompt (None: the call has no such prompt), the call's agent and its loan file for redaction.
    `ServiceError` 404 when there is no such call, 403 when it is not the caller's (worker thread)."""
    call = store.get_call(call_id)
    if call is not None:
        if not may_see(call.agent_id):
            raise forbidden(f"call {call_id} is not assigned to you")
        facts = prompt_in_report(read_report(call.report), body.question_utterance_id, body.topic)
        return facts, call.agent_id, feedback.recording_loan_file(store, call.recording_id)
    live = feedback.live_call(store, call_id)
    if live is None:
        raise ServiceError("not_found", f"no call {call_id} (streaming or stored)", 404)
    if not may_see(live.agent_id):
        raise forbidden(f"call {call_id} is not assigned to you")
    settings = state.settings
    report = live_report(call_id, live.finals, live.loan_file, state.assessor, bootstrap.dialogue_options(settings),
                         load_risk(settings.scoring.risk_file))
    facts = prompt_in_report(report, body.question_utterance_id, body.topic) if report is not None else None
    return facts, live.agent_id, live.loan_file


@router.post("/v1/calls/{call_id}/prompts/feedback", response_model=FeedbackSaved,
             responses={404: {"description": "no such call or prompt"}, 409: {"description": "already reviewed"}})
async def prompt_feedback(call_id: CallIdPath, body: FeedbackBody, principal: Viewer, store: StoreDep,
                          state: State) -> FeedbackSaved:
    """The call's agent (or a supervisor) marks a prompt 已追问 (`asked_again`) or 提示有误 (`disputed`, with a
    `reason`: `clear` or `wrong_topic`, and an optional note, stored redacted). Works while the call streams and
    after it. A second verdict on a prompt replaces the first until a supervisor has reviewed it. A dispute joins
    the review queue (`GET /v1/reviews`)."""
    if body.verdict == "disputed" and body.reason is None:
        raise ServiceError("reason_required", "a disputed prompt needs a reason: clear or wrong_topic", 422)
    facts, agent_id, loan_file = await asyncio.to_thread(_find, store, state, call_id, body,
                                                         principal.may_see)
    if facts is None:
        raise ServiceError("not_found", f"call {call_id} has no prompt on {body.topic} after question "
                           f"{body.question_utterance_id}", 404)
    note = feedback.redact_note(body.note, loan_file)
    try:
        record, replaced = await asyncio.to_thread(feedback.save_verdict, store, call_id, facts, body.verdict,
                                                   body.reason, note, agent_id, principal.name)
    except FeedbackError as e:
        raise _refused(e) from e
    await asyncio.to_thread(audit.append, store, "prompt_feedback", principal.name, call_id, {
        "feedback_id": record.id, "question_utterance_id": record.question_utterance_id, "topic": record.topic,
        "label": record.label, "verdict": record.verdict, "reason": record.reason, "replaced": replaced,
        "assessor_version": record.assessor_version, "note_sha256": audit.digest(note) if note else None})
    PROMPT_FEEDBACK.labels(record.topic, record.label, record.verdict, record.reason or "-").inc()
    await tell_screens(state, call_id, PromptFeedbackEvent(question_utterance_id=record.question_utterance_id,
                                                     topic=record.topic, verdict=body.verdict, reason=record.reason))
    return FeedbackSaved(**asdict(record), replaced=replaced)


class ReviewItem(FeedbackItem):
    #: The call's report is stored and not being made again: the dispute may be decided now.
    reviewable: bool
    report_url: str


class TopicName(BaseModel):
    topic: str
    name: str


class ReviewPage(BaseModel):
    status: Literal["open", "upheld", "overturned"]
    total: int
    limit: int
    offset: int
    items: list[ReviewItem]
    #: The call script's topics (and `other`), for a reviewer who says the question asked another topic.
    topics: list[TopicName]


@router.get("/v1/reviews", response_model=ReviewPage)
async def list_reviews(
    principal: Supervisor,
    store: StoreDep,
    state: State,
    status: Annotated[Literal["open", "upheld", "overturned"], Query()] = "open",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> ReviewPage:
    """Disputed prompts by review status (supervisors): the open queue oldest first, reviewed ones most recent
    first; each with the question and answer (redacted), the assessor's label and prompt, the agent's reason and
    note, and whether the call's report is stored yet (a dispute is reviewed against it)."""
    records, total = await asyncio.to_thread(feedback.list_reviews, store, status, limit, offset)
    stored = await asyncio.to_thread(feedback.calls_stored, store, {r.call_id for r in records})
    await asyncio.to_thread(audit.append, store, "reviews_read", principal.name, None,
                            {"status": status, "offset": offset, "items": len(records)})
    script = state.assessor.script
    topics = [TopicName(topic=t.id, name=t.name) for t in script.topics.values()]
    if script.other is not None:
        topics.append(TopicName(topic=script.other.id, name=script.other.name))
    return ReviewPage(status=status, total=total, limit=limit, offset=offset, topics=topics, items=[
        ReviewItem(**asdict(r), reviewable=r.call_id in stored, report_url=f"/v1/calls/{r.call_id}/report")
        for r in records])


class ReviewBody(BaseModel):
    """A supervisor's decision: `uphold` (the assessor was wrong: the stored verdict becomes `label`, on `topic`
    when the question asked another topic) or `overturn` (the prompt stands). `label` is the one the reviewer
    would give either way: the gold label of `huifang export-feedback`."""

    decision: Literal["uphold", "overturn"]
    label: Label
    topic: str | None = Field(default=None, max_length=32)
    note: str | None = Field(default=None, max_length=MAX_NOTE)


class ReviewDone(BaseModel):
    review: FeedbackItem
    #: The report version kept by the correction (None: nothing changed in the report).
    report_version: int | None
    risk_before: int | None
    risk_after: int | None
    tier_before: str | None
    tier_after: str | None


@router.post("/v1/reviews/{feedback_id}", response_model=ReviewDone,
             responses={404: {"description": "no such dispute"}, 409: {"description": "reviewed, or the call's "
                                                                                       "report is not stored yet"}})
async def decide_review(feedback_id: Annotated[int, Path(ge=1, le=2**31 - 1)], body: ReviewBody,
                        principal: Supervisor, store: StoreDep, state: State) -> ReviewDone:
    """Uphold or overturn a disputed prompt (supervisors). Upheld: the call's stored verdict, risk score, tier and
    actions are corrected and the customer is planned again (the report before is kept as an earlier version);
    overturned: nothing else changes. Audited (`prompt_review`)."""
    script = state.assessor.script
    if body.topic is not None and body.topic not in script.topics and not (
            script.other is not None and body.topic == script.other.id):
        raise ServiceError("bad_topic", f"{body.topic!r} is not a topic of the call script", 422)
    risk = await asyncio.to_thread(load_risk, state.settings.scoring.risk_file)
    note = feedback.redact_note(body.note, None)
    book = state.loanbook
    try:
        outcome = await asyncio.to_thread(review, store, feedback_id, body.decision, body.label, body.topic, note,
                                          principal.name, script, risk, book.plan if book is not None else None)
    except FeedbackError as e:
        raise _refused(e) from e
    PROMPT_REVIEWS.labels(outcome.record.topic, outcome.record.label, outcome.record.review_status).inc()
    return ReviewDone(review=item(outcome.record), report_version=outcome.report_version,
                      risk_before=outcome.risk_before, risk_after=outcome.risk_after,
                      tier_before=outcome.tier_before, tier_after=outcome.tier_after)
