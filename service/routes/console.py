"""The agent console (`/console`, static HTML and JavaScript, no build step) and its demo mode."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from service.auth import Viewer
from service.calls import CallRefused
from service.demo import demo_calls, start_demo
from service.settings import Settings

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
router = APIRouter()


@router.get("/console", include_in_schema=False)
async def console() -> FileResponse:
    """The agent's view of one live call: `/console?call=ID` watches a call, `/console?demo=1` replays a
    sample call."""
    return FileResponse(STATIC_DIR / "console.html", media_type="text/html; charset=utf-8")


@router.get("/calls", include_in_schema=False)
async def calls_page() -> FileResponse:
    """Scored calls: filters, risk tiers, links to each report."""
    return FileResponse(STATIC_DIR / "calls.html", media_type="text/html; charset=utf-8")


@router.get("/calls/{call_id}", include_in_schema=False)
async def report_page(call_id: str) -> FileResponse:
    """One call's report: timeline, checklist, risk gauge and contributions, actions, playable spans."""
    return FileResponse(STATIC_DIR / "report.html", media_type="text/html; charset=utf-8")


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


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


@router.get("/v1/demo/calls", tags=["console"])
async def list_demos(request: Request, _: Viewer) -> list[DemoInfo]:
    """The sample calls the demo mode can replay."""
    return [DemoInfo(name=d.name, duration_s=d.duration_s)
            for d in demo_calls(_settings(request).nlu.demo_dir).values()]


@router.post("/v1/demo/calls", status_code=202, tags=["console"])
async def new_demo(request: Request, principal: Viewer, body: DemoRequest | None = None) -> DemoStarted:
    """Replay a sample call through the live pipeline as a new call; watch it on `/v1/calls/{call_id}/events`."""
    body = body or DemoRequest()
    demos = demo_calls(_settings(request).nlu.demo_dir)
    if not demos:
        raise HTTPException(404, "no demo calls are installed")
    name = body.name or next(iter(demos))
    if name not in demos:
        raise HTTPException(404, f"unknown demo call {name!r}; available: {', '.join(demos)}")
    try:
        # The demo call is assigned to the agent who started it, so that they may watch it.
        call_id = await start_demo(request.app, demos[name], body.speed, principal.agent_id)
    except CallRefused as e:
        raise HTTPException(503, e.message) from e
    return DemoStarted(call_id=call_id, name=name, duration_s=demos[name].duration_s)
