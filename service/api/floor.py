"""The supervisors' live floor (docs/floor.md): `GET /v1/live/calls` (every call streaming on any replica, the
riskiest first, and the open alerts), the websocket `/v1/live/events` (a snapshot, then every change), and
`POST /v1/live/alerts/{alert_id}/ack`. Supervisors and admins only: an agent sees their own calls in the console,
a phone switch's ingest token none of the floor."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, WebSocket
from pydantic import BaseModel, Field
from starlette.websockets import WebSocketDisconnect, WebSocketState

from service.api.deps import State, StoreDep, Supervisor
from service.auth import authenticate
from service.errors import ServiceError
from service.floor import LIVE_TICKET_SCOPE, Floor
from service.live.sockets import Waited, next_unless_gone, until_disconnect
from service.metrics import ERRORS
from service.protocol import CloseCode, ErrorEvent, dump
from service.store import audit

router = APIRouter(tags=["floor"])
log = logging.getLogger(__name__)


def get_floor(state: State) -> Floor:
    return state.floor


FloorDep = Annotated[Floor, Depends(get_floor)]


class ChecklistEntryModel(BaseModel):
    topic: str
    name: str
    state: Literal["not_asked", "asked", "clear", "vague"]
    label: str | None


class TileChecklist(BaseModel):
    items: list[ChecklistEntryModel]
    coverage: float


class VagueCounts(BaseModel):
    omission: int
    unclear: int
    evasive: int


class TileRiskModel(BaseModel):
    score: float = Field(..., description="the report's risk score, 0-100, from the answers so far")
    tier: Literal["low", "medium", "high"]


class LastPromptModel(BaseModel):
    text: str
    topic_name: str
    label: str


class TileModel(BaseModel):
    """One live call on the floor (docs/floor.md)."""

    call_id: str
    agent_id: str | None
    customer: str | None = Field(..., description="the customer, masked as the console shows them (钱**)")
    loan: str | None = Field(..., description="the loan, masked: the loan id's last four, the role, the amount")
    started_at: str = Field(..., description="wall clock, ISO 8601 UTC")
    duration_s: float
    state: Literal["live", "ended", "record_only"]
    checklist: TileChecklist
    vague: VagueCounts = Field(..., description="vague answers so far by label (the verdict that stands per "
                               "question and topic)")
    risk: TileRiskModel | None
    last_prompt: LastPromptModel | None
    alerts: list[str] = Field(..., description="ids of the call's open alerts")
    seq: int = Field(..., description="counts the tile's changes")
    updated_at: str


class AlertModel(BaseModel):
    """An alert raised on a live call by a rule of configs/alerts.yaml."""

    alert_id: str
    call_id: str
    rule: str
    title: str
    topic: str | None
    label: str | None
    at: str
    acknowledged_by: str | None
    acknowledged_at: str | None


class FloorView(BaseModel):
    calls: list[TileModel]
    alerts: list[AlertModel] = Field(..., description="the alerts not yet acknowledged, oldest first")


@router.get("/v1/live/calls")
async def live_calls(principal: Supervisor, live: FloorDep) -> FloorView:
    """Every call streaming on any replica (and those ended in the last `floor.keep_ended_s`), the riskiest
    first, with the open alerts."""
    return FloorView.model_validate(live.board.snapshot(time.time()))


AlertIdPath = Annotated[str, Path(max_length=400, pattern=r"^[A-Za-z0-9._:*-]+$")]


@router.post("/v1/live/alerts/{alert_id}/ack")
async def acknowledge_alert(alert_id: AlertIdPath, principal: Supervisor, live: FloorDep,
                            store: StoreDep) -> AlertModel:
    """Acknowledge an alert: audited (`alert_ack`), then taken down on every replica's wallboards. An alert
    acknowledged already is answered as it stands (who acknowledged it first, and when); 404 for an unknown id."""
    alert = live.board.alerts.get(alert_id)
    if alert is None:
        raise ServiceError("alert_not_found", f"no alert {alert_id} on the floor (acknowledged long ago, or its "
                           "call ended a while since)", 404)
    if alert.open:
        # Audited before it takes effect: an acknowledgement the audit log does not hold never happened.
        await asyncio.to_thread(audit.append, store, "alert_ack", principal.name, alert.call_id, {
            "alert_id": alert.alert_id, "rule": alert.rule, "topic": alert.topic, "label": alert.label,
            "raised_at": alert.at})
    done = live.acknowledge(alert_id, principal.name)
    if done is None:  # the call left the floor meanwhile
        raise ServiceError("alert_not_found", f"no alert {alert_id} on the floor", 404)
    return AlertModel.model_validate(done[0].to_json())


def _stamped(text: str) -> str:
    """A floor message with the server's wall clock at sending (`sent_at`, ms since the epoch): a page measures
    its lag against it."""
    return f'{text[:-1]}, "sent_at": {int(time.time() * 1000)}}}'


@router.websocket("/v1/live/events")
async def live_events(ws: WebSocket, state: State) -> None:
    """The floor as it changes: `snapshot` ({calls, alerts}, as `GET /v1/live/calls`), then `call_started`,
    `tile`, `alert`, `alert_ack` and `call_ended` messages, each with `sent_at` and the call's tile `seq`.
    Supervisors and admins, by header or by a ticket of `POST /v1/tickets {"scope": "live"}`. Closes with 4401
    (no valid token or ticket), 4403 (another role), 4408 (the page stopped reading), 1001 (the server stops)."""
    await ws.accept()
    try:
        principal = authenticate(state.tokens, ws.headers, ws.query_params, ("supervisor",), None, state.tickets,
                                 LIVE_TICKET_SCOPE)
        state.watchers.take(principal.name)
    except ServiceError as e:
        ERRORS.labels(e.code).inc()
        await ws.send_text(dump(ErrorEvent(code=e.code, message=e.message)))
        await ws.close(code=e.close_code)
        return
    board = state.floor.board
    sub = board.subscribe()  # no await before the snapshot: nothing falls between the two
    first: dict[str, Any] = {"type": "snapshot", **board.snapshot(time.time())}
    gone = asyncio.create_task(until_disconnect(ws))
    code = CloseCode.NORMAL
    try:
        await ws.send_text(_stamped(json.dumps(first, ensure_ascii=False)))
        while True:
            if sub.overflowed:
                log.warning("a wallboard stopped reading; dropping it")
                code = CloseCode.SLOW_CONSUMER
                return
            text = await next_unless_gone(sub.queue.get(), gone)
            if isinstance(text, Waited):  # gone (no timeout here)
                return
            if text is None:
                code = CloseCode.GOING_AWAY
                return
            await ws.send_text(_stamped(text))
    except (WebSocketDisconnect, RuntimeError, OSError):
        return
    finally:
        board.unsubscribe(sub)
        state.watchers.release(principal.name)
        gone.cancel()
        if ws.client_state == WebSocketState.CONNECTED:
            with contextlib.suppress(RuntimeError, OSError, TimeoutError):
                await asyncio.wait_for(ws.close(code=code), timeout=5)


