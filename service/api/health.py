"""`/healthz` (liveness: the process is up and its speech model loaded) and `/readyz` (readiness: also its
database, its event bus, and not stopping; with how full it is of live calls) for load balancers and
orchestrators."""

from __future__ import annotations

from pathlib import PurePath
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.requests import HTTPConnection

from service.api.deps import State
from service.auth import bearer_token
from service.state import AppState

router = APIRouter(tags=["ops"])


class HealthDetail(BaseModel):
    """The full reasons, for an admin token only."""

    asr: str | None
    database: str | None
    classifier: str | None
    asr_model_path: str | None
    database_url: str | None


class LiveLoadInfo(BaseModel):
    """This replica's live calls against its capacity. A full replica is still ready: it serves HTTP, and sends
    new live calls on to a replica with room (or records them)."""

    calls: int = Field(description="calls decoded live now (demo replays included)")
    record_only: int = Field(description="calls recorded only now (beyond capacity: scored after the call)")
    capacity: int | None = Field(description="calls decoded at once (live.capacity); null: no limit")
    full: bool = Field(description="new calls are not decoded here")


class Health(BaseModel):
    """What both probes answer (200 or 503). `warning` only when degraded; `detail` only for an admin token."""

    status: Literal["ok", "degraded"]
    asr_model: str
    database: str | None
    assessor_version: str
    error: str | None
    warning: str | None = None
    detail: HealthDetail | None = None
    #: /readyz only.
    live: LiveLoadInfo | None = None


#: The body is the same with either status; 503 says the probe failed.
_PROBE: dict[str, Any] = {"response_model": Health,
                          "responses": {503: {"model": Health, "description": "not live / not ready"}}}


def _body(state: AppState, conn: HTTPConnection, problems: list[str], ok: bool,
          live: LiveLoadInfo | None = None, warnings: list[str] | None = None) -> JSONResponse:
    """The answer both probes share. Anyone may ask, so it names no file or database location; an admin token
    also gets `detail`, the full reasons. `warnings`: what is degraded without taking the replica out of
    service."""
    warnings = list(warnings or ())
    if state.classifier_error is not None:
        # Serving: answers are assessed by the rules alone.
        warnings.insert(0, "the learned answer classifier cannot be loaded: answers are assessed by the rules alone")
    model = PurePath(state.settings.asr.model).name
    body = Health(status="ok" if ok and not warnings else "degraded", asr_model=model,
                  database=state.store.engine.dialect.name if state.store is not None else None,
                  assessor_version=state.assessor.version, error="; ".join(problems) or None)
    if live is not None:
        body.live = live
    if warnings:
        body.warning = "; ".join(warnings)
    caller = state.tokens.authenticate(bearer_token(conn.headers))
    if caller is not None and caller.role == "admin":
        body.detail = HealthDetail(asr=state.asr_error, database=state.store_error,
                                   classifier=state.classifier_error, asr_model_path=state.transcriber.model_path,
                                   database_url=state.store.safe_url if state.store is not None else None)
    # Set fields only: `warning` and `detail` stay absent unless set above, as clients have always seen them.
    return JSONResponse(body.model_dump(exclude_unset=True), status_code=200 if ok else 503)


def _model_problems(state: AppState) -> list[str]:
    model = PurePath(state.settings.asr.model).name
    return [f"speech model {model} is not available"] if state.asr_error else []


@router.get("/healthz", **_PROBE)
async def healthz(state: State, conn: HTTPConnection) -> JSONResponse:
    """Liveness: 200 while the process runs with its speech model loaded (a missing database does not make it
    unhealthy: live calls go on without one), 503 otherwise; `degraded` with a `warning` when answers are assessed
    by the rules alone."""
    problems = _model_problems(state)
    return _body(state, conn, problems, not problems)


@router.get("/readyz", **_PROBE)
async def readyz(state: State, conn: HTTPConnection) -> JSONResponse:
    """Readiness: 200 when this replica should get traffic: model loaded, database reachable, the event bus
    (Redis, when configured) reachable, not stopping. `live` says how full it is of live calls (a full replica is
    still ready: it sends new calls on, or records them). The supervisors' floor stream failing makes it
    `degraded` with a `warning`, still ready: calls and prompts go on, only wallboards of other replicas miss
    this one's calls."""
    problems = _model_problems(state)
    if state.store_error:
        problems.append("the database is not available")
    bus = await state.hub.check()
    if bus is not None:
        problems.append(f"the event bus is not available ({bus})")
    if state.calls.stopping.is_set():
        problems.append("the server is stopping")
    load = state.calls.load
    live = LiveLoadInfo(calls=load.decoded, record_only=load.record_only, capacity=load.capacity, full=load.full)
    floor = await state.floor.bus.check()
    warnings = [f"the live floor's stream is not available ({floor}): other replicas' wallboards miss this "
                "replica's calls"] if floor is not None else []
    return _body(state, conn, problems, not problems, live, warnings)
