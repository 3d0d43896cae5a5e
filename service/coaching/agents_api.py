"""`/v1/agents`: coaching scorecards per agent and period (docs/coaching.md). Supervisors see every agent; an
agent sees their own card only. Every read is audited (`agent_read`)."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Query, Response

from nlu.script import ScriptError
from service.api.deps import AgentIdPath, SettingsDep, StoreDep, Supervisor, Viewer
from service.coaching import cards as coaching
from service.coaching.figures import CoachingRules, Period, load_rules
from service.errors import ServiceError, forbidden
from service.settings import Settings
from service.store import audit

router = APIRouter(tags=["agents"])

PeriodQuery = Annotated[Period, Query(description="day, week (from Monday) or month of the bank's calendar")]
DayQuery = Annotated[date | None, Query(alias="date", description="a day in the period (default today, in the "
                                        "bank's time zone)")]
FormatQuery = Annotated[Literal["json", "csv"], Query(description="json, or csv for a spreadsheet")]


def _zone(settings: Settings) -> ZoneInfo:
    try:
        return ZoneInfo(settings.loanbook.timezone)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ServiceError("bad_timezone", f"unknown time zone {settings.loanbook.timezone!r}", 503) from e


def _rules(settings: Settings) -> CoachingRules:
    try:
        return load_rules(settings.coaching.rules_file)
    except ScriptError as e:
        raise ServiceError("coaching_rules", f"the coaching rules cannot be used: {e}", 503) from e


def _csv(text: str, name: str) -> Response:
    return Response(text, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})


@router.get("/v1/agents", response_model=None)
async def list_agents(
    principal: Supervisor,
    store: StoreDep,
    settings: SettingsDep,
    period: PeriodQuery = "month",
    day: DayQuery = None,
    sort: Annotated[coaching.SortKey, Query(description="a figure, or agent_id")] = "agent_id",
    order: Annotated[Literal["asc", "desc"], Query()] = "asc",
    format: FormatQuery = "json",
) -> dict[str, Any] | Response:
    """Every agent with calls in the period (supervisors): calls, checklist coverage, high-sensitivity topics
    skipped, prompts shown and followed up, vague answers and loan-file mismatches left standing, talk ratio,
    silence after questions and call length, with the team's median and each agent's difference from it."""
    tz = _zone(settings)
    w = coaching.window(period, day or coaching.today(tz), tz)
    board = await asyncio.to_thread(coaching.scoreboard, store, w, sort, order == "desc")
    await asyncio.to_thread(audit.append, store, "agent_read", principal.name, None,
                            {"agent_id": "*", "period": period, "start": board["start"], "format": format})
    if format == "csv":
        return _csv(coaching.scoreboard_csv(board), f"agents-{period}-{board['start']}")
    return board


@router.get("/v1/agents/{agent_id}", response_model=None)
async def agent_card(
    agent_id: AgentIdPath,
    principal: Viewer,
    store: StoreDep,
    settings: SettingsDep,
    period: PeriodQuery = "month",
    day: DayQuery = None,
    format: FormatQuery = "json",
) -> dict[str, Any] | Response:
    """One agent's card (a supervisor, or that agent): the period's figures against the team's median, the trend
    over the last periods, coverage and prompts per topic, the calls and audio spans behind each figure, and the
    coaching list: the calls most worth reviewing and why (configs/coaching.yaml)."""
    if principal.role == "agent" and principal.agent_id != agent_id:
        raise forbidden("agents may read only their own scorecard")
    tz = _zone(settings)
    w = coaching.window(period, day or coaching.today(tz), tz)
    rules = await asyncio.to_thread(_rules, settings)
    card = await asyncio.to_thread(coaching.agent_card, store, agent_id, w, rules)
    await asyncio.to_thread(audit.append, store, "agent_read", principal.name, None,
                            {"agent_id": agent_id, "period": period, "start": card["start"], "format": format})
    if format == "csv":
        return _csv(coaching.card_csv(card), f"agent-{agent_id}-{period}-{card['start']}")
    return card
