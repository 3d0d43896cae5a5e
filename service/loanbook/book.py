"""The loan book (issue #18): customers tiered from their calls, follow-ups planned, worked and closed, and the
views of them.

The policy is pure (`policy.py`); this module decides a customer's plan from what the repository
(`repository.py`) reads of their call summaries and follow-ups, inside the one transaction that holds the customer's
row lock (two replicas planning one customer take turns, and the follow-ups' `plan_key` makes a plan applied twice
create nothing twice), has message follow-ups queued by the outbox in the same transaction, and answers the API's
reads. It knows no SQL. Synchronous, like the store: the service calls it from worker threads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime
from functools import partial
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from nlu.free_text import free_text_redactor
from service.bankdays import day_start_utc
from service.loanbook import repository
from service.loanbook.outbox_queue import MessageView
from service.loanbook.policy import (
    OPEN,
    CallFacts,
    Channel,
    FollowUpPolicy,
    FollowUpState,
    Plan,
    Status,
    plan_customer,
)
from service.loanbook.repository import (
    Contact,
    CustomerFile,
    FollowUpRecord,
    MessageQueue,
    Planned,
    SummaryRecord,
    get_contact,
    put_contact,
    unseal_contact,
)
from service.privacy import RawTextCipher
from service.store import Store
from service.store.store import utcnow

#: Reasons of follow-ups that are not report actions, as agents read them.
REASON_TEXTS = {"second_call": "二次回访：核实上次未说清的问题", "education": "低风险客户还款提示与服务告知",
                "unreachable": "二次回访未接通：书面告知客户我行将再次联系"}
#: Outcomes an assignee records.
OUTCOMES: tuple[Status, ...] = ("done", "unreachable", "refused", "cancelled")
#: Customers planned per transaction by the daily run.
PLAN_BATCH = 200


class FollowUpError(ValueError):
    """A follow-up change that is not allowed now (its status)."""


class FollowUpNotFound(FollowUpError):
    """No follow-up has that id."""


class Outbox(MessageQueue, Protocol):
    """What the loan book needs of the outbox (`outbox_queue.MessageOutbox`): what planning needs, and the
    customer page's list of messages."""

    def messages(self, store: Store, customer_id: str) -> list[MessageView]: ...


@dataclass(frozen=True, slots=True)
class FollowUpQuery:
    """Filters of the work queue (`GET /v1/followups`)."""

    due_before: date | None = None
    status: tuple[Status, ...] = OPEN
    assignee: str | None = None
    tier: str | None = None
    customer_id: str | None = None
    limit: int = 100
    offset: int = 0


class LoanBook:
    """Customers, tiers and follow-ups over one store."""

    def __init__(self, store: Store, cipher: RawTextCipher, policy: FollowUpPolicy, tz: ZoneInfo,
                 topic_names: Mapping[str, str], action_texts: Mapping[str, str],
                 messages: Outbox | None = None, clock: Callable[[], datetime] = utcnow) -> None:
        self.store, self.cipher, self.policy, self.tz = store, cipher, policy, tz
        self.topic_names, self.action_texts = dict(topic_names), {**REASON_TEXTS, **action_texts}
        self.outbox = messages
        self._clock = clock

    # -- time ------------------------------------------------------------------------------------------------

    def now(self) -> datetime:
        """Naive UTC, as stored."""
        return self._clock()

    def today(self, now: datetime | None = None) -> date:
        """The bank's date (its time zone) at `now`."""
        return (now or self.now()).replace(tzinfo=UTC).astimezone(self.tz).date()

    def _start_of_today(self, now: datetime) -> datetime:
        return day_start_utc(self.today(now), self.tz)

    # -- planning ----------------------------------------------------------------------------------------------

    def plan(self, customer_id: str) -> Plan:
        """Re-plan one customer now (after a report of theirs was stored, or by the daily run). Two processes
        planning one customer at once take turns on PostgreSQL (the row lock); on SQLite the second one's
        follow-ups collide on their plan keys, and it plans again on what the first stored."""
        return repository.plan_one(self.store, customer_id, lambda file: self._decide(file, self.now()), self.outbox)

    def plan_due(self, limit: int | None = None) -> int:
        """Re-plan every customer not yet planned today (the bank's day), in batches, each batch one transaction
        whose rows are locked with SKIP LOCKED on PostgreSQL: replicas running this at once share the customers
        instead of planning them twice, and a run that stops midway is finished by the next. Returns how many
        customers were planned."""
        planned = 0
        while limit is None or planned < limit:
            now = self.now()
            batch = PLAN_BATCH if limit is None else min(PLAN_BATCH, limit - planned)
            mine = repository.plan_batch(self.store, self._start_of_today(now), now, batch,
                                         partial(self._decide, now=now), self.outbox)
            if mine is None:
                return planned
            planned += mine
        return planned

    def _decide(self, file: CustomerFile, now: datetime) -> Planned:
        """The plan of one customer from their file, and the messages its new follow-ups send."""
        calls = [CallFacts.from_row(r.call_id, r.at, r.tier, r.risk_score, r.facts) for r in file.calls]
        states = [FollowUpState(f.id, f.plan_key, f.channel, f.reason, f.topics, f.status, f.due_date, f.created_at,
                                file.deliveries.get(f.id)) for f in file.followups]
        contact = unseal_contact(self.cipher, file.customer.contact_sealed)
        allowed: list[Channel] = ["call", "letter"]
        allowed += [c for c in ("sms", "email") if contact is not None and contact.allows(c)]
        customer_id, loan_id = file.customer.customer_id, file.loan_id
        plan = plan_customer(customer_id, calls, states, self.policy, self.today(now), allowed, loan_id)
        latest = file.calls[-1] if file.calls else None
        messages = {new.plan_key: self._message_fields(loan_id, latest, new.topics) for new in plan.create
                    if new.channel != "call" and self.outbox is not None}
        return Planned(plan, now, contact, messages)

    def _message_fields(self, loan_id: str | None, latest: SummaryRecord | None,
                        topics: Sequence[str]) -> dict[str, str]:
        """What a message template may quote: the loan's public figures and the topics' names; never a personal
        number (the outbox's templates name the fields they use, and refuse a body carrying one)."""
        loan = dict((latest.facts.get("loan") if latest is not None else None) or {})
        fields = {"topics": "、".join(self.topic_names.get(t, t) for t in topics),
                  "customer_name_masked": str(loan.get("name_masked") or "客户")}
        if loan.get("repay_day") is not None:
            fields["repay_day"] = str(int(loan["repay_day"]))
        for key in ("monthly_yuan", "amount_yuan"):
            if loan.get(key) is not None:
                fields[key] = f"{float(loan[key]):.0f}"
        if loan.get("term_years") is not None:
            fields["term_years"] = f"{float(loan['term_years']):g}"
        if loan_id:
            fields["loan_id_tail"] = loan_id[-4:]
        return fields

    # -- the work queue --------------------------------------------------------------------------------------

    def followups(self, q: FollowUpQuery) -> tuple[list[dict[str, Any]], int]:
        """One page of follow-ups (soonest due first) and the total matching."""
        rows, total = repository.followup_page(self.store, status=q.status, due_before=q.due_before,
                                               assignee=q.assignee, tier=q.tier, customer_id=q.customer_id,
                                               limit=q.limit, offset=q.offset)
        return [self._followup(f, tier) for f, tier in rows], total

    def followup(self, followup_id: str) -> dict[str, Any] | None:
        found = repository.get_followup(self.store, followup_id)
        return self._followup(*found) if found else None

    def assign(self, followup_id: str, assignee: str) -> dict[str, Any]:
        """Give an open or assigned follow-up to an agent (a supervisor's decision)."""
        def edit(f: FollowUpRecord) -> FollowUpRecord:
            if f.status not in OPEN:
                raise FollowUpError(f"follow-up {followup_id} is {f.status}; only open ones can be assigned")
            return replace(f, assignee=assignee, status="assigned", updated_at=self.now())

        return self._followup(*self._edit(followup_id, edit))

    def outcome(self, followup_id: str, status: str, note: str | None, agent_id: str | None) -> dict[str, Any]:
        """Record what came of a follow-up. `agent_id` is the acting agent (None: a supervisor), who must be its
        assignee; the note is kept with personal numbers masked."""
        if status not in OUTCOMES:
            raise FollowUpError(f"status must be one of {', '.join(OUTCOMES)}")

        def edit(f: FollowUpRecord) -> FollowUpRecord:
            if agent_id is not None and f.assignee != agent_id:
                raise PermissionError(f"follow-up {followup_id} is not assigned to you")
            if f.status not in OPEN:
                raise FollowUpError(f"follow-up {followup_id} is already {f.status}")
            # Numbers, names, e-mail and street addresses masked, as in transcripts (no loan file names them here).
            return replace(f, status=status, updated_at=self.now(),
                           outcome_note=free_text_redactor().redact(note[:2000]) if note else None)

        return self._followup(*self._edit(followup_id, edit))

    def _edit(self, followup_id: str,
              edit: Callable[[FollowUpRecord], FollowUpRecord]) -> tuple[FollowUpRecord, str | None]:
        edited = repository.edit_followup(self.store, followup_id, edit)
        if edited is None:
            raise FollowUpNotFound(f"no follow-up {followup_id}")
        return edited

    def _followup(self, f: FollowUpRecord, tier: str | None) -> dict[str, Any]:
        return {"id": f.id, "customer_id": f.customer_id, "loan_id": f.loan_id, "due_date": f.due_date.isoformat(),
                "channel": f.channel, "reason": f.reason, "reason_text": self.action_texts.get(f.reason, f.reason),
                "topics": list(f.topics), "topic_names": [self.topic_names.get(t, t) for t in f.topics],
                "status": f.status, "assignee": f.assignee, "outcome_note": f.outcome_note, "call_id": f.call_id,
                "source_call_id": f.source_call_id, "tier": tier, "created_at": _iso(f.created_at),
                "updated_at": _iso(f.updated_at)}

    # -- a customer ------------------------------------------------------------------------------------------

    def assigned_to(self, customer_id: str, agent_id: str) -> bool:
        """Whether the agent has a follow-up of this customer (what lets an agent see a customer)."""
        return repository.has_followup_of(self.store, customer_id, agent_id)

    def customers(self, tier: str | None, agent_id: str | None, limit: int,
                  offset: int) -> tuple[list[dict[str, Any]], int]:
        """One page of customers, highest tier first, with how many follow-ups each has open; with `agent_id`,
        only the customers of follow-ups assigned to that agent."""
        rows, total = repository.customer_page(self.store, tier, agent_id, limit, offset)
        return [{"customer_id": c.customer_id, "tier": c.tier, "tier_since": _iso(c.tier_since),
                 "open_followups": open_count} for c, open_count in rows], total

    def youngest_call(self, customer_id: str) -> datetime | None:
        """When the customer's newest stored call was made (retention checks before erasing)."""
        return repository.youngest_call(self.store, customer_id)

    def customer(self, customer_id: str) -> dict[str, Any] | None:
        """Everything the customer page shows: calls in order, the tier over time, topics never answered clearly,
        figures that contradicted the loan file, open follow-ups and messages, masked contact details."""
        history = repository.customer_history(self.store, customer_id)
        if history is None:
            return None
        customer, summaries = history.customer, history.calls
        contact = unseal_contact(self.cipher, customer.contact_sealed)
        calls: list[dict[str, Any]] = [
                 {"call_id": r.call_id, "at": _iso(r.at), "loan_id": r.loan_id, "agent_id": r.agent_id,
                  "tier": r.tier, "risk_score": r.risk_score, "report_url": f"/calls/{r.call_id}",
                  "unresolved": [{"topic": t, "name": self.topic_names.get(t, t), "label": lab}
                                 for t, lab in (r.facts.get("unresolved") or {}).items()],
                  "mismatched": [{"topic": t, "name": self.topic_names.get(t, t),
                                  **(r.facts.get("mismatch_detail") or {}).get(t, {})}
                                 for t in r.facts.get("mismatched") or ()]} for r in summaries
        ]
        return {
            "customer_id": customer_id, "tier": customer.tier, "tier_since": _iso(customer.tier_since),
            "planned_at": _iso(customer.planned_at),
            "tiers": [{"at": _iso(t.at), "tier": t.tier, "reasons": list(t.reasons), "call_id": t.call_id}
                      for t in history.tiers],
            "calls": calls,
            "never_clear": self._never_clear(summaries),
            "mismatches": [{"call_id": c["call_id"], "at": c["at"], **m} for c in calls for m in c["mismatched"]],
            "followups": [self._followup(f, customer.tier) for f in history.followups],
            "messages": ([{k: (_iso(v) if isinstance(v, datetime) else v) for k, v in asdict(m).items()}
                          for m in self.outbox.messages(self.store, customer_id)] if self.outbox is not None else []),
            "contact": contact.masked() if contact is not None else None,
        }

    def _never_clear(self, summaries: Sequence[SummaryRecord]) -> list[dict[str, Any]]:
        """Topics some call left vague or contradicted and no later call answered clearly."""
        open_topics: dict[str, dict[str, Any]] = {}
        for r in summaries:
            for topic in r.facts.get("clear") or ():
                open_topics.pop(topic, None)
            for topic, label in (r.facts.get("unresolved") or {}).items():
                open_topics[topic] = {"topic": topic, "name": self.topic_names.get(topic, topic), "label": label,
                                      "call_id": r.call_id, "at": _iso(r.at)}
            for topic in r.facts.get("mismatched") or ():
                open_topics[topic] = {"topic": topic, "name": self.topic_names.get(topic, topic),
                                      "label": "mismatch", "call_id": r.call_id, "at": _iso(r.at)}
        return list(open_topics.values())

    def carried_over(self, customer_id: str) -> list[dict[str, Any]]:
        """What the customer's earlier calls left unresolved, for the top of a new call's checklist: topics never
        answered clearly and the topics of an open second call."""
        summaries, pending = repository.left_open(self.store, customer_id)
        items = {i["topic"]: i for i in self._never_clear(summaries)}
        for f in pending:
            for topic in f.topics:
                items.setdefault(topic, {"topic": topic, "name": self.topic_names.get(topic, topic),
                                         "label": "followup", "call_id": f.source_call_id, "at": None})
        return list(items.values())

    def erase(self, customer_id: str) -> tuple[list[str], list[str]] | None:
        """Remove the customer: their calls (reports, summaries, answers), queued or failed recordings of theirs,
        follow-ups, messages, tier history and contact details. Returns (call ids, audio folders to delete), or
        None for an unknown customer. Refused (StoreError) while one of their recordings is being scored."""
        return repository.erase_customer(self.store, customer_id)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() + "Z" if value is not None else None




def contact_from_loan_file(loan_file: Mapping[str, Any] | None, earlier: Contact | None) -> Contact | None:
    """The contact details a loan file brings (phone or mobile, e-mail, consent and opt-out), over the ones
    stored; None when it brings none."""
    if not loan_file:
        return None
    phone = loan_file.get("mobile") or loan_file.get("phone")
    email, consent, opted_out = loan_file.get("email"), loan_file.get("consent"), loan_file.get("opted_out")
    if not any((phone, email, consent is not None, opted_out is not None)):
        return None
    base = earlier or Contact()
    return Contact(phone=str(phone) if phone else base.phone, email=str(email) if email else base.email,
                   consent=frozenset(consent) if consent is not None else base.consent,
                   opted_out=frozenset(opted_out) if opted_out is not None else base.opted_out)


def update_contact_from_loan_file(book: LoanBook, loan_file: Mapping[str, Any] | None) -> bool:
    """Store what a call's loan file says about how to reach its customer; whether anything was stored."""
    customer_id = (loan_file or {}).get("customer_id")
    if not customer_id:
        return False
    contact = contact_from_loan_file(loan_file, get_contact(book.store, book.cipher, str(customer_id)))
    if contact is None:
        return False
    put_contact(book.store, book.cipher, str(customer_id), contact)
    return True
