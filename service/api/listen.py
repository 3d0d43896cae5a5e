"""Listening in (监听): `/v1/calls/{call_id}/listen`, a read-only websocket of a live call's audio for supervisors
(a ticket as for `/events`), and `GET /v1/listen-in`, whether this server allows it (`floor.listen_in`).

The socket sends a `listen_format` text frame, then the call's audio as binary frames (little-endian PCM16 at the
call's rate, its channels interleaved), and `end` when the call ends; on whichever replica the call streams
(service/live/listen.py). Each listening is audited (`listen_in`, at its start and at its stop, with who and for
how long); what the listener sends is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from fastapi import APIRouter, WebSocket
from pydantic import BaseModel
from starlette.websockets import WebSocketDisconnect, WebSocketState

from service.api.deps import SettingsDep, State, Supervisor
from service.auth import Principal, authenticate
from service.errors import ServiceError, bad_call_id, unavailable
from service.ids import id_problem
from service.live.hub import BusUnavailable
from service.live.listen import Listener, TapFormat
from service.live.sockets import Waited, next_unless_gone, until_disconnect
from service.metrics import ERRORS, LISTEN_IN
from service.protocol import CloseCode, EndEvent, ErrorEvent, ListenFormat, dump
from service.state import AppState
from service.store import Store, audit

log = logging.getLogger(__name__)

router = APIRouter(tags=["floor"])


class ListenInPolicy(BaseModel):
    #: Whether supervisors may listen in on live calls on this server (`HUIFANG_FLOOR__LISTEN_IN`).
    enabled: bool


@router.get("/v1/listen-in", response_model=ListenInPolicy)
async def listen_in_policy(principal: Supervisor, settings: SettingsDep) -> ListenInPolicy:
    """Whether listening in is allowed here (the console shows its 监听 button only then)."""
    return ListenInPolicy(enabled=settings.floor.listen_in)


def listen_in_disabled() -> ServiceError:
    return ServiceError("listen_in_disabled", "listening in on calls is turned off on this server "
                        "(HUIFANG_FLOOR__LISTEN_IN=false: the bank's policy)", 403, CloseCode.FORBIDDEN)


async def _open(state: AppState, call_id: str) -> tuple[Listener, TapFormat | None, bool]:
    """A listener on the call, wherever it streams (with its format when known now), and whether it is remote."""
    taps = state.calls.taps
    here = taps.listen(call_id)
    if here is not None:
        return here[0], here[1], False
    try:
        live = await state.hub.streaming(call_id)
    except BusUnavailable as e:
        raise unavailable("events_unavailable", f"the live calls' bus cannot be reached now ({e})") from e
    if live is None or taps.relay is None:
        raise ServiceError("call_not_live", f"call {call_id} is not live on any server: one can listen only "
                           "while the call is going on", 404, CloseCode.NOT_STARTED)
    return await taps.relay.listen(call_id), None, True


async def _audit(store: Store, principal: Principal, call_id: str, payload: dict[str, object]) -> None:
    await asyncio.to_thread(audit.append, store, "listen_in", principal.name, call_id,
                            {"role": principal.role, **payload})


@router.websocket("/v1/calls/{call_id}/listen")
async def listen(ws: WebSocket, call_id: str, state: State) -> None:
    """The call's audio for a supervisor, about as it is spoken, until the call ends or the listener leaves."""
    await ws.accept()
    try:
        if (problem := id_problem(call_id, "call")) is not None:
            raise bad_call_id(problem)
        principal = authenticate(state.tokens, ws.headers, ws.query_params, ("supervisor",), None, state.tickets,
                                 call_id)
        if not state.settings.floor.listen_in:
            raise listen_in_disabled()
        if state.store is None:
            raise unavailable("storage_unavailable", "listening in is audited, and the database cannot be reached")
        store = state.store
        state.watchers.take(principal.name)  # a listening counts as one of the token's streams
        try:
            listener, fmt, remote = await _open(state, call_id)
        except BaseException:
            state.watchers.release(principal.name)
            raise
    except ServiceError as e:
        ERRORS.labels(e.code).inc()
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await ws.send_text(dump(ErrorEvent(code=e.code, message=e.message)))
            await ws.close(code=e.close_code, reason=e.code)
        return
    LISTEN_IN.inc()
    started = time.monotonic()
    try:
        await _audit(store, principal, call_id, {"event": "start", "remote": remote})
        await _play(ws, call_id, listener, fmt)
    finally:
        if remote and state.calls.taps.relay is not None:
            await state.calls.taps.relay.unlisten(listener)
        else:
            state.calls.taps.unlisten(listener)
        state.watchers.release(principal.name)
        await _audit(store, principal, call_id, {"event": "stop", "listened_s": round(time.monotonic() - started, 1),
                                                 "skipped_s": round(listener.skipped_s, 1)})
        if ws.client_state == WebSocketState.CONNECTED:
            with contextlib.suppress(RuntimeError, OSError, TimeoutError):
                await asyncio.wait_for(ws.close(code=CloseCode.NORMAL), timeout=5)


async def _play(ws: WebSocket, call_id: str, listener: Listener, fmt: TapFormat | None) -> None:
    """Send the listener's frames (the format first and whenever it changes) until the call ends or the
    listener goes."""
    gone = asyncio.create_task(until_disconnect(ws))
    try:
        if fmt is not None:
            await ws.send_text(_format(call_id, fmt))
        while True:
            frame = await next_unless_gone(listener.get(), gone)
            if isinstance(frame, Waited):  # gone (no timeout here)
                return
            if frame is None:
                await ws.send_text(dump(EndEvent(call_id=call_id)))
                return
            if frame[0] != fmt:
                fmt = frame[0]
                await ws.send_text(_format(call_id, fmt))
            await ws.send_bytes(frame[1])
    except (WebSocketDisconnect, RuntimeError, OSError):
        return
    finally:
        gone.cancel()


def _format(call_id: str, fmt: TapFormat) -> str:
    return dump(ListenFormat(call_id=call_id, sample_rate_hz=fmt.sample_rate_hz, channels=len(fmt.roles),
                             roles=list(fmt.roles)))


