"""The audit log: an append-only, hash-chained record of assessments, reports and access to call data.

Each entry's hash is SHA-256 over its sequence number, time, call, kind, actor, payload and the previous entry's
hash. Changing any stored entry, deleting one or swapping two breaks the chain at that point, which `verify`
reports. Entries are numbered explicitly and appended optimistically: two writers that race for the same number
conflict on the primary key and the loser retries on top of the winner, so processes sharing the database
(the service and `huifang score-dir`) keep one chain.

Someone who can write the database could still cut the chain's tail or re-hash it after an edit; signed
checkpoints of its head outside the database (service/store/anchor.py) catch that: a report, an access or a
deletion is checkpointed as it is logged, everything else within a minute. `verify` also holds every column a
decision or an access right depends on (a call's agent, risk score, tier and answer labels) to the audited report.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from service.store.anchor import ACCESS_KINDS, Checkpoint
from service.store.models import Answer, AuditEntry, Call
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
            entry_digest = entry_hash(seq, at, call_id, kind, actor, text, prev)
            s.add(AuditEntry(id=seq, at=at, call_id=call_id, kind=kind, actor=actor, payload=text, prev_hash=prev,
                             hash=entry_digest))
            try:
                s.commit()
            except IntegrityError:
                s.rollback()  # another writer took this number: chain on top of theirs
                continue
        if store.anchor is not None and (kind in ACCESS_KINDS or kind == "report"):
            store.anchor.write(seq, entry_digest)  # this entry is the head just written: no need to read it back
        return seq
    raise RuntimeError("could not append to the audit log (too much contention)")


def head(store: Store) -> tuple[int, str] | None:
    """(number, hash) of the chain's last entry; None while it is empty."""
    with store.session() as s:
        last = s.execute(select(AuditEntry.id, AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)).first()
        return (int(last[0]), str(last[1])) if last else None


def checkpoint(store: Store) -> Checkpoint | None:
    """Sign the chain's current head into the store's anchor (if it has one and the head moved)."""
    if store.anchor is None:
        return None
    current = head(store)
    return store.anchor.write(*current) if current is not None else None


@dataclass(frozen=True, slots=True)
class Verification:
    """Outcome of `verify`: `ok`, how many entries were checked, and the problems found."""

    ok: bool
    entries: int
    problems: tuple[str, ...]


def verify(store: Store, checkpoints: list[Checkpoint] | None = None,
           labels_of: Callable[[dict[str, Any]], Iterable[tuple[str, str]]] | None = None) -> Verification:
    """Walk the chain from the start; check each stored call (report, agent, risk score, tier) against its last
    audited report, and with `labels_of` (the (topic, label) pairs a report's answer rows are made from:
    `service.reports.answer_labels`, raising ValueError for a report it cannot read; storage does not read
    reports) its answer rows too; with `checkpoints`, the
    chain must reach every checkpoint and hold the checkpointed hash there."""
    problems: list[str] = []
    prev, expected_seq, count = GENESIS, 1, 0
    reports: dict[str, str] = {}
    audited: dict[str, dict[str, Any]] = {}
    hashes: dict[int, str] = {}
    wanted = {c.seq for c in checkpoints or ()}
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
                    audited[entry.call_id] = json.loads(entry.payload)
                    reports[entry.call_id] = audited[entry.call_id]["report_sha256"]
                except (ValueError, KeyError):
                    problems.append(f"entry {entry.id}: unreadable report entry")
            if entry.kind == "call_deleted" and entry.call_id:
                reports.pop(entry.call_id, None)
                audited.pop(entry.call_id, None)
            if entry.id in wanted:
                hashes[entry.id] = entry.hash
            prev, expected_seq = entry.hash, entry.id + 1
        for call in s.scalars(select(Call)):
            if call.call_id not in reports:
                problems.append(f"call {call.call_id}: its report was never audited")
                continue
            if digest(call.report) != reports[call.call_id]:
                problems.append(f"call {call.call_id}: the stored report differs from the audited one")
            problems += _columns(call, audited[call.call_id])
            if labels_of is not None:
                rows = s.scalars(select(Answer).where(Answer.call_id == call.call_id)).all()
                try:
                    expected = sorted(labels_of(call.report))
                except ValueError as e:  # the reader refuses it: a report changed since it was audited
                    problems.append(f"call {call.call_id}: its report cannot be read ({type(e).__name__})")
                    continue
                if sorted((a.topic, a.label) for a in rows) != expected:
                    problems.append(f"call {call.call_id}: its answer labels differ from its report")
    for point in checkpoints or ():
        if point.seq not in hashes:
            problems.append(f"checkpoint of {point.at}: the chain ends before entry {point.seq} it recorded "
                            "(entries were removed)")
        elif hashes[point.seq] != point.head:
            problems.append(f"checkpoint of {point.at}: entry {point.seq} is not the entry it recorded (the chain "
                            "was rewritten)")
    return Verification(not problems, count, tuple(problems))


def _columns(call: Call, entry: dict[str, Any]) -> list[str]:
    """Columns that decide who sees a call and how it is listed, against its audited report entry: agent,
    customer and loan, risk score, tier."""
    return [f"call {call.call_id}: {column} differs from the audited report"
            for column in ("agent_id", "customer_id", "loan_id", "risk_score", "tier")
            if column in entry and getattr(call, column) != entry[column]]
