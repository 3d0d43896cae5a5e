"""The outbox (#18 point 3) against real transports: a real SMTP server (aiosmtpd) and a real HTTP receiver
(tests.support.receivers.Receiver, which verifies signatures as docs/outbox.md tells receivers to and stores
deliveries by idempotency key). Templates and quiet hours as pure functions; consent, opt-out, retries, dead
letters, timeouts after the receiver stored a message, and two workers on one database (SQLite, and PostgreSQL when
HUIFANG_TEST_POSTGRES_URL is set)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete, select

from nlu.pii import find_numbers
from nlu.report import load_risk
from service.loanbook.messages import (
    ALLOWED_FIELDS,
    MissingField,
    PersonalNumber,
    TemplateError,
    load_messages,
    make_template,
    render,
)
from service.loanbook.outbox import Outbox, OutboxWorker, backoff_s, webhook_key
from service.loanbook.outbox_queue import OutboxError, enqueue, messages_of, quiet_until, requeue
from service.loanbook.policy import EDUCATION, UNREACHABLE, load_policy
from service.loanbook.repository import Contact, ensure_customer, put_contact
from service.loanbook.transports import sign
from service.privacy import RawTextCipher
from service.settings import OutboxSettings, Settings
from service.store import Store
from service.store.models import AuditEntry, Customer, OutboxMessage
from service.store.store import utcnow
from tests.support.receivers import MailSink, Receiver, smtp_server, verify_signature

SHANGHAI = ZoneInfo("Asia/Shanghai")
PHONE, EMAIL = "13912345678", "zhang.san@example.com"
FIELDS = {"customer_name_masked": "张**", "loan_id_tail": "0042", "repay_day": "15", "monthly_yuan": "4200",
          "amount_yuan": "800000", "term_years": "20"}
EVERYWHERE = Contact(phone=PHONE, email=EMAIL, consent=frozenset({"sms", "email", "letter"}))
#: No quiet hours (start == end): tests that are not about them must not depend on the time they run at.
NO_QUIET = {"quiet_start": "00:00", "quiet_end": "00:00"}


# -- templates (pure) -----------------------------------------------------------------------------------------


def test_every_report_action_has_templates_that_render_without_personal_numbers() -> None:
    book = load_messages()
    reasons = {a["id"] for a in load_risk().actions} | {EDUCATION, UNREACHABLE}
    assert set(book.actions()) == reasons  # every action and policy reason can be sent, none is unknown
    policy = load_policy()
    routed = {(reason, channel) for reason, route in (*policy.actions.items(), (EDUCATION, policy.education["low"]),
                                                      (UNREACHABLE, policy.unreachable))
              for channel in (*route.channels, *([route.fallback] if route.fallback else [])) if channel != "call"}
    assert routed <= set(book.templates)  # every message the planner can ask for has a template
    for (action, channel), template in book.templates.items():
        message = render(template, {**book.defaults, **FIELDS})
        assert message.body and "{" not in message.body, (action, channel)
        assert find_numbers(message.body) == [] and find_numbers(message.subject or "") == [], (action, channel)
        assert (message.subject is not None) == (channel == "email")
        assert template.fields <= ALLOWED_FIELDS
    sms = render(book.templates[("send_schedule", "sms")], {**book.defaults, **FIELDS}).body
    assert "每月15日还款" in sms and "月供4200元" in sms and "张**" in sms and " " not in sms


def test_a_template_uses_only_the_fields_it_names_and_never_a_personal_number() -> None:
    with pytest.raises(TemplateError, match="id_number"):
        make_template("send_schedule", "sms", "您的身份证{id_number}")
    with pytest.raises(TemplateError, match="plain fields"):
        make_template("send_schedule", "sms", "{repay_day.__class__}")
    with pytest.raises(TemplateError, match="subject"):
        make_template("send_schedule", "email", "正文")
    template = make_template("send_schedule", "sms", "编号末四位{loan_id_tail}，每月{repay_day}日还款")
    assert template.fields == {"loan_id_tail", "repay_day"}
    # Fields the template does not name are never read, whatever they hold.
    message = render(template, {**FIELDS, "phone": PHONE, "id_number": "110101199003074514"})
    assert message.body == "编号末四位0042，每月15日还款"
    with pytest.raises(MissingField, match="repay_day"):
        render(template, {"loan_id_tail": "0042"})
    for personal in (PHONE, "110101199003074514", "6222021234567890128"):  # mobile, resident ID, bank card
        with pytest.raises(PersonalNumber) as refused:
            render(template, {**FIELDS, "loan_id_tail": personal})
        assert personal not in str(refused.value)  # the error says which kind, never the number


def test_quiet_hours_move_a_message_to_their_end_in_the_banks_time_zone() -> None:
    def utc(local: str) -> datetime:
        return datetime.fromisoformat(local).replace(tzinfo=SHANGHAI).astimezone(UTC).replace(tzinfo=None)

    # 21:00-08:00 Beijing time wraps past midnight.
    assert quiet_until(utc("2026-12-01 22:30"), SHANGHAI, "21:00", "08:00") == utc("2026-12-02 08:00")
    assert quiet_until(utc("2026-12-02 07:59"), SHANGHAI, "21:00", "08:00") == utc("2026-12-02 08:00")
    assert quiet_until(utc("2026-12-01 21:00"), SHANGHAI, "21:00", "08:00") == utc("2026-12-02 08:00")
    assert quiet_until(utc("2026-12-01 12:00"), SHANGHAI, "21:00", "08:00") == utc("2026-12-01 12:00")
    assert quiet_until(utc("2026-12-01 20:59"), SHANGHAI, "21:00", "08:00") == utc("2026-12-01 20:59")
    # A window within one day (a lunch break), and none at all.
    assert quiet_until(utc("2026-12-01 12:30"), SHANGHAI, "12:00", "14:00") == utc("2026-12-01 14:00")
    assert quiet_until(utc("2026-12-01 14:00"), SHANGHAI, "12:00", "14:00") == utc("2026-12-01 14:00")
    assert quiet_until(utc("2026-12-01 03:00"), SHANGHAI, "00:00", "00:00") == utc("2026-12-01 03:00")


def test_back_off_doubles_up_to_its_cap() -> None:
    assert [backoff_s(n, 30, 3600) for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert backoff_s(12, 30, 3600) == 3600


# -- a database, a receiver, an SMTP server ------------------------------------------------------------------


@dataclass
class Rig:
    """A migrated database, the cipher and the settings of an outbox pointed at the local receivers."""

    store: Store
    cipher: RawTextCipher
    settings: Settings
    receiver: Receiver
    mail: MailSink

    def outbox(self, store: Store | None = None) -> Outbox:
        return Outbox.from_settings(store or self.store, self.settings)

    def customer(self, customer_id: str = "C001", contact: Contact | None = EVERYWHERE) -> str:
        if contact is not None:
            put_contact(self.store, self.cipher, customer_id, contact)
        else:
            with self.store.session() as s, s.begin():
                ensure_customer(s, customer_id)
        return customer_id

    def queue(self, customer_id: str = "C001", channel: str = "sms", action: str = "send_schedule",
              followup_id: str | None = "F1", now: datetime | None = None, contact: Contact | None = None,
              fields: dict[str, str] | None = None) -> OutboxMessage:
        from service.loanbook.repository import read_contact

        with self.store.session() as s, s.begin():
            row = s.get(Customer, customer_id)
            return enqueue(s, customer_id=customer_id, followup_id=followup_id, action=action,
                           channel=channel, fields=FIELDS if fields is None else fields,  # type: ignore[arg-type]
                           contact=contact or read_contact(self.cipher, row), now=now or utcnow(),
                           settings=self.settings.outbox, tz=SHANGHAI, cipher=self.cipher)

    def status(self, message_id: str) -> OutboxMessage:
        with self.store.session() as s:
            row = s.get(OutboxMessage, message_id)
            assert row is not None
            return row

    def audit(self) -> list[tuple[str, dict[str, Any]]]:
        with self.store.session() as s:
            return [(e.kind, json.loads(e.payload)) for e in s.scalars(select(AuditEntry).order_by(AuditEntry.id))]


@pytest.fixture(scope="module")
def smtp() -> Iterator[tuple[MailSink, int]]:
    with smtp_server() as server:
        yield server


@contextmanager
def rig_at(tmp_path: Path, smtp: tuple[MailSink, int], url: str | None = None, **outbox: Any) -> Iterator[Rig]:
    """A rig on the database at `url` (default SQLite under `tmp_path`) with these outbox settings."""
    sink, port = smtp
    data = tmp_path / "data"
    with Receiver(webhook_key(Settings(data_dir=data))) as receiver:
        options = {"sms_webhook_url": receiver.url, "crm_webhook_url": receiver.url, "smtp_host": "127.0.0.1",
                   "smtp_port": port, "smtp_starttls": False, "timeout_s": 2.0, "backoff_s": 0.05,
                   "max_backoff_s": 0.2, "max_attempts": 4, "poll_s": 0.05, **NO_QUIET, **outbox}
        settings = Settings(data_dir=data, database_url=url, outbox=OutboxSettings(**options))
        store = Store(settings.db_url)
        store.migrate()
        sink.messages.clear()
        yield Rig(store, RawTextCipher(settings.raw_key_file), settings, receiver, sink)
        store.close()


@pytest.fixture()
def rig(tmp_path: Path, smtp: tuple[MailSink, int]) -> Iterator[Rig]:
    with rig_at(tmp_path, smtp) as made:
        yield made


def _drain_until(outbox: Outbox, done: Any, timeout_s: float = 10.0) -> None:
    """Run the outbox (as `huifang outbox run` does, again and again) until `done()`: retries fall due later."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "the outbox did not get there in time"
        outbox.drain("test")
        time.sleep(0.02)


# -- delivery ------------------------------------------------------------------------------------------------


def test_an_email_arrives_over_smtp_with_the_rendered_chinese_message_and_no_personal_number(rig: Rig) -> None:
    rig.customer()
    queued = rig.queue(channel="email")
    assert queued.status == "queued" and queued.destination_masked == "z***@example.com"
    assert rig.outbox().drain("test") == {"sent": 1}
    assert len(rig.mail.messages) == 1
    envelope = rig.mail.messages[0]
    assert envelope.rcpt_tos == [EMAIL]
    mail = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert mail["Subject"] == "【某某银行】您的贷款还款计划"
    body = mail.get_content()
    assert "每月还款金额：4200元" in body and "张**您好" in body
    assert find_numbers(body) == [] and PHONE not in body
    assert queued.idempotency_key in mail["Message-ID"]
    row = rig.status(queued.id)
    assert row.status == "sent" and row.attempts == 1 and row.sent_at is not None
    views = messages_of(rig.store, "C001")
    assert [(v.channel, v.status, v.destination_masked) for v in views] == [("email", "sent", "z***@example.com")]
    assert rig.audit() == [("message_sent", {"message_id": queued.id, "customer_id": "C001", "channel": "email",
                                             "status": "sent", "attempt": 1})]


def test_an_sms_goes_to_the_webhook_signed_with_its_idempotency_key(rig: Rig) -> None:
    rig.customer()
    queued = rig.queue(channel="sms")
    assert rig.outbox().drain("test") == {"sent": 1}
    assert rig.receiver.bad_signatures == 0 and rig.receiver.requests == [(queued.idempotency_key, 200)]
    payload = rig.receiver.deliveries[queued.idempotency_key]
    assert set(payload) == {"id", "idempotency_key", "customer_id", "channel", "action", "to", "subject", "body",
                            "created_at"}
    assert payload["to"] == PHONE and payload["channel"] == "sms" and payload["action"] == "send_schedule"
    assert payload["id"] == queued.id and payload["subject"] is None and "月供4200元" in payload["body"]
    # The receivers' check (docs/outbox.md) holds for what was signed and fails for anything else.
    key, body, stamp = webhook_key(rig.settings), b'{"a":1}', str(int(time.time()))
    assert verify_signature(key, stamp, body, sign(key, stamp, body))
    assert not verify_signature(key, stamp, b'{"a":2}', sign(key, stamp, body))
    assert not verify_signature(b"another key", stamp, body, sign(key, stamp, body))
    assert not verify_signature(key, str(int(time.time()) - 3600), body, sign(key, str(int(time.time()) - 3600),
                                                                              body))  # a replay


def test_a_letter_goes_to_the_crm_webhook_without_an_address(rig: Rig) -> None:
    rig.customer()
    queued = rig.queue(channel="letter", action="legal_review")
    assert rig.outbox().drain("test") == {"sent": 1}
    payload = rig.receiver.deliveries[queued.idempotency_key]
    assert payload["channel"] == "letter" and payload["to"] is None and "担保责任确认函" in payload["body"]


@pytest.mark.asyncio
async def test_a_failing_receiver_gets_the_message_from_the_worker_after_retries(rig: Rig) -> None:
    rig.customer()
    rig.receiver.fail_next = 2  # 503, 503, then 200
    queued = await asyncio.to_thread(rig.queue)
    worker = OutboxWorker(rig.outbox(), concurrency=2, poll_s=0.05)
    await worker.start()
    try:
        deadline = time.monotonic() + 10
        while (await asyncio.to_thread(rig.status, queued.id)).status != "sent":
            assert time.monotonic() < deadline, "not delivered"
            await asyncio.sleep(0.05)
    finally:
        await worker.close()
    assert rig.receiver.requests == [(queued.idempotency_key, 503)] * 2 + [(queued.idempotency_key, 200)]
    assert len(rig.receiver.deliveries) == 1
    row = rig.status(queued.id)
    assert row.attempts == 3 and row.last_error is None
    assert [(kind, p["attempt"]) for kind, p in rig.audit()] == [("message_failed", 1), ("message_failed", 2),
                                                                  ("message_sent", 3)]


def test_an_attempt_that_timed_out_after_the_receiver_stored_it_is_delivered_once_by_key(tmp_path: Path,
                                                                                         smtp: Any) -> None:
    # The retry waits 1 s: the first drain ends with the one failed attempt, however slow the machine.
    with rig_at(tmp_path, smtp, timeout_s=0.3, backoff_s=1.0, max_backoff_s=1.0) as rig:
        rig.customer()
        rig.receiver.hang_next, rig.receiver.hang_s = 1, 1.0  # stores it, then answers after the sender gave up
        queued = rig.queue()
        outbox = rig.outbox()
        first = outbox.drain("test")
        assert first == {"failed": 1} and rig.status(queued.id).last_error == "timeout"
        _drain_until(outbox, lambda: rig.status(queued.id).status == "sent")
        assert rig.receiver.attempts(queued.idempotency_key) == 2  # the same key both times ...
        assert list(rig.receiver.deliveries) == [queued.idempotency_key]  # ... so it was delivered once
        assert rig.status(queued.id).attempts == 2


def test_a_message_is_dead_after_max_attempts_and_an_operator_can_requeue_it(rig: Rig) -> None:
    rig.customer()
    rig.receiver.fail_next = 100
    queued = rig.queue()
    outbox = rig.outbox()
    _drain_until(outbox, lambda: rig.status(queued.id).status == "dead")
    row = rig.status(queued.id)
    assert row.attempts == rig.settings.outbox.max_attempts == rig.receiver.attempts(queued.idempotency_key)
    assert row.reason == "attempts_exhausted" and row.last_error == "HTTP 503"
    assert rig.audit()[-1][0] == "message_dead"
    time.sleep(0.3)
    assert outbox.drain("test") == {}  # a dead letter is not tried again by itself
    rig.receiver.fail_next = 0
    with pytest.raises(OutboxError, match="no message"):
        requeue(rig.store, "nope", "ops", rig.settings.outbox, SHANGHAI)
    view = requeue(rig.store, queued.id, "ops", rig.settings.outbox, SHANGHAI)
    assert view.status == "queued" and view.attempts == 0
    assert outbox.drain("test") == {"sent": 1}
    assert len(rig.receiver.deliveries) == 1 and rig.status(queued.id).status == "sent"
    with pytest.raises(OutboxError, match="only dead"):
        requeue(rig.store, queued.id, "ops", rig.settings.outbox, SHANGHAI)  # a sent message stays sent
    assert ("message_requeued", {"message_id": queued.id, "customer_id": "C001", "channel": "sms",
                                 "status": "queued", "attempt": 0}) in rig.audit()


def test_a_receiver_refusing_a_message_makes_it_dead_at_once(rig: Rig) -> None:
    rig.customer()
    rig.receiver.fail_next, rig.receiver.fail_status = 1, 422
    queued = rig.queue()
    assert rig.outbox().drain("test") == {"dead": 1}
    row = rig.status(queued.id)
    assert (row.status, row.reason, row.last_error, row.attempts) == ("dead", "rejected", "HTTP 422", 1)


def test_429_is_tried_again(tmp_path: Path, smtp: Any) -> None:
    with rig_at(tmp_path, smtp, backoff_s=0.5, max_backoff_s=0.5) as rig:
        rig.customer()
        rig.receiver.fail_next, rig.receiver.fail_status = 1, 429
        queued = rig.queue()
        outbox = rig.outbox()
        assert outbox.drain("test") == {"failed": 1}
        assert rig.status(queued.id).next_attempt_at is not None
        _drain_until(outbox, lambda: rig.status(queued.id).status == "sent")
        assert rig.receiver.requests == [(queued.idempotency_key, 429), (queued.idempotency_key, 200)]


def test_no_consent_opt_out_no_contact_and_no_template_are_recorded_as_suppressed(rig: Rig) -> None:
    rig.customer("C1", Contact(phone=PHONE, consent=frozenset({"sms"}), opted_out=frozenset({"sms"})))
    rig.customer("C2", Contact(phone=PHONE, consent=frozenset()))
    rig.customer("C3", None)
    rig.customer("C4", Contact(consent=frozenset({"email"})))  # consented, but no e-mail address
    rig.customer("C5", EVERYWHERE)
    cases = {rig.queue("C1", followup_id="a").id: "opted_out", rig.queue("C2", followup_id="b").id: "no_consent",
             rig.queue("C3", followup_id="c").id: "no_contact",
             rig.queue("C4", channel="email", followup_id="d").id: "no_address",
             rig.queue("C5", channel="letter", action="second_call", followup_id="e").id: "no_template",
             rig.queue("C5", followup_id="f", fields={**FIELDS, "loan_id_tail": PHONE}).id: "personal_number",
             rig.queue("C5", followup_id="g", fields={k: v for k, v in FIELDS.items() if k != "monthly_yuan"}).id:
                 "missing_field"}
    for message_id, reason in cases.items():
        row = rig.status(message_id)
        assert (row.status, row.reason, row.body, row.destination_encrypted) == ("suppressed", reason, None, None)
    assert rig.outbox().drain("test") == {}
    assert rig.receiver.requests == [] and rig.mail.messages == []
    assert [v.reason for v in messages_of(rig.store, "C1")] == ["opted_out"]


def test_a_customer_who_opts_out_after_queuing_gets_nothing(rig: Rig) -> None:
    rig.customer()
    queued = rig.queue()
    rig.customer("C001", Contact(phone=PHONE, consent=frozenset({"sms"}), opted_out=frozenset({"sms"})))
    assert rig.outbox().drain("test") == {"suppressed": 1}
    assert rig.receiver.requests == [] and rig.status(queued.id).reason == "opted_out"


def test_a_message_queued_in_quiet_hours_waits_for_their_end(tmp_path: Path, smtp: Any) -> None:
    local = utcnow().replace(tzinfo=UTC).astimezone(SHANGHAI)
    start, end = (local - timedelta(hours=1)).strftime("%H:%M"), (local + timedelta(hours=1)).strftime("%H:%M")
    with rig_at(tmp_path, smtp, quiet_start=start, quiet_end=end) as rig:
        rig.customer()
        now = utcnow()
        sms = rig.queue(now=now)
        letter = rig.queue(channel="letter", now=now)  # printed and posted: not held back
        assert timedelta(minutes=59) < sms.not_before - now <= timedelta(hours=1)
        assert letter.not_before == now
        assert rig.outbox().drain("test") == {"sent": 1}
        assert list(rig.receiver.deliveries) == [letter.idempotency_key]
        assert rig.status(sms.id).status == "queued"
        views = {v.id: v for v in messages_of(rig.store, "C001")}
        assert views[sms.id].next_attempt_at == sms.not_before  # the page can say when it will go


def test_planning_twice_queues_one_message_per_follow_up_and_channel(rig: Rig) -> None:
    rig.customer()
    first, again = rig.queue(followup_id="F7"), rig.queue(followup_id="F7")
    other = rig.queue(followup_id="F7", channel="email")
    assert first.id == again.id and first.idempotency_key == again.idempotency_key and other.id != first.id
    assert len(messages_of(rig.store, "C001")) == 2


def test_erasing_a_customer_removes_their_messages(rig: Rig) -> None:
    rig.customer()
    rig.queue()
    with rig.store.session() as s, s.begin():
        s.execute(delete(Customer).where(Customer.customer_id == "C001"))
    assert messages_of(rig.store, "C001") == []


def test_logs_and_audit_carry_no_address_or_body(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.customer()
    rig.receiver.fail_next, rig.receiver.fail_status = 1, 400
    caplog.set_level(logging.DEBUG, logger="service.loanbook")  # the queue, the worker and the transports
    rig.queue()
    rig.outbox().drain("test")
    assert "refused by the receiver: HTTP 400" in caplog.text
    entries = json.dumps(rig.audit(), ensure_ascii=False)
    for personal in (PHONE, "张**", "4200"):
        assert personal not in caplog.text and personal not in entries


def test_contact_details_sealed_with_another_key_fail_the_attempt_instead_of_hanging(rig: Rig,
                                                                                     tmp_path: Path) -> None:
    rig.customer()
    queued = rig.queue()
    put_contact(rig.store, RawTextCipher(tmp_path / "another.key"), "C001", EVERYWHERE)  # e.g. a rotated key
    assert rig.outbox().drain("test") == {"failed": 1}
    row = rig.status(queued.id)
    assert row.last_error == "the contact details cannot be decrypted with the configured key"
    assert row.lease_owner is None and rig.receiver.requests == []


def test_a_bug_in_a_transport_fails_the_attempt_without_logging_what_it_said(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.customer()
    queued = rig.queue()
    outbox = rig.outbox()

    def broken(message: Any) -> Any:
        raise RuntimeError(f"cannot send to {message.to}")

    outbox.transports["sms"].send = broken  # type: ignore[method-assign]
    assert outbox.drain("test") == {"failed": 1}
    assert rig.status(queued.id).last_error == "internal error (RuntimeError)"
    assert "RuntimeError" in caplog.text and PHONE not in caplog.text


# -- several workers --------------------------------------------------------------------------------------------


def _two_workers_send_each_message_once(rig: Rig, url: str) -> None:
    for i in range(8):
        rig.customer(f"C{i}")
    queued = [rig.queue(f"C{i % 8}", followup_id=f"F{i}") for i in range(40)]
    stores = [Store(url), Store(url)]
    outboxes = [rig.outbox(store) for store in stores]
    tallies: list[Any] = []
    threads = [threading.Thread(target=lambda o=o, n=n: tallies.append(o.drain(f"replica-{n}", 2)))
               for n, o in enumerate(outboxes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for o, store in zip(outboxes, stores, strict=True):
        o.close()
        store.close()
    assert sum(t["sent"] for t in tallies) == 40
    keys = [key for key, _ in rig.receiver.requests]
    assert sorted(keys) == sorted(m.idempotency_key for m in queued)  # each message exactly once
    assert all(rig.status(m.id).status == "sent" for m in queued)
    sent = [p["message_id"] for kind, p in rig.audit() if kind == "message_sent"]
    assert sorted(sent) == sorted(m.id for m in queued)


def test_two_workers_on_one_sqlite_database_never_send_a_message_twice(tmp_path: Path, smtp: Any) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    with rig_at(tmp_path, smtp, url=url) as rig:
        _two_workers_send_each_message_once(rig, url)


def test_two_workers_on_one_postgresql_database_never_send_a_message_twice(tmp_path: Path, smtp: Any,
                                                                           postgres_schema: str) -> None:
    with rig_at(tmp_path, smtp, url=postgres_schema) as rig:
        _two_workers_send_each_message_once(rig, postgres_schema)


def test_a_message_whose_worker_died_is_taken_over_with_the_same_key(rig: Rig) -> None:
    rig.customer()
    queued = rig.queue()
    outbox = rig.outbox()
    claimed = outbox.claim("dead-replica")  # claimed, then the process died before sending
    assert claimed is not None and claimed.id == queued.id
    assert outbox.claim("other") is None  # leased: nobody else sends it meanwhile
    later = utcnow() + timedelta(seconds=outbox.lease_s + 1)
    taken = outbox.claim("other", now=later)
    assert taken is not None and taken.idempotency_key == claimed.idempotency_key and taken.attempt == 2
    assert outbox._record(claimed, "sent") is None  # the dead replica's late outcome is not recorded


# -- the service and the command line --------------------------------------------------------------------------


def test_the_service_starts_the_worker_and_it_delivers_what_planning_queues(rig: Rig) -> None:
    from fastapi.testclient import TestClient

    from service.app import create_app, state_of
    from tests.integration.test_live_socket import FakeTranscriber

    app = create_app(rig.settings, transcriber=FakeTranscriber())  # type: ignore[arg-type]
    with TestClient(app):
        state = state_of(app)  # type: ignore[arg-type]
        assert state.outbox is not None and state.store is not None
        rig.customer()
        queued = rig.queue()
        state.outbox.notify()
        deadline = time.monotonic() + 10
        while queued.idempotency_key not in rig.receiver.deliveries:
            assert time.monotonic() < deadline, "the service's worker did not deliver"
            time.sleep(0.05)
    assert rig.status(queued.id).status == "sent"


def test_without_any_transport_the_service_starts_no_worker(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from service.app import create_app, state_of
    from tests.integration.test_live_socket import FakeTranscriber

    app = create_app(Settings(data_dir=tmp_path / "data"), transcriber=FakeTranscriber())  # type: ignore[arg-type]
    with TestClient(app):
        state = state_of(app)  # type: ignore[arg-type]
        assert state.store is not None and state.outbox is None


def test_operators_send_list_dead_letters_and_requeue_from_the_command_line(
        rig: Rig, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from service.cli import main
    from service.settings import get_settings

    o = rig.settings.outbox
    for name, value in {"DATA_DIR": str(rig.settings.data_dir), "OUTBOX__SMS_WEBHOOK_URL": o.sms_webhook_url,
                        "OUTBOX__QUIET_START": "00:00", "OUTBOX__QUIET_END": "00:00"}.items():
        monkeypatch.setenv(f"HUIFANG_{name}", str(value))
    get_settings.cache_clear()
    try:
        rig.customer()
        queued = rig.queue()
        rig.receiver.fail_next, rig.receiver.fail_status = 1, 410
        assert main(["outbox", "run", "--once"]) == 0
        assert json.loads(capsys.readouterr().out) == {"channels": ["sms"], "dead": 1}
        assert main(["outbox", "dead"]) == 0
        dead = json.loads(capsys.readouterr().out)
        assert (dead["id"], dead["reason"], dead["last_error"]) == (queued.id, "rejected", "HTTP 410")
        assert main(["outbox", "requeue", queued.id]) == 0
        assert f"message {queued.id} queued again" in capsys.readouterr().out
        assert main(["outbox", "run", "--once"]) == 0
        assert json.loads(capsys.readouterr().out) == {"channels": ["sms"], "sent": 1}
        assert main(["outbox", "requeue", queued.id]) == 2  # sent: nothing to requeue
        assert "only dead or failed" in capsys.readouterr().err
    finally:
        get_settings.cache_clear()
