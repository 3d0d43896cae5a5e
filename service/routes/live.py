"""Live call audio: the native protocol (`/v1/calls/{call_id}/audio`) and Twilio Media Streams
(`/v1/calls/{call_id}/twilio`). Protocol handling only; the call itself is a `LiveCall`."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
from collections.abc import MutableMapping
from typing import Any

import numpy as np
from fastapi import APIRouter, WebSocket
from pydantic import BaseModel, ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from asr.streaming import MULAW_TO_FLOAT
from nlu.pii import public_loan_file
from service.auth import Principal, WsRefused, ws_principal
from service.calls import CallRefused, close_call, open_call
from service.live import LiveCall
from service.protocol import (
    MAX_FRAME_BYTES,
    CloseCode,
    EndEvent,
    ErrorEvent,
    ReadyEvent,
    StartMessage,
    dump,
)

log = logging.getLogger(__name__)
router = APIRouter(tags=["live"])

#: Events buffered for a client before it counts as not reading (a few minutes of a busy call).
OUTBOX_LIMIT = 1000


class ProtocolError(Exception):
    """The client broke the protocol; `code` goes into the error event, `close_code` closes the socket."""

    def __init__(self, code: str, message: str, close_code: int = CloseCode.BAD_REQUEST) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code


class SlowConsumer(Exception):
    """The client stopped reading and its outbox is full."""


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


async def _receive(ws: WebSocket) -> MutableMapping[str, Any] | None:
    """The next message, or None when the client disconnected. A client silent for too long is an error."""
    idle_s = ws.app.state.settings.live.idle_timeout_s
    try:
        message = await asyncio.wait_for(ws.receive(), timeout=idle_s)
    except TimeoutError as e:
        raise ProtocolError("idle_timeout", f"no message for {idle_s:.0f} s") from e
    if message["type"] == "websocket.disconnect":
        return None
    return message


def _parse_start(text: str | None) -> StartMessage:
    if text is None:
        raise ProtocolError("audio_before_start", "the first message must be a JSON text frame of type 'start'")
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as e:
        raise ProtocolError("bad_start", f"the start message is not valid JSON ({e.msg})") from e
    if not isinstance(payload, dict) or payload.get("type") != "start":
        raise ProtocolError("bad_start", "the first message must have type 'start'")
    try:
        return StartMessage.model_validate(payload)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise ProtocolError("bad_start", f"invalid start message: {problems}") from e


class _CallRun:
    """Shared lifecycle of a streamed call: registration, limits, finish, clean-up."""

    def __init__(self, ws: WebSocket, call_id: str) -> None:
        self.ws = ws
        self.call_id = call_id
        self.conn = Connection(ws)
        self.call: LiveCall | None = None
        self.registered = False
        self.principal: Principal | None = None

    def authorize(self, token: str | None = None) -> None:
        """The socket's token must be an ingest (or admin) token."""
        try:
            self.principal = ws_principal(self.ws, ("ingest",), token)
        except WsRefused as e:
            raise ProtocolError(e.error, e.message, e.code) from e

    def begin(self, start: StartMessage) -> LiveCall:
        if self.principal is None:
            self.authorize()
        owner = self.principal.name if self.principal else None
        try:
            self.call = open_call(self.ws.app, self.call_id, start, self.conn.emit, owner)
        except CallRefused as e:
            raise ProtocolError(e.code, e.message, e.close_code) from e
        self.registered = True
        return self.call

    async def ready(self) -> None:
        start = self.call.start if self.call is not None else None
        await self.call_emit(ReadyEvent(call_id=self.call_id, channels=start.channels if start else [],
                                        loan_file=public_loan_file(start.loan_file.model_dump(exclude_none=True))
                                        if start and start.loan_file else None))

    async def call_emit(self, event: BaseModel) -> None:
        """An event for the client and the call's subscribers (once the call is open), else the client only."""
        if self.call is not None:
            await self.call.send(event)
        else:
            await self.conn.emit(event)

    def check_limits(self) -> None:
        if self.conn.overflowed:
            raise SlowConsumer()
        max_s = self.ws.app.state.settings.live.max_call_s
        if self.call is not None and self.call.duration_s > max_s:
            raise ProtocolError("call_too_long", f"the call exceeded {max_s:.0f} s of audio", CloseCode.CALL_TOO_LONG)

    async def end(self, connected: bool) -> None:
        """Flush finals; tell a still-connected client the call ended."""
        if self.call is not None:
            await self.call.finish()
        await self.call_emit(EndEvent(call_id=self.call_id))
        if connected:
            await self.conn.flush_and_close(CloseCode.NORMAL)

    async def fail(self, error: ProtocolError) -> None:
        await self.call_emit(ErrorEvent(code=error.code, message=error.message))
        if self.call is not None:
            await self.call.finish()
        await self.conn.flush_and_close(error.close_code, error.code)

    async def cleanup(self) -> None:
        if self.call is not None:
            self.call.cancel()
        if self.registered:
            close_call(self.ws.app, self.call_id)
        await self.conn.flush_and_close(CloseCode.GOING_AWAY)


async def _run(ws: WebSocket, call_id: str, body: Any) -> None:
    """Accept, run `body(run)`, and turn every way a call can end into a clean close."""
    await ws.accept()
    run = _CallRun(ws, call_id)
    try:
        connected = await body(run)
        await run.end(connected)
    except ProtocolError as e:
        await run.fail(e)
    except SlowConsumer:
        log.warning("call %s: client stopped reading events; closing", call_id)
        await run.conn.flush_and_close(CloseCode.SLOW_CONSUMER, "slow_consumer")
    except WebSocketDisconnect:
        if run.call is not None:
            await run.call.finish()
    except Exception:
        log.exception("call %s failed", call_id)
        await run.conn.emit(ErrorEvent(code="internal", message="internal error; the call was closed"))
        await run.conn.flush_and_close(CloseCode.INTERNAL, "internal")
    finally:
        await run.cleanup()


@router.websocket("/v1/calls/{call_id}/audio")
async def call_audio(ws: WebSocket, call_id: str) -> None:
    """Native protocol: a `start` text frame, binary interleaved audio, `stop`. See docs/protocol.md."""

    async def body(run: _CallRun) -> bool:
        run.authorize()
        first = await _receive(ws)
        if first is None:
            return False
        start = _parse_start(first.get("text"))
        call = run.begin(start)
        await run.ready()
        frame = start.bytes_per_frame
        while True:
            message = await _receive(ws)
            if message is None:
                return False  # a plain disconnect is also an end
            data = message.get("bytes")
            if data is not None:
                if len(data) > MAX_FRAME_BYTES:
                    raise ProtocolError("frame_too_large", f"binary frames are limited to {MAX_FRAME_BYTES} bytes",
                                        CloseCode.FRAME_TOO_LARGE)
                if len(data) % frame:
                    raise ProtocolError("bad_frame", f"a binary frame must hold whole samples for every channel: "
                                        f"{len(data)} bytes is not a multiple of {frame}")
                await call.feed_interleaved(data)
                run.check_limits()
                continue
            text = message.get("text") or ""
            try:
                kind = json.loads(text).get("type")
            except (json.JSONDecodeError, AttributeError):
                kind = None
            if kind == "stop":
                return True
            raise ProtocolError("bad_message", "text frames after start must be {\"type\":\"stop\"}")

    await _run(ws, call_id, body)


#: Twilio's track names mapped to huifang's channel roles: inbound is the caller, outbound the agent side.
TWILIO_TRACKS = {"outbound": 0, "inbound": 1}


@router.websocket("/v1/calls/{call_id}/twilio")
async def call_twilio(ws: WebSocket, call_id: str) -> None:
    """Twilio Media Streams (`connected`/`start`/`media`/`stop`, base64 8 kHz u-law), tracks mapped to
    agent (outbound) and customer (inbound). Events are sent back on the same socket."""

    async def body(run: _CallRun) -> bool:
        call: LiveCall | None = None
        expected_ms = {0: 0.0, 1: 0.0}
        while True:
            message = await _receive(ws)
            if message is None:
                return False
            if message.get("text") is None:
                raise ProtocolError("bad_message", "Twilio Media Streams messages are JSON text frames")
            try:
                payload = json.loads(message["text"])
                event = payload["event"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ProtocolError("bad_message", "not a Twilio Media Streams message") from e
            if event == "connected":
                continue
            if event == "start":
                # Twilio cannot add headers or a query string to a stream URL; its <Parameter>s arrive here.
                params = (payload.get("start") or {}).get("customParameters") or {}
                run.authorize(params.get("token") if isinstance(params, dict) else None)
                call = run.begin(StartMessage(type="start", sample_rate_hz=8000, encoding="mulaw",
                                              channels=["agent", "customer"],
                                              agent_id=str(params["agent_id"])[:64]
                                              if isinstance(params, dict) and params.get("agent_id") else None))
                await run.ready()
                continue
            if event == "stop":
                return True
            if event != "media":
                continue  # mark, dtmf, ...: not audio
            if call is None:
                raise ProtocolError("audio_before_start", "media arrived before the start message")
            media = payload.get("media") or {}
            track = TWILIO_TRACKS.get(media.get("track", "inbound"))
            if track is None:
                continue
            try:
                raw = base64.b64decode(media.get("payload", ""), validate=True)
            except (binascii.Error, ValueError) as e:
                raise ProtocolError("bad_frame", "media payload is not base64") from e
            if len(raw) > MAX_FRAME_BYTES:
                raise ProtocolError("frame_too_large", "media payload too large", CloseCode.FRAME_TOO_LARGE)
            samples = MULAW_TO_FLOAT[np.frombuffer(raw, dtype=np.uint8)]
            # Twilio skips silence on a muted track; its timestamp says where this chunk belongs.
            gap_ms = float(media.get("timestamp", expected_ms[track])) - expected_ms[track]
            if gap_ms > 40:
                samples = np.concatenate([np.zeros(int(gap_ms * 8), dtype=np.float32), samples])
            expected_ms[track] += len(samples) / 8.0
            await call.feed_channel(track, samples)
            run.check_limits()

    await _run(ws, call_id, body)
