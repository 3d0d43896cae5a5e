"""Supervisors' notes to the agents of live calls (table `call_notes`): written once, read with the call.

The text arrives here redacted (service/api/notes.py): storage keeps what it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from service.store.models import CallNote
from service.store.store import Store, utcnow


@dataclass(frozen=True, slots=True)
class Note:
    """A stored note: `at` is naive UTC, as stored."""

    note_id: int
    call_id: str
    agent_id: str | None
    author: str
    text: str
    at: datetime


def _note(row: CallNote) -> Note:
    return Note(row.id, row.call_id, row.agent_id, row.author, row.text, row.created_at)


def add_note(store: Store, call_id: str, agent_id: str | None, author: str, text: str) -> Note:
    """Store a (redacted) note; returns it with its id and time."""
    with store.session() as s:
        row = CallNote(call_id=call_id, agent_id=agent_id, author=author, text=text, created_at=utcnow())
        s.add(row)
        s.commit()
        return _note(row)


def notes_of(store: Store, call_id: str) -> list[Note]:
    """The call's notes, oldest first."""
    with store.session() as s:
        rows = s.scalars(select(CallNote).where(CallNote.call_id == call_id).order_by(CallNote.id)).all()
        return [_note(r) for r in rows]
