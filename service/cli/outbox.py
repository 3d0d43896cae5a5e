"""`huifang outbox`: the operator's side of the outbox (docs/outbox.md). `run --once` sends what is due now and
exits (a cron job, or a sender process of its own without `--once`); `dead` lists dead letters; `requeue ID`
queues a dead message again with the same idempotency key."""

from __future__ import annotations

import json
import time
from zoneinfo import ZoneInfo

from service.errors import ServiceError
from service.ids import process_name
from service.loanbook.outbox import Outbox, configured_channels
from service.loanbook.outbox_queue import OutboxError, dead_letters, requeue
from service.settings import Settings
from service.store import Store


def run_outbox(settings: Settings, once: bool) -> int:
    """Send due messages with `settings.outbox.concurrency` threads: once, or every `poll_s` until interrupted.
    Prints one JSON line per round that sent anything: how many attempts ended in each status."""
    if not configured_channels(settings.outbox):
        raise ServiceError("usage", "nothing to send with: set HUIFANG_OUTBOX__SMTP_HOST, __SMS_WEBHOOK_URL or "
                           "__CRM_WEBHOOK_URL")
    store = _store(settings)
    outbox = Outbox.from_settings(store, settings)
    owner = process_name()
    try:
        while True:
            tally = outbox.drain(owner, settings.outbox.concurrency)
            if tally or once:
                print(json.dumps({"channels": list(outbox.channels), **dict(sorted(tally.items()))}), flush=True)
            if once:
                return 0
            time.sleep(settings.outbox.poll_s)
    finally:
        outbox.close()
        store.close()


def list_dead(settings: Settings) -> int:
    store = _store(settings)
    try:
        for m in dead_letters(store):
            print(json.dumps({"id": m.id, "channel": m.channel, "action": m.action, "reason": m.reason,
                              "attempts": m.attempts, "last_error": m.last_error,
                              "created_at": m.created_at.isoformat()}, ensure_ascii=False))
    finally:
        store.close()
    return 0


def requeue_message(settings: Settings, message_id: str) -> int:
    store = _store(settings)
    try:
        view = requeue(store, message_id, "cli", settings.outbox, ZoneInfo(settings.loanbook.timezone))
    except OutboxError as e:
        raise ServiceError("usage", str(e)) from e
    finally:
        store.close()
    due = view.next_attempt_at.isoformat() if view.next_attempt_at else None
    print(f"message {view.id} queued again ({view.channel}, next attempt at {due} UTC)")
    return 0


def _store(settings: Settings) -> Store:
    store = Store(settings.db_url)
    store.migrate()
    return store
