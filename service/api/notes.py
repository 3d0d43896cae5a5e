"""`/v1/calls/{call_id}/notes`: a supervisor's note to the agent of a live call (主管提示), and the call's notes.

A note reaches the call's screens as a `supervisor_note` event through the event bus, from whichever replica the
supervisor's request landed on (the bus hands it to the replica streaming the call); it stays in the call's event
history, so a console opened later shows it, and in the report. Its text is redacted before anything else sees it
(numbers, names, addresses: `nlu.free_text`, as agents' outcome notes), stored in `call_notes` and audited
(`supervisor_note`: the note's id, the agent and a hash of the stored text, never the text).
"""

from __future__ import annotations

import asyncio
from datetime import UTC
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, Field

from nlu.free_text import free_text_redactor
from service.api.deps import CallIdPath, State, StoreDep, Supervisor, Viewer
from service.errors import ServiceError, forbidden, unavailable
from service.live.hub import BusUnavailable, EventBus, Streaming
from service.metrics import NOTES
from service.protocol import SupervisorNoteEvent, dump
from service.store import Store, audit
from service.store.notes import Note, add_note, notes_of

router = APIRouter(tags=["floor"])

#: Longest note, in characters: a line or two the agent reads at a glance during the call.
MAX_NOTE_CHARS = 500


class NoteRequest(BaseModel):
    text: Annotated[str, Field(min_length=1, max_length=MAX_NOTE_CHARS, description="the note for the agent; "
                               "personal numbers, names and addresses are masked before it is kept or sent")]


class NoteOut(BaseModel):
    """A supervisor's note as stored (redacted)."""

    note_id: int
    call_id: str
    agent_id: str | None
    author: str
    text: str
    at: str = Field(description="when it was written (ISO 8601, UTC)")


class NoteSent(NoteOut):
    #: Whether the note was handed to the replica streaming the call (False: the call ended just before; the
    #: note is kept with the call all the same).
    delivered: bool


def note_out(note: Note) -> NoteOut:
    return NoteOut(note_id=note.note_id, call_id=note.call_id, agent_id=note.agent_id, author=note.author,
                   text=note.text, at=note.at.replace(tzinfo=UTC).isoformat())


def note_event(note: Note) -> SupervisorNoteEvent:
    """The `supervisor_note` event of a stored note."""
    out = note_out(note)
    return SupervisorNoteEvent(note_id=out.note_id, text=out.text, author=out.author, at=out.at)


def _bus_down(e: BusUnavailable) -> ServiceError:
    return unavailable("events_unavailable", f"the live calls' event bus cannot be reached now ({e}): try again")


async def _live(hub: EventBus, call_id: str) -> Streaming | None:
    try:
        return await hub.streaming(call_id)
    except BusUnavailable as e:
        raise _bus_down(e) from e


async def _not_live(store: Store, call_id: str) -> ServiceError:
    """Why a note cannot be sent: the call ended (409, it is in the calls list) or there is no such call (404)."""
    if await asyncio.to_thread(store.get_call, call_id) is not None:
        return ServiceError("call_not_live", f"call {call_id} has ended: a note reaches the agent only during the "
                            "call (write it in the call's follow-up instead)", 409)
    return ServiceError("not_found", f"no live call {call_id} on any server: check the call id (a note can be "
                        "sent only while the call is going on)", 404)


@router.post("/v1/calls/{call_id}/notes", status_code=201, response_model=NoteSent,
             responses={404: {"description": "no such live call"}, 409: {"description": "the call has ended"}})
async def post_note(call_id: CallIdPath, body: NoteRequest, principal: Supervisor, state: State,
                    store: StoreDep) -> NoteSent:
    """Send a note to the agent of a live call (supervisors and admins), on whichever server streams it: it
    appears on the call's consoles as `supervisor_note` and stays in the call's report. Redacted before it is
    kept or sent; audited."""
    text = body.text.strip()
    if not text:
        raise ServiceError("empty_note", "the note is empty", 422)
    live = await _live(state.hub, call_id)
    if live is None:
        raise await _not_live(store, call_id)
    redacted = await asyncio.to_thread(free_text_redactor().redact, text)
    note = await asyncio.to_thread(add_note, store, call_id, live.agent_id, principal.name, redacted)
    await asyncio.to_thread(audit.append, store, "supervisor_note", principal.name, call_id, {
        "note_id": note.note_id, "agent_id": note.agent_id, "role": principal.role,
        "text_sha256": audit.digest(note.text)})
    try:
        delivered = await state.hub.post(call_id, dump(note_event(note)), "supervisor_note")
    except BusUnavailable as e:
        raise _bus_down(e) from e
    NOTES.inc()
    return NoteSent(**note_out(note).model_dump(), delivered=delivered)


@router.get("/v1/calls/{call_id}/notes", response_model=list[NoteOut])
async def get_notes(call_id: CallIdPath, principal: Viewer, state: State, store: StoreDep) -> list[NoteOut]:
    """The call's notes, oldest first: supervisors any call's, an agent only their own calls'."""
    notes = await asyncio.to_thread(notes_of, store, call_id)
    if principal.role == "agent" and not await _agents_call(state.hub, store, call_id, notes, principal.agent_id):
        raise forbidden(f"call {call_id} is not assigned to you")
    return [note_out(n) for n in notes]


async def _agents_call(hub: EventBus, store: Store, call_id: str, notes: list[Note], agent_id: str | None) -> bool:
    """Whether the call is `agent_id`'s: the stored call's agent, else the live call's, else the notes' (each
    note keeps the agent it was written to)."""
    if agent_id is None:
        return False
    call = await asyncio.to_thread(store.get_call, call_id)
    if call is not None:
        return call.agent_id == agent_id
    live = await _live(hub, call_id)
    if live is not None:
        return live.agent_id == agent_id
    return bool(notes) and all(n.agent_id == agent_id for n in notes)


def report_notes(store: Store, call_id: str) -> list[NoteOut]:
    """The notes the call's report shows (read with the report: whoever may read it may read them)."""
    return [note_out(n) for n in notes_of(store, call_id)]
