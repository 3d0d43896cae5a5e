"""What a clear answer states, per topic: the value the risk score and actions read (configs/risk.yaml `stated`).

A clear answer can itself be the risk: 下个月可能还不上 is clear, and it is the most important thing said in the
call. `stated_value` derives the value a clear answer states for its topic:

- answer terms listed per value (`terms`) say it in so many words, whatever the question: 还不上 -> `overdue: yes`
  (difficulty expected), 出租 -> `purpose: let`. A term right after a negation (没出租, 不会逾期 for 会逾期) does not
  count. Several values stated: the one that weighs most in the score wins (自住，楼下门面出租 is flagged).
- otherwise, for a yes/no or consent topic, the assessment's yes/no slot: `yes` / `no` in the sense of the topic's
  own question (overdue: is a difficulty expected; guarantor: do you consent; contact: did your details change).
  An agent may ask the other way round (能按时还款吗 instead of 会不会还款困难): a question holding one of the
  topic's `inverted_questions`, not negated (会不会不能按时还 asks the risk again), turns the plain yes/no over.
  Terms come first because the yes/no words are the answer's polarity, not its meaning: 能按时还 settles as a
  yes, which to 会不会还款困难 means no difficulty.

Pure: plain data in, plain data out (`load_stated` checks the section nlu/report.py has already read).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nlu.script import ScriptError
from nlu.types import Slot

POLAR_KINDS = ("yes_no", "consent")
#: The values a yes/no or consent topic's slot states (the sense of the topic's own question).
YES, NO = "yes", "no"


@dataclass(frozen=True, slots=True)
class StatedScore:
    """Points and the reason shown with them (Chinese, read by supervisors) for one stated value."""

    points: float
    reason: str


@dataclass(frozen=True, slots=True)
class StatedRule:
    """How a topic's clear answer states a value, and what each value weighs (configs/risk.yaml `stated.<topic>`)."""

    topic: str
    #: value -> answer words that state it whatever the question (按时还 -> no, 出租 -> let).
    terms: tuple[tuple[str, tuple[str, ...]], ...]
    #: Question words of an agent asking the other way round (能按时还款吗): the slot's yes/no is turned over.
    inverted_questions: tuple[str, ...]
    #: value -> points and reason; a value not listed is stated but adds nothing.
    values: Mapping[str, StatedScore]

    def known_values(self) -> frozenset[str]:
        """Every value this rule can state: its terms' values, yes and no, and the scored ones."""
        return frozenset({YES, NO, *(v for v, _ in self.terms), *self.values})


@dataclass(frozen=True, slots=True)
class StatedValue:
    """The value a clear answer states for its topic, and the words that state it (the evidence)."""

    topic: str
    value: str
    text: str


def stated_value(rule: StatedRule, answer_text: str | None, question_text: str | None, slots: tuple[Slot, ...],
                 negations: tuple[str, ...], risk_terms: tuple[str, ...] = ()) -> StatedValue | None:
    """The value a clear answer states for `rule.topic` (call only for answers labelled clear), or None when it
    states none this rule knows. `slots` are the assessment's; `negations` the words that cancel a term after them;
    `risk_terms` the topic's statements of its risk in the call script (没钱, 周转不开), which state `yes`."""
    answer = answer_text or ""
    terms = (*rule.terms, (YES, risk_terms)) if risk_terms else rule.terms
    found = [(value, term, index) for value, words in terms for term in words
             for index in _occurrences(answer, term) if not _negated(answer, index, negations)]
    if found:
        # The heaviest value wins, then the earliest words (the answer's first statement).
        value, term, _ = min(found, key=lambda f: (-_points(rule, f[0]), f[2]))
        return StatedValue(rule.topic, value, term)
    polar = next((s for s in slots if s.kind in POLAR_KINDS and isinstance(s.value, bool)), None)
    if polar is None:
        return None
    yes = bool(polar.value)
    if question_text and any(not _negated(question_text, i, negations)
                             for w in rule.inverted_questions for i in _occurrences(question_text, w)):
        yes = not yes  # 能按时还款吗 (but not 会不会不能按时还款)
    return StatedValue(rule.topic, YES if yes else NO, polar.text)


def _points(rule: StatedRule, value: str) -> float:
    score = rule.values.get(value)
    return score.points if score else 0.0


def _occurrences(text: str, term: str) -> list[int]:
    out, start = [], text.find(term)
    while start >= 0:
        out.append(start)
        start = text.find(term, start + 1)
    return out


def _negated(text: str, index: int, negations: tuple[str, ...]) -> bool:
    before = text[max(0, index - 4):index]
    return any(before.endswith(n) for n in negations)


def load_stated(path: Path, raw: object) -> dict[str, StatedRule]:
    """Check and read the `stated` section of risk.yaml (`raw`); errors name the file and the entry."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ScriptError(f"{path}: stated must map topics to rules")
    return {str(topic): _rule(path, str(topic), spec) for topic, spec in raw.items()}


def _rule(path: Path, topic: str, spec: object) -> StatedRule:
    where = f"{path}: stated.{topic}"
    if not isinstance(spec, dict):
        raise ScriptError(f"{where} must be a mapping (terms, inverted_questions, values)")
    unknown = set(spec) - {"terms", "inverted_questions", "values"}
    if unknown:
        raise ScriptError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    terms_raw = spec.get("terms") or {}
    if not isinstance(terms_raw, dict):
        raise ScriptError(f"{where}.terms must map values to lists of answer words")
    terms = tuple((_name(value), _words(f"{where}.terms.{_name(value)}", words)) for value, words in terms_raw.items())
    inverted = _words(f"{where}.inverted_questions", spec.get("inverted_questions") or [])
    values_raw = spec.get("values") or {}
    if not isinstance(values_raw, dict):
        raise ScriptError(f"{where}.values must map values to {{points, reason}}")
    values: dict[str, StatedScore] = {}
    for key, score in values_raw.items():
        value = _name(key)
        entry = f"{where}.values.{value}"
        if not isinstance(score, dict) or set(score) - {"points", "reason"}:
            raise ScriptError(f"{entry} must be a mapping with points and reason")
        points, reason = score.get("points"), score.get("reason")
        if isinstance(points, bool) or not isinstance(points, int | float) or points < 0:
            raise ScriptError(f"{entry}.points must be a number >= 0")
        if not isinstance(reason, str) or not reason.strip():
            raise ScriptError(f"{entry}.reason must be a non-empty text (shown in the report)")
        values[value] = StatedScore(float(points), reason.strip())
    rule = StatedRule(topic, terms, inverted, values)
    term_values = {v for v, _ in terms}
    unreachable = [v for v in values if v not in term_values | {YES, NO}]
    if unreachable:
        raise ScriptError(f"{where}.values: {', '.join(unreachable)} is neither yes/no nor listed under terms")
    return rule


def _name(key: object) -> str:
    """A value's name: YAML reads a bare `yes:` / `no:` key as a boolean."""
    if isinstance(key, bool):
        return YES if key else NO
    return str(key)


def _words(where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ScriptError(f"{where} must be a list of non-empty words")
    return tuple(v.strip() for v in value)


def stated_patterns_problem(patterns: list[str], rules: Mapping[str, StatedRule]) -> str | None:
    """Why an action's `topic.stated:value` pattern can never match (a topic without a rule, a value the rule
    never states), or None. Wildcards are taken as written."""
    for pattern in patterns:
        topic, sep, value = pattern.partition(".stated:")
        if not sep or any(c in topic for c in "*?["):
            continue
        rule = rules.get(topic)
        if rule is None:
            return f"{pattern}: no stated rule for topic {topic}"
        if not any(c in value for c in "*?[") and value not in rule.known_values():
            return f"{pattern}: stated.{topic} never states {value!r}"
    return None
