"""Customers of the loan book (issue #18): their follow-up history, tier over time, what is still open, and their
contact details (set here or by a loan file; stored encrypted, shown masked). Supervisors see every customer, an
agent only the customers of follow-ups assigned to them; every read of a customer is audited."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from service.api.deps import Admin, CustomerIdPath, LoanBookDep, SettingsDep, Viewer, page_bounds, require
from service.auth import Principal
from service.errors import ServiceError, forbidden
from service.loanbook.followups_api import FollowUpItem
from service.loanbook.outbox_queue import MessageView
from service.loanbook.repository import Contact, put_contact
from service.protocol import Email, Phone
from service.store import StoreError, audit
from service.store.store import utcnow
from service.workers.jobs import remove_audio

router = APIRouter(tags=["customers"])

ChannelName = Literal["call", "sms", "email", "letter"]
#: Who may set contact details: the bank's systems (ingest), supervisors and admins; agents never see them whole.
ContactWriter = Annotated[Principal, require("ingest", "supervisor")]


class CustomerRow(BaseModel):
    customer_id: str
    tier: str | None
    tier_since: str | None
    open_followups: int


class CustomerPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[CustomerRow]


class MaskedContact(BaseModel):
    """Contact details as agents and pages see them: phone and e-mail masked."""

    phone: str | None
    email: str | None
    consent: list[str]
    opted_out: list[str]


class ContactSet(BaseModel):
    customer_id: str
    contact: MaskedContact


class TierChange(BaseModel):
    at: str | None
    tier: str
    reasons: list[str]
    call_id: str | None


class OpenTopic(BaseModel):
    """A topic a call left vague (its label), contradicted (`mismatch`) or a follow-up still asks (`followup`)."""

    topic: str
    name: str
    label: str
    call_id: str | None
    at: str | None


class TopicLabel(BaseModel):
    topic: str
    name: str
    label: str


class MismatchedTopic(BaseModel):
    """A figure the customer stated against the loan file's (`field`, `stated`, `on_file` when the call's summary
    kept them)."""

    topic: str
    name: str
    field: str | None = None
    stated: float | None = None
    on_file: float | None = None


class CallMismatch(BaseModel):
    """A mismatch of `MismatchedTopic` with the call it was heard in (fields in the order clients have seen)."""

    call_id: str
    at: str | None
    topic: str
    name: str
    field: str | None = None
    stated: float | None = None
    on_file: float | None = None


class CustomerCall(BaseModel):
    call_id: str
    at: str | None
    loan_id: str | None
    agent_id: str | None
    tier: str
    risk_score: int
    report_url: str
    unresolved: list[TopicLabel]
    mismatched: list[MismatchedTopic]


class CustomerView(BaseModel):
    customer_id: str
    tier: str | None
    tier_since: str | None
    planned_at: str | None
    tiers: list[TierChange]
    calls: list[CustomerCall]
    never_clear: list[OpenTopic]
    mismatches: list[CallMismatch]
    followups: list[FollowUpItem]
    messages: list[MessageView]
    contact: MaskedContact | None


class ContactUpdate(BaseModel):
    """A customer's contact details and choices; replaces what was stored."""

    model_config = ConfigDict(extra="forbid")

    phone: Phone | None = None
    email: Email | None = None
    consent: list[ChannelName] = Field(default_factory=list, max_length=4)
    opted_out: list[ChannelName] = Field(default_factory=list, max_length=4)


async def check_customer_access(book: LoanBookDep, principal: Principal, customer_id: str) -> None:
    """Supervisors and admins see every customer; an agent only those with a follow-up assigned to them."""
    if principal.role in ("supervisor", "admin"):
        return
    if principal.role != "agent" or principal.agent_id is None or not await asyncio.to_thread(
            book.assigned_to, customer_id, principal.agent_id):
        raise forbidden(f"customer {customer_id} has no follow-up assigned to you")


# `exclude_unset`: a mismatch's figures are sent only where the call's summary kept them, as before.
@router.get("/v1/customers/{customer_id}", response_model=CustomerView, response_model_exclude_unset=True)
async def customer_view(customer_id: CustomerIdPath, principal: Viewer, book: LoanBookDep) -> dict[str, Any]:
    """The customer: `calls` (every follow-up call, oldest first, with what each left vague or contradicted),
    `tiers` (the tier over time, with reasons), `never_clear` (topics no later call answered clearly),
    `mismatches`, `followups`, `messages` (delivery status) and `contact` (masked)."""
    await check_customer_access(book, principal, customer_id)
    view = await asyncio.to_thread(book.customer, customer_id)
    if view is None:
        raise ServiceError("not_found", f"no customer {customer_id}", 404)
    await asyncio.to_thread(audit.append, book.store, "customer_read", principal.name, None,
                            {"customer_id": customer_id, "role": principal.role})
    return view


@router.get("/v1/customers", response_model=CustomerPage)
async def list_customers(principal: Viewer, book: LoanBookDep, tier: Literal["low", "medium", "high"] | None = None,
                         limit: int = 100, offset: int = 0) -> dict[str, Any]:
    """Customers by tier (highest first), with their open follow-ups; an agent sees only their own customers."""
    page_bounds(limit, offset, 500)
    agent = principal.agent_id if principal.role == "agent" else None
    items, total = await asyncio.to_thread(book.customers, tier, agent, limit, offset)
    return {"total": total, "limit": limit, "offset": offset, "items": items}


@router.put("/v1/customers/{customer_id}/contact", response_model=ContactSet)
async def set_contact(customer_id: CustomerIdPath, body: ContactUpdate, principal: ContactWriter,
                      book: LoanBookDep) -> dict[str, Any]:
    """Set the customer's phone, e-mail and, per channel, consent and opt-out. Stored encrypted; the answer
    shows them masked, as everyone but the bank's systems sees them."""
    contact = Contact(body.phone, body.email, frozenset(body.consent), frozenset(body.opted_out))
    await asyncio.to_thread(put_contact, book.store, book.cipher, customer_id, contact)
    await asyncio.to_thread(audit.append, book.store, "contact_set", principal.name, None,
                            {"customer_id": customer_id, "consent": sorted(body.consent),
                             "opted_out": sorted(body.opted_out)})
    return {"customer_id": customer_id, "contact": contact.masked()}


@router.delete("/v1/customers/{customer_id}", status_code=204,
               responses={409: {"description": "a call under retention, or a recording being scored"}})
async def erase_customer(customer_id: Annotated[str, Path(max_length=1024)], principal: Admin, book: LoanBookDep,
                         settings: SettingsDep) -> Response:
    """Erase the customer: their calls (reports, audio, jobs), follow-ups, messages, tier history and contact
    details. Refused (409) while one of their calls is younger than the minimum retention or being scored. The id
    is not held to today's pattern (service/ids.py): a customer an older version stored can still be erased."""
    youngest = await asyncio.to_thread(book.youngest_call, customer_id)
    if youngest is not None:
        keep_until = youngest + timedelta(days=settings.scoring.min_retention_days)
        if utcnow() < keep_until:
            raise ServiceError("retention", f"customer {customer_id} has calls that must be kept until "
                               f"{keep_until:%Y-%m-%d %H:%M} UTC (minimum retention)", 409)
    try:
        erased = await asyncio.to_thread(book.erase, customer_id)
    except StoreError as e:
        raise ServiceError("being_scored", str(e), 409) from e
    if erased is None:
        raise ServiceError("not_found", f"no customer {customer_id}", 404)
    call_ids, folders = erased
    await asyncio.to_thread(book.store.flush_deleted)  # no copy of their rows left in the WAL file
    await asyncio.to_thread(audit.append, book.store, "customer_erased", principal.name, None,
                            {"customer_id": customer_id, "calls": call_ids, "audio_folders": len(folders)})
    for folder in folders:
        await asyncio.to_thread(remove_audio, settings.data_dir, folder)
    return Response(status_code=204)

