"""The loan book's repository: customers, their encrypted contact details, tier history, per-call summaries
and follow-ups. Synchronous, like `Store`; the service calls it from worker threads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.orm import Session

from service.loanbook.policy import call_facts
from service.privacy import RawTextCipher
from service.store import Store
from service.store.models import Call, CallSummary, Customer
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
    if customer is None or customer.contact_encrypted is None:
        return None
    return Contact.from_json(cipher.unseal(customer.contact_encrypted, "the contact details"))


# -- calls -----------------------------------------------------------------------------------------------------

class LoanBookRows:
    """The loan book's summary of each stored report (`service.store.rows.ReportRows`), registered at start-up
    (service/bootstrap.py)."""

    def write(self, s: Session, call: Call, loan_file: Mapping[str, Any] | None) -> None:
        """Write the summary of `call`, replacing the one of its earlier report."""
        old = s.get(CallSummary, call.call_id)
        # Only the call's own summary knows the masked name of a co-borrower or guarantor once the job's loan
        # file lost their names (redaction done): a re-scored report keeps it.
        name = (old.facts.get("loan") or {}).get("name_masked") if old is not None else None
        if old is not None:
            s.delete(old)
            s.flush()
        summary = record_call(s, call, loan_file)
        if name:
            summary.facts = {**summary.facts, "loan": {**(summary.facts.get("loan") or {}), "name_masked": name}}


def record_call(s: Session, call: Call, loan_file: Mapping[str, Any] | None) -> CallSummary:
    """Link a call being stored (in the report's transaction) to its customer and loan, and write its summary:
    what the loan book reads instead of the report."""
    customer_id = call.customer_id  # filed by the store from the job's loan file
    facts = call_facts(call.call_id, call.created_at, call.report).to_json()
    # The figures messages may quote (the repayment day, the monthly payment): public fields of the loan file.
    facts["mismatch_detail"] = {str(t["topic"]): t["mismatch"] for t in call.report.get("topics") or ()
                                if isinstance(t.get("mismatch"), dict)}
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
