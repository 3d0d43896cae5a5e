"""The outbox's delivery: a worker claims a due message from the queue (`outbox_queue.py`), sends it over its
transport (`transports.py`: e-mail over SMTP, SMS to the gateway's webhook, letters to the CRM's webhook) and records
the outcome (docs/outbox.md).

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
import logging
import secrets
import time as monotime
from collections import Counter as Tally
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import and_
from sqlalchemy.orm import Session

from service.ids import process_name
from service.loanbook.outbox_queue import (
    QUIET_CHANNELS,
    MessageChannel,
    Status,
    masked_address,
    quiet_until,
    record_attempt,
    refusal,
)
from service.loanbook.outbox_queue import address_of as _address  # the name `claim` reads it by
from service.loanbook.repository import read_contact
from service.loanbook.transports import Attempt, Claimed, SmtpTransport, WebhookTransport
from service.metrics import OUTBOX
from service.privacy import RawTextCipher, private_file
from service.settings import OutboxSettings, Settings
from service.store import Store, audit
from service.store.leases import LeasedRows
from service.store.models import Customer, OutboxMessage
from service.store.store import utcnow
from service.workers.loop import WorkerLoop

log = logging.getLogger(__name__)

#: Actor of the outbox's audit entries.
ACTOR = "outbox"


def backoff_s(attempts: int, base_s: float, cap_s: float) -> float:
    """Wait after the `attempts`-th failed attempt: base, 2 x base, 4 x base, ... at most `cap_s`."""
    return float(min(cap_s, base_s * 2 ** max(attempts - 1, 0)))


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
                          destination_masked=masked_address(m.channel, m.to),
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
        if not record_attempt(self.store, m.id, m.version, values):
            log.warning("message %s: the claim ran out before the outcome was recorded; the next claim counts", m.id)
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
