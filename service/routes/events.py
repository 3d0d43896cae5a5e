"""`/v1/calls/{call_id}/events`: a read-only stream of one call's events for agent screens (see service/hub.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from service.auth import WsRefused, ws_principal
from service.hub import CallHub
from service.protocol import CloseCode, ErrorEvent, dump

log = logging.getLogger(__name__)
router = APIRouter(tags=["live"])


async def _until_disconnect(ws: WebSocket) -> None:
    """Read and discard what the subscriber sends (the stream is read-only) until it goes away."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return


@router.websocket("/v1/calls/{call_id}/events")
async def call_events(ws: WebSocket, call_id: str) -> None:
    """Every event of the call (history first, then live) until it ends; several screens may watch one call.
    A call that has not started yet is waited for. Closes with 1000 after the call ends, 4408 when the
    subscriber stops reading."""
    await ws.accept()
    try:
        principal = ws_principal(ws, ("agent", "supervisor"))
    except WsRefused as e:
        await ws.send_text(dump(ErrorEvent(code=e.error, message=e.message)))
        await ws.close(code=e.code)
        return
    hub: CallHub = ws.app.state.hub
    sub = hub.subscribe(call_id, principal.agent_id if principal.role == "agent" else None)
    gone = asyncio.create_task(_until_disconnect(ws))
    code = CloseCode.NORMAL
    try:
        while True:
            if sub.forbidden:
                await ws.send_text(dump(ErrorEvent(code="forbidden", message=f"call {call_id} is not assigned "
                                                   "to you")))
                code = CloseCode.FORBIDDEN
                return
            if sub.overflowed:
                log.warning("call %s: an events subscriber stopped reading; dropping it", call_id)
                code = CloseCode.SLOW_CONSUMER
                return
            get = asyncio.ensure_future(sub.queue.get())
            done, _ = await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
            if gone in done:
                get.cancel()
                return
            text = get.result()
            if text is None:
                if sub.forbidden:
                    continue  # says so at the top of the loop
                return
            await ws.send_text(text)
    except (WebSocketDisconnect, RuntimeError, OSError):
        return
    finally:
        hub.unsubscribe(sub)
        gone.cancel()
        if ws.client_state == WebSocketState.CONNECTED:
            with contextlib.suppress(RuntimeError, OSError, TimeoutError):
                await asyncio.wait_for(ws.close(code=code), timeout=5)
