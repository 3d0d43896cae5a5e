"""The loan book (issue #18): customers tiered from their calls, follow-ups planned, worked and closed, and the
views of them.

The policy is pure (`policy.py`); this module reads a customer's call summaries and follow-ups, applies the
plan in one transaction under the customer's row lock (two replicas planning one customer take turns, and the
follow-ups' `plan_key` makes a plan applied twice create nothing twice), hands message follow-ups to the outbox
in the same transaction, and answers the API's reads. Synchronous, like the store: the service calls it from
worker threads.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import case, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nlu.free_text import free_text_redactor
from service.loanbook import outbox
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
from service.loanbook.repository import Contact, get_contact, put_contact, read_contact
from service.privacy import RawTextCipher
from service.settings import OutboxSettings
from service.store import Store, StoreError
from service.store.models import (
    Call,
    CallSummary,
    CallVersion,
    Customer,
    CustomerTier,
    FollowUp,
    OutboxMessage,
    Recording,
)
from service.store.store import folder_of, utcnow

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


class Outbox(Protocol):
    """What the loan book needs of the outbox (service/loanbook/outbox.py)."""

    def enqueue(self, s: Session, *, customer_id: str, followup_id: str | None, action: str, channel: Channel,
                fields: dict[str, str], contact: Contact | None, now: datetime) -> Any: ...

    def deliveries(self, s: Session, followup_ids: Sequence[str]) -> dict[str, str]: ...

    def messages(self, store: Store, customer_id: str) -> list[dict[str, Any]]: ...


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
                 topic_names: Mapping[str, str], action_texts: Mapping[str, str], messages: Outbox | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
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
        local = datetime.combine(self.today(now), time(0), self.tz)
        return local.astimezone(UTC).replace(tzinfo=None)

    # -- planning ----------------------------------------------------------------------------------------------

    def plan(self, customer_id: str) -> Plan:
        """Re-plan one customer now (after a report of theirs was stored, or by the daily run). Two processes
        planning one customer at once take turns on PostgreSQL (the row lock); on SQLite the second one's
        follow-ups collide on their plan keys, and it plans again on what the first stored."""
        for attempt in range(3):
            try:
                with self.store.session() as s, s.begin():
                    customer = s.get(Customer, customer_id, with_for_update=True)
                    if customer is None:
                        raise StoreError(f"no customer {customer_id}")
                    return self._plan(s, customer, self.now())
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def plan_due(self, limit: int | None = None) -> int:
        """Re-plan every customer not yet planned today (the bank's day), in batches, each batch one transaction
        whose rows are locked with SKIP LOCKED on PostgreSQL: replicas running this at once share the customers
        instead of planning them twice, and a run that stops midway is finished by the next. Returns how many
        customers were planned."""
        planned = 0
        while limit is None or planned < limit:
            now = self.now()
            with self.store.session() as s, s.begin():
                query = (select(Customer)
                         .where(or_(Customer.planned_at.is_(None), Customer.planned_at < self._start_of_today(now)))
                         .order_by(Customer.customer_id)
                         .limit(PLAN_BATCH if limit is None else min(PLAN_BATCH, limit - planned)))
                if self.store.engine.dialect.name == "postgresql":
                    query = query.with_for_update(skip_locked=True)
                batch = list(s.scalars(query))
                if not batch:
                    return planned
                # The batch is taken by a conditional update: of two replicas that read the same batch (SQLite has
                # no SKIP LOCKED) the second finds its customers planned today and leaves them.
                taken = set(s.scalars(
                    update(Customer).where(Customer.customer_id.in_([c.customer_id for c in batch]),
                                           or_(Customer.planned_at.is_(None),
                                               Customer.planned_at < self._start_of_today(now)))
                    .values(planned_at=now).returning(Customer.customer_id)
                    .execution_options(synchronize_session=False)))
                mine = [c for c in batch if c.customer_id in taken]
                self._plan_many(s, mine, now)
            planned += len(mine)
        return planned

    def _plan_many(self, s: Session, customers: Sequence[Customer], now: datetime) -> None:
        if not customers:
            return
        ids = [c.customer_id for c in customers]
        calls: dict[str, list[CallSummary]] = {i: [] for i in ids}
        for row in s.scalars(select(CallSummary).where(CallSummary.customer_id.in_(ids))
                             .order_by(CallSummary.customer_id, CallSummary.at)):
            calls[str(row.customer_id)].append(row)
        followups: dict[str, list[FollowUp]] = {i: [] for i in ids}
        for f in s.scalars(select(FollowUp).where(FollowUp.customer_id.in_(ids))):
            followups[f.customer_id].append(f)
        deliveries = self._deliveries(s, [f.id for rows in followups.values() for f in rows
                                          if f.channel != "call" and f.status in OPEN])
        for customer in customers:
            self._apply(s, customer, calls[customer.customer_id], followups[customer.customer_id], deliveries, now)

    def _plan(self, s: Session, customer: Customer, now: datetime) -> Plan:
        calls = list(s.scalars(select(CallSummary).where(CallSummary.customer_id == customer.customer_id)
                               .order_by(CallSummary.at)))
        followups = list(s.scalars(select(FollowUp).where(FollowUp.customer_id == customer.customer_id)))
        deliveries = self._deliveries(s, [f.id for f in followups if f.channel != "call" and f.status in OPEN])
        return self._apply(s, customer, calls, followups, deliveries, now)

    def _deliveries(self, s: Session, ids: Sequence[str]) -> dict[str, str]:
        return self.outbox.deliveries(s, ids) if self.outbox is not None and ids else {}

    def _apply(self, s: Session, customer: Customer, summaries: Sequence[CallSummary],
               followups: Sequence[FollowUp], deliveries: Mapping[str, str], now: datetime) -> Plan:
        calls = [CallFacts.from_row(r.call_id, r.at, r.tier, r.risk_score, r.facts) for r in summaries]
        states = [FollowUpState(f.id, f.plan_key, f.channel, f.reason, tuple(f.topics), f.status,  # type: ignore[arg-type]
                                f.due_date, f.created_at, deliveries.get(f.id)) for f in followups]
        contact = read_contact(self.cipher, customer)
        allowed: list[Channel] = ["call", "letter"]
        allowed += [c for c in ("sms", "email") if contact is not None and contact.allows(c)]
        loan_id = summaries[-1].loan_id if summaries else None
        plan = plan_customer(customer.customer_id, calls, states, self.policy, self.today(now), allowed, loan_id)
        by_id = {f.id: f for f in followups}
        for change in plan.change:
            row = by_id[change.id]
            if change.topics is not None:
                row.topics = list(change.topics)
            if change.due_date is not None:
                row.due_date = change.due_date
            if change.status is not None:
                row.status = change.status
                row.outcome_note = change.note
            if change.call_id is not None:
                row.call_id = change.call_id
            row.updated_at = now
        if plan.tier != customer.tier:
            customer.tier, customer.tier_since = plan.tier, now
            if plan.tier is not None:
                s.add(CustomerTier(customer_id=customer.customer_id, at=now, tier=plan.tier,
                                   call_id=calls[-1].call_id if calls else None, reasons=list(plan.reasons)))
        latest = summaries[-1] if summaries else None
        for new in plan.create:
            row = FollowUp(id=secrets.token_hex(8), customer_id=customer.customer_id, loan_id=loan_id,
                           due_date=new.due_date, channel=new.channel, reason=new.reason, topics=list(new.topics),
                           status="open", plan_key=new.plan_key, source_call_id=new.source_call_id,
                           created_at=now, updated_at=now)
            s.add(row)
            if new.channel != "call" and self.outbox is not None:
                fields = self._message_fields(customer.customer_id, loan_id, latest, new.topics)
                with s.no_autoflush:  # the rows go out together at commit, in foreign-key order
                        self.outbox.enqueue(s, customer_id=customer.customer_id, followup_id=row.id, action=new.reason,
                                        channel=new.channel, fields=fields, contact=contact, now=now)
        customer.planned_at, customer.updated_at = now, now
        return plan

    def _message_fields(self, customer_id: str, loan_id: str | None, latest: CallSummary | None,
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
        with self.store.session() as s:
            query = select(FollowUp, Customer.tier).join(Customer, Customer.customer_id == FollowUp.customer_id)
            if q.status:
                query = query.where(FollowUp.status.in_(q.status))
            if q.due_before is not None:
                query = query.where(FollowUp.due_date < q.due_before)
            if q.assignee is not None:
                query = query.where(FollowUp.assignee == q.assignee)
            if q.tier is not None:
                query = query.where(Customer.tier == q.tier)
            if q.customer_id is not None:
                query = query.where(FollowUp.customer_id == q.customer_id)
            total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = s.execute(query.order_by(FollowUp.due_date, FollowUp.id).limit(q.limit).offset(q.offset)).all()
            return [self._followup(f, tier) for f, tier in rows], int(total)

    def followup(self, followup_id: str) -> dict[str, Any] | None:
        with self.store.session() as s:
            row = s.execute(select(FollowUp, Customer.tier).join(Customer, Customer.customer_id == FollowUp.customer_id)
                            .where(FollowUp.id == followup_id)).first()
            return self._followup(row[0], row[1]) if row else None

    def assign(self, followup_id: str, assignee: str) -> dict[str, Any]:
        """Give an open or assigned follow-up to an agent (a supervisor's decision)."""
        with self.store.session() as s, s.begin():
            row = s.get(FollowUp, followup_id, with_for_update=True)
            if row is None:
                raise FollowUpNotFound(f"no follow-up {followup_id}")
            if row.status not in OPEN:
                raise FollowUpError(f"follow-up {followup_id} is {row.status}; only open ones can be assigned")
            row.assignee, row.status, row.updated_at = assignee, "assigned", self.now()
            s.flush()
            return self._followup(row, s.get(Customer, row.customer_id).tier)  # type: ignore[union-attr]

    def outcome(self, followup_id: str, status: str, note: str | None, agent_id: str | None) -> dict[str, Any]:
        """Record what came of a follow-up. `agent_id` is the acting agent (None: a supervisor), who must be its
        assignee; the note is kept with personal numbers masked."""
        if status not in OUTCOMES:
            raise FollowUpError(f"status must be one of {', '.join(OUTCOMES)}")
        with self.store.session() as s, s.begin():
            row = s.get(FollowUp, followup_id, with_for_update=True)
            if row is None:
                raise FollowUpNotFound(f"no follow-up {followup_id}")
            if agent_id is not None and row.assignee != agent_id:
                raise PermissionError(f"follow-up {followup_id} is not assigned to you")
            if row.status not in OPEN:
                raise FollowUpError(f"follow-up {followup_id} is already {row.status}")
            row.status, row.updated_at = status, self.now()
            # Numbers, names, e-mail and street addresses masked, as in transcripts (no loan file names them here).
            row.outcome_note = free_text_redactor().redact(note[:2000]) if note else None
            s.flush()
            return self._followup(row, s.get(Customer, row.customer_id).tier)  # type: ignore[union-attr]

    def _followup(self, f: FollowUp, tier: str | None) -> dict[str, Any]:
        return {"id": f.id, "customer_id": f.customer_id, "loan_id": f.loan_id, "due_date": f.due_date.isoformat(),
                "channel": f.channel, "reason": f.reason, "reason_text": self.action_texts.get(f.reason, f.reason),
                "topics": list(f.topics), "topic_names": [self.topic_names.get(t, t) for t in f.topics],
                "status": f.status, "assignee": f.assignee, "outcome_note": f.outcome_note, "call_id": f.call_id,
                "source_call_id": f.source_call_id, "tier": tier, "created_at": _iso(f.created_at),
                "updated_at": _iso(f.updated_at)}

    # -- a customer ------------------------------------------------------------------------------------------

    def assigned_to(self, customer_id: str, agent_id: str) -> bool:
        """Whether the agent has a follow-up of this customer (what lets an agent see a customer)."""
        with self.store.session() as s:
            return s.scalar(select(func.count()).select_from(FollowUp).where(
                FollowUp.customer_id == customer_id, FollowUp.assignee == agent_id)) != 0

    def customers(self, tier: str | None, agent_id: str | None, limit: int,
                  offset: int) -> tuple[list[dict[str, Any]], int]:
        """One page of customers, highest tier first, with how many follow-ups each has open; with `agent_id`,
        only the customers of follow-ups assigned to that agent."""
        rank = case((Customer.tier == "high", 0), (Customer.tier == "medium", 1), (Customer.tier == "low", 2),
                    else_=3)
        with self.store.session() as s:
            query = select(Customer)
            if tier is not None:
                query = query.where(Customer.tier == tier)
            if agent_id is not None:
                query = query.where(Customer.customer_id.in_(
                    select(FollowUp.customer_id).where(FollowUp.assignee == agent_id)))
            total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = list(s.scalars(query.order_by(rank, Customer.customer_id).limit(limit).offset(offset)))
            counts = dict(s.execute(select(FollowUp.customer_id, func.count()).where(
                FollowUp.customer_id.in_([c.customer_id for c in rows]), FollowUp.status.in_(OPEN))
                .group_by(FollowUp.customer_id)).tuples().all())
        return [{"customer_id": c.customer_id, "tier": c.tier, "tier_since": _iso(c.tier_since),
                 "open_followups": int(counts.get(c.customer_id, 0))} for c in rows], int(total)

    def youngest_call(self, customer_id: str) -> datetime | None:
        """When the customer's newest stored call was made (retention checks before erasing)."""
        with self.store.session() as s:
            return s.scalar(select(func.max(Call.created_at)).where(Call.customer_id == customer_id))

    def customer(self, customer_id: str) -> dict[str, Any] | None:
        """Everything the customer page shows: calls in order, the tier over time, topics never answered clearly,
        figures that contradicted the loan file, open follow-ups and messages, masked contact details."""
        with self.store.session() as s:
            customer = s.get(Customer, customer_id)
            if customer is None:
                return None
            summaries = list(s.scalars(select(CallSummary).where(CallSummary.customer_id == customer_id)
                                       .order_by(CallSummary.at)))
            tiers = list(s.scalars(select(CustomerTier).where(CustomerTier.customer_id == customer_id)
                                   .order_by(CustomerTier.at, CustomerTier.id)))
            followups = list(s.scalars(select(FollowUp).where(FollowUp.customer_id == customer_id)
                                       .order_by(FollowUp.due_date, FollowUp.id)))
            contact = read_contact(self.cipher, customer)
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
                      for t in tiers],
            "calls": calls,
            "never_clear": self._never_clear(summaries),
            "mismatches": [{"call_id": c["call_id"], "at": c["at"], **m} for c in calls for m in c["mismatched"]],
            "followups": [self._followup(f, customer.tier) for f in followups],
            "messages": self.outbox.messages(self.store, customer_id) if self.outbox is not None else [],
            "contact": contact.masked() if contact is not None else None,
        }

    def _never_clear(self, summaries: Sequence[CallSummary]) -> list[dict[str, Any]]:
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
        with self.store.session() as s:
            summaries = list(s.scalars(select(CallSummary).where(CallSummary.customer_id == customer_id)
                                       .order_by(CallSummary.at)))
            pending = list(s.scalars(select(FollowUp).where(FollowUp.customer_id == customer_id,
                                                            FollowUp.channel == "call",
                                                            FollowUp.status.in_(OPEN))))
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
        with self.store.session() as s, s.begin():
            customer = s.get(Customer, customer_id, with_for_update=True)
            if customer is None:
                return None
            calls = list(s.scalars(select(Call).where(Call.customer_id == customer_id)))
            call_ids = [c.call_id for c in calls]
            # Every job of their calls, and jobs not scored yet whose loan file names them (JSON is not queried
            # alike on SQLite and PostgreSQL; unfinished jobs are few).
            jobs = list(s.scalars(select(Recording).where(Recording.call_id.in_(call_ids))))
            jobs += [j for j in s.scalars(select(Recording).where(Recording.status.in_(("queued", "running", "failed")),
                                                                 Recording.call_id.not_in(call_ids)))
                     if (j.loan_file or {}).get("customer_id") == customer_id]
            if any(j.status == "running" for j in jobs):
                raise StoreError(f"a recording of customer {customer_id} is being scored; erase when it has finished")
            folders = {c.audio_dir for c in calls if c.audio_dir} | {f for j in jobs if (f := folder_of(j.files))}
            for job in jobs:
                s.delete(job)
            for call in calls:
                s.delete(call)
            s.execute(delete(CallSummary).where(CallSummary.customer_id == customer_id))
            s.execute(delete(CallVersion).where(or_(CallVersion.customer_id == customer_id,
                                                    CallVersion.call_id.in_(call_ids))))
            s.delete(customer)  # follow-ups, messages and tier history cascade
            return sorted(c.call_id for c in calls), sorted(folders)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() + "Z" if value is not None else None



class MessageOutbox:
    """The loan book's side of the outbox (service/loanbook/outbox.py): messages queued in the planner's transaction,
    their delivery read back to settle follow-ups, and the customer page's list."""

    def __init__(self, settings: OutboxSettings, tz: ZoneInfo, cipher: RawTextCipher) -> None:
        self.settings, self.tz, self.cipher = settings, tz, cipher

    def enqueue(self, s: Session, *, customer_id: str, followup_id: str | None, action: str, channel: Channel,
                fields: dict[str, str], contact: Contact | None, now: datetime) -> Any:
        return outbox.enqueue(s, customer_id=customer_id, followup_id=followup_id, action=action,
                              channel=channel, fields=fields, contact=contact, now=now, settings=self.settings,
                              tz=self.tz, cipher=self.cipher)

    def deliveries(self, s: Session, followup_ids: Sequence[str]) -> dict[str, str]:
        """The delivery status of each follow-up's message (sent, dead, suppressed, or still on its way)."""
        rows = s.execute(select(OutboxMessage.followup_id, OutboxMessage.status)
                         .where(OutboxMessage.followup_id.in_(list(followup_ids)))).tuples()
        return {str(f): str(status) for f, status in rows if f is not None}

    def messages(self, store: Store, customer_id: str) -> list[dict[str, Any]]:
        return [{k: (_iso(v) if isinstance(v, datetime) else v) for k, v in asdict(m).items()}
                for m in outbox.messages_of(store, customer_id)]


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
