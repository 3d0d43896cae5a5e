"""The HTML pages (static HTML and JavaScript, no build step): the agent console `/console`, the scored
calls `/calls`, `/calls/{call_id}`, the coaching scorecards `/agents`, `/agents/{agent_id}`, and the loan book's
customers `/customers`, `/customers/{customer_id}` and follow-up work queue `/followups`. They call the JSON API
with the token they were opened with."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
router = APIRouter(include_in_schema=False)


def _page(name: str) -> FileResponse:
    return FileResponse(STATIC_DIR / name, media_type="text/html; charset=utf-8")


@router.get("/console", include_in_schema=False)
async def console() -> FileResponse:
    """The agent's view of one live call: `/console?call=ID` watches a call, `/console?demo=1` replays a
    sample call."""
    return _page("console.html")


@router.get("/calls", include_in_schema=False)
async def calls_page() -> FileResponse:
    """Scored calls: filters, risk tiers, links to each report."""
    return _page("calls.html")


@router.get("/calls/{call_id}", include_in_schema=False)
async def report_page(call_id: str) -> FileResponse:
    """One call's report: timeline, checklist, risk gauge and contributions, actions, playable spans."""
    return _page("report.html")


@router.get("/agents", include_in_schema=False)
async def agents_page() -> FileResponse:
    """Coaching scorecards: every agent against the team's median (supervisors)."""
    return _page("agents.html")


@router.get("/agents/{agent_id}", include_in_schema=False)
async def agent_page(agent_id: str) -> FileResponse:
    """One agent's scorecard: trends, coverage per topic, prompts followed, the moments to listen to."""
    return _page("agents.html")


@router.get("/customers", include_in_schema=False)
async def customers_page() -> FileResponse:
    """The loan book: customers by risk tier with their open follow-ups (an agent: their own customers)."""
    return _page("customers.html")


@router.get("/customers/{customer_id}", include_in_schema=False)
async def customer_page(customer_id: str) -> FileResponse:
    """One customer: tier over time, topics never answered clearly, contradicted figures, every follow-up call,
    follow-ups, messages and masked contact details."""
    return _page("customers.html")


@router.get("/followups", include_in_schema=False)
async def followups_page() -> FileResponse:
    """The follow-up work queue: filters, overdue items, assignment (supervisors) and outcomes."""
    return _page("followups.html")
