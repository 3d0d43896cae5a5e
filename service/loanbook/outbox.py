"""The outbox: messages to customers, queued in the database with the follow-up that asks for them and delivered
by a worker: e-mail over SMTP, SMS to the gateway's webhook, letters to the CRM's webhook (docs/outbox.md).

Queuing (`enqueue`) runs in the planner's transaction: the message is rendered from its template at once
(`messages.py`: only the fields it names, never a personal number), or recorded as `suppressed` with the reason
(no consent, opted out, no address, no template), so that the customer page says why nothing went. Quiet hours
(local time of the bank) move `not_before` to their end for SMS and e-mail.

Delivery is at least once, with exactly-once left to the receiver by key: every message carries one idempotency
key, the same on every attempt (a receiver that stored a message and then answered too slowly gets the same key
again and must not deliver it twice). A worker claims a due message under a lease (FOR UPDATE SKIP LOCKED on
PostgreSQL, a version-conditional update everywhere), so several workers and replicas never send one message at
once; the outcome is recorded only under that claim. 2xx is sent; 408, 429, 5xx, timeouts and connection errors
are tried again after `backoff_s`, doubling up to `max_backoff_s` (and never in quiet hours), until
`max_attempts`, then the message is `dead`; any other refusal is `dead` at once. Consent and the address are
read again just before each attempt: a customer who opted out meanwhile gets nothing. Every attempt's outcome is
audited, without personal data; logs never carry an address or a body.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import smtplib
import ssl
import time as monotime
from collections import Counter as Tally
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from functools import lru_cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session

from service.ids import process_name
from service.loanbook.messages import MessageBook, MessageError, MissingField, PersonalNumber, load_messages, render
from service.loanbook.repository import Channel, Contact, mask_email, mask_phone, read_contact
from service.metrics import OUTBOX
from service.privacy import RawTextCipher, private_file
from service.protocol import valid_address
from service.settings import OutboxSettings, Settings
from service.store import Store, audit
from service.store.leases import LeasedRows
from service.store.models import Customer, OutboxMessage
from service.store.store import utcnow
from service.workers.loop import WorkerLoop

log = logging.getLogger(__name__)

Status = Literal["queued", "sending", "sent", "failed", "dead", "suppressed"]
MessageChannel = Literal["sms", "email", "letter"]
MESSAGE_CHANNELS: tuple[MessageChannel, ...] = ("sms", "email", "letter")
#: Channels that reach the customer at once and so keep quiet hours (a letter is printed and posted).
QUIET_CHANNELS = frozenset({"sms", "email"})
#: Suppression reasons (also docs/outbox.md).
SUPPRESSED_REASONS = ("no_contact", "opted_out", "no_consent", "no_address", "no_template", "missing_field",
                      "personal_number", "template_error")
#: Receiver answers that are worth another attempt.
RETRYABLE_HTTP = frozenset({408, 429})
#: Actor of the outbox's audit entries.
ACTOR = "outbox"


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


# -- pure parts: keys, signatures, quiet hours, back-off -------------------------------------------------------


def idempotency_key(followup_id: str | None, channel: str) -> str:
    """The message's key: derived from (follow-up, channel), so planning twice queues one message; random for a
    message of no follow-up."""
    if followup_id is None:
        return f"m-{secrets.token_hex(16)}"
    return "f-" + hashlib.sha256(f"{followup_id}\n{channel}".encode()).hexdigest()[:40]


def sign(key: bytes, timestamp: str, body: bytes) -> str:
    """`X-Huifang-Signature`: HMAC-SHA256 over the timestamp, a dot and the exact body bytes."""
    return "sha256=" + hmac.new(key, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


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


def backoff_s(attempts: int, base_s: float, cap_s: float) -> float:
    """Wait after the `attempts`-th failed attempt: base, 2 x base, 4 x base, ... at most `cap_s`."""
    return float(min(cap_s, base_s * 2 ** max(attempts - 1, 0)))


def _naive_utc(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(tzinfo=None) if at.tzinfo is not None else at


# -- queuing -----------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def message_book(path: Path | None) -> MessageBook:
    """The templates (configs/messages.yaml unless `HUIFANG_OUTBOX__MESSAGES_FILE`), read once per process."""
    return load_messages(path)


def _address(contact: Contact | None, channel: str) -> str | None:
    if contact is None:
        return None
    return {"sms": contact.phone, "email": contact.email}.get(channel)


def _masked(channel: str, address: str | None) -> str | None:
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
    address = _address(contact, channel)
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
    address = _address(contact, channel) if reason is None else None
    not_before = quiet_until(now, tz, settings.quiet_start, settings.quiet_end) if channel in QUIET_CHANNELS else now
    row = OutboxMessage(
        id=secrets.token_hex(8), customer_id=customer_id, followup_id=followup_id, action=action, channel=channel,
        status="suppressed" if reason else "queued", reason=reason, idempotency_key=key,
        destination_encrypted=cipher.seal(address) if address else None,
        destination_masked=_masked(channel, address) if reason is None else None, subject=subject, body=body,
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


# -- delivery ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claimed:
    """A message claimed for one attempt: what to send, and the claim (`version`) its outcome is recorded under."""

    id: str
    customer_id: str
    action: str
    channel: str
    idempotency_key: str
    subject: str | None
    body: str
    created_at: datetime
    attempt: int
    version: int
    #: The address read just now from the customer's contact (None for a letter), or why it may not go.
    to: str | None
    refused: str | None
    #: Why no attempt can be made now (the contact details cannot be read): the attempt counts as failed.
    problem: str | None = None


Outcome = Literal["sent", "retry", "dead"]


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one delivery attempt came to; `error` is a short text without personal data (HTTP 503, timeout)."""

    outcome: Outcome
    error: str | None = None
    retry_after_s: float | None = None


def _webhook_json(m: Claimed) -> bytes:
    payload = {"id": m.id, "idempotency_key": m.idempotency_key, "customer_id": m.customer_id, "channel": m.channel,
               "action": m.action, "to": m.to, "subject": m.subject, "body": m.body,
               "created_at": m.created_at.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")}
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class WebhookTransport:
    """A JSON POST to a webhook, signed with HMAC-SHA256 (docs/outbox.md). Thread-safe."""

    def __init__(self, client: httpx.Client, url: str, key: bytes) -> None:
        self.client, self.url, self.key = client, url, key

    def send(self, m: Claimed) -> Attempt:
        body = _webhook_json(m)
        timestamp = str(int(datetime.now(UTC).timestamp()))
        headers = {"Content-Type": "application/json; charset=utf-8", "Idempotency-Key": m.idempotency_key,
                   "X-Huifang-Timestamp": timestamp, "X-Huifang-Signature": sign(self.key, timestamp, body),
                   "X-Huifang-Attempt": str(m.attempt)}
        try:
            response = self.client.post(self.url, content=body, headers=headers)
        except httpx.TimeoutException:
            return Attempt("retry", "timeout")
        except httpx.TransportError as e:
            return Attempt("retry", f"connection error ({type(e).__name__})")
        code = response.status_code
        if 200 <= code < 300:
            return Attempt("sent")
        if code in RETRYABLE_HTTP or code >= 500:
            return Attempt("retry", f"HTTP {code}", _retry_after(response.headers.get("Retry-After")))
        return Attempt("dead", f"HTTP {code}")


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: the back-off applies


class SmtpTransport:
    """E-mail over SMTP (STARTTLS and login when configured), one connection per message. The idempotency key
    is the Message-ID, so a mail client or the bank's gateway can drop a duplicate of a retried message."""

    def __init__(self, settings: OutboxSettings, password: str | None) -> None:
        self.settings, self.password = settings, password

    def send(self, m: Claimed) -> Attempt:
        o = self.settings
        mail = EmailMessage()
        mail["From"] = o.mail_from
        mail["To"] = m.to or ""
        mail["Subject"] = m.subject or ""
        mail["Date"] = format_datetime(datetime.now(UTC))
        mail["Message-ID"] = f"<{m.idempotency_key}@huifang>"
        mail["X-Huifang-Idempotency-Key"] = m.idempotency_key
        mail.set_content(m.body, charset="utf-8")
        assert o.smtp_host is not None  # only claimed when configured
        try:
            with smtplib.SMTP(o.smtp_host, o.smtp_port, timeout=o.timeout_s) as smtp:
                if o.smtp_starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if o.smtp_user:
                    smtp.login(o.smtp_user, self.password or "")
                smtp.send_message(mail)
        except smtplib.SMTPRecipientsRefused as e:
            codes = [code for code, _ in e.recipients.values()]  # the message names the address: not kept
            return Attempt("retry" if all(400 <= c < 500 for c in codes) else "dead", f"SMTP {codes[0]} recipient")
        except smtplib.SMTPResponseException as e:
            # A login refused is the bank's configuration, not the message: tried again, and dead only at the end.
            permanent = 500 <= e.smtp_code < 600 and not isinstance(e, smtplib.SMTPAuthenticationError)
            return Attempt("dead" if permanent else "retry", f"SMTP {e.smtp_code}")
        except TimeoutError:
            return Attempt("retry", "timeout")
        except (smtplib.SMTPException, OSError) as e:
            return Attempt("retry", f"connection error ({type(e).__name__})")
        return Attempt("sent")


def configured_channels(settings: OutboxSettings) -> tuple[MessageChannel, ...]:
    """Channels with a transport configured (an SMTP server, the SMS or the CRM webhook); the others wait."""
    transports: tuple[tuple[MessageChannel, str | None], ...] = (
        ("email", settings.smtp_host), ("letter", settings.crm_webhook_url), ("sms", settings.sms_webhook_url))
    return tuple(channel for channel, configured in transports if configured)


def webhook_key(settings: Settings) -> bytes:
    """The HMAC key of webhook signatures (made on first use, 0600; replicas share the file)."""
    return private_file(settings.webhook_key_path, lambda: secrets.token_hex(32).encode("ascii")).strip()


#: Outbox messages as leased rows: one queued or failed is claimable once its next attempt is due (the one due
#: longest first); one being sent once its sender's lease ran out.
MESSAGE_LEASES = LeasedRows(
    OutboxMessage, "sending",
    lambda now: and_(OutboxMessage.status.in_(("queued", "failed")), OutboxMessage.next_attempt_at <= now),
    (OutboxMessage.next_attempt_at, OutboxMessage.id))


class Outbox:
    """Delivery of due messages: claim one, send it, record the outcome and audit it. Synchronous and thread-safe
    (the worker calls `step` on its threads; `huifang outbox run` and the benchmark call `drain`)."""

    def __init__(self, store: Store, settings: OutboxSettings, tz: ZoneInfo, cipher: RawTextCipher,
                 key: bytes | None, smtp_password: str | None = None) -> None:
        self.store, self.settings, self.tz, self.cipher = store, settings, tz, cipher
        self.http = httpx.Client(timeout=settings.timeout_s, follow_redirects=False,
                                 limits=httpx.Limits(max_connections=max(settings.concurrency, 1) * 2))
        self.transports: dict[str, WebhookTransport | SmtpTransport] = {}
        if settings.sms_webhook_url and key:
            self.transports["sms"] = WebhookTransport(self.http, settings.sms_webhook_url, key)
        if settings.crm_webhook_url and key:
            self.transports["letter"] = WebhookTransport(self.http, settings.crm_webhook_url, key)
        if settings.smtp_host:
            self.transports["email"] = SmtpTransport(settings, smtp_password)
        #: A claim outlives every timeout of one attempt (SMTP: connect, TLS, login, data).
        self.lease_s = settings.timeout_s * 4 + 30.0

    @classmethod
    def from_settings(cls, store: Store, settings: Settings) -> Outbox:
        """The outbox of this configuration (reads the keys and the SMTP password: call off the event loop)."""
        o = settings.outbox
        key = webhook_key(settings) if (o.sms_webhook_url or o.crm_webhook_url) else None
        password = o.smtp_password_file.read_text(encoding="utf-8").strip() if o.smtp_password_file else None
        return cls(store, o, ZoneInfo(settings.loanbook.timezone), RawTextCipher(settings.raw_key_file), key,
                   password)

    @property
    def channels(self) -> tuple[str, ...]:
        """Channels with a transport configured; messages of the others wait."""
        return tuple(sorted(self.transports))

    def close(self) -> None:
        self.http.close()

    def claim(self, owner: str, now: datetime | None = None) -> Claimed | None:
        """Take the message due longest for one attempt, under a lease, safely against other workers."""
        if not self.transports:
            return None
        return MESSAGE_LEASES.claim_next(self.store.session, owner, self.lease_s, (lambda: now) if now else utcnow,
                                         self._claimed, where=(OutboxMessage.channel.in_(self.channels),))

    def _claimed(self, s: Session, message_id: str) -> Claimed:
        """The message just claimed, with its address read again from the customer's contact (in the claim's
        transaction)."""
        m = s.get(OutboxMessage, message_id, populate_existing=True)
        assert m is not None
        try:
            contact = read_contact(self.cipher, s.get(Customer, m.customer_id))
        except ValueError:
            # Not the key it was sealed with: the bank's configuration, not the customer's choice. The
            # attempt fails (and the message dies after max_attempts, to be requeued once fixed).
            return Claimed(m.id, m.customer_id, m.action, m.channel, m.idempotency_key, m.subject,
                           m.body or "", m.created_at, m.attempts, m.lease_version, None, None,
                           problem="the contact details cannot be decrypted with the configured key")
        return Claimed(m.id, m.customer_id, m.action, m.channel, m.idempotency_key, m.subject, m.body or "",
                       m.created_at, m.attempts, m.lease_version, _address(contact, m.channel),
                       refusal(contact, m.channel))

    def step(self, owner: str) -> str | None:
        """One attempt at the message due longest: its new status, or None when none is due."""
        m = self.claim(owner)
        if m is None:
            return None
        if m.refused is not None:
            return self._record(m, "suppressed", reason=m.refused)
        began = monotime.monotonic()
        if m.problem is not None:
            attempt = Attempt("retry", m.problem)
        else:
            try:
                attempt = self.transports[m.channel].send(m)
            except Exception as e:  # noqa: BLE001 - a bug must not leave the message leased forever
                # No traceback: its text may quote the address or the body.
                log.error("message %s (%s): unexpected %s while sending", m.id, m.channel, type(e).__name__)
                attempt = Attempt("retry", f"internal error ({type(e).__name__})")
        if attempt.outcome == "sent":
            return self._record(m, "sent")
        if attempt.outcome == "dead":
            log.warning("message %s (%s) refused by the receiver: %s", m.id, m.channel, attempt.error)
            return self._record(m, "dead", reason="rejected", error=attempt.error)
        if m.attempt >= self.settings.max_attempts:
            log.warning("message %s (%s) dead after %d attempts: %s", m.id, m.channel, m.attempt, attempt.error)
            return self._record(m, "dead", reason="attempts_exhausted", error=attempt.error)
        wait_s = backoff_s(m.attempt, self.settings.backoff_s, self.settings.max_backoff_s)
        if attempt.retry_after_s is not None:
            wait_s = min(max(wait_s, attempt.retry_after_s), self.settings.max_backoff_s)
        log.info("message %s (%s) attempt %d failed after %.1f s (%s); again in %.1f s", m.id, m.channel, m.attempt,
                 monotime.monotonic() - began, attempt.error, wait_s)
        return self._record(m, "failed", error=attempt.error, retry_in_s=wait_s)

    def _record(self, m: Claimed, status: Status, reason: str | None = None, error: str | None = None,
                retry_in_s: float = 0.0) -> str | None:
        """The attempt's outcome, under its claim; audited. None when the claim was lost (the lease ran out and
        another worker took the message: its outcome counts)."""
        now = utcnow()
        values: dict[str, object] = {"status": status, "lease_owner": None, "lease_expires_at": None}
        if status == "sent":
            values.update(sent_at=now, last_error=None, reason=None, next_attempt_at=None,
                          destination_masked=_masked(m.channel, m.to),
                          destination_encrypted=self.cipher.seal(m.to) if m.to else None)
        elif status == "failed":
            due = now + timedelta(seconds=retry_in_s)
            if m.channel in QUIET_CHANNELS:
                due = quiet_until(due, self.tz, self.settings.quiet_start, self.settings.quiet_end)
            values.update(last_error=error[:200] if error else None, next_attempt_at=due)
        else:
            values.update(reason=reason, next_attempt_at=None)
            if error is not None:
                values["last_error"] = error[:200]
        with self.store.session() as s, s.begin():
            done = s.execute(update(OutboxMessage).where(OutboxMessage.id == m.id,
                                                         OutboxMessage.lease_version == m.version,
                                                         OutboxMessage.status == "sending").values(**values))
            if not done.rowcount:  # type: ignore[attr-defined]
                log.warning("message %s: the claim ran out before the outcome was recorded; the next claim counts",
                            m.id)
                return None
        OUTBOX.labels(m.channel, status).inc()
        audit.append(self.store, f"message_{status}", ACTOR, None,
                     {"message_id": m.id, "customer_id": m.customer_id, "channel": m.channel, "status": status,
                      "attempt": m.attempt, **({"reason": reason} if reason else {})})
        return status

    def drain(self, owner: str, workers: int = 1, should_stop: Callable[[], bool] = lambda: False) -> Tally[str]:
        """Send everything due now with `workers` threads, until nothing is due (a retry scheduled meanwhile is
        left for later); returns how many attempts ended in each status."""
        tally: Tally[str] = Tally()

        def run() -> Tally[str]:
            mine: Tally[str] = Tally()
            while not should_stop():
                status = self.step(owner)
                if status is None:
                    break
                mine[status] += 1
            return mine

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="outbox") as pool:
            for part in pool.map(lambda _: run(), range(workers)):
                tally.update(part)
        return tally


class OutboxWorker:
    """The service's sender: `concurrency` workers (a `WorkerLoop`), each running `Outbox.step` on a thread of its
    own pool (the event loop only waits), looking for due messages every `poll_s` or when woken by `notify()`."""

    def __init__(self, outbox: Outbox, concurrency: int, poll_s: float) -> None:
        self.outbox, self.concurrency, self.poll_s = outbox, concurrency, poll_s
        self.owner = process_name()
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="outbox")
        self._loop = WorkerLoop("outbox", self._attempt, concurrency, poll_s)

    async def start(self) -> None:
        await self._loop.start()

    def notify(self) -> None:
        """Messages were queued: look now rather than at the next poll."""
        self._loop.notify()

    async def close(self) -> None:
        """Stop looking; attempts under way finish (each is bounded by the timeout) and record their outcome."""
        await self._loop.stop()
        await asyncio.to_thread(self._pool.shutdown, True)
        self.outbox.close()

    async def _attempt(self, _: int) -> bool:
        """One attempt at the message due longest; False when none is due. A database hiccup raises (the loop
        logs it): the message's lease runs out and it is tried again later."""
        status = await asyncio.get_running_loop().run_in_executor(self._pool, self.outbox.step, self.owner)
        return status is not None
