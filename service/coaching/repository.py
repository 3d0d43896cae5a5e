"""Coaching's table (`agent_call_stats`): one compact row per scored call, written in the
report's transaction (`CoachingRows`, registered on the store) and removed with the call (ON DELETE CASCADE), so
re-scoring a call replaces its row.

The columns are `figures.CallStats`'s additive fields; a period's sums per agent are one GROUP BY over them
(`agent_totals`), and the per-topic details live in the small `detail` JSON, read only for one agent's calls.
`rebuild` fills the table for calls scored before migration 0005 (`huifang coaching rebuild`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from nlu.report import read_report
from service.coaching.figures import SUMMED, CallStats, QuestionGap, TopicStats, Totals, call_stats
from service.store import Store
from service.store.models import AgentCallStats, Call


def stats_of(call: Call, sensitivity: Mapping[str, str]) -> CallStats:
    """The coaching figures of a stored call; `sensitivity` is topic -> sensitivity of the call script scored
    with (`sensitivities`)."""
    return call_stats(read_report(call.report), sensitivity, call_id=call.call_id, agent_id=call.agent_id,
                      at=call.created_at)


#: The order of a topic's fields in `detail["t"]` (lists, not objects: a month is a million rows).
TOPIC_FIELDS = ("topic", "name", "sensitivity", "asked", "times_asked", "label", "mismatch_raised",
                "mismatch_standing", "challenged", "prompts_shown", "prompts_followed", "question_span",
                "answer_span")


def row_of(stats: CallStats) -> AgentCallStats:
    """The stored row of a call's figures: the additive fields as columns, topics and silences in `detail`
    (`{"t": [[TOPIC_FIELDS...], ...], "g": [[topic, end_s, silence_s], ...]}`)."""
    detail = {"t": [[_plain(getattr(t, name)) for name in TOPIC_FIELDS] for t in stats.topics],
              "g": [[g.topic, g.end_s, g.silence_s] for g in stats.gaps]}
    return AgentCallStats(call_id=stats.call_id, agent_id=stats.agent_id, at=stats.at,
                          **{name: getattr(stats, name) for name in SUMMED}, detail=detail)


def _plain(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    return list(value) if isinstance(value, tuple) else value


class CoachingRows:
    """Coaching's row of each stored report (`service.store.rows.ReportRows`), with the topics' sensitivities of
    the call script the service scores with (registered at start-up, service/bootstrap.py)."""

    def __init__(self, sensitivity: Mapping[str, str]) -> None:
        self.sensitivity = dict(sensitivity)

    def write(self, s: Session, call: Call, loan_file: Mapping[str, Any] | None) -> None:
        """Add the row of `call`, replacing the one of its earlier report (none for a demo call)."""
        old = s.get(AgentCallStats, call.call_id)
        if old is not None:
            s.delete(old)
            s.flush()
        if call.source == "demo":
            return  # the console's demo replay is nobody's call: it coaches nobody
        s.add(row_of(stats_of(call, self.sensitivity)))


def _span(value: Any) -> tuple[float, float] | None:
    return (float(value[0]), float(value[1])) if value else None


def stats_from_row(row: Any) -> CallStats:
    """A stored row (an `AgentCallStats` or a result row of its table) back as the call's figures."""
    detail = row.detail or {}
    topics = []
    for values in detail.get("t", []):
        t = dict(zip(TOPIC_FIELDS, values, strict=True))
        topics.append(TopicStats(
            topic=t["topic"], name=t["name"], sensitivity=t["sensitivity"], asked=bool(t["asked"]),
            times_asked=t["times_asked"], label=t["label"], mismatch_raised=bool(t["mismatch_raised"]),
            mismatch_standing=bool(t["mismatch_standing"]), challenged=bool(t["challenged"]),
            prompts_shown=t["prompts_shown"], prompts_followed=t["prompts_followed"],
            question_span=_span(t["question_span"]), answer_span=_span(t["answer_span"])))
    gaps = tuple(QuestionGap(str(g[0]), float(g[1]), float(g[2])) for g in detail.get("g", []))
    return CallStats(call_id=row.call_id, agent_id=row.agent_id, at=row.at,
                     **{name: getattr(row, name) for name in SUMMED}, topics=tuple(topics), gaps=gaps)


def agent_totals(store: Store, start: datetime, end: datetime, agent_id: str | None = None) -> dict[str, Totals]:
    """Per agent, the sums of their calls in [start, end) (naive UTC). Calls without an agent are left out."""
    return period_totals(store, [(start, end)], agent_id)[0]


def period_totals(store: Store, bounds: Sequence[tuple[datetime, datetime]],
                  agent_id: str | None = None) -> list[dict[str, Totals]]:
    """For consecutive periods `bounds` (oldest first, each [start, end) in naive UTC), per agent, the sums of
    their calls: one GROUP BY over the typed columns in one pass over the whole span."""
    t = AgentCallStats.__table__.c
    # The period of a row: the last whose start it is at or after (a CASE, so any database can do it).
    period = case(*[(t.at >= start, i) for i, (start, _end) in reversed(list(enumerate(bounds)))], else_=-1)
    rows = (select(t.agent_id, period.label("period"), *[t[name] for name in SUMMED])
            .where(t.at >= bounds[0][0], t.at < bounds[-1][1], t.agent_id.is_not(None)))
    if agent_id is not None:
        rows = rows.where(t.agent_id == agent_id)
    inner = rows.subquery()
    query = (select(inner.c.agent_id, inner.c.period, func.count(), *[func.sum(inner.c[name]) for name in SUMMED])
             .group_by(inner.c.agent_id, inner.c.period))
    ints = {name for name in SUMMED if isinstance(getattr(Totals(), name), int)}
    out: list[dict[str, Totals]] = [{} for _ in bounds]
    with store.session() as s:
        for agent, index, count, *sums in s.execute(query):
            values: dict[str, Any] = {name: (int(v or 0) if name in ints else round(float(v or 0.0), 6))
                                      for name, v in zip(SUMMED, sums, strict=True)}
            out[int(index)][str(agent)] = Totals(calls=int(count), **values)
    return out


def agent_calls(store: Store, agent_id: str, start: datetime, end: datetime) -> list[CallStats]:
    """One agent's calls in [start, end), oldest first, with their per-topic details."""
    t = AgentCallStats.__table__.c
    with store.session() as s:
        rows = s.execute(select(AgentCallStats.__table__).where(t.agent_id == agent_id, t.at >= start, t.at < end)
                         .order_by(t.at, t.call_id))
        return [stats_from_row(r) for r in rows]


def rebuild(store: Store, sensitivity: Mapping[str, str], everything: bool = False, batch: int = 200) -> int:
    """Write the coaching rows of calls that have none (with `everything`, of every call: after editing the call
    script's sensitivities). Returns how many were written. Batches of calls, each batch one transaction."""
    written, after = 0, ""
    while True:
        with store.session() as s, s.begin():
            query = select(Call).where(Call.call_id > after).order_by(Call.call_id).limit(batch)
            if not everything:
                query = query.where(~select(AgentCallStats.call_id)
                                    .where(AgentCallStats.call_id == Call.call_id).exists())
            calls = list(s.scalars(query))
            if not calls:
                return written
            for call in calls:
                if everything:
                    old = s.get(AgentCallStats, call.call_id)
                    if old is not None:
                        s.delete(old)
                        s.flush()
                s.add(row_of(stats_of(call, sensitivity)))
            written += len(calls)
            after = calls[-1].call_id
