"""Re-scoring stored calls with the current assessor and risk weights (`huifang rescore`), so a bank sees what a
new assessor changed.

Each stored report keeps the call's redacted utterances, which are what the dialogue saw when the call was
scored; `pipeline.recording.rescore_report` runs them through the same dialogue and report again (no ASR). The new
report becomes the call's current one and the one it replaces is kept as an earlier version with its assessor
version (`Store.replace_report`, table `report_versions`); answers, coaching's row and the loan book's summary are
rewritten in the same transaction, the new report is audited as any stored report is, and the customers of the
calls re-scored are planned again. A call whose report was made by the current assessor under the current risk
weights is skipped (unless forced), so running it twice changes nothing the second time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nlu.assess import Assessor
from nlu.dialogue import DialogueOptions
from nlu.report import Report, ReportFormatError, RiskConfig, read_report
from pipeline.recording import rescore_report
from service.feedback.repository import with_reviews
from service.reports import report_row
from service.store import Store, audit
from service.store.models import Call

log = logging.getLogger(__name__)

#: The audit actor of re-scored reports and of each run.
ACTOR = "rescore"


@dataclass(frozen=True, slots=True)
class TopicChange:
    """One topic whose verdict changed: `before` / `after` as `label`, `mismatch`, `label:stated` or `-`."""

    topic: str
    before: str
    after: str


@dataclass(frozen=True, slots=True)
class CallChange:
    """What re-scoring changed in one call's report."""

    call_id: str
    score_before: int
    score_after: int
    tier_before: str
    tier_after: str
    assessor_before: str
    topics: tuple[TopicChange, ...]
    actions_added: tuple[str, ...]
    actions_removed: tuple[str, ...]

    @property
    def changed(self) -> bool:
        """Whether the score, the tier, a topic's verdict or the actions differ."""
        return (self.score_before != self.score_after or self.tier_before != self.tier_after or bool(self.topics)
                or bool(self.actions_added) or bool(self.actions_removed))

    def line(self) -> str:
        """One line for the operator: score and tier before -> after, then each topic and action that changed."""
        head = f"{self.call_id}: risk {self.score_before} {self.tier_before}"
        if self.score_before != self.score_after or self.tier_before != self.tier_after:
            head += f" -> {self.score_after} {self.tier_after}"
        parts = [f"{t.topic} {t.before} -> {t.after}" for t in self.topics]
        parts += [f"+{a}" for a in self.actions_added] + [f"-{a}" for a in self.actions_removed]
        if parts:
            return f"{head}; {', '.join(parts)}"
        return head if self.changed else f"{head}; unchanged"


def _verdicts(report: Report) -> dict[str, str]:
    out = {}
    for topic in report.topics:
        verdict = "mismatch" if topic.mismatch else topic.label or "-"
        if topic.stated:
            verdict += f":{topic.stated}"
        out[topic.topic] = verdict
    return out


def report_change(before: Report, after: Report) -> CallChange:
    """What changed between two reports of one call. Pure."""
    old, new = _verdicts(before), _verdicts(after)
    topics = tuple(TopicChange(t, old.get(t, "-"), new.get(t, "-"))
                   for t in dict.fromkeys([*old, *new]) if old.get(t, "-") != new.get(t, "-"))
    old_actions = [a.id for a in before.actions]
    new_actions = [a.id for a in after.actions]
    return CallChange(after.call_id or before.call_id, before.risk_score, after.risk_score, before.tier, after.tier,
                      before.assessor_version, topics, tuple(a for a in new_actions if a not in old_actions),
                      tuple(a for a in old_actions if a not in new_actions))


def is_current(report: Report, assessor: Assessor, risk: RiskConfig) -> bool:
    """Whether a report was made by this assessor under these risk weights (re-scoring would repeat it)."""
    return report.assessor_version == assessor.version and report.risk_version == risk.version


@dataclass(frozen=True, slots=True)
class RescoreOptions:
    """Which calls: from `since` (naive UTC, by call time) or the one `call_id`; `force` re-scores calls already
    current; `dry_run` stores nothing."""

    since: datetime | None = None
    call_id: str | None = None
    force: bool = False
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class RescoreResult:
    """A run's outcome: each call re-scored (in call-time order), and how many were skipped or failed."""

    changes: tuple[CallChange, ...]
    skipped: int
    #: Calls whose report a new upload replaced while this run scored them (left as the upload made them).
    superseded: int
    failed: tuple[tuple[str, str], ...]


class RescoreError(ValueError):
    """The run cannot start (an unknown call id)."""


def selected_calls(store: Store, options: RescoreOptions) -> list[str]:
    """The call ids to look at, in call-time order."""
    ids = store.call_ids(since=options.since, call_id=options.call_id)
    if options.call_id is not None and not ids:
        raise RescoreError(f"no stored call {options.call_id!r}"
                           + (" at or after --since" if options.since is not None else ""))
    return ids


def rescore(store: Store, assessor: Assessor, dialogue: DialogueOptions, risk: RiskConfig, options: RescoreOptions,
            on_change: Callable[[CallChange], None] | None = None,
            replan: Callable[[str], object] | None = None) -> RescoreResult:
    """Re-score the selected calls (synchronous: a command, or a worker thread). `on_change` hears each call as it
    is done; `replan(customer_id)` re-plans each customer whose call was stored again."""
    changes: list[CallChange] = []
    skipped = superseded = 0
    failed: list[tuple[str, str]] = []
    customers: set[str] = set()
    for call_id in selected_calls(store, options):
        call = store.get_call(call_id)
        if call is None:
            continue  # deleted since it was selected
        previous = call.report
        try:
            before = read_report(previous)
        except ReportFormatError as e:  # a stored report of an unexpected shape: say which
            failed.append((call_id, f"cannot re-score the stored report ({e})"))
            continue
        if not options.force and is_current(before, assessor, risk):
            skipped += 1
            continue
        try:
            # Disputes a supervisor upheld stay corrected under any assessor (issue #31).
            report = with_reviews(store, call_id, rescore_report(before, assessor, dialogue, risk), assessor.script,
                                  risk)
        except (KeyError, TypeError, ValueError) as e:  # e.g. a loan file the dialogue cannot read
            failed.append((call_id, f"cannot re-score the stored report ({type(e).__name__}: {e})"))
            continue
        after = read_report(report)
        change = report_change(before, after)
        if not options.dry_run:
            version = store.replace_report(call_id, previous, report_row(report, after), before.assessor_version,
                                           loan_file=after.loan_file)
            if version is None:
                superseded += 1
                continue
            audit_report(store, call, report, after, before, version)
            if call.customer_id:
                customers.add(call.customer_id)
        changes.append(change)
        if on_change is not None:
            on_change(change)
    for customer_id in sorted(customers):
        if replan is None:
            break
        try:
            replan(customer_id)
        except Exception:  # noqa: BLE001 - the reports are stored; the daily plan (`huifang plan`) catches up
            log.exception("customer %s: could not re-plan after re-scoring; the next planning run will", customer_id)
    result = RescoreResult(tuple(changes), skipped, superseded, tuple(failed))
    audit.append(store, "rescore", ACTOR, options.call_id, {
        "since": options.since.isoformat() if options.since else None, "call_id": options.call_id,
        "force": options.force, "dry_run": options.dry_run, "assessor_version": assessor.version,
        "risk_version": risk.version, "rescored": len(changes), "changed": sum(c.changed for c in changes),
        "skipped": skipped, "superseded": superseded, "failed": [c for c, _ in failed]})
    return result


def audit_report(store: Store, call: Call, stored: dict[str, Any], report: Report, previous: Report,
                 version: int, reason: str = "rescore", actor: str = ACTOR) -> None:
    """A replacing report's audit entry: what every stored report gets (workers/jobs.py), why it replaced the
    one before (`reason`: rescore, or review: a supervisor upheld a dispute of a prompt) and what it replaced."""
    audit.append(store, "report", actor, call.call_id, {
        "recording_id": call.recording_id, "report_sha256": audit.digest(stored), "agent_id": call.agent_id,
        "customer_id": call.customer_id, "loan_id": call.loan_id, "risk_score": report.risk_score,
        "tier": report.tier, "answers": [{"topic": a.topic, "label": a.label, "mismatch": a.mismatch}
                                         for a in report.answers], "reason": reason,
        "assessor_version": report.assessor_version, "risk_version": report.risk_version,
        "previous_version": version, "previous_assessor_version": previous.assessor_version})
