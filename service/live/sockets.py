"""Websockets of live calls: audio from any socket source (the native protocol, Twilio Media Streams), and
read-only event streams.

Socket handling only: a source (service/live/sources/) turns its wire format into typed records, and a call's
lifecycle is a `LiveSession` (service/live/session.py). This module reads messages through the source into the
session, and turns every way a call can end (stop, disconnect, a `ServiceError`, a client that stopped reading,
a bug) into one clean close with the right code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, MutableMapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, TypeVar

from pydantic import BaseModel
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from service.auth import Principal, Role, TicketBook, TokenRegistry, authenticate
from service.errors import ServiceError, bad_call_id
from service.ids import id_problem
from service.live.capacity import RETRY_AFTER_S, Seat
from service.live.hub import EventBus
from service.live.session import CallSession, LiveCalls
from service.live.sources.base import AudioSource, CallEnd, CallStart, WireFrame
from service.metrics import ERRORS
from service.protocol import CloseCode, EndEvent, ErrorEvent, StartMessage, dump

log = logging.getLogger(__name__)

#: Events buffered for a client before it counts as not reading (a few minutes of a busy call).
OUTBOX_LIMIT = 1000
#: Roles that may stream a call's audio (admin always may).
INGEST_ROLES: tuple[Role, ...] = ("ingest",)
#: Largest text frame read (a start message with its loan file is a few KiB; Twilio's media frames ~300 B).
MAX_TEXT_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class SocketLimits:
    """Timeouts and bounds of the live sockets (from the `live` settings)."""

    idle_timeout_s: float
    start_timeout_s: float
    max_call_s: float


class SlowConsumer(Exception):
    """The client stopped reading and its outbox is full."""


class ServerStopping(Exception):
    """The server is shutting down: end the call cleanly (finals, `end`) and close with 1001."""


class Connection:
    """Outgoing side of one socket: a bounded outbox drained by one sender task, so that a slow client
    never blocks the call's processing and never makes the server buffer without bound."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.outbox: asyncio.Queue[str | None] = asyncio.Queue(maxsize=OUTBOX_LIMIT)
        self.overflowed = False
        self._sender = asyncio.create_task(self._send_loop())

    async def emit(self, event: BaseModel) -> None:
        if self.overflowed:
            return
        try:
            self.outbox.put_nowait(dump(event))
        except asyncio.QueueFull:
            self.overflowed = True

    async def _send_loop(self) -> None:
        while True:
            text = await self.outbox.get()
            if text is None:
                return
            try:
                await self.ws.send_text(text)
            except (WebSocketDisconnect, RuntimeError, OSError):
                return  # the client is gone; the receive side will notice and clean up

    async def flush_and_close(self, code: int, reason: str = "") -> None:
        """Send what is queued (unless the client is not reading), then close with `code`."""
        if not self.overflowed:
            try:
                self.outbox.put_nowait(None)
                await asyncio.wait_for(self._sender, timeout=10)
            except (asyncio.QueueFull, TimeoutError):
                pass
        self._sender.cancel()
        if self.ws.client_state == WebSocketState.CONNECTED:
            # A client that stopped reading may never take the close frame either: do not wait forever.
            with contextlib.suppress(RuntimeError, OSError, TimeoutError):
                await asyncio.wait_for(self.ws.close(code=code, reason=reason[:120]), timeout=5)


class SocketCall:
    """One audio socket: its connection, who is streaming, and the session once the call has started."""

    def __init__(self, ws: WebSocket, call_id: str, calls: LiveCalls, tokens: TokenRegistry,
                 limits: SocketLimits, tickets: TicketBook | None = None, seat: Seat | None = None) -> None:
        self.ws = ws
        self.call_id = call_id
        self.conn = Connection(ws)
        self.session: CallSession | None = None
        #: The call's place in this process's load, taken at the upgrade (`admit_socket`).
        self.seat = seat
        self.principal: Principal | None = None
        self.limits = limits
        self._calls = calls
        self._tokens = tokens
        self._tickets = tickets
        #: One wait on the server's stop for the socket's life, not one per message.
        self._stop = asyncio.ensure_future(calls.stopping.wait())
        #: The code the client closed with (set on disconnect; None: no close frame).
        self.close_code: int | None = None

    def close(self) -> None:
        self._stop.cancel()
        if self.seat is not None:
            self.seat.release()

    def authorize(self, token: str | None = None) -> None:
        """The socket's token (header, one the protocol carries, or a `?ticket=` for this call) must be an
        ingest token."""
        self.principal = authenticate(self._tokens, self.ws.headers, self.ws.query_params, INGEST_ROLES, token,
                                      self._tickets, self.call_id)

    async def begin(self, start: StartMessage) -> CallSession:
        """Open the call and tell the client it is ready."""
        if self.principal is None:
            self.authorize()
        owner = self.principal.name if self.principal else None
        reads_loanbook = self.principal is not None and self.principal.role in ("supervisor", "admin")
        self.session = await self._calls.open(self.call_id, start, self.conn.emit, owner, reads_loanbook,
                                              seat=self.seat)
        await self.session.ready()
        return self.session

    async def receive(self, until: float | None = None,
                      late: ServiceError | None = None) -> MutableMapping[str, Any] | None:
        """The next message, or None when the client disconnected. Waits until `until` (time.monotonic()) at
        most, by default the idle timeout from now; then raises `late` (by default `idle_timeout`). A text
        frame over MAX_TEXT_BYTES is refused."""
        idle = self.limits.idle_timeout_s
        timeout = idle if until is None else max(0.0, until - time.monotonic())
        if self._stop.done():
            raise ServerStopping()
        receive = asyncio.ensure_future(self.ws.receive())
        done, _ = await asyncio.wait({receive, self._stop}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if receive not in done:
            receive.cancel()
            if self._stop in done:
                raise ServerStopping()
            raise late or ServiceError("idle_timeout", f"no message for {idle:.0f} s")
        message = receive.result()
        if message["type"] == "websocket.disconnect":
            self.close_code = message.get("code")
            return None
        text = message.get("text")
        if text is not None and len(text) > MAX_TEXT_BYTES:
            raise ServiceError("frame_too_large", f"text frames are limited to {MAX_TEXT_BYTES} bytes", 413,
                               CloseCode.FRAME_TOO_LARGE)
        return message

    def check_limits(self) -> None:
        if self.conn.overflowed:
            raise SlowConsumer()
        if self.session is not None:
            self.session.check_limits()


async def admit_socket(ws: WebSocket, calls: LiveCalls) -> Seat | None:
    """Admit a call's socket before accepting it (`LiveCalls.admit`): its seat in this process's load, or None
    when the upgrade was answered 503 `at_capacity` (this process is full and another replica has room: the
    front proxy tries the next one, `proxy_next_upstream http_503`). Only a server that can answer an upgrade
    with an HTTP response sends a call on; otherwise a call beyond capacity is recorded only here."""
    can_deny = "websocket.http.response" in ws.scope.get("extensions", {})
    _, seat = await calls.admit(can_redirect=can_deny)
    if seat is not None:
        return seat
    log.info("at capacity (%s live calls): the call's upgrade is answered 503 for another replica",
             calls.load.capacity)
    await ws.send_denial_response(JSONResponse(
        {"code": "at_capacity", "message": f"this server is decoding its capacity of live calls "
         f"({calls.load.capacity}) and another has room: connect again (the front proxy does so at once)"},
        status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)}))
    return None


async def run_socket_call(ws: WebSocket, call_id: str, calls: LiveCalls, tokens: TokenRegistry,
                          limits: SocketLimits, source: AudioSource[WireFrame],
                          tickets: TicketBook | None = None) -> None:
    """Admit (or send on to another replica), accept, stream the call from `source` (a new one per socket), and
    turn every way a call can end (the source's end, a disconnect, an error) into a clean close."""
    seat = await admit_socket(ws, calls)
    if seat is None:
        return
    try:
        await ws.accept()
    except BaseException:
        seat.release()
        raise
    run = SocketCall(ws, call_id, calls, tokens, limits, tickets, seat)
    try:
        if (problem := id_problem(call_id, "call")) is not None:
            raise bad_call_id(problem)
        ending = await stream_source(run, source)
        if run.session is None:
            await run.conn.emit(EndEvent(call_id=call_id))
        elif ending == "lost":
            await run.session.drop()  # the line went dead: a reconnect with the call id continues the call
        else:
            await run.session.end()
        if ending == "stop":
            await run.conn.flush_and_close(CloseCode.NORMAL)
    except ServiceError as e:
        if run.session is not None:
            await run.session.fail(e)
        else:
            ERRORS.labels(e.code).inc()
            await run.conn.emit(ErrorEvent(code=e.code, message=e.message))
        await run.conn.flush_and_close(e.close_code, e.code)
    except SlowConsumer:
        log.warning("call %s: client stopped reading events; closing", call_id)
        if run.session is not None:
            await run.session.drop()
        await run.conn.flush_and_close(CloseCode.SLOW_CONSUMER, "slow_consumer")
    except ServerStopping:
        # What was said is still transcribed and sent, then the client is told to reconnect elsewhere, where the
        # call continues.
        if run.session is not None:
            await run.session.drop(tell=True)
        else:
            await run.conn.emit(ErrorEvent(code="shutting_down", message="this server is shutting down: connect "
                                           "again (to another replica)"))
        await run.conn.flush_and_close(CloseCode.GOING_AWAY, "server shutting down")
    except WebSocketDisconnect:
        if run.session is not None:
            await run.session.drop()
    except Exception:
        log.exception("call %s failed", call_id)
        await run.conn.emit(ErrorEvent(code="internal", message="internal error; the call was closed"))
        await run.conn.flush_and_close(CloseCode.INTERNAL, "internal")
    finally:
        run.close()
        if run.session is not None:
            run.session.close()
        await run.conn.flush_and_close(CloseCode.GOING_AWAY)


def _frame(message: MutableMapping[str, Any]) -> WireFrame:
    """A received websocket message's payload (ASGI sets exactly one of `bytes` and `text`)."""
    data = message.get("bytes")
    return data if data is not None else message.get("text") or ""


#: Close codes a client ends a call with by closing the socket (normal closure, or a close frame without a code):
#: FreeSWITCH's `uuid_audio_stream stop` ends a call so. Any other way a connection ends (1001 going away, 1006 no
#: close frame: a dead line, a restarting proxy) leaves the call open for a reconnect.
CLOSES_THAT_END = (1000, 1005)


async def stream_source(run: SocketCall, source: AudioSource[WireFrame]) -> Literal["stop", "closed", "lost"]:
    """One path for every socket's audio, whatever its wire format: the source turns each message into records
    (start, audio, end) and this feeds them to the call. Returns how the audio ended: `stop` (the source's end),
    `closed` (the client closed the socket normally: also the call's end) or `lost` (the connection went
    otherwise: the call may continue on a new connection).

    Who is streaming is checked before anything is read, unless the source's credentials come in its start
    (Twilio cannot send a header): then a socket without a valid start within `start_timeout_s` is closed.
    Only messages that mean something for the call (not Twilio's `connected` or `mark`) keep a socket open
    past the idle timeout."""
    limits = run.limits
    if not source.token_in_start:
        run.authorize()
    session: CallSession | None = None
    start_by = time.monotonic() + limits.start_timeout_s if source.start_deadline else math.inf
    no_start = ServiceError("start_timeout", f"no valid start message within {limits.start_timeout_s:.0f} s")
    active_until = time.monotonic() + limits.idle_timeout_s
    while True:
        if session is None and start_by <= active_until:
            message = await run.receive(start_by, no_start)
        else:
            message = await run.receive(active_until)
        if message is None:
            return "closed" if run.close_code in CLOSES_THAT_END else "lost"
        records = source.read(_frame(message))
        for record in records:
            if isinstance(record, CallStart):
                if source.token_in_start:
                    run.authorize(record.token)
                session = await run.begin(record.start)
            elif isinstance(record, CallEnd):
                return "stop"
            elif session is not None:
                await session.feed(record)
                run.check_limits()
        if records:
            active_until = time.monotonic() + limits.idle_timeout_s


async def until_disconnect(ws: WebSocket) -> None:
    """Read and discard what the client of a read-only stream sends until it goes away (run as a task beside
    the sending loop, which `next_unless_gone` stops once this is done)."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return


T = TypeVar("T")


class Waited(Enum):
    """Why `next_unless_gone` has no item: the client went, or the wait ran out."""

    GONE = "gone"
    TIMEOUT = "timeout"


async def next_unless_gone(get: Awaitable[T], gone: asyncio.Task[None],
                           timeout: float | None = None) -> T | Waited:
    """The next item `get` gives a read-only stream's sending loop, unless the client went first (`gone`, an
    `until_disconnect` task) or `timeout` seconds passed; the pending get is cancelled then, never left behind."""
    pending = asyncio.ensure_future(get)
    done, _ = await asyncio.wait({pending, gone}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if gone in done or not done:
        pending.cancel()
        return Waited.GONE if gone in done else Waited.TIMEOUT
    return pending.result()


@dataclass
class Watchers:
    """Event streams held open per token, against `max_per_token`."""

    max_per_token: int
    wait_s: float
    by_owner: dict[str, int] = field(default_factory=dict)

    def take(self, owner: str) -> None:
        if self.by_owner.get(owner, 0) >= self.max_per_token:
            raise ServiceError("too_many_watchers", "this token already holds its maximum number of event streams",
                               429, CloseCode.TOO_MANY_CALLS)
        self.by_owner[owner] = self.by_owner.get(owner, 0) + 1

    def release(self, owner: str) -> None:
        left = self.by_owner.get(owner, 1) - 1
        if left > 0:
            self.by_owner[owner] = left
        else:
            self.by_owner.pop(owner, None)


async def stream_events(ws: WebSocket, call_id: str, hub: EventBus, tokens: TokenRegistry,
                        watchers: Watchers, tickets: TicketBook | None = None) -> None:
    """Send every event of the call (history first, then live) until it ends, to an agent or supervisor. A call
    that has not started is waited for, `watchers.wait_s` at most."""
    await ws.accept()
    try:
        if (problem := id_problem(call_id, "call")) is not None:
            raise bad_call_id(problem)
        principal = authenticate(tokens, ws.headers, ws.query_params, ("agent", "supervisor"), None, tickets,
                                 call_id)
        watchers.take(principal.name)
    except ServiceError as e:
        ERRORS.labels(e.code).inc()
        await ws.send_text(dump(ErrorEvent(code=e.code, message=e.message)))
        await ws.close(code=e.close_code)
        return
    sub = hub.subscribe(call_id, principal.agent_id if principal.role == "agent" else None)
    gone = asyncio.create_task(until_disconnect(ws))
    code = CloseCode.NORMAL
    give_up = time.monotonic() + watchers.wait_s
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
            wait = None if sub.started else max(0.0, give_up - time.monotonic())
            text = await next_unless_gone(sub.queue.get(), gone, wait)
            if text is Waited.GONE:
                return
            if text is Waited.TIMEOUT:
                await ws.send_text(dump(ErrorEvent(code="call_not_started", message=f"call {call_id} did not "
                                                   f"start within {watchers.wait_s:.0f} s")))
                code = CloseCode.NOT_STARTED
                return
            if text is None:
                if sub.forbidden:
                    continue  # says so at the top of the loop
                return
            await ws.send_text(text)
    except (WebSocketDisconnect, RuntimeError, OSError):
        return
    finally:
        hub.unsubscribe(sub)
        watchers.release(principal.name)
        gone.cancel()
        if ws.client_state == WebSocketState.CONNECTED:
            with contextlib.suppress(RuntimeError, OSError, TimeoutError):
                await asyncio.wait_for(ws.close(code=code), timeout=5)
