"""The outbox's transports: e-mail over SMTP, SMS to the gateway's webhook, letters to the CRM's webhook
(docs/outbox.md). Each sends one claimed message and says what came of it (`Attempt`); none touches the database.

Delivery is at least once, with exactly-once left to the receiver by key: every request carries the message's
idempotency key (a receiver that stored a message and then answered too slowly gets the same key again and must
not deliver it twice). 2xx is sent; 408, 429, 5xx, timeouts and connection errors are worth another attempt; any
other refusal is final. Logs and errors never carry an address or a body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Literal

import httpx

from service.settings import OutboxSettings

#: Receiver answers that are worth another attempt.
RETRYABLE_HTTP = frozenset({408, 429})


def sign(key: bytes, timestamp: str, body: bytes) -> str:
    """`X-Huifang-Signature`: HMAC-SHA256 over the timestamp, a dot and the exact body bytes."""
    return "sha256=" + hmac.new(key, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()



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

