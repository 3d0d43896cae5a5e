"""Websockets under `/v1/calls/{call_id}`: `audio` (native protocol, docs/protocol.md), `twilio` (Twilio Media
Streams) and `events` (a read-only stream of one call's events for agent screens). Each audio route picks its
wire format's source (service/live/sources/); the socket handling is service/live/sockets.py, one path for
every source; a call's lifecycle is service/live/session.py."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from service.api.deps import CallsDep, SettingsDep, State, TicketsDep, TokensDep
from service.live.sockets import SocketLimits, run_socket_call, stream_events
from service.live.sources.native import NativeSource
from service.live.sources.twilio import TwilioSource
from service.settings import Settings

router = APIRouter(tags=["live"])


def _limits(settings: Settings) -> SocketLimits:
    live = settings.live
    return SocketLimits(live.idle_timeout_s, live.start_timeout_s, live.max_call_s)


@router.websocket("/v1/calls/{call_id}/audio")
async def call_audio(ws: WebSocket, call_id: str, calls: CallsDep, tokens: TokensDep, tickets: TicketsDep,
                     settings: SettingsDep) -> None:
    """Native protocol: a `start` text frame, binary interleaved audio, `stop`. See docs/protocol.md."""
    await run_socket_call(ws, call_id, calls, tokens, _limits(settings), NativeSource(), tickets)


@router.websocket("/v1/calls/{call_id}/twilio")
async def call_twilio(ws: WebSocket, call_id: str, calls: CallsDep, tokens: TokensDep,
                      settings: SettingsDep) -> None:
    """Twilio Media Streams (`connected`/`start`/`media`/`stop`, base64 8 kHz u-law), tracks mapped to
    agent (outbound) and customer (inbound). Events are sent back on the same socket."""
    await run_socket_call(ws, call_id, calls, tokens, _limits(settings),
                          TwilioSource(settings.live.max_call_s))


@router.websocket("/v1/calls/{call_id}/events")
async def call_events(ws: WebSocket, call_id: str, state: State) -> None:
    """Every event of the call (history first, then live) until it ends; several screens may watch one call.
    A call that has not started yet is waited for. Closes with 1000 after the call ends, 4408 when the
    subscriber stops reading."""
    await stream_events(ws, call_id, state.hub, state.tokens, state.watchers, state.tickets)
