"""Opening and closing live calls: registration, event fan-out and agent assistance, shared by the websocket
endpoints and the console's demo replay."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from pydantic import BaseModel

from service.assist import CallAssist, assists
from service.hub import CallHub
from service.live import LiveCall
from service.protocol import CloseCode, StartMessage, dump
from service.settings import Settings
from service.store import Store, audit

log = logging.getLogger(__name__)

#: What of a live event goes into the audit log (the verdict and its evidence; not the transcript).
_AUDITED: dict[str, set[str] | None] = {
    "assessment": {"topic", "label", "confidence", "evidence", "slots", "mismatch", "question_utterance_id",
                   "answer_utterance_ids", "answer_end_s", "revision"},
    "summary": {"coverage", "answers", "vague_answers", "mismatches"},
}


class CallRefused(Exception):
    """The call cannot start: `code` for the error event, `close_code` for the socket."""

    def __init__(self, code: str, message: str, close_code: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code


def open_call(app: FastAPI, call_id: str, start: StartMessage,
              send: Callable[[BaseModel], Awaitable[None]] | None, owner: str | None = None) -> LiveCall:
    """Register a live call and build it: its events go to `send` (the caller's socket) and to subscribers of
    `/v1/calls/{call_id}/events`. Raises `CallRefused` when the model is missing or the id is in use."""
    state = app.state
    if getattr(state, "asr_error", None):
        raise CallRefused("asr_unavailable", "speech recognition is not available on this server "
                          "(GET /healthz says why)", CloseCode.UNAVAILABLE)
    active: set[str] = state.active_calls
    if call_id in active:
        raise CallRefused("call_in_progress", f"call {call_id} is already streaming", CloseCode.CALL_IN_PROGRESS)
    per_owner: dict[str, set[str]] = state.calls_by_token
    if owner is not None and len(per_owner.get(owner, set())) >= state.settings.auth.max_calls_per_token:
        raise CallRefused("too_many_calls", "this token already streams its maximum number of calls",
                          CloseCode.TOO_MANY_CALLS)
    active.add(call_id)
    if owner is not None:
        per_owner.setdefault(owner, set()).add(call_id)
    hub: CallHub = state.hub
    hub.open(call_id, start.agent_id)

    store: Store | None = getattr(state, "store", None)

    async def emit(event: BaseModel) -> None:
        if send is not None:
            await send(event)
        kind = str(getattr(event, "type", ""))
        hub.publish(call_id, dump(event), kind)
        if store is not None and kind in ("assessment", "summary"):
            # The evidence trail of live verdicts; off the event loop, in the order they were made.
            payload = event.model_dump(include=_AUDITED.get(kind))
            try:
                await asyncio.to_thread(audit.append, store, f"live_{kind}", owner or "live", call_id, payload)
            except Exception:  # noqa: BLE001 - the call goes on; the gap is loud in the log and in `audit verify`
                log.exception("call %s: could not append to the audit log", call_id)

    settings: Settings = state.settings
    assist = None
    if settings.nlu.assist and assists(start.channels):
        loan = start.loan_file.model_dump(exclude_none=True) if start.loan_file else None
        assist = CallAssist(call_id, state.assessor, loan, settings.dialogue_options(), state.nlu_executor, emit)
    return LiveCall(call_id, start, state.live_engine, emit, assist)


def close_call(app: FastAPI, call_id: str) -> None:
    """Unregister a call and end its subscribers' streams (after its `end` event was published)."""
    app.state.active_calls.discard(call_id)
    for calls in app.state.calls_by_token.values():
        calls.discard(call_id)
    app.state.hub.close(call_id)
