"""Agent coaching: what one scored call says about the agent, summed per agent and period, against the team.

`call_stats(report, ...)` reads a report (nlu/report.py `Report`; a stored one through `read_report`) into a
`CallStats`: checklist coverage, high-sensitivity topics skipped, prompts shown / followed up / clarified, vague
answers and loan-file mismatches still standing at the end of the call, talk time per side and the silence after
each question. Every count is additive, so a period's `Totals` is a sum (done in SQL over the stored rows, or by
`totals` here) and `figures(totals)` is the one place each figure is defined. `review_calls` ranks calls for a
coaching session by the rules of configs/coaching.yaml. Pure: no I/O besides reading that file (docs/coaching.md).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, cast, get_args

from huifang_configs import configs_file
from nlu.dialogue import Turn
from nlu.report import Report
from nlu.script import ScriptError, read_mapping

DEFAULT_RULES_FILE = configs_file("coaching.yaml")
Period = Literal["day", "week", "month"]
#: A standing verdict that is not clear (nlu.types.Label less "clear").
VAGUE_LABELS = ("omission", "unclear", "evasive")
Sensitivity = Literal["low", "medium", "high"]
MomentKind = Literal["skipped", "prompt_ignored", "unresolved", "mismatch_standing", "silence"]
RuleKind = Literal["skipped", "unchallenged", "unresolved", "mismatch_standing", "prompt_ignored", "silence"]
#: The figures of a scorecard, in display order (see `Figures`).
Figure = Literal["calls", "coverage", "high_skipped_per_call", "prompts_shown", "prompts_followed_ratio",
                 "prompts_clarified_ratio", "vague_unresolved_per_call", "mismatches_standing_per_call",
                 "talk_ratio", "question_silence_s", "duration_s"]
FIGURES: tuple[Figure, ...] = get_args(Figure)
Span = tuple[float, float]


@dataclass(frozen=True, slots=True)
class TopicStats:
    """One topic of the call's checklist as the agent left it."""

    topic: str
    name: str
    sensitivity: str
    asked: bool
    times_asked: int
    #: The verdict that stands at the end of the call (None: not asked, or asked and never answered).
    label: str | None
    #: Some answer on the topic contradicted the loan file / the standing answer still does.
    mismatch_raised: bool
    mismatch_standing: bool
    #: The agent asked the topic again after its first vague or contradicting answer.
    challenged: bool
    prompts_shown: int
    prompts_followed: int
    question_span: Span | None
    answer_span: Span | None


@dataclass(frozen=True, slots=True)
class QuestionGap:
    """The silence after one question: from its end to the next speech of either side (or the call's end)."""

    topic: str
    end_s: float
    silence_s: float


@dataclass(frozen=True, slots=True)
class CallStats:
    """The coaching figures of one call. The numeric fields are additive (see `Totals`)."""

    call_id: str
    agent_id: str | None
    at: datetime
    duration_s: float
    coverage: float
    topics_asked: int
    topics_total: int
    high_skipped: int
    prompts_shown: int
    prompts_followed: int
    prompts_clarified: int
    vague_unresolved: int
    mismatches_standing: int
    agent_talk_s: float
    customer_talk_s: float
    questions: int
    question_silence_s: float
    topics: tuple[TopicStats, ...] = ()
    gaps: tuple[QuestionGap, ...] = ()


@dataclass(frozen=True, slots=True)
class Totals:
    """Sums over a set of calls: `calls` is their number, every other field the sum of the `CallStats` field of
    the same name (coverage: the sum of per-call coverage)."""

    calls: int = 0
    duration_s: float = 0.0
    coverage: float = 0.0
    topics_asked: int = 0
    topics_total: int = 0
    high_skipped: int = 0
    prompts_shown: int = 0
    prompts_followed: int = 0
    prompts_clarified: int = 0
    vague_unresolved: int = 0
    mismatches_standing: int = 0
    agent_talk_s: float = 0.0
    customer_talk_s: float = 0.0
    questions: int = 0
    question_silence_s: float = 0.0


#: The `CallStats` fields a period sums (all of `Totals` but `calls`).
SUMMED: tuple[str, ...] = tuple(f.name for f in fields(Totals) if f.name != "calls")


@dataclass(frozen=True, slots=True)
class Figures:
    """A scorecard: per-call means and ratios over a period. None where the period has nothing to divide by."""

    calls: int
    #: Mean over calls of the share of the checklist the agent asked (0-1).
    coverage: float | None
    high_skipped_per_call: float | None
    prompts_shown: int
    #: Prompts after which the agent went back to the topic / after which its answer ended clear, per prompt.
    prompts_followed_ratio: float | None
    prompts_clarified_ratio: float | None
    vague_unresolved_per_call: float | None
    mismatches_standing_per_call: float | None
    #: The agent's share of the speech (agent / (agent + customer) seconds).
    talk_ratio: float | None
    #: Mean silence after a question, seconds.
    question_silence_s: float | None
    #: Mean call length, seconds.
    duration_s: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return {name: getattr(self, name) for name in FIGURES}


# -- one call ---------------------------------------------------------------------------------------------------


def call_stats(report: Report, sensitivity: Mapping[str, str], *, call_id: str, agent_id: str | None,
               at: datetime) -> CallStats:
    """The coaching figures of one report (a stored one read by `nlu.report.read_report`, which gives a report of
    the first format without answers none, so its counts that need them are zero). `sensitivity`: topic ->
    low/medium/high (the call script's); a topic not in it counts as medium."""
    prompts = report.agent.prompts
    per_topic: list[TopicStats] = []
    for t in report.topics:
        said = [a for a in report.answers if a.topic == t.topic]
        first_bad = next((i for i, a in enumerate(said) if a.label in VAGUE_LABELS or a.mismatch), None)
        shown = [p for p in prompts if p.topic == t.topic]
        per_topic.append(TopicStats(
            topic=t.topic, name=t.name or t.topic, sensitivity=sensitivity.get(t.topic, "medium"),
            asked=t.asked, times_asked=t.times_asked, label=t.label or None,
            mismatch_raised=t.mismatch is not None or any(a.mismatch for a in said),
            mismatch_standing=t.mismatch is not None,
            # Without the answers list (older reports), a followed-up prompt is the evidence of a second question.
            challenged=(first_bad is not None and first_bad < len(said) - 1) if said
            else any(p.followed_up for p in shown),
            prompts_shown=len(shown), prompts_followed=sum(1 for p in shown if p.followed_up),
            question_span=t.question_span, answer_span=t.answer_span))
    standing = {t.topic: t for t in per_topic}
    clarified = sum(1 for p in prompts if p.followed_up and (s := standing.get(p.topic)) is not None
                    and s.label == "clear" and not s.mismatch_standing)

    talk = {"agent": 0.0, "customer": 0.0}
    for u in report.utterances:
        if u.speaker in talk:
            talk[u.speaker] += max(0.0, u.end_s - u.start_s)
    asked_spans = [(a.topic, a.question_span) for a in report.answers] or [
        (t.topic, t.question_span) for t in report.topics]
    gaps = _gaps(asked_spans, report.utterances, report.duration_s)
    return CallStats(
        call_id=call_id, agent_id=agent_id, at=at, duration_s=report.duration_s, coverage=report.agent.coverage,
        topics_asked=sum(1 for t in per_topic if t.asked), topics_total=len(per_topic),
        high_skipped=sum(1 for t in per_topic if not t.asked and t.sensitivity == "high"),
        prompts_shown=len(prompts), prompts_followed=sum(1 for p in prompts if p.followed_up),
        prompts_clarified=clarified,
        vague_unresolved=sum(1 for t in per_topic if t.label in VAGUE_LABELS),
        mismatches_standing=sum(1 for t in per_topic if t.mismatch_standing),
        agent_talk_s=round(talk["agent"], 3), customer_talk_s=round(talk["customer"], 3),
        questions=len(gaps), question_silence_s=round(sum(g.silence_s for g in gaps), 3),
        topics=tuple(per_topic), gaps=gaps)


def _gaps(asked: Sequence[tuple[str, Span | None]], utterances: Sequence[Turn],
          duration_s: float) -> tuple[QuestionGap, ...]:
    """The silence after each question (topic, question span: an answer record's or a topic's): until the first
    speech, of either side, that began after the question began and ends after it ended; the call's end if none."""
    out = []
    for topic, span in asked:
        if span is None:
            continue
        start_s, end_s = span
        later = [u.start_s for u in utterances if u.start_s > start_s and u.end_s > end_s]
        next_s = min(later) if later else max(duration_s, end_s)
        out.append(QuestionGap(topic, end_s, round(max(0.0, next_s - end_s), 3)))
    return tuple(sorted(out, key=lambda g: g.end_s))


# -- periods ----------------------------------------------------------------------------------------------------


def totals(calls: Iterable[CallStats]) -> Totals:
    """The sums of a set of calls (what the store computes in SQL over its rows)."""
    sums: dict[str, float] = dict.fromkeys(SUMMED, 0.0)
    n = 0
    for c in calls:
        n += 1
        for name in SUMMED:
            sums[name] += getattr(c, name)
    ints = {name for name in SUMMED if isinstance(getattr(Totals(), name), int)}
    values: dict[str, Any] = {k: (round(v) if k in ints else round(v, 6)) for k, v in sums.items()}
    return Totals(calls=n, **values)


def _ratio(num: float, den: float) -> float | None:
    return round(num / den, 4) if den else None


def figures(t: Totals) -> Figures:
    """The scorecard of a period from its sums: the one definition of every figure."""
    return Figures(
        calls=t.calls, coverage=_ratio(t.coverage, t.calls), high_skipped_per_call=_ratio(t.high_skipped, t.calls),
        prompts_shown=t.prompts_shown, prompts_followed_ratio=_ratio(t.prompts_followed, t.prompts_shown),
        prompts_clarified_ratio=_ratio(t.prompts_clarified, t.prompts_shown),
        vague_unresolved_per_call=_ratio(t.vague_unresolved, t.calls),
        mismatches_standing_per_call=_ratio(t.mismatches_standing, t.calls),
        talk_ratio=_ratio(t.agent_talk_s, t.agent_talk_s + t.customer_talk_s),
        question_silence_s=_ratio(t.question_silence_s, t.questions), duration_s=_ratio(t.duration_s, t.calls))


def team_median(cards: Iterable[Figures]) -> dict[str, float | None]:
    """Per figure, the median over the agents that have it (agents without calls, or a None figure, left out)."""
    cards = list(cards)
    out: dict[str, float | None] = {}
    for name in FIGURES:
        values = [v for c in cards if (v := getattr(c, name)) is not None and c.calls]
        out[name] = round(float(statistics.median(values)), 4) if values else None
    return out


def period_bounds(period: Period, day: date) -> tuple[date, date]:
    """The period containing `day`: [first day, first day of the next period). Weeks start on Monday."""
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    start = day.replace(day=1)
    return start, (start + timedelta(days=32)).replace(day=1)


def previous_periods(period: Period, day: date, count: int) -> list[tuple[date, date]]:
    """The `count` periods ending with the one containing `day`, oldest first."""
    out = [period_bounds(period, day)]
    while len(out) < count:
        out.append(period_bounds(period, out[-1][0] - timedelta(days=1)))
    return out[::-1]


# -- per topic --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TopicFigures:
    """One topic over a period's calls: in how many calls' checklists, asked in how many, prompts and outcomes."""

    topic: str
    name: str
    calls: int
    asked: int
    coverage: float | None
    prompts_shown: int
    prompts_followed: int
    vague_unresolved: int
    mismatches_standing: int


def per_topic(calls: Iterable[CallStats]) -> tuple[TopicFigures, ...]:
    """Coverage, prompts and what was left standing, per checklist topic, in order of first appearance."""
    acc: dict[str, list[Any]] = {}
    for c in calls:
        for t in c.topics:
            row = acc.setdefault(t.topic, [t.name, 0, 0, 0, 0, 0, 0])
            row[1] += 1
            row[2] += t.asked
            row[3] += t.prompts_shown
            row[4] += t.prompts_followed
            row[5] += t.label in VAGUE_LABELS
            row[6] += t.mismatch_standing
    return tuple(TopicFigures(topic, r[0], r[1], r[2], _ratio(r[2], r[1]), r[3], r[4], r[5], r[6])
                 for topic, r in acc.items())


# -- moments and the coaching list ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Moment:
    """A place in a call behind a figure: what happened, on which topic, where to listen (None: nothing was said,
    e.g. a topic never asked)."""

    call_id: str
    kind: MomentKind
    topic: str
    name: str
    start_s: float | None
    end_s: float | None
    label: str | None = None


def moments(call: CallStats, long_silence_s: float) -> tuple[Moment, ...]:
    """The moments of one call worth listening to, in call order (skipped topics last)."""
    out: list[Moment] = []
    names = {t.topic: t.name for t in call.topics}
    for t in call.topics:
        span = t.answer_span or t.question_span
        start, end = (span if span else (None, None))
        if not t.asked and t.sensitivity == "high":
            out.append(Moment(call.call_id, "skipped", t.topic, t.name, None, None))
        if t.prompts_shown > t.prompts_followed:
            out.append(Moment(call.call_id, "prompt_ignored", t.topic, t.name, start, end, t.label))
        if t.label in VAGUE_LABELS:
            out.append(Moment(call.call_id, "unresolved", t.topic, t.name, start, end, t.label))
        if t.mismatch_standing:
            out.append(Moment(call.call_id, "mismatch_standing", t.topic, t.name, start, end, t.label))
    for g in call.gaps:
        if g.silence_s >= long_silence_s:
            out.append(Moment(call.call_id, "silence", g.topic, names.get(g.topic, g.topic), g.end_s,
                              round(g.end_s + g.silence_s, 3)))
    return tuple(sorted(out, key=lambda m: (m.start_s is None, m.start_s or 0.0)))


@dataclass(frozen=True, slots=True)
class Rule:
    """What makes a call worth reviewing (configs/coaching.yaml): a kind of finding, optionally limited to some
    topics, labels or sensitivities, its weight and the reason shown (`{name}`: the topic's name)."""

    id: str
    kind: RuleKind
    points: float
    reason: str
    topics: frozenset[str] = frozenset()
    labels: frozenset[str] = frozenset()
    sensitivity: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class CoachingRules:
    """The rules in priority order, a silence counted as long, and how many calls a coaching list names."""

    rules: tuple[Rule, ...]
    long_silence_s: float = 8.0
    review_calls: int = 3


def load_rules(path: str | Path | None = None) -> CoachingRules:
    """Read and check configs/coaching.yaml (or `path`)."""
    path = Path(path) if path else DEFAULT_RULES_FILE
    raw = read_mapping(path)
    if not isinstance(raw.get("rules"), list):
        raise ScriptError(f"{path}: expected a mapping with a list `rules`")
    kinds = get_args(RuleKind)
    rules = []
    for i, r in enumerate(raw["rules"]):
        if not isinstance(r, dict) or not r.get("id") or r.get("kind") not in kinds or not r.get("reason"):
            raise ScriptError(f"{path}: rule {i + 1} needs id, reason and a kind ({', '.join(kinds)})")
        if not isinstance(r.get("points", 0), int | float):
            raise ScriptError(f"{path}: rule {r['id']}: points must be a number")

        def names(key: str, rule: dict[str, Any] = r) -> frozenset[str]:
            value = rule.get(key) or []
            if not isinstance(value, list):
                raise ScriptError(f"{path}: rule {rule['id']}: {key} must be a list")
            return frozenset(str(v) for v in value)

        rules.append(Rule(str(r["id"]), cast(RuleKind, r["kind"]), float(r.get("points", 0)), str(r["reason"]),
                          names("topics"), names("labels"), names("sensitivity")))
    long_silence_s = raw.get("long_silence_s", 8.0)
    review = raw.get("review_calls", 3)
    if not isinstance(long_silence_s, int | float) or long_silence_s <= 0 or not isinstance(review, int) or review < 1:
        raise ScriptError(f"{path}: long_silence_s must be > 0 and review_calls >= 1")
    return CoachingRules(tuple(rules), float(long_silence_s), review)


@dataclass(frozen=True, slots=True)
class Finding:
    """One reason a call is worth reviewing: the rule, the topic, the sentence shown and where to listen."""

    rule: str
    topic: str
    reason: str
    points: float
    start_s: float | None
    end_s: float | None


@dataclass(frozen=True, slots=True)
class Review:
    """A call of the coaching list: its weight (sum of its findings' points) and the findings."""

    call_id: str
    at: datetime
    points: float
    findings: tuple[Finding, ...]


def _matches(rule: Rule, t: TopicStats) -> bool:
    if rule.topics and t.topic not in rule.topics:
        return False
    if rule.sensitivity and t.sensitivity not in rule.sensitivity:
        return False
    if rule.labels and t.label not in rule.labels:
        return False
    if rule.kind == "skipped":
        return not t.asked
    if rule.kind == "unchallenged":
        return t.label in VAGUE_LABELS and not t.challenged
    if rule.kind == "unresolved":
        return t.label in VAGUE_LABELS
    if rule.kind == "mismatch_standing":
        return t.mismatch_standing
    if rule.kind == "prompt_ignored":
        return t.prompts_shown > t.prompts_followed
    return False


def findings(call: CallStats, rules: CoachingRules) -> tuple[Finding, ...]:
    """What the rules find in one call: per topic the first matching rule (rules are in priority order, so a
    skipped guarantor consent is not counted again as a skipped high-sensitivity topic); per long silence, the
    first `silence` rule for its topic."""
    out: list[Finding] = []
    for t in call.topics:
        rule = next((r for r in rules.rules if r.kind != "silence" and _matches(r, t)), None)
        if rule is not None:
            span = t.answer_span or t.question_span
            out.append(Finding(rule.id, t.topic, rule.reason.format(name=t.name), rule.points,
                               span[0] if span else None, span[1] if span else None))
    names = {t.topic: t.name for t in call.topics}
    for g in call.gaps:
        if g.silence_s < rules.long_silence_s:
            continue
        rule = next((r for r in rules.rules if r.kind == "silence" and (not r.topics or g.topic in r.topics)), None)
        if rule is not None:
            out.append(Finding(rule.id, g.topic, rule.reason.format(name=names.get(g.topic, g.topic)), rule.points,
                               g.end_s, round(g.end_s + g.silence_s, 3)))
    return tuple(sorted(out, key=lambda f: -f.points))


def review_calls(calls: Sequence[CallStats], rules: CoachingRules, limit: int | None = None) -> tuple[Review, ...]:
    """The calls most worth reviewing: highest total points first, then the most recent; calls nothing was found
    in are left out."""
    reviews = [Review(c.call_id, c.at, round(sum(f.points for f in found), 3), found)
               for c in calls if (found := findings(c, rules))]
    reviews.sort(key=lambda r: (-r.points, -r.at.timestamp(), r.call_id))
    return tuple(reviews[:limit or rules.review_calls])
