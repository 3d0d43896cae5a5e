"""Outbox throughput: messages per second from the outbox table to a local webhook receiver (SMS) and a local
SMTP server (aiosmtpd, e-mail), through the real worker code (`Outbox.drain`: claim under a lease, send, record,
audit), on SQLite or the PostgreSQL of `--db-url`.

    python -m bench.outbox --messages 2000 --concurrency 1,4 [--db-url postgresql+psycopg://...]

One JSON line per (channel, concurrency). The receiver and the SMTP sink are the tests'
(tests/support/receivers.py): the receiver verifies every signature as docs/outbox.md tells receivers to, and
stores deliveries by idempotency key.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.postgres import fresh_schema
from tests.support.receivers import Receiver, smtp_server


def seed(store: Any, cipher: Any, settings: Any, n_messages: int, channel: str, customers: int = 200) -> float:
    """Queue `n_messages` send_schedule messages over `channel` for `customers` synthetic customers; returns the
    seconds queuing took (after the customers were made)."""
    from zoneinfo import ZoneInfo

    from service.loanbook.outbox_queue import enqueue
    from service.loanbook.repository import Contact, ensure_customer, put_contact
    from service.store.store import utcnow

    contacts = {}
    for i in range(min(customers, n_messages)):
        cid = f"BENCH{i:05d}"
        contact = Contact(phone=f"139{i:08d}", email=f"c{i}@example.com",
                          consent=frozenset({"sms", "email", "letter"}))
        put_contact(store, cipher, cid, contact)
        contacts[cid] = contact
    ids = list(contacts)
    tz = ZoneInfo(settings.loanbook.timezone)
    fields = {"customer_name_masked": "王**", "loan_id_tail": "0042", "repay_day": "15", "monthly_yuan": "4200"}
    began = time.perf_counter()
    for start in range(0, n_messages, 500):
        with store.session() as s, s.begin():
            now = utcnow()
            for i in range(start, min(start + 500, n_messages)):
                cid = ids[i % len(ids)]
                ensure_customer(s, cid, now)
                enqueue(s, customer_id=cid, followup_id=f"bench-{channel}-{i}", action="send_schedule",
                        channel=channel, fields=fields, contact=contacts[cid], now=now,  # type: ignore[arg-type]
                        settings=settings.outbox, tz=tz, cipher=cipher)
    return time.perf_counter() - began


def run(n_messages: int, channels: tuple[str, ...] = ("sms", "email"), concurrency: tuple[int, ...] = (1, 4),
        db_url: str | None = None) -> list[dict[str, Any]]:
    """For each channel and each number of sender threads: queue `n_messages` into a fresh database, send them all
    to the local receiver, and measure. Returns one result per combination."""
    from sqlalchemy import func, select

    from service.ids import process_name
    from service.loanbook.outbox import Outbox, webhook_key
    from service.privacy import RawTextCipher
    from service.settings import OutboxSettings, Settings
    from service.store import Store
    from service.store.models import AuditEntry, OutboxMessage

    results = []
    with smtp_server() as (sink, smtp_port):
        for channel in channels:
            for workers in concurrency:
                with tempfile.TemporaryDirectory(prefix="bench-outbox-") as tmp, contextlib.ExitStack() as stack:
                    data = Path(tmp)
                    url = (stack.enter_context(fresh_schema(db_url, "bench_outbox")) if db_url
                           else f"sqlite:///{data / 'huifang.db'}")
                    probe = Settings(data_dir=data)
                    with Receiver(webhook_key(probe)) as receiver:
                        settings = Settings(data_dir=data, database_url=url, outbox=OutboxSettings(
                            sms_webhook_url=receiver.url, smtp_host="127.0.0.1", smtp_port=smtp_port,
                            smtp_starttls=False, timeout_s=10, quiet_start="00:00", quiet_end="00:00",
                            concurrency=workers))
                        store = Store(url)
                        store.migrate()
                        cipher = RawTextCipher(settings.raw_key_file)
                        enqueue_s = seed(store, cipher, settings, n_messages, channel)
                        outbox = Outbox.from_settings(store, settings)
                        mails_before = len(sink.messages)
                        began = time.perf_counter()
                        tally = outbox.drain(process_name(), workers)
                        send_s = time.perf_counter() - began
                        outbox.close()
                        with store.session() as s:
                            sent = s.scalar(select(func.count()).select_from(OutboxMessage)
                                            .where(OutboxMessage.status == "sent"))
                            audited = s.scalar(select(func.count()).select_from(AuditEntry)
                                               .where(AuditEntry.kind == "message_sent"))
                        store.close()
                        delivered = len(receiver.deliveries) if channel == "sms" else len(sink.messages) - mails_before
                        duplicates = (len(receiver.requests) - len(receiver.deliveries)) if channel == "sms" else 0
                    results.append({
                        "bench": "outbox", "channel": channel, "db": url.split(":", 1)[0].split("+")[0],
                        "messages": n_messages, "sender_threads": workers,
                        "enqueue_per_s": round(n_messages / enqueue_s, 1),
                        "send_per_s": round(n_messages / send_s, 1), "send_s": round(send_s, 2),
                        "sent": int(sent or 0), "audited": int(audited or 0), "delivered": delivered,
                        "duplicates": duplicates, "outcomes": dict(tally), "cores": os.cpu_count()})
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--channels", default="sms,email")
    parser.add_argument("--concurrency", default="1,4", help="sender threads, comma-separated")
    parser.add_argument("--db-url", default=None, help="a PostgreSQL database (each run in a schema of its own, "
                        "dropped afterwards); default SQLite in a temporary folder")
    args = parser.parse_args(argv)
    for result in run(args.messages, tuple(args.channels.split(",")),
                      tuple(int(c) for c in args.concurrency.split(",")), args.db_url):
        print(json.dumps(result, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
