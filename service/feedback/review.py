"""A supervisor's review of a disputed prompt. Overturned: nothing changes but the dispute's status. Upheld: the
call's stored verdict is corrected to the reviewer's label (and topic), its risk score, tier and actions follow,
and the customer is planned again, through the re-scoring machinery (service/rescore.py): the corrected report
replaces the current one with `Store.replace_report` (the one before kept in `report_versions`, reason
`review`), audited as every replacing report is, and the loan book re-plans the customer. A later `huifang
rescore` applies the upheld corrections again (`repository.with_reviews`).

A dispute of a call that is still streaming, or whose report is being made again (re-decoding, a replacing
upload), is refused until its report is stored: a bank reviews the call's record, and the live verdict the agent
disputed may already differ from it; the queue shows such disputes as not yet reviewable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from nlu.corrections import apply_corrections
from nlu.report import RiskConfig, read_report
from nlu.script import CallScript
from nlu.types import Label
from service.feedback.repository import (
    Decision,
    FeedbackError,
    FeedbackRecord,
    calls_stored,
    claim_review,
    correction_of,
    get_feedback,
    reopen,
)
from service.reports import report_row
from service.rescore import audit_report
from service.store import Store, audit

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReviewOutcome:
    """A decided dispute and what it changed: the report version kept (None: the report did not change) and the
    call's risk before and after."""

    record: FeedbackRecord
    report_version: int | None
    risk_before: int | None
    risk_after: int | None
    tier_before: str | None
    tier_after: str | None


def review(store: Store, feedback_id: int, decision: Decision, label: Label, topic: str | None, note: str | None,
           reviewer: str, script: CallScript, risk: RiskConfig,
           replan: Callable[[str], object] | None = None) -> ReviewOutcome:
    """Decide an open dispute (synchronous: a worker thread). Raises `FeedbackError`: not_found, not_open,
    not_stored (the call's report is not stored yet, or is being made again), unchanged (an upheld dispute must
    give another label or topic than the assessor's), conflict (the report changed meanwhile)."""
    current = get_feedback(store, feedback_id)
    if current is None or current.verdict != "disputed":
        raise FeedbackError("not_found", f"no disputed prompt {feedback_id}")
    if decision == "uphold" and label == current.label and (topic is None or topic == current.topic):
        raise FeedbackError("unchanged", "upholding a dispute gives the label (or topic) the answer deserves: this "
                            "one is the assessor's own")
    if current.review_status == "open" and not calls_stored(store, {current.call_id}):
        raise FeedbackError("not_stored", f"call {current.call_id} has no stored report yet (it is streaming or being "
                            "scored again); review it once its report is stored")
    before, record = claim_review(store, feedback_id, decision, label, topic, note, reviewer)
    outcome = ReviewOutcome(record, None, None, None, None, None)
    if decision == "uphold":
        try:
            outcome = _correct(store, record, script, risk, reviewer, replan)
        except Exception:
            reopen(store, feedback_id)  # the dispute waits for the next try, as it was
            raise
    audit.append(store, "prompt_review", reviewer, record.call_id, {
        "feedback_id": record.id, "decision": decision, "question_utterance_id": record.question_utterance_id,
        "topic": record.topic, "assessor_label": record.label, "label": label, "reviewer_topic": record.reviewer_topic,
        "reason": record.reason, "note_sha256": audit.digest(note) if note else None,
        "report_version": outcome.report_version, "risk_before": outcome.risk_before,
        "risk_after": outcome.risk_after, "tier_before": outcome.tier_before, "tier_after": outcome.tier_after})
    return outcome


def _correct(store: Store, record: FeedbackRecord, script: CallScript, risk: RiskConfig, reviewer: str,
             replan: Callable[[str], object] | None) -> ReviewOutcome:
    call = store.get_call(record.call_id)
    if call is None:
        raise FeedbackError("not_stored", f"call {record.call_id} has no stored report")
    previous = call.report
    before = read_report(previous)
    after = apply_corrections(before, [correction_of(record)], script, risk)
    if after == before:  # e.g. an earlier answer relabelled as it already was
        return ReviewOutcome(record, None, before.risk_score, before.risk_score, before.tier, before.tier)
    stored = after.to_dict()
    version = store.replace_report(record.call_id, previous, report_row(stored, after), before.assessor_version,
                                   loan_file=after.loan_file, reason="review")
    if version is None:
        raise FeedbackError("conflict", f"call {record.call_id}'s report changed meanwhile; review it again")
    audit_report(store, call, stored, after, before, version, reason="review", actor=reviewer)
    if call.customer_id and replan is not None:
        try:
            replan(call.customer_id)
        except Exception:  # noqa: BLE001 - the report is stored; the daily plan (`huifang plan`) catches up
            log.exception("customer %s: could not re-plan after a review; the next planning run will",
                          call.customer_id)
    return ReviewOutcome(record, version, before.risk_score, after.risk_score, before.tier, after.tier)
