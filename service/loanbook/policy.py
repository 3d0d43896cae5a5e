"""From calls to the loan book: what a call left open, a customer's risk tier, and the follow-ups that close it.

Pure functions over small records. A stored report is reduced once to `CallFacts` (the compact per-call summary
the store keeps beside it); `plan_customer` turns a customer's calls and follow-ups into a `Plan` (tier, reasons,
follow-ups to create, update or close) under a `FollowUpPolicy` read from `configs/followup.yaml`. The service
applies plans in the database; nothing here knows about it, the clock or the customer's contact details beyond
which channels may be used.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, cast

from huifang_configs import configs_file
from nlu.report import Report
from nlu.script import ScriptError, read_mapping

Tier = Literal["low", "medium", "high"]
TIERS: tuple[Tier, ...] = ("low", "medium", "high")
Channel = Literal["call", "sms", "email", "letter"]
CHANNELS: tuple[Channel, ...] = ("call", "sms", "email", "letter")
Status = Literal["open", "assigned", "done", "unreachable", "refused", "cancelled"]
STATUSES: tuple[Status, ...] = ("open", "assigned", "done", "unreachable", "refused", "cancelled")
OPEN: tuple[Status, ...] = ("open", "assigned")
VAGUE = ("omission", "unclear", "evasive")
#: The reason of the second call (the follow-up a later call can close).
SECOND_CALL = "second_call"
EDUCATION = "education"
UNREACHABLE = "unreachable"
DEFAULT_POLICY_FILE = configs_file("followup.yaml")


# -- one call ------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CallFacts:
    """What a scored call left open, as far as following the customer up needs: the newest verdict of every
    topic answered vaguely, the topics answered clearly, the figures that contradicted the loan file and the
    report's recommended actions."""

    call_id: str
    at: datetime
    tier: Tier
    risk_score: int
    #: topic -> final label, for topics whose answer was an omission, unclear or evasive.
    unresolved: Mapping[str, str] = field(default_factory=dict)
    clear: tuple[str, ...] = ()
    mismatched: tuple[str, ...] = ()
    not_asked: tuple[str, ...] = ()
    #: The report's recommended actions: action id -> the topics it is about.
    actions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The `facts` column of the call's summary (the columns hold id, time, tier and score)."""
        return {"unresolved": dict(self.unresolved), "clear": list(self.clear), "mismatched": list(self.mismatched),
                "not_asked": list(self.not_asked), "actions": {k: list(v) for k, v in self.actions.items()}}

    @classmethod
    def from_row(cls, call_id: str, at: datetime, tier: str, risk_score: int, facts: Mapping[str, Any]) -> CallFacts:
        return cls(call_id, at, cast(Tier, tier), int(risk_score), dict(facts.get("unresolved") or {}),
                   tuple(facts.get("clear") or ()), tuple(facts.get("mismatched") or ()),
                   tuple(facts.get("not_asked") or ()),
                   {str(k): tuple(v) for k, v in (facts.get("actions") or {}).items()})


def call_facts(call_id: str, at: datetime, report: Report) -> CallFacts:
    """Reduce a report (a stored one read by `nlu.report.read_report`) to the facts the loan book keeps of it."""
    unresolved: dict[str, str] = {}
    clear: list[str] = []
    mismatched: list[str] = []
    for topic in report.topics:
        if topic.mismatch:
            mismatched.append(topic.topic)
        if topic.label in VAGUE:
            unresolved[topic.topic] = topic.label
        elif topic.label == "clear" and not topic.mismatch:
            clear.append(topic.topic)
    actions = {a.id: a.topics for a in report.actions if a.id}
    return CallFacts(call_id, at, report.tier, report.risk_score, unresolved, tuple(clear), tuple(mismatched),
                     report.agent.not_asked, actions)


# -- the bank's calendar -------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class BusinessCalendar:
    """Working days: not a weekend day (ISO weekday) or holiday, unless listed as a working day (调休)."""

    weekend: frozenset[int] = frozenset({6, 7})
    holidays: frozenset[date] = frozenset()
    workdays: frozenset[date] = frozenset()

    def is_business_day(self, day: date) -> bool:
        if day in self.workdays:
            return True
        return day.isoweekday() not in self.weekend and day not in self.holidays

    def add_business_days(self, start: date, days: int) -> date:
        """The `days`-th business day after `start` (`start` itself when `days` is 0 and it is one, else the
        next business day)."""
        day = start
        while not self.is_business_day(day):
            day += timedelta(days=1)
        for _ in range(days):
            day += timedelta(days=1)
            while not self.is_business_day(day):
                day += timedelta(days=1)
        return day


# -- the policy ----------------------------------------------------------------------------------------------

TierRuleKind = Literal["latest_tier", "unresolved", "repeated", "mismatch", "overdue"]


@dataclass(frozen=True, slots=True)
class TierRule:
    """One way a customer reaches `tier`; `reason` is shown with the tier (Simplified Chinese)."""

    tier: Tier
    kind: TierRuleKind
    reason: str
    tiers: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()
    labels: tuple[str, ...] = VAGUE
    times: int = 2
    calls: int = 3
    days: int = 0


@dataclass(frozen=True, slots=True)
class ActionRoute:
    """How a report action is followed up: the channels to try in order, the fallback when the customer allows
    none of them, and the business days it is due in."""

    channels: tuple[Channel, ...]
    due_business_days: int
    fallback: Channel | None = None


@dataclass(frozen=True, slots=True)
class FollowUpPolicy:
    """configs/followup.yaml, checked."""

    window_days: int
    tier_rules: tuple[TierRule, ...]
    #: tier -> business days a second call is due in (absent: no second call for that tier).
    call_due_days: Mapping[str, int]
    actions: Mapping[str, ActionRoute]
    education: Mapping[str, ActionRoute]
    calendar: BusinessCalendar
    #: What follows a second call nobody answered: a message asking the customer to call back (None: nothing).
    unreachable: ActionRoute | None = None


def load_policy(path: str | Path | None = None) -> FollowUpPolicy:
    """Read and check a follow-up policy; ScriptError says what is wrong and where."""
    path = Path(path) if path else DEFAULT_POLICY_FILE
    raw = read_mapping(path)
    try:
        return _policy(raw)
    except (KeyError, TypeError, ValueError) as e:
        raise ScriptError(f"{path}: {e}") from e


def _policy(raw: dict[str, Any]) -> FollowUpPolicy:
    rules = []
    for i, r in enumerate(raw.get("tier_rules") or []):
        if r.get("tier") not in TIERS or r.get("kind") not in ("latest_tier", "unresolved", "repeated", "mismatch",
                                                               "overdue"):
            raise ValueError(f"tier rule {i + 1}: needs a tier ({', '.join(TIERS)}) and a known kind")
        if not r.get("reason"):
            raise ValueError(f"tier rule {i + 1}: needs a reason")
        rules.append(TierRule(r["tier"], r["kind"], str(r["reason"]), tuple(r.get("tiers") or ()),
                              tuple(r.get("topics") or ()), tuple(r.get("labels") or VAGUE), int(r.get("times", 2)),
                              int(r.get("calls", 3)), int(r.get("days", 0))))
    due: dict[str, int] = {}
    for tier, value in (raw.get("call_followup") or {}).items():
        if tier not in TIERS:
            raise ValueError(f"call_followup: unknown tier {tier!r}")
        if value is not None:
            due[tier] = int(value["due_business_days"])
    cal = raw.get("calendar") or {}
    calendar = BusinessCalendar(frozenset(int(d) for d in cal.get("weekend", (6, 7))),
                                frozenset(_day(d) for d in cal.get("holidays") or ()),
                                frozenset(_day(d) for d in cal.get("workdays") or ()))
    unreachable = _routes({"unreachable": raw["unreachable"]}, "policy") if raw.get("unreachable") else {}
    return FollowUpPolicy(int(raw.get("window_days", 365)), tuple(rules), due, _routes(raw.get("actions"), "actions"),
                          _routes(raw.get("education"), "education"), calendar, unreachable.get("unreachable"))


def _routes(raw: Any, where: str) -> dict[str, ActionRoute]:
    out = {}
    for key, value in (raw or {}).items():
        channels = tuple(value.get("channels") or ())
        fallback = value.get("fallback")
        if not channels or not all(c in CHANNELS for c in (*channels, *([fallback] if fallback else []))):
            raise ValueError(f"{where}.{key}: channels must be among {', '.join(CHANNELS)}")
        out[str(key)] = ActionRoute(cast(tuple[Channel, ...], channels), int(value.get("due_business_days", 0)),
                                    cast(Channel | None, fallback))
    return out


def _day(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


# -- a customer's plan ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FollowUpState:
    """A follow-up already stored for the customer, as planning needs it."""

    id: str
    plan_key: str
    channel: Channel
    reason: str
    topics: tuple[str, ...]
    status: Status
    due_date: date
    created_at: datetime
    #: The message's delivery for sms/email/letter follow-ups (the outbox's status), None otherwise.
    delivery: str | None = None


@dataclass(frozen=True, slots=True)
class NewFollowUp:
    """A follow-up to create; `plan_key` names it so that planning twice creates it once."""

    plan_key: str
    channel: Channel
    reason: str
    topics: tuple[str, ...]
    due_date: date
    source_call_id: str


@dataclass(frozen=True, slots=True)
class FollowUpChange:
    """A change to a stored follow-up: new topics and due date, or a new status (closed by `call_id`)."""

    id: str
    topics: tuple[str, ...] | None = None
    due_date: date | None = None
    status: Status | None = None
    call_id: str | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """The customer's tier (None without a call in the window), why, and the follow-up work that follows."""

    tier: Tier | None
    reasons: tuple[str, ...]
    create: tuple[NewFollowUp, ...] = ()
    change: tuple[FollowUpChange, ...] = ()


def customer_tier(calls: Sequence[CallFacts], followups: Sequence[FollowUpState], policy: FollowUpPolicy,
                  today: date) -> tuple[Tier | None, tuple[str, ...]]:
    """The tier of a customer from their calls (oldest first) of the policy's window, with the reasons of the
    highest tier reached."""
    recent = [c for c in calls if (today - c.at.date()).days <= policy.window_days]
    if not recent:
        return None, ()
    latest = recent[-1]
    held: dict[Tier, list[str]] = {t: [] for t in TIERS}
    for rule in policy.tier_rules:
        if _holds(rule, recent, latest, followups, today):
            held[rule.tier].append(rule.reason)
    for tier in ("high", "medium"):
        if held[tier]:
            return cast(Tier, tier), tuple(dict.fromkeys(held[tier]))
    return "low", ()


def _holds(rule: TierRule, recent: Sequence[CallFacts], latest: CallFacts, followups: Sequence[FollowUpState],
           today: date) -> bool:
    if rule.kind == "latest_tier":
        return latest.tier in rule.tiers
    if rule.kind == "unresolved":
        return any((not rule.topics or topic in rule.topics) and label in rule.labels
                   for topic, label in latest.unresolved.items())
    if rule.kind == "repeated":
        counts: dict[str, int] = {}
        for call in recent[-rule.calls:]:
            for topic in call.unresolved:
                counts[topic] = counts.get(topic, 0) + 1
        # A topic the newest call answered clearly is settled, however often it was vague before.
        return any(n >= rule.times for topic, n in counts.items() if topic not in latest.clear)
    if rule.kind == "mismatch":
        return bool(latest.mismatched)
    return any(f.channel == "call" and f.status in OPEN and (today - f.due_date).days >= rule.days
               for f in followups)  # overdue


def plan_customer(customer_id: str, calls: Sequence[CallFacts], followups: Sequence[FollowUpState],
                  policy: FollowUpPolicy, today: date, allowed: Collection[Channel] = ("call", "letter"),
                  loan_id: str | None = None) -> Plan:
    """Plan one customer: close the second calls later calls answered, settle message follow-ups by
    their delivery, give the tier, and make sure what the newest call left open is followed up.

    `calls` oldest first; `followups` every follow-up stored for the customer (any status, so that a
    follow-up done or refused once is not planned again); `allowed` the channels the customer may be reached
    on (consent, no opt-out, an address); `today` in the bank's time zone.
    """
    changes: list[FollowUpChange] = []
    open_call: FollowUpState | None = None
    for f in followups:
        if f.status not in OPEN:
            continue
        if f.channel == "call":
            remaining, closer = _still_open(f, calls)
            if not remaining:
                changes.append(FollowUpChange(f.id, status="done", call_id=closer,
                                              note="后续回访已明确回答全部待核实问题"))
            elif open_call is None:
                open_call = f if remaining == f.topics else FollowUpState(
                    f.id, f.plan_key, f.channel, f.reason, remaining, f.status, f.due_date, f.created_at)
                if remaining != f.topics:
                    changes.append(FollowUpChange(f.id, topics=remaining))
            else:  # a second open call for the same customer: merged into the first
                changes.append(FollowUpChange(f.id, status="cancelled", note="已并入同一客户的二次回访"))
                open_call = FollowUpState(open_call.id, open_call.plan_key, "call", open_call.reason,
                                          tuple(dict.fromkeys((*open_call.topics, *remaining))), open_call.status,
                                          min(open_call.due_date, f.due_date), open_call.created_at)
                changes.append(FollowUpChange(open_call.id, topics=open_call.topics, due_date=open_call.due_date))
        elif f.delivery in ("sent", "dead", "suppressed"):
            changes.append(FollowUpChange(f.id, status="done" if f.delivery == "sent" else "unreachable",
                                          note={"sent": "消息已送达", "dead": "消息多次发送失败",
                                                "suppressed": "客户未同意或已退订该渠道"}[f.delivery]))
    settled = {c.id: c.status for c in changes if c.status is not None}
    tier, reasons = customer_tier(calls, [f for f in followups if f.id not in settled], policy, today)
    if tier is None:
        return Plan(None, (), (), tuple(changes))
    latest = [c for c in calls if (today - c.at.date()).days <= policy.window_days][-1]
    known = {f.plan_key for f in followups}
    scope = f"{customer_id}:{loan_id or '-'}"
    create: list[NewFollowUp] = []
    call_topics = [*latest.unresolved, *latest.mismatched]
    call_due = policy.call_due_days.get(tier)
    messages: list[NewFollowUp] = []
    for action in latest.actions:
        route = policy.actions.get(action)
        if route is None:
            continue
        channel = _channel(route, allowed)
        if channel is None:
            continue
        due = policy.calendar.add_business_days(today, route.due_business_days)
        if channel == "call":
            call_topics += _action_topics(action, latest)
            call_due = min(call_due, route.due_business_days) if call_due is not None else route.due_business_days
        else:
            messages.append(NewFollowUp(f"{scope}:{action}:{channel}:{latest.call_id}", channel, action,
                                        _action_topics(action, latest), due, latest.call_id))
    route = policy.education.get(tier)
    if route is not None and (channel := _channel(route, allowed)) is not None and channel != "call":
        messages.append(NewFollowUp(f"{scope}:{EDUCATION}:{channel}:{latest.call_id}", channel, EDUCATION, (),
                                    policy.calendar.add_business_days(today, route.due_business_days),
                                    latest.call_id))
    route = policy.unreachable
    for f in followups:
        # Nobody answered the second call: ask in writing, over what the customer allows.
        if route is not None and f.channel == "call" and f.status == "unreachable" and (
                channel := _channel(route, allowed)) is not None and channel != "call":
            messages.append(NewFollowUp(f"{scope}:{UNREACHABLE}:{channel}:{f.id}", channel, UNREACHABLE, f.topics,
                                        policy.calendar.add_business_days(today, route.due_business_days),
                                        latest.call_id))
    create += [m for m in messages if m.plan_key not in known]
    topics = tuple(dict.fromkeys(call_topics))
    if topics and call_due is not None:
        due = policy.calendar.add_business_days(today, call_due)
        if open_call is not None:
            merged = tuple(dict.fromkeys((*open_call.topics, *topics)))
            if merged != open_call.topics or due < open_call.due_date:
                changes.append(FollowUpChange(open_call.id, topics=merged, due_date=min(due, open_call.due_date)))
        else:
            key = f"{scope}:{SECOND_CALL}:call:{latest.call_id}"
            if key not in known:
                create.append(NewFollowUp(key, "call", SECOND_CALL, topics, due, latest.call_id))
    return Plan(tier, reasons, tuple(create), tuple(_merge(changes)))


def _still_open(f: FollowUpState, calls: Sequence[CallFacts]) -> tuple[tuple[str, ...], str | None]:
    """The follow-up's topics no call since it was planned answered clearly, and the call that answered the
    last of them."""
    remaining, closer = list(f.topics), None
    for call in calls:
        if call.at <= f.created_at:
            continue
        answered = [t for t in remaining if t in call.clear]
        if answered:
            remaining = [t for t in remaining if t not in answered]
            closer = call.call_id
        if not remaining:
            break
    return tuple(remaining), closer


def _channel(route: ActionRoute, allowed: Collection[Channel]) -> Channel | None:
    for channel in route.channels:
        if channel == "call" or channel in allowed:
            return channel
    return route.fallback


def _action_topics(action: str, call: CallFacts) -> tuple[str, ...]:
    """The topics the report tied the action to (its verdicts' topics)."""
    return tuple(call.actions.get(action, ()))


def _merge(changes: Sequence[FollowUpChange]) -> list[FollowUpChange]:
    """One change per follow-up: later fields win where set."""
    by_id: dict[str, FollowUpChange] = {}
    for c in changes:
        old = by_id.get(c.id)
        by_id[c.id] = c if old is None else FollowUpChange(
            c.id, c.topics if c.topics is not None else old.topics, c.due_date or old.due_date,
            c.status or old.status, c.call_id or old.call_id, c.note or old.note)
    return list(by_id.values())
