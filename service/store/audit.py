"""The audit log: an append-only, hash-chained record of assessments, reports and access to call data.

Each entry's hash is SHA-256 over its sequence number, time, call, kind, actor, payload and the previous entry's
hash. Changing any stored entry, deleting one or swapping two breaks the chain at that point, which `verify`
reports. Entries are numbered explicitly and appended optimistically: two writers that race for the same number
conflict on the primary key and the loser retries on top of the winner, so processes sharing the database
(the service and `huifang score-dir`) keep one chain.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from service.store.models import AuditEntry, Call
from service.store.store import Store, utcnow

GENESIS = "0" * 64


def canonical(payload: Any) -> str:
    """The one JSON text of a payload that its hash covers."""
    return json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)


def digest(value: Any) -> str:
    return hashlib.sha256(canonical(value).encode("utf-8")).hexdigest()


def entry_hash(seq: int, at: datetime, call_id: str | None, kind: str, actor: str, payload: str, prev: str) -> str:
    material = "\n".join([str(seq), at.isoformat(timespec="microseconds"), call_id or "", kind, actor, payload, prev])
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def append(store: Store, kind: str, actor: str, call_id: str | None, payload: dict[str, Any]) -> int:
    """Add an entry at the end of the chain; returns its number."""
    text = canonical(payload)
    for _ in range(20):
        with store.session() as s:
            last = s.execute(select(AuditEntry.id, AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)).first()
            seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
            at = utcnow()
            s.add(AuditEntry(id=seq, at=at, call_id=call_id, kind=kind, actor=actor, payload=text, prev_hash=prev,
                             hash=entry_hash(seq, at, call_id, kind, actor, text, prev)))
            try:
                s.commit()
                return seq
            except IntegrityError:
                s.rollback()  # another writer took this number: chain on top of theirs
    raise RuntimeError("could not append to the audit log (too much contention)")


@dataclass(frozen=True, slots=True)
class Verification:
    """Outcome of `verify`: `ok`, how many entries were checked, and the problems found."""

    ok: bool
    entries: int
    problems: tuple[str, ...]


def verify(store: Store) -> Verification:
    """Walk the chain from the start; also check each stored report against its last audited digest."""
    problems: list[str] = []
    prev, expected_seq, count = GENESIS, 1, 0
    reports: dict[str, str] = {}
    with store.session() as s:
        for entry in s.scalars(select(AuditEntry).order_by(AuditEntry.id)).yield_per(1000):
            count += 1
            if entry.id != expected_seq:
                problems.append(f"entry {expected_seq} is missing (next is {entry.id})")
            if entry.prev_hash != prev:
                problems.append(f"entry {entry.id}: does not follow entry {entry.id - 1} (deleted, inserted or moved)")
            if entry_hash(entry.id, entry.at, entry.call_id, entry.kind, entry.actor, entry.payload,
                          entry.prev_hash) != entry.hash:
                problems.append(f"entry {entry.id} ({entry.kind}, call {entry.call_id}): content was changed")
            if entry.kind == "report" and entry.call_id:
                try:
                    reports[entry.call_id] = json.loads(entry.payload)["report_sha256"]
                except (ValueError, KeyError):
                    problems.append(f"entry {entry.id}: unreadable report entry")
            if entry.kind == "call_deleted" and entry.call_id:
                reports.pop(entry.call_id, None)
            prev, expected_seq = entry.hash, entry.id + 1
        for call in s.scalars(select(Call)):
            audited = reports.get(call.call_id)
            if audited is None:
                problems.append(f"call {call.call_id}: its report was never audited")
            elif digest(call.report) != audited:
                problems.append(f"call {call.call_id}: the stored report differs from the audited one")
    return Verification(not problems, count, tuple(problems))
