"""`/v1/agents`: coaching scorecards per agent and period (docs/coaching.md). Supervisors see every agent; an
agent sees their own card only. Every read is audited (`agent_read`)."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from nlu.script import ScriptError
from service.api.deps import AgentIdPath, SettingsDep, StoreDep, Supervisor, Viewer
from service.bankdays import bank_zone
from service.coaching import cards as coaching
from service.coaching.figures import CoachingRules, Period, TopicFigures, load_rules
from service.errors import ServiceError, forbidden
from service.settings import Settings
from service.store import audit

router = APIRouter(tags=["agents"])

PeriodQuery = Annotated[Period, Query(description="day, week (from Monday) or month of the bank's calendar")]
DayQuery = Annotated[date | None, Query(alias="date", description="a day in the period (default today, in the "
                                        "bank's time zone)")]
FormatQuery = Annotated[Literal["json", "csv"], Query(description="json, or csv for a spreadsheet")]


#: A scorecard's figures by name (service/coaching/figures.py `FIGURES`): counts, ratios, seconds; None where
#: the period has nothing to measure.
FigureValues = dict[str, float | int | None]
#: `text/csv` with `format=csv`.
_CSV: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}}, "description": "JSON, or with format=csv a spreadsheet"}}


class PromptVerdicts(BaseModel):
    """An agent's verdicts on their calls' prompts given in the period (issue #31): asked again (已追问), disputed
    (提示有误), and of those disputed, upheld and overturned by a reviewer so far."""

    asked_again: int
    disputed: int
    upheld: int
    overturned: int


class AgentRow(BaseModel):
    agent_id: str
    figures: FigureValues
    #: Each figure's difference from the team's median.
    vs_median: FigureValues
    url: str
    page: str
    prompt_verdicts: PromptVerdicts


class Scoreboard(BaseModel):
    period: Period
    start: date
    #: The period's last day.
    end: date
    sort: str
    order: Literal["asc", "desc"]
    team_median: FigureValues
    agents: list[AgentRow]


class TrendPeriod(BaseModel):
    period: Period
    start: date
    end: date
    figures: FigureValues
    team_median: FigureValues


class MomentLink(BaseModel):
    """A moment behind a figure, with the report page at its span."""

    call_id: str
    kind: str
    topic: str
    name: str
    start_s: float | None
    end_s: float | None
    label: str | None
    url: str


class FindingLink(BaseModel):
    rule: str
    topic: str
    reason: str
    points: float
    start_s: float | None
    end_s: float | None
    url: str


class ReviewItem(BaseModel):
    """A call of the coaching list: its weight and why."""

    call_id: str
    at: str
    points: float
    url: str
    findings: list[FindingLink]


class CardCall(BaseModel):
    call_id: str
    at: str
    duration_s: float
    coverage: float
    high_skipped: int
    prompts_shown: int
    prompts_followed: int
    vague_unresolved: int
    mismatches_standing: int
    url: str


class AgentCard(BaseModel):
    agent_id: str
    period: Period
    start: date
    end: date
    figures: FigureValues
    team_median: FigureValues
    vs_median: FigureValues
    trend: list[TrendPeriod]
    topics: list[TopicFigures]
    #: figure -> the moments behind it (the most recent first).
    moments: dict[str, list[MomentLink]]
    calls: list[CardCall]
    calls_total: int
    prompt_verdicts: PromptVerdicts
    review: list[ReviewItem]


def _rules(settings: Settings) -> CoachingRules:
    try:
        return load_rules(settings.coaching.rules_file)
    except ScriptError as e:
        raise ServiceError("coaching_rules", f"the coaching rules cannot be used: {e}", 503) from e


def _csv(text: str, name: str) -> Response:
    return Response(text, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})


@router.get("/v1/agents", response_model=Scoreboard, responses=_CSV)
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
    tz = bank_zone(settings.loanbook.timezone)
    w = coaching.window(period, day or coaching.today(tz), tz)
    board = await asyncio.to_thread(coaching.scoreboard, store, w, sort, order == "desc")
    await asyncio.to_thread(audit.append, store, "agent_read", principal.name, None,
                            {"agent_id": "*", "period": period, "start": board["start"], "format": format})
    if format == "csv":
        return _csv(coaching.scoreboard_csv(board), f"agents-{period}-{board['start']}")
    return board


@router.get("/v1/agents/{agent_id}", response_model=AgentCard, responses=_CSV)
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
    tz = bank_zone(settings.loanbook.timezone)
    w = coaching.window(period, day or coaching.today(tz), tz)
    rules = await asyncio.to_thread(_rules, settings)
    card = await asyncio.to_thread(coaching.agent_card, store, agent_id, w, rules)
    await asyncio.to_thread(audit.append, store, "agent_read", principal.name, None,
                            {"agent_id": agent_id, "period": period, "start": card["start"], "format": format})
    if format == "csv":
        return _csv(coaching.card_csv(card), f"agent-{agent_id}-{period}-{card['start']}")
    return card
