"""`/v1/demo`: the sample calls the console's demo mode replays through the live pipeline."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from service.api.deps import SettingsDep, State, Viewer
from service.errors import ServiceError
from service.live.sources.demo import demo_calls

router = APIRouter(tags=["console"])


class DemoRequest(BaseModel):
    name: str | None = Field(None, description="which sample call (GET /v1/demo/calls); default the first")
    speed: float = Field(1.0, ge=0.5, le=4.0, description="replay pace; 1 is real time")


class DemoInfo(BaseModel):
    name: str
    duration_s: float


class DemoStarted(BaseModel):
    call_id: str
    name: str
    duration_s: float


@router.get("/v1/demo/calls")
async def list_demos(settings: SettingsDep, _: Viewer) -> list[DemoInfo]:
    """The sample calls the demo mode can replay."""
    return [DemoInfo(name=d.name, duration_s=d.duration_s) for d in demo_calls(settings.nlu.demo_dir).values()]


@router.post("/v1/demo/calls", status_code=202)
async def new_demo(state: State, principal: Viewer, body: DemoRequest | None = None) -> DemoStarted:
    """Replay a sample call through the live pipeline as a new call; watch it on `/v1/calls/{call_id}/events`."""
    body = body or DemoRequest()
    demos = demo_calls(state.settings.nlu.demo_dir)
    if not demos:
        raise ServiceError("not_found", "no demo calls are installed", 404)
    name = body.name or next(iter(demos))
    if name not in demos:
        raise ServiceError("not_found", f"unknown demo call {name!r}; available: {', '.join(demos)}", 404)
    # The demo call is assigned to the agent who started it, so that they may watch it.
    call_id = await state.demos.start(demos[name], body.speed, principal.name, principal.agent_id)
    return DemoStarted(call_id=call_id, name=name, duration_s=demos[name].duration_s)
