"""Scorecards and coaching lists from the stored per-call rows (service/coaching/repository.py), for the routes of
`/v1/agents` and the `/agents` pages.

A period (day, week, month) is a span of the bank's calendar (`HUIFANG_LOANBOOK__TIMEZONE`), turned into naive
UTC bounds for the query. The all-agents scoreboard is one GROUP BY over typed columns; one agent's card also
reads that agent's rows for the period (per-topic coverage, the moments behind each figure, the coaching list).
Every figure is `service.coaching.figures.figures` of a sum, so the scoreboard, the card and the pure functions agree.
Beside the figures, each agent's verdicts on prompts in the period (`prompt_verdicts`: asked again, disputed, and
of those upheld and overturned by a reviewer), counted from `prompt_feedback` (issue #31).
Synchronous: the routes call these from a worker thread.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from service.bankdays import day_start_utc
from service.coaching.figures import (
    FIGURES,
    CallStats,
    CoachingRules,
    Figure,
    Figures,
    MomentKind,
    Period,
    Totals,
    figures,
    moments,
    per_topic,
    period_bounds,
    previous_periods,
    review_calls,
    team_median,
)
from service.coaching.repository import agent_calls, agent_totals, period_totals
from service.feedback.repository import FeedbackCounts, agent_feedback
from service.spreadsheet import csv_text
from service.store.store import Store

SortKey = Literal[Figure, "agent_id"]
#: The moments behind each figure a page links to (figures without one link to the period's calls).
MOMENTS_OF: dict[Figure, MomentKind] = {
    "high_skipped_per_call": "skipped", "prompts_followed_ratio": "prompt_ignored",
    "prompts_clarified_ratio": "prompt_ignored", "vague_unresolved_per_call": "unresolved",
    "mismatches_standing_per_call": "mismatch_standing", "question_silence_s": "silence"}
#: Most moments per figure, and calls, listed on one agent's card (the most recent).
MAX_LISTED = 200
TREND_PERIODS = 6


@dataclass(frozen=True, slots=True)
class Window:
    """A period of the bank's calendar: its days [start, end) and the naive-UTC bounds of the query."""

    period: Period
    start: date
    end: date
    start_utc: datetime
    end_utc: datetime
    tz: ZoneInfo


def window(period: Period, day: date, tz: ZoneInfo) -> Window:
    """The period of kind `period` that contains the bank's calendar day `day`."""
    start, end = period_bounds(period, day)
    return Window(period, start, end, day_start_utc(start, tz), day_start_utc(end, tz), tz)


def today(tz: ZoneInfo) -> date:
    return datetime.now(tz).date()


def _period_json(w: Window) -> dict[str, Any]:
    return {"period": w.period, "start": w.start.isoformat(), "end": (w.end - timedelta(days=1)).isoformat()}


def _sort_value(card: Figures, agent_id: str, key: SortKey) -> tuple[int, Any]:
    if key == "agent_id":
        return (0, agent_id)
    value = getattr(card, key)
    return (0, value) if value is not None else (1, 0)  # agents without the figure last, either order


def scoreboard(store: Store, w: Window, sort: SortKey = "agent_id", descending: bool = False) -> dict[str, Any]:
    """Every agent with calls in the period: their figures, the team's median and each figure's difference."""
    cards = {agent: figures(t) for agent, t in agent_totals(store, w.start_utc, w.end_utc).items()}
    median = team_median(cards.values())
    order = sorted(cards, key=lambda a: _sort_value(cards[a], a, sort))
    if descending:
        present = [a for a in order if _sort_value(cards[a], a, sort)[0] == 0][::-1]
        order = present + [a for a in order if a not in set(present)]
    verdicts = agent_feedback(store, w.start_utc, w.end_utc)
    return {**_period_json(w), "sort": sort, "order": "desc" if descending else "asc", "team_median": median,
            "agents": [{"agent_id": a, "figures": cards[a].as_dict(), "vs_median": _versus(cards[a], median),
                        "url": f"/v1/agents/{a}", "page": f"/agents/{a}",
                        "prompt_verdicts": asdict(verdicts.get(a, FeedbackCounts()))} for a in order]}


def _versus(card: Figures, median: dict[str, float | None]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name in FIGURES:
        value, mid = getattr(card, name), median[name]
        out[name] = round(value - mid, 4) if value is not None and mid is not None else None
    return out


def _listen_url(call_id: str, start_s: float | None, end_s: float | None) -> str:
    """The report page of a call, at a span (report.js plays `#t=START-END`)."""
    return f"/calls/{call_id}" + (f"#t={start_s:g}-{end_s:g}" if start_s is not None and end_s is not None else "")


def agent_card(store: Store, agent_id: str, w: Window, rules: CoachingRules,
               trend_periods: int = TREND_PERIODS) -> dict[str, Any]:
    """One agent's scorecard for the period: figures against the team's median, the trend over the last
    `trend_periods` periods, per-topic coverage and prompts, the moments behind each figure, and the coaching
    list (the calls most worth reviewing, with the reasons and spans from `rules`)."""
    calls = agent_calls(store, agent_id, w.start_utc, w.end_utc)
    periods = [window(w.period, start, w.tz) for start, _end in previous_periods(w.period, w.start, trend_periods)]
    sums = period_totals(store, [(p.start_utc, p.end_utc) for p in periods])  # the last is this period
    trend = []
    for p, by_agent in zip(periods, sums, strict=True):
        cards = {a: figures(t) for a, t in by_agent.items()}
        own = cards.get(agent_id) or figures(Totals())
        trend.append({**_period_json(p), "figures": own.as_dict(), "team_median": team_median(cards.values())})
    team = {a: figures(t) for a, t in sums[-1].items()}
    mine = team.get(agent_id) or figures(Totals())
    median = team_median(team.values())
    found: dict[MomentKind, list[dict[str, Any]]] = {}
    for call in reversed(calls):  # the most recent first
        for m in moments(call, rules.long_silence_s):
            listed = found.setdefault(m.kind, [])
            if len(listed) < MAX_LISTED:
                listed.append({**asdict(m), "url": _listen_url(m.call_id, m.start_s, m.end_s)})
    reviews = review_calls(calls, rules)
    return {
        "agent_id": agent_id, **_period_json(w), "figures": mine.as_dict(), "team_median": median,
        "vs_median": _versus(mine, median), "trend": trend,
        "topics": [asdict(t) for t in per_topic(calls)],
        "moments": {figure: found.get(kind, []) for figure, kind in MOMENTS_OF.items()},
        "calls": [_call_json(c) for c in calls[::-1][:MAX_LISTED]], "calls_total": len(calls),
        "prompt_verdicts": asdict(agent_feedback(store, w.start_utc, w.end_utc, agent_id).get(agent_id,
                                                                                              FeedbackCounts())),
        "review": [{"call_id": r.call_id, "at": r.at.isoformat(), "points": r.points, "url": f"/calls/{r.call_id}",
                    "findings": [{**asdict(f), "url": _listen_url(r.call_id, f.start_s, f.end_s)}
                                 for f in r.findings]} for r in reviews],
    }


def _call_json(c: CallStats) -> dict[str, Any]:
    return {"call_id": c.call_id, "at": c.at.isoformat(), "duration_s": c.duration_s, "coverage": c.coverage,
            "high_skipped": c.high_skipped, "prompts_shown": c.prompts_shown, "prompts_followed": c.prompts_followed,
            "vague_unresolved": c.vague_unresolved, "mismatches_standing": c.mismatches_standing,
            "url": f"/calls/{c.call_id}"}


def _csv(header: list[str], rows: list[list[Any]]) -> str:
    return csv_text(header, rows)  # formula-like cells neutralised (service/spreadsheet.py)


def scoreboard_csv(board: dict[str, Any]) -> str:
    """One row per agent: the period, the figures, and the team's median of each."""
    header = ["agent_id", "period", "start", "end", *FIGURES, *[f"team_median_{f}" for f in FIGURES]]
    rows = [[a["agent_id"], board["period"], board["start"], board["end"], *[a["figures"][f] for f in FIGURES],
             *[board["team_median"][f] for f in FIGURES]] for a in board["agents"]]
    return _csv(header, rows)


def card_csv(card: dict[str, Any]) -> str:
    """One row per period of the agent's trend (the last is the period asked for), with the team's median."""
    header = ["agent_id", "period", "start", "end", *FIGURES, *[f"team_median_{f}" for f in FIGURES]]
    rows = [[card["agent_id"], p["period"], p["start"], p["end"], *[p["figures"][f] for f in FIGURES],
             *[p["team_median"][f] for f in FIGURES]] for p in card["trend"]]
    return _csv(header, rows)
