"""Alerts of the live floor as data: the rules of configs/alerts.yaml, and the pure check of a call's event
against them.

A rule names the moments worth a supervisor's eye as keys like those of configs/risk.yaml's actions:
`guarantor.unclear` (an answer's topic and label), `*.mismatch` (a figure contradicting the loan file),
`guarantor.stated:no` (what a clear answer states: a refusal is as worth a look as a hedge), `risk.high` (the
call's live risk reaching a tier). `raised(call_id, event, rules, at_s)` gives the alerts an event raises, each
with an id that is stable for the same moment (call, rule, question and topic; call, rule, topic and stated value;
or call and rule for risk), so a later revision of the same answer, or the same event read again on another
replica, never raises a second alert.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from huifang_configs import configs_file
from nlu.script import read_mapping
from nlu.stated import StatedRule, stated_patterns_problem
from service.floor.tile import iso
from service.protocol import AssessmentEvent, RiskEvent

DEFAULT_ALERTS_FILE = configs_file("alerts.yaml")

_LABELS = ("clear", "omission", "unclear", "evasive", "mismatch")
_KEY = re.compile(r"^(?:risk\.(?:low|medium|high|\*)|(?P<topic>[a-z_*?\[\]]+)\.(?:" + "|".join(_LABELS)
                  + r"|\*|stated:[a-z_*?\[\]]+))$")
_RULE_ID = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class AlertsError(ValueError):
    """An alerts file that cannot be used (said at start-up, naming the file and the rule)."""


@dataclass(frozen=True, slots=True)
class AlertRule:
    """One rule of configs/alerts.yaml: its id, the title the wallboard shows, and the keys that raise it."""

    id: str
    title: str
    when: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Alert:
    """An alert raised on a live call. `at` and `acknowledged_at` are ISO times (UTC); open while
    `acknowledged_by` is None."""

    alert_id: str
    call_id: str
    rule: str
    title: str
    topic: str | None
    label: str | None
    at: str
    acknowledged_by: str | None = None
    acknowledged_at: str | None = None

    @property
    def open(self) -> bool:
        return self.acknowledged_by is None

    def to_json(self) -> dict[str, Any]:
        return {"alert_id": self.alert_id, "call_id": self.call_id, "rule": self.rule, "title": self.title,
                "topic": self.topic, "label": self.label, "at": self.at, "acknowledged_by": self.acknowledged_by,
                "acknowledged_at": self.acknowledged_at}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Alert:
        return cls(str(data["alert_id"]), str(data["call_id"]), str(data["rule"]), str(data["title"]),
                   data.get("topic"), data.get("label"), str(data["at"]), data.get("acknowledged_by"),
                   data.get("acknowledged_at"))

    def acknowledged(self, by: str, at_s: float) -> Alert:
        """The alert acknowledged by `by` at `at_s` (wall clock); an acknowledged one stays as it was."""
        return self if not self.open else replace(self, acknowledged_by=by, acknowledged_at=iso(at_s))


def load_alert_rules(path: str | Path | None = None, topics: Collection[str] | None = None,
                     stated: Mapping[str, StatedRule] | None = None) -> tuple[AlertRule, ...]:
    """The rules of an alerts file (default configs/alerts.yaml). With `topics` (the call script's, `other`
    included), a key naming a topic that is not one of them is refused, and with `stated` (configs/risk.yaml's
    rules), a `TOPIC.stated:VALUE` key that rule never states: a typo would silently never fire.
    Raises `AlertsError`."""
    path = Path(path) if path else DEFAULT_ALERTS_FILE
    raw = read_mapping(path, AlertsError)
    rules = raw.get("rules")
    if not isinstance(rules, list):
        raise AlertsError(f"{path}: `rules` must be a list of {{id, title, when}}")
    out: list[AlertRule] = []
    for i, rule in enumerate(rules):
        where = f"{path}: rule {i + 1}"
        if not isinstance(rule, dict):
            raise AlertsError(f"{where} must be a mapping of id, title and when")
        rule_id, title, when = rule.get("id"), rule.get("title"), rule.get("when")
        if not isinstance(rule_id, str) or not _RULE_ID.match(rule_id):
            raise AlertsError(f"{where}: id must be snake_case (a-z, 0-9, _; at most 40), got {rule_id!r}")
        if any(r.id == rule_id for r in out):
            raise AlertsError(f"{where}: id {rule_id} is used twice")
        if not isinstance(title, str) or not title.strip():
            raise AlertsError(f"{where} ({rule_id}): title must be a non-empty text")
        if not isinstance(when, list) or not when:
            raise AlertsError(f"{where} ({rule_id}): when must be a non-empty list of keys")
        for key in when:
            match = _KEY.match(key) if isinstance(key, str) else None
            if match is None:
                raise AlertsError(f"{where} ({rule_id}): {key!r} is not TOPIC.LABEL, TOPIC.mismatch, "
                                  "TOPIC.stated:VALUE or risk.TIER")
            topic = match.group("topic")
            if topics is not None and topic and not any(c in topic for c in "*?[") and topic not in topics:
                raise AlertsError(f"{where} ({rule_id}): {key!r} names no topic of the call script")
            if stated is not None and (problem := stated_patterns_problem([key], stated)):
                raise AlertsError(f"{where} ({rule_id}): {problem} (configs/risk.yaml)")
        out.append(AlertRule(rule_id, title.strip(), tuple(when)))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Moment:
    """One moment of a call the rules may match: its keys, the topic and label an alert shows, and the moment's
    part of an alert id (the same moment seen again gives the same id)."""

    keys: tuple[str, ...]
    topic: str | None
    label: str | None
    moment: str


def event_moments(event: BaseModel) -> tuple[Moment, ...]:
    """What an event offers to the rules: an answer is one moment (its label and any mismatch); a risk event is
    the tier (once per call) and each value clear answers stated (once per topic and value); none for an event no
    rule can match."""
    if isinstance(event, AssessmentEvent):
        keys = [f"{event.topic}.{event.label}"]
        if event.mismatch is not None:
            keys.append(f"{event.topic}.mismatch")
        return (Moment(tuple(keys), event.topic, event.label, f"{event.question_utterance_id}:{event.topic}"),)
    if isinstance(event, RiskEvent):
        said = tuple(Moment((f"{topic}.stated:{value}",), topic, f"stated:{value}", f"stated:{topic}:{value}")
                     for topic, value in sorted(event.stated.items()))
        return (Moment((f"risk.{event.tier}",), None, event.tier, ""), *said)
    return ()


def raised(call_id: str, event: BaseModel, rules: tuple[AlertRule, ...], at_s: float) -> list[Alert]:
    """The alerts `event` of call `call_id` raises under `rules` (before any is known to be raised already:
    the caller keeps those by `alert_id`). Pure."""
    out = []
    for moment in event_moments(event):
        for rule in rules:
            matched = [k for k in moment.keys if any(fnmatch.fnmatchcase(k, pattern) for pattern in rule.when)]
            if not matched:
                continue
            shown = "mismatch" if matched[0].endswith(".mismatch") else moment.label
            alert_id = f"{call_id}:{rule.id}" + (f":{moment.moment}" if moment.moment else "")
            out.append(Alert(alert_id, call_id, rule.id, rule.title, moment.topic, shown, iso(at_s)))
    return out
