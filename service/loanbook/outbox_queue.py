"""The outbox's queue: messages to customers, queued in the database with the follow-up that asks for them
(docs/outbox.md), and the operator's side of it (dead letters, requeue). All of the queue's SQL but the delivery
worker's claims lives here; the worker (`outbox.py`) sends what is queued over the transports (`transports.py`).

Queuing (`enqueue`) runs in the planner's transaction: the message is rendered from its template at once
(`messages.py`: only the fields it names, never a personal number), or recorded as `suppressed` with the reason
(no consent, opted out, no address, no template), so that the customer page says why nothing went. Quiet hours
(local time of the bank) move `not_before` to their end for SMS and e-mail. Every message carries one idempotency
key, the same on every attempt and every requeue, so that a receiver can deliver it exactly once.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.loanbook.messages import MessageBook, MessageError, MissingField, PersonalNumber, load_messages, render
from service.loanbook.repository import Channel, Contact, mask_email, mask_phone
from service.privacy import RawTextCipher
from service.protocol import valid_address
from service.settings import OutboxSettings
from service.store import Store, audit
from service.store.models import OutboxMessage
from service.store.store import utcnow

log = logging.getLogger(__name__)

Status = Literal["queued", "sending", "sent", "failed", "dead", "suppressed"]
MessageChannel = Literal["sms", "email", "letter"]
MESSAGE_CHANNELS: tuple[MessageChannel, ...] = ("sms", "email", "letter")
#: Channels that reach the customer at once and so keep quiet hours (a letter is printed and posted).
QUIET_CHANNELS = frozenset({"sms", "email"})
#: Suppression reasons (also docs/outbox.md).
SUPPRESSED_REASONS = ("no_contact", "opted_out", "no_consent", "no_address", "no_template", "missing_field",
                      "personal_number", "template_error")


class OutboxError(ValueError):
    """An operator's request the outbox cannot do (a message that does not exist, or is not dead)."""


@dataclass(frozen=True, slots=True)
class MessageView:
    """A message as the customer page shows it: no address but the masked one, no personal data in the error."""

    id: str
    followup_id: str | None
    action: str
    channel: str
    status: str
    reason: str | None
    destination_masked: str | None
    attempts: int
    created_at: datetime
    not_before: datetime
    next_attempt_at: datetime | None
    sent_at: datetime | None
    last_error: str | None


def _view(m: OutboxMessage) -> MessageView:
    return MessageView(m.id, m.followup_id, m.action, m.channel, m.status, m.reason, m.destination_masked,
                       m.attempts or 0, m.created_at, m.not_before, m.next_attempt_at, m.sent_at, m.last_error)


# -- pure parts: keys, quiet hours -------------------------------------------------------------------------------


def idempotency_key(followup_id: str | None, channel: str) -> str:
    """The message's key: derived from (follow-up, channel), so planning twice queues one message; random for a
    message of no follow-up."""
    if followup_id is None:
        return f"m-{secrets.token_hex(16)}"
    return "f-" + hashlib.sha256(f"{followup_id}\n{channel}".encode()).hexdigest()[:40]



def _clock(hhmm: str) -> time:
    hours, minutes = hhmm.split(":")
    return time(int(hours), int(minutes))


def quiet_until(now: datetime, tz: ZoneInfo, quiet_start: str, quiet_end: str) -> datetime:
    """`now` (naive UTC) if it is outside the quiet hours (local time in `tz`, `quiet_start` to `quiet_end`, which
    may wrap past midnight), else the end of those quiet hours (naive UTC). Equal start and end: no quiet hours."""
    start, end = _clock(quiet_start), _clock(quiet_end)
    if start == end:
        return now
    local = now.replace(tzinfo=UTC).astimezone(tz)
    t = local.time().replace(tzinfo=None)
    quiet = (start <= t < end) if start < end else (t >= start or t < end)
    if not quiet:
        return now
    day = local.date() if (start < end or t < end) else local.date() + timedelta(days=1)
    until = datetime.combine(day, end, tzinfo=tz)
    return until.astimezone(UTC).replace(tzinfo=None)



def _naive_utc(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(tzinfo=None) if at.tzinfo is not None else at



# -- queuing -----------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def message_book(path: Path | None) -> MessageBook:
    """The templates (configs/messages.yaml unless `HUIFANG_OUTBOX__MESSAGES_FILE`), read once per process."""
    return load_messages(path)


def address_of(contact: Contact | None, channel: str) -> str | None:
    """Where a message over `channel` goes: the phone for SMS, the e-mail address; None for a letter (the CRM
    posts it to the loan file's address) or without contact details."""
    if contact is None:
        return None
    return {"sms": contact.phone, "email": contact.email}.get(channel)


def masked_address(channel: str, address: str | None) -> str | None:
    """What the customer page shows of a message's destination."""
    if channel == "letter":
        return "CRM"
    return mask_phone(address) if channel == "sms" else mask_email(address)


def refusal(contact: Contact | None, channel: str) -> str | None:
    """Why a message may not go to this contact over `channel` (a reason of SUPPRESSED_REASONS), or None. A letter
    is the bank's written notice about the loan contract, posted by the CRM to the address of the loan file: it
    needs no consent or contact record here, and only an explicit opt-out of letters stops it."""
    if channel == "letter":
        return "opted_out" if contact is not None and "letter" in contact.opted_out else None
    if contact is None:
        return "no_contact"
    if channel in contact.opted_out:
        return "opted_out"
    if channel not in contact.consent:
        return "no_consent"
    address = address_of(contact, channel)
    if not address or not valid_address(channel, address):
        return "no_address"  # none, or one stored before addresses were checked (a list, a line break)
    return None


def enqueue(s: Session, *, customer_id: str, followup_id: str | None, action: str, channel: Channel,
            fields: dict[str, str], contact: Contact | None, now: datetime, settings: OutboxSettings, tz: ZoneInfo,
            cipher: RawTextCipher) -> OutboxMessage:
    """Queue the message of `action` over `channel` for a customer, in the caller's transaction (`s`; the
    customer row must exist). Rendered now from the action's template with `fields` (plus the file's bank-wide
    defaults); a message that may not go is recorded as `suppressed` with the reason. SMS and e-mail queued in
    quiet hours wait for their end. For a follow-up, idempotent per (followup_id, channel): the message queued
    before is returned. `now` is naive UTC (as stored) or aware; `fields` may override the defaults."""
    if channel not in MESSAGE_CHANNELS:
        raise ValueError(f"the outbox sends sms, email and letter, not {channel!r}")
    now = _naive_utc(now)
    key = idempotency_key(followup_id, channel)
    if followup_id is not None:
        existing = s.scalar(select(OutboxMessage).where(OutboxMessage.idempotency_key == key))
        if existing is not None:
            return existing
    book = message_book(settings.messages_file)
    reason = refusal(contact, channel)
    template = book.template(action, channel)
    subject = body = None
    if reason is None and template is None:
        reason = "no_template"
    if reason is None and template is not None:
        try:
            rendered = render(template, {**book.defaults, **fields})
            subject, body = rendered.subject, rendered.body
        except PersonalNumber:
            reason = "personal_number"
        except MissingField as e:
            reason = "missing_field"  # the loan file lacked a figure the template quotes
            log.info("message %s.%s for customer %s not queued: %s", action, channel, customer_id, e)
        except MessageError as e:
            reason = "template_error"
            log.warning("message %s.%s for customer %s not queued: %s", action, channel, customer_id, e)
    address = address_of(contact, channel) if reason is None else None
    not_before = quiet_until(now, tz, settings.quiet_start, settings.quiet_end) if channel in QUIET_CHANNELS else now
    row = OutboxMessage(
        id=secrets.token_hex(8), customer_id=customer_id, followup_id=followup_id, action=action, channel=channel,
        status="suppressed" if reason else "queued", reason=reason, idempotency_key=key,
        destination_encrypted=cipher.seal(address) if address else None,
        destination_masked=masked_address(channel, address) if reason is None else None, subject=subject, body=body,
        not_before=not_before, attempts=0, next_attempt_at=None if reason else not_before, lease_version=0,
        created_at=now)
    s.add(row)  # written with the caller's transaction (a planner queues hundreds per batch: one flush at commit)
    return row


def messages_of(store: Store, customer_id: str) -> list[MessageView]:
    """The customer's messages, newest first, as the customer page shows them."""
    with store.session() as s:
        rows = s.scalars(select(OutboxMessage).where(OutboxMessage.customer_id == customer_id)
                         .order_by(OutboxMessage.created_at.desc(), OutboxMessage.id))
        return [_view(m) for m in rows]


def get_message(store: Store, message_id: str) -> MessageView | None:
    with store.session() as s:
        row = s.get(OutboxMessage, message_id)
        return _view(row) if row else None


def dead_letters(store: Store, limit: int = 100) -> list[MessageView]:
    """Dead messages, oldest first (an operator's list to look at and requeue)."""
    with store.session() as s:
        rows = s.scalars(select(OutboxMessage).where(OutboxMessage.status == "dead")
                         .order_by(OutboxMessage.created_at, OutboxMessage.id).limit(limit))
        return [_view(m) for m in rows]


def requeue(store: Store, message_id: str, actor: str, settings: OutboxSettings, tz: ZoneInfo) -> MessageView:
    """A dead (or failed) message queued again with a fresh count of attempts and the same key (a receiver that
    did get it dedupes); audited as `message_requeued`. Raises `OutboxError` for an unknown id or another
    status."""
    now = utcnow()
    with store.session() as s, s.begin():
        row = s.get(OutboxMessage, message_id, with_for_update=True)
        if row is None:
            raise OutboxError(f"no message {message_id}")
        if row.status not in ("dead", "failed"):
            raise OutboxError(f"message {message_id} is {row.status}; only dead or failed messages are requeued")
        due = quiet_until(now, tz, settings.quiet_start, settings.quiet_end) if row.channel in QUIET_CHANNELS else now
        row.status, row.reason, row.attempts, row.next_attempt_at = "queued", None, 0, due
        view, customer_id = _view(row), row.customer_id
    audit.append(store, "message_requeued", actor, None, {"message_id": view.id, "customer_id": customer_id,
                                                          "channel": view.channel, "status": "queued", "attempt": 0})
    return view



def deliveries(s: Session, followup_ids: Sequence[str]) -> dict[str, str]:
    """The status of each follow-up's message (sent, dead, suppressed, or still on its way), in the caller's
    transaction."""
    rows = s.execute(select(OutboxMessage.followup_id, OutboxMessage.status)
                     .where(OutboxMessage.followup_id.in_(list(followup_ids)))).tuples()
    return {str(f): str(status) for f, status in rows if f is not None}


def record_attempt(store: Store, message_id: str, version: int, values: dict[str, object]) -> bool:
    """Write an attempt's outcome (`values`: the message's new columns) under the claim it was made under (the
    message still `sending` at lease `version`); False when the claim was lost to another worker."""
    with store.session() as s, s.begin():
        done = s.execute(update(OutboxMessage).where(OutboxMessage.id == message_id,
                                                     OutboxMessage.lease_version == version,
                                                     OutboxMessage.status == "sending").values(**values))
        return bool(done.rowcount)  # type: ignore[attr-defined]


class MessageOutbox:
    """The loan book's side of the outbox (`repository.MessageQueue`): messages queued in the planner's
    transaction, their delivery read back to settle follow-ups, and the customer page's list."""

    def __init__(self, settings: OutboxSettings, tz: ZoneInfo, cipher: RawTextCipher) -> None:
        self.settings, self.tz, self.cipher = settings, tz, cipher

    def enqueue(self, s: Session, *, customer_id: str, followup_id: str | None, action: str, channel: Channel,
                fields: dict[str, str], contact: Contact | None, now: datetime) -> OutboxMessage:
        return enqueue(s, customer_id=customer_id, followup_id=followup_id, action=action, channel=channel,
                       fields=fields, contact=contact, now=now, settings=self.settings, tz=self.tz, cipher=self.cipher)

    def deliveries(self, s: Session, followup_ids: Sequence[str]) -> dict[str, str]:
        """The delivery status of each follow-up's message (sent, dead, suppressed, or still on its way)."""
        return deliveries(s, followup_ids)

    def messages(self, store: Store, customer_id: str) -> list[MessageView]:
        return messages_of(store, customer_id)
