"""The loan book's repository: customers, their encrypted contact details, tier history, per-call summaries
and follow-ups: all of the feature's SQL. It hands the book typed records (`CustomerRecord`, `SummaryRecord`,
`FollowUpRecord`, `TierRecord`) and takes back its decisions (`Planned`, an edited `FollowUpRecord`) inside the
transaction that read them, so the book's use-cases keep their transaction boundaries and locks without knowing
SQL. Synchronous, like `Store`; the service calls it from worker threads."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any, Literal, Protocol, cast

from sqlalchemy import case, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nlu.report import read_report
from service.loanbook.policy import OPEN, Plan, Status, call_facts
from service.privacy import RawTextCipher
from service.store import Store
from service.store.models import (
    Call,
    CallSummary,
    CallVersion,
    Customer,
    CustomerTier,
    FollowUp,
    PromptFeedback,
    Recording,
)
from service.store.store import utcnow

Channel = Literal["call", "sms", "email", "letter"]
CHANNELS: tuple[Channel, ...] = ("call", "sms", "email", "letter")


@dataclass(frozen=True, slots=True)
class Contact:
    """How a customer may be reached: addresses, and per channel whether they consented and whether they opted
    out since. Stored encrypted; shown to agents only masked (`masked()`)."""

    phone: str | None = None
    email: str | None = None
    consent: frozenset[Channel] = field(default_factory=frozenset)
    opted_out: frozenset[Channel] = field(default_factory=frozenset)

    def allows(self, channel: Channel) -> bool:
        """Whether a message may go out over `channel`: consented, not opted out, and an address to send to."""
        address = {"sms": self.phone, "email": self.email}.get(channel, "")
        return channel in self.consent and channel not in self.opted_out and address is not None

    def to_json(self) -> dict[str, Any]:
        return {"phone": self.phone, "email": self.email, "consent": sorted(self.consent),
                "opted_out": sorted(self.opted_out)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Contact:
        return cls(phone=data.get("phone"), email=data.get("email"),
                   consent=frozenset(c for c in data.get("consent", ()) if c in CHANNELS),
                   opted_out=frozenset(c for c in data.get("opted_out", ()) if c in CHANNELS))

    def masked(self) -> dict[str, Any]:
        """What agents and pages see: the phone's first three and last four digits, the e-mail's first letter
        and domain."""
        return {"phone": mask_phone(self.phone), "email": mask_email(self.email),
                "consent": sorted(self.consent), "opted_out": sorted(self.opted_out)}


def mask_phone(phone: str | None) -> str | None:
    """138****5678; a short number keeps only its last two digits."""
    if not phone:
        return None
    digits = "".join(c for c in phone if c.isdigit())
    if len(digits) >= 11:
        return digits[:3] + "*" * (len(digits) - 7) + digits[-4:]
    return "*" * max(len(digits) - 2, 1) + digits[-2:]


def mask_email(email: str | None) -> str | None:
    """z***@example.com"""
    if not email or "@" not in email:
        return None
    local, domain = email.rsplit("@", 1)
    return f"{local[:1]}***@{domain}"


def ensure_customer(s: Session, customer_id: str, now: datetime | None = None) -> Customer:
    """The customer's row, made on first mention (a call, a contact update)."""
    customer = s.get(Customer, customer_id, with_for_update=True)
    if customer is None:
        now = now or utcnow()
        customer = Customer(customer_id=customer_id, created_at=now, updated_at=now)
        s.add(customer)
        s.flush()
    return customer


def put_contact(store: Store, cipher: RawTextCipher, customer_id: str, contact: Contact) -> None:
    """Replace the customer's contact details (encrypted with the key kept outside the database)."""
    with store.session() as s, s.begin():
        customer = ensure_customer(s, customer_id)
        customer.contact_encrypted = cipher.seal(contact.to_json())
        customer.updated_at = utcnow()


def get_contact(store: Store, cipher: RawTextCipher, customer_id: str) -> Contact | None:
    """The customer's contact details, decrypted; None when none were given."""
    with store.session() as s:
        customer = s.get(Customer, customer_id)
        return read_contact(cipher, customer)


def read_contact(cipher: RawTextCipher, customer: Customer | None) -> Contact | None:
    """The contact details of a customer row already loaded (in the caller's transaction)."""
    return unseal_contact(cipher, customer.contact_encrypted if customer is not None else None)


def unseal_contact(cipher: RawTextCipher, sealed: bytes | None) -> Contact | None:
    """Contact details as stored (`CustomerRecord.contact_sealed`), decrypted; None when none were given."""
    if sealed is None:
        return None
    return Contact.from_json(cipher.unseal(sealed, "the contact details"))


# -- records ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CustomerRecord:
    """A customer as stored: the tier and since when, when they were last planned, and the contact details still
    sealed (`unseal_contact`)."""

    customer_id: str
    tier: str | None
    tier_since: datetime | None
    planned_at: datetime | None
    contact_sealed: bytes | None


@dataclass(frozen=True, slots=True)
class SummaryRecord:
    """What the loan book keeps of one scored call (`record_call`) instead of its report."""

    call_id: str
    customer_id: str | None
    loan_id: str | None
    agent_id: str | None
    at: datetime
    risk_score: int
    tier: str
    facts: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class FollowUpRecord:
    """A stored follow-up. `edit_followup` writes back the fields an agent or supervisor changes: `assignee`,
    `status`, `outcome_note` and `updated_at`."""

    id: str
    customer_id: str
    loan_id: str | None
    due_date: date
    channel: Channel
    reason: str
    topics: tuple[str, ...]
    status: Status
    assignee: str | None
    outcome_note: str | None
    call_id: str | None
    source_call_id: str | None
    plan_key: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class TierRecord:
    """One entry of a customer's tier history."""

    at: datetime
    tier: str
    reasons: tuple[str, ...]
    call_id: str | None


@dataclass(frozen=True, slots=True)
class CustomerFile:
    """What planning reads of one customer under its row lock: calls oldest first, every follow-up (any status),
    and the delivery status of the messages of open message follow-ups (by follow-up id)."""

    customer: CustomerRecord
    calls: tuple[SummaryRecord, ...]
    followups: tuple[FollowUpRecord, ...]
    deliveries: Mapping[str, str]

    @property
    def loan_id(self) -> str | None:
        """The loan of the newest call: what new follow-ups are about."""
        return self.calls[-1].loan_id if self.calls else None


@dataclass(frozen=True, slots=True)
class Planned:
    """A plan to write as decided at `now` (naive UTC): the follow-ups' changes and new ones, the tier, and the
    messages queued with new follow-ups (their template fields, by the follow-up's plan key) to `contact`."""

    plan: Plan
    now: datetime
    contact: Contact | None = None
    messages: Mapping[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CustomerHistory:
    """Everything the customer page shows, read in one session: calls oldest first, the tier over time, and the
    follow-ups soonest due first."""

    customer: CustomerRecord
    calls: tuple[SummaryRecord, ...]
    tiers: tuple[TierRecord, ...]
    followups: tuple[FollowUpRecord, ...]


class MessageQueue(Protocol):
    """What planning needs of the outbox's queue (service/loanbook/outbox_queue.py), in the planner's
    transaction (`s`): messages queued with new follow-ups, and their delivery read back to settle follow-ups."""

    def enqueue(self, s: Session, *, customer_id: str, followup_id: str | None, action: str, channel: Channel,
                fields: dict[str, str], contact: Contact | None, now: datetime) -> Any: ...

    def deliveries(self, s: Session, followup_ids: Sequence[str]) -> dict[str, str]: ...


#: The book's decision for one customer, taken inside the transaction that read the customer's file.
Decide = Callable[[CustomerFile], Planned]


def _customer(row: Customer) -> CustomerRecord:
    return CustomerRecord(row.customer_id, row.tier, row.tier_since, row.planned_at, row.contact_encrypted)


def _summary(row: CallSummary) -> SummaryRecord:
    return SummaryRecord(row.call_id, row.customer_id, row.loan_id, row.agent_id, row.at, row.risk_score, row.tier,
                         row.facts)


def _followup(row: FollowUp) -> FollowUpRecord:
    return FollowUpRecord(row.id, row.customer_id, row.loan_id, row.due_date, cast(Channel, row.channel), row.reason,
                          tuple(row.topics), cast(Status, row.status), row.assignee, row.outcome_note, row.call_id,
                          row.source_call_id, row.plan_key, row.created_at, row.updated_at)


def _tier(row: CustomerTier) -> TierRecord:
    return TierRecord(row.at, row.tier, tuple(row.reasons), row.call_id)


# -- planning --------------------------------------------------------------------------------------------------

def plan_one(store: Store, customer_id: str, decide: Decide, queue: MessageQueue | None) -> Plan:
    """Plan one customer in one transaction under its row lock: read its file, `decide`, write the plan and queue
    its messages. Two processes planning one customer at once take turns on PostgreSQL (the row lock); on SQLite
    the second one's follow-ups collide on their plan keys, and it plans again on what the first stored (`decide`
    is called again). Raises `StoreError` for an unknown customer."""
    from service.store.store import StoreError

    for attempt in range(3):
        try:
            with store.session() as s, s.begin():
                customer = s.get(Customer, customer_id, with_for_update=True)
                if customer is None:
                    raise StoreError(f"no customer {customer_id}")
                (file,) = _files(s, [customer], queue)
                planned = decide(file)
                _write_plan(s, customer, file, planned, queue)
                return planned.plan
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def plan_batch(store: Store, before: datetime, now: datetime, limit: int, decide: Decide,
               queue: MessageQueue | None) -> int | None:
    """Plan up to `limit` customers not planned since `before`, in one transaction whose rows are locked with SKIP
    LOCKED on PostgreSQL, and mark them planned at `now`. Returns how many this call planned (0 when another
    replica took them all first), or None when nobody is left to plan."""
    with store.session() as s, s.begin():
        due = or_(Customer.planned_at.is_(None), Customer.planned_at < before)
        query = select(Customer).where(due).order_by(Customer.customer_id).limit(limit)
        if store.engine.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        batch = list(s.scalars(query))
        if not batch:
            return None
        # The batch is taken by a conditional update: of two replicas that read the same batch (SQLite has no SKIP
        # LOCKED) the second finds its customers planned today and leaves them.
        taken = set(s.scalars(
            update(Customer).where(Customer.customer_id.in_([c.customer_id for c in batch]), due)
            .values(planned_at=now).returning(Customer.customer_id)
            .execution_options(synchronize_session=False)))
        mine = [c for c in batch if c.customer_id in taken]
        for customer, file in zip(mine, _files(s, mine, queue), strict=True):
            _write_plan(s, customer, file, decide(file), queue)
        return len(mine)


def _files(s: Session, customers: Sequence[Customer], queue: MessageQueue | None) -> list[CustomerFile]:
    """The planning files of customers already locked, read with one query per table."""
    if not customers:
        return []
    ids = [c.customer_id for c in customers]
    calls: dict[str, list[SummaryRecord]] = {i: [] for i in ids}
    for row in s.scalars(select(CallSummary).where(CallSummary.customer_id.in_(ids))
                         .order_by(CallSummary.customer_id, CallSummary.at)):
        calls[str(row.customer_id)].append(_summary(row))
    followups: dict[str, list[FollowUpRecord]] = {i: [] for i in ids}
    for f in s.scalars(select(FollowUp).where(FollowUp.customer_id.in_(ids))):
        followups[f.customer_id].append(_followup(f))
    messages = [f.id for rows in followups.values() for f in rows if f.channel != "call" and f.status in OPEN]
    deliveries = queue.deliveries(s, messages) if queue is not None and messages else {}
    return [CustomerFile(_customer(c), tuple(calls[c.customer_id]), tuple(followups[c.customer_id]), deliveries)
            for c in customers]


def _write_plan(s: Session, customer: Customer, file: CustomerFile, planned: Planned,
                queue: MessageQueue | None) -> None:
    plan, now = planned.plan, planned.now
    for change in plan.change:
        row = s.get(FollowUp, change.id)  # loaded by `_files` in this transaction: no query
        assert row is not None
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
                               call_id=file.calls[-1].call_id if file.calls else None, reasons=list(plan.reasons)))
    for new in plan.create:
        followup = FollowUp(id=secrets.token_hex(8), customer_id=customer.customer_id, loan_id=file.loan_id,
                            due_date=new.due_date, channel=new.channel, reason=new.reason, topics=list(new.topics),
                            status="open", plan_key=new.plan_key, source_call_id=new.source_call_id,
                            created_at=now, updated_at=now)
        s.add(followup)
        fields = planned.messages.get(new.plan_key)
        if fields is not None and queue is not None:
            with s.no_autoflush:  # the rows go out together at commit, in foreign-key order
                queue.enqueue(s, customer_id=customer.customer_id, followup_id=followup.id, action=new.reason,
                              channel=new.channel, fields=fields, contact=planned.contact, now=now)
    customer.planned_at, customer.updated_at = now, now


# -- follow-ups ------------------------------------------------------------------------------------------------

def followup_page(store: Store, *, status: Sequence[str], due_before: date | None, assignee: str | None,
                  tier: str | None, customer_id: str | None, limit: int,
                  offset: int) -> tuple[list[tuple[FollowUpRecord, str | None]], int]:
    """One page of follow-ups (soonest due first) with their customer's tier, and the total matching."""
    with store.session() as s:
        query = select(FollowUp, Customer.tier).join(Customer, Customer.customer_id == FollowUp.customer_id)
        if status:
            query = query.where(FollowUp.status.in_(status))
        if due_before is not None:
            query = query.where(FollowUp.due_date < due_before)
        if assignee is not None:
            query = query.where(FollowUp.assignee == assignee)
        if tier is not None:
            query = query.where(Customer.tier == tier)
        if customer_id is not None:
            query = query.where(FollowUp.customer_id == customer_id)
        total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = s.execute(query.order_by(FollowUp.due_date, FollowUp.id).limit(limit).offset(offset)).all()
        return [(_followup(f), t) for f, t in rows], int(total)


def get_followup(store: Store, followup_id: str) -> tuple[FollowUpRecord, str | None] | None:
    """A follow-up and its customer's tier; None for an unknown id."""
    with store.session() as s:
        row = s.execute(select(FollowUp, Customer.tier).join(Customer, Customer.customer_id == FollowUp.customer_id)
                        .where(FollowUp.id == followup_id)).first()
        return (_followup(row[0]), row[1]) if row else None


def edit_followup(store: Store, followup_id: str,
                  edit: Callable[[FollowUpRecord], FollowUpRecord]) -> tuple[FollowUpRecord, str | None] | None:
    """Change a follow-up under its row lock, in one transaction: `edit` gets it as stored and returns it changed
    (or raises, and nothing changes); its `assignee`, `status`, `outcome_note` and `updated_at` are written. Returns
    the follow-up as stored now and its customer's tier; None for an unknown id."""
    with store.session() as s, s.begin():
        row = s.get(FollowUp, followup_id, with_for_update=True)
        if row is None:
            return None
        changed = edit(_followup(row))
        row.assignee, row.status, row.outcome_note = changed.assignee, changed.status, changed.outcome_note
        row.updated_at = changed.updated_at
        s.flush()
        customer = s.get(Customer, row.customer_id)
        return _followup(row), customer.tier if customer is not None else None


# -- customers -------------------------------------------------------------------------------------------------

def has_followup_of(store: Store, customer_id: str, agent_id: str) -> bool:
    """Whether the agent has a follow-up of this customer (any status)."""
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(FollowUp).where(
            FollowUp.customer_id == customer_id, FollowUp.assignee == agent_id)) != 0


def customer_page(store: Store, tier: str | None, agent_id: str | None, limit: int,
                  offset: int) -> tuple[list[tuple[CustomerRecord, int]], int]:
    """One page of customers, highest tier first, each with how many follow-ups it has open, and the total
    matching; with `agent_id`, only the customers of follow-ups assigned to that agent."""
    rank = case((Customer.tier == "high", 0), (Customer.tier == "medium", 1), (Customer.tier == "low", 2), else_=3)
    with store.session() as s:
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
    return [(_customer(c), int(counts.get(c.customer_id, 0))) for c in rows], int(total)


def youngest_call(store: Store, customer_id: str) -> datetime | None:
    """When the customer's newest stored call was made."""
    with store.session() as s:
        return s.scalar(select(func.max(Call.created_at)).where(Call.customer_id == customer_id))


def customer_history(store: Store, customer_id: str) -> CustomerHistory | None:
    """The customer, their call summaries, tier history and follow-ups, read in one session; None if unknown."""
    with store.session() as s:
        customer = s.get(Customer, customer_id)
        if customer is None:
            return None
        summaries = s.scalars(select(CallSummary).where(CallSummary.customer_id == customer_id)
                              .order_by(CallSummary.at))
        tiers = s.scalars(select(CustomerTier).where(CustomerTier.customer_id == customer_id)
                          .order_by(CustomerTier.at, CustomerTier.id))
        followups = s.scalars(select(FollowUp).where(FollowUp.customer_id == customer_id)
                              .order_by(FollowUp.due_date, FollowUp.id))
        return CustomerHistory(_customer(customer), tuple(_summary(r) for r in summaries),
                               tuple(_tier(t) for t in tiers), tuple(_followup(f) for f in followups))


def left_open(store: Store, customer_id: str) -> tuple[list[SummaryRecord], list[FollowUpRecord]]:
    """The customer's call summaries (oldest first) and their open second calls, read in one session."""
    with store.session() as s:
        summaries = [_summary(r) for r in s.scalars(select(CallSummary).where(CallSummary.customer_id == customer_id)
                                                    .order_by(CallSummary.at))]
        pending = [_followup(f) for f in s.scalars(select(FollowUp).where(FollowUp.customer_id == customer_id,
                                                                         FollowUp.channel == "call",
                                                                         FollowUp.status.in_(OPEN)))]
    return summaries, pending


def erase_customer(store: Store, customer_id: str) -> tuple[list[str], list[str]] | None:
    """Remove the customer in one transaction under their row lock: their calls (reports, summaries, answers),
    queued or failed recordings of theirs, follow-ups, messages, tier history and contact details. Returns (call
    ids, audio folders to delete), or None for an unknown customer. Raises `StoreError` while one of their
    recordings is being scored."""
    from service.store.store import StoreError, folder_of

    with store.session() as s, s.begin():
        customer = s.get(Customer, customer_id, with_for_update=True)
        if customer is None:
            return None
        calls = list(s.scalars(select(Call).where(Call.customer_id == customer_id)))
        call_ids = [c.call_id for c in calls]
        # Every job of their calls, and jobs not scored yet whose loan file names them (JSON is not queried alike
        # on SQLite and PostgreSQL; unfinished jobs are few).
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
        s.execute(delete(PromptFeedback).where(PromptFeedback.call_id.in_(call_ids)))  # their answers, redacted
        s.delete(customer)  # follow-ups, messages and tier history cascade
        return sorted(c.call_id for c in calls), sorted(folders)


# -- calls -----------------------------------------------------------------------------------------------------

class LoanBookRows:
    """The loan book's summary of each stored report (`service.store.rows.ReportRows`), registered at start-up
    (service/bootstrap.py)."""

    def write(self, s: Session, call: Call, loan_file: Mapping[str, Any] | None) -> None:
        """Write the summary of `call`, replacing the one of its earlier report (none for a demo call)."""
        old = s.get(CallSummary, call.call_id)
        # Only the call's own summary knows the masked name of a co-borrower or guarantor once the job's loan
        # file lost their names (redaction done): a re-scored report keeps it.
        name = (old.facts.get("loan") or {}).get("name_masked") if old is not None else None
        if old is not None:
            s.delete(old)
            s.flush()
        if call.source == "demo":
            return  # the console's demo replay re-plans no customer
        summary = record_call(s, call, loan_file)
        if name:
            summary.facts = {**summary.facts, "loan": {**(summary.facts.get("loan") or {}), "name_masked": name}}


def record_call(s: Session, call: Call, loan_file: Mapping[str, Any] | None) -> CallSummary:
    """Link a call being stored (in the report's transaction) to its customer and loan, and write its summary:
    what the loan book reads instead of the report."""
    customer_id = call.customer_id  # filed by the store from the job's loan file
    report = read_report(call.report)
    facts = call_facts(call.call_id, call.created_at, report).to_json()
    # The figures messages may quote (the repayment day, the monthly payment): public fields of the loan file.
    facts["mismatch_detail"] = {t.topic: asdict(t.mismatch) for t in report.topics if t.mismatch is not None}
    facts["loan"] = {k: loan_file[k] for k in ("repay_day", "monthly_yuan", "amount_yuan", "term_years", "role")
                     if loan_file and loan_file.get(k) is not None}
    name = _text(loan_file, {"coborrower": "coborrower_name", "guarantor": "guarantor_name"}.get(
        str((loan_file or {}).get("role")), "borrower")) or _text(loan_file, "name")
    if name:
        facts["loan"]["name_masked"] = name[0] + "*" * max(len(name) - 1, 1)  # 张**: never the whole name
    summary = CallSummary(call_id=call.call_id, customer_id=customer_id, loan_id=call.loan_id,
                          agent_id=call.agent_id, at=call.created_at, risk_score=call.risk_score, tier=call.tier,
                          facts=facts)
    s.add(summary)
    if customer_id is not None:
        ensure_customer(s, customer_id)
    return summary


def _text(loan_file: Mapping[str, Any] | None, key: str) -> str | None:
    value = (loan_file or {}).get(key)
    return str(value) if value not in (None, "") else None
