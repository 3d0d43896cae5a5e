"""Post-call report: the call's answers per topic, a risk score with its contributions, the agent's side, and
recommended actions, each tied to its evidence and audio span.

`score_call(turns, assessor, loan, ...)` runs the same `CallDialogue` as the live path over a finished call's
utterances (so a call scores the same live and after the fact) and `build_report` turns its verdicts into a
`Report`. Weights, tiers and actions are data (`configs/risk.yaml`). Pure: no I/O besides reading that file.

Points come from answers that are not clear, from figures that contradict the loan file, from sensitive topics
never asked, and from what a clear answer states when that is itself a risk (a clear 下个月可能还不上, a guarantor's
clear 不同意, a house clearly let out: `stated`, see nlu/stated.py).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from huifang_configs import configs_file
from nlu.assess import Assessor
from nlu.dialogue import CallDialogue, CallSummary, DialogueOptions, PromptRecord, Turn, Verdict
from nlu.questions import OTHER_TOPIC
from nlu.script import CallScript, ScriptError, read_mapping
from nlu.stated import POLAR_KINDS, StatedRule, load_stated, stated_patterns_problem, stated_value
from nlu.types import Evidence, LoanRecord, Mismatch, Slot

DEFAULT_RISK_FILE = configs_file("risk.yaml")
Tier = Literal["low", "medium", "high"]
Span = tuple[float, float]
#: The version of the stored report's JSON form (`Report.to_dict`), written with it as `format_version`:
#: 1 is every report stored before the field existed (no `format_version`); 2 adds the field, `loan_file` and
#: `silenced_audio` as report fields. `read_report` upgrades 1 to 2.
REPORT_FORMAT = 2


@dataclass(frozen=True, slots=True)
class RiskConfig:
    """Weights of the risk score (see configs/risk.yaml)."""

    tiers: dict[str, float]
    label_names: dict[str, str]
    label_points: dict[str, float]
    sensitivity_factor: dict[str, float]
    overrides: dict[str, float]
    mismatch_points: dict[str, float]
    not_asked_points: dict[str, float]
    actions: tuple[dict[str, Any], ...]
    #: topic -> how its clear answer states a value and what each value weighs (nlu/stated.py).
    stated: dict[str, StatedRule] = field(default_factory=dict)
    #: Words that cancel a stated-value term right after them (没出租, 不会逾期).
    stated_negations: tuple[str, ...] = ()
    #: A digest of the file's content: a report scored under other weights can be told apart (`Report.risk_version`).
    version: str = ""


def load_risk(path: str | Path | None = None) -> RiskConfig:
    """Read and check the risk configuration."""
    path = Path(path) if path else DEFAULT_RISK_FILE
    raw = read_mapping(path)

    def numbers(key: str) -> dict[str, float]:
        value = raw.get(key) or {}
        if not isinstance(value, dict) or not all(isinstance(v, int | float) for v in value.values()):
            raise ScriptError(f"{path}: {key} must map names to numbers")
        return {str(k): float(v) for k, v in value.items()}

    actions = raw.get("actions") or []
    if not isinstance(actions, list) or not all(
            isinstance(a, dict) and a.get("id") and a.get("text") and isinstance(a.get("when"), list)
            for a in actions):
        raise ScriptError(f"{path}: each action needs id, text and a list `when`")
    tiers = numbers("tiers")
    if not {"medium", "high"} <= tiers.keys() or tiers["medium"] > tiers["high"]:
        raise ScriptError(f"{path}: tiers needs medium <= high")
    stated = load_stated(path, raw.get("stated"))
    for action in actions:
        problem = stated_patterns_problem([str(p) for p in action["when"]], stated)
        if problem:
            raise ScriptError(f"{path}: action {action['id']}: {problem}")
    negations = raw.get("stated_negations") or []
    if not isinstance(negations, list) or not all(isinstance(n, str) and n for n in negations):
        raise ScriptError(f"{path}: stated_negations must be a list of non-empty words")
    version = hashlib.sha256(json.dumps(raw, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()
    return RiskConfig(tiers, {str(k): str(v) for k, v in (raw.get("label_names") or {}).items()},
                      numbers("label_points"), numbers("sensitivity_factor"), numbers("overrides"),
                      numbers("mismatch_points"), numbers("not_asked_points"), tuple(actions), stated,
                      tuple(negations), version[:12])


@dataclass(frozen=True, slots=True)
class TopicResult:
    """One topic of the call script in this call: asked or not, and the verdict that stands."""

    topic: str
    name: str
    asked: bool
    times_asked: int
    label: str | None
    confidence: float | None
    evidence: tuple[Evidence, ...]
    slots: tuple[Slot, ...]
    mismatch: Mismatch | None
    question_text: str | None
    answer_text: str | None
    question_span: Span | None
    answer_span: Span | None
    #: What a clear answer states for the topic (configs/risk.yaml `stated`): overdue `yes`, purpose `let`; None
    #: when the answer is not clear or states nothing listed there.
    stated: str | None = None


@dataclass(frozen=True, slots=True)
class AnswerRecord:
    """One answer of the call (a topic may be asked more than once; `TopicResult` keeps the last)."""

    topic: str
    name: str
    label: str
    mismatch: bool
    question_text: str | None
    answer_text: str | None
    question_span: Span | None
    answer_span: Span | None


@dataclass(frozen=True, slots=True)
class Contribution:
    """Points added to the risk score, and why."""

    reason: str
    points: float
    topic: str | None
    label: str | None
    evidence: str
    span: Span | None


@dataclass(frozen=True, slots=True)
class Action:
    """A recommended follow-up, tied to the verdict(s) that call for it."""

    id: str
    text: str
    topics: tuple[str, ...]
    evidence: tuple[str, ...]
    spans: tuple[Span, ...]


@dataclass(frozen=True, slots=True)
class AgentReview:
    """The agent's side: checklist coverage, sensitive topics left out, and follow-up after prompts."""

    coverage: float
    asked: int
    total: int
    not_asked: tuple[str, ...]
    prompts: tuple[PromptRecord, ...]
    followed_up: int


@dataclass(frozen=True, slots=True)
class SilencedSpan:
    """Audio of one channel rewritten as silence because personal data was said there (seconds of the call)."""

    channel: str
    start_s: float
    end_s: float


@dataclass(frozen=True, slots=True)
class Report:
    """Everything a supervisor needs about one call. `risk_score` 0-100, `tier` low/medium/high."""

    call_id: str
    duration_s: float
    utterances: tuple[Turn, ...]
    topics: tuple[TopicResult, ...]
    risk_score: int
    tier: Tier
    contributions: tuple[Contribution, ...]
    agent: AgentReview
    actions: tuple[Action, ...]
    answers: tuple[AnswerRecord, ...] = ()
    labels: dict[str, int] = field(default_factory=dict)
    #: The assessor that scored the call (`Assessor.version`): re-running that version gives the same verdicts.
    assessor_version: str = ""
    #: The risk weights that scored it (`RiskConfig.version`).
    risk_version: str = ""
    #: The public part of the loan file the call was scored against (nlu.pii.public_loan_file), if any.
    loan_file: dict[str, Any] | None = None
    #: Where the stored audio was silenced (personal data said there).
    silenced_audio: tuple[SilencedSpan, ...] = ()
    #: A live call's verdicts as they reached the agent, by topic, when the verdicts above were made after the call
    #: from utterances re-decoded at full quality (they had been decoded greedily under load); empty when the
    #: verdicts above are the live ones, or the call was not live.
    live_labels: dict[str, str] = field(default_factory=dict)
    #: The utterances re-decoded after the call (their text above is the re-decoded one).
    redecoded: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: what is stored (`calls.report`) and read back by `read_report`, with `format_version`.
        Utterances carry `channel` (the speaker) and times rounded to milliseconds."""
        data = asdict(self)
        data["utterances"] = [
            {"utterance_id": t.utterance_id, "channel": t.speaker, "start_s": round(t.start_s, 3),
             "end_s": round(t.end_s, 3), "text": t.text} for t in self.utterances]
        data["format_version"] = REPORT_FORMAT
        return data


class ReportFormatError(ValueError):
    """A stored report that no format version describes (a newer format, or a broken one)."""


# Validating through the dataclasses' own types checks every field a reader relies on, and turns lists back
# into tuples; built once, on first use, since building it walks all the report's types.
_REPORT_ADAPTER: TypeAdapter[Report] | None = None


def read_report(data: Any) -> Report:
    """The typed report of a stored JSON report (`Report.to_dict`), of any format version: the one reader of
    stored reports. Format 1 (no `format_version`: every report stored before it existed) is upgraded: fields
    added since default (`answers` none, versions "", a topic's `stated` None, no loan file, nothing silenced),
    and a report without `agent` gets the agent's side its topics imply. Raises `ReportFormatError`."""
    global _REPORT_ADAPTER
    if not isinstance(data, dict):
        raise ReportFormatError(f"a stored report is a JSON object, not {type(data).__name__}")
    version = data.get("format_version", 1)
    if version not in (1, REPORT_FORMAT):
        raise ReportFormatError(f"report format {version!r} is not one this version reads (1-{REPORT_FORMAT})")
    fields = {k: v for k, v in data.items() if k != "format_version"}
    if version == 1:
        fields = _upgrade_1(fields)
    fields["utterances"] = [{**{k: v for k, v in u.items() if k != "channel"}, "speaker": u.get("channel")}
                            if isinstance(u, dict) else u for u in fields.get("utterances") or ()]
    if _REPORT_ADAPTER is None:
        _REPORT_ADAPTER = TypeAdapter(Report)
    try:
        return _REPORT_ADAPTER.validate_python(fields)
    except ValidationError as e:
        raise ReportFormatError(f"stored report (format {version}) does not read: {e}") from e


def _upgrade_1(data: dict[str, Any]) -> dict[str, Any]:
    """Format 1 as format 2. Since the first stored reports, fields were only added (answers, the assessor's and
    risk weights' versions, a topic's `stated`; the loan file and the silenced audio beside the report), so an old
    report reads with those at their defaults; lists other than `topics` may be missing (read as empty). Keys no
    format knows are dropped (the typed report has no place for them)."""
    known = set(Report.__dataclass_fields__)
    out = {k: v for k, v in data.items() if k in known}
    for key in ("utterances", "contributions", "actions", "answers"):
        out[key] = out.get(key) or []
    out["silenced_audio"] = out.get("silenced_audio") or []
    if not isinstance(out.get("agent"), dict):
        topics = [t for t in out["topics"] if isinstance(t, dict)]
        asked = [t for t in topics if t.get("asked")]
        out["agent"] = {"coverage": len(asked) / len(topics) if topics else 0.0, "asked": len(asked),
                        "total": len(topics), "not_asked": [t.get("topic") for t in topics if not t.get("asked")],
                        "prompts": [], "followed_up": 0}
    return out


def run_dialogue(turns: list[Turn], assessor: Assessor, loan: LoanRecord | None, options: DialogueOptions,
                 duration_s: float) -> CallDialogue:
    """The dialogue of a finished call (see `CallDialogue.replay`)."""
    dialogue = CallDialogue(assessor, loan, options)
    dialogue.replay(turns, duration_s)
    return dialogue


def score_call(call_id: str, turns: list[Turn], assessor: Assessor, loan: LoanRecord | None, duration_s: float,
               options: DialogueOptions | None = None, risk: RiskConfig | None = None) -> Report:
    """The report of a finished call from its utterances (both channels)."""
    dialogue = run_dialogue(turns, assessor, loan, options or DialogueOptions(), duration_s)
    return build_report(call_id, turns, dialogue, assessor, duration_s, risk or load_risk())


def build_report(call_id: str, turns: list[Turn], dialogue: CallDialogue, assessor: Assessor, duration_s: float,
                 risk: RiskConfig) -> Report:
    """Turn the dialogue's verdicts into the report (score, contributions, actions)."""
    standing = _standing(turns, dialogue, assessor.script)
    scored = score_topics(standing.topics, standing.answers, assessor.script, risk, standing.call_keys)
    labels: dict[str, int] = {}
    for result in scored.topics:
        if result.label:
            labels[result.label] = labels.get(result.label, 0) + 1
    return Report(call_id, duration_s, tuple(sorted(turns, key=lambda t: t.start_s)), scored.topics, scored.score,
                  scored.tier, scored.contributions, _agent(standing.summary, scored.topics), scored.actions,
                  standing.answers, labels, assessor.version, risk.version)


@dataclass(frozen=True, slots=True)
class _Standing:
    """What a dialogue's verdicts so far amount to before scoring: the report's and the live risk's one input."""

    summary: CallSummary
    topics: tuple[TopicResult, ...]
    answers: tuple[AnswerRecord, ...]
    call_keys: tuple[str, ...]


def _standing(turns: list[Turn], dialogue: CallDialogue, script: CallScript) -> _Standing:
    summary = dialogue.summary()
    by_id = {t.utterance_id: t for t in turns}
    by_topic = {v.topic: v for v in summary.verdicts}
    topics = tuple(topic_result(item.topic, item.name, item.times_asked, by_topic.get(item.topic), by_id)
                   for item in summary.checklist)
    names = {t.id: t.name for t in script.topics.values()}
    if script.other is not None:
        names[script.other.id] = script.other.name
    answers = tuple(_answer_record(v, by_id, names.get(v.topic, v.topic)) for v in dialogue.answers())
    return _Standing(summary, topics, answers, (CALLBACK_KEY,) if summary.callback_requested else ())


@dataclass(frozen=True, slots=True)
class LiveRisk:
    """A call's risk score (0-100) and tier as it stands, with what its clear answers have stated so far
    ((topic, value) pairs of configs/risk.yaml `stated`: a guarantor's clear 不同意 is `("guarantor", "no")`)."""

    score: int
    tier: Tier
    stated: tuple[tuple[str, str], ...] = ()


def live_risk(turns: list[Turn], dialogue: CallDialogue, script: CallScript, risk: RiskConfig,
              ended: bool) -> LiveRisk:
    """The risk of a call from its answers so far, by the report's own code and weights (`build_report` scores
    the same standing verdicts with `score_topics`). While the call goes on (`ended` False) a topic not asked
    yet adds nothing: the agent may still ask it, and a call just begun is not a risk for what it has not come
    to. Once it ended, such topics count as the report counts them, so the live risk at the end of a call is its
    report's score and tier. Pure."""
    standing = _standing(turns, dialogue, script)
    topics = standing.topics if ended else tuple(t for t in standing.topics if t.asked)
    scored = score_topics(topics, standing.answers, script, risk, standing.call_keys)
    return LiveRisk(scored.score, scored.tier, tuple((t.topic, t.stated) for t in scored.topics if t.stated))


@dataclass(frozen=True, slots=True)
class Scored:
    """The risk side of a report: the topics with what their clear answers state, score, tier, why, actions."""

    topics: tuple[TopicResult, ...]
    score: int
    tier: Tier
    contributions: tuple[Contribution, ...]
    actions: tuple[Action, ...]


def score_topics(topics: tuple[TopicResult, ...], answers: tuple[AnswerRecord, ...], script: CallScript,
                 risk: RiskConfig, call_keys: tuple[str, ...] = ()) -> Scored:
    """Score a call's topic results (the verdicts that stand) and answers under `risk`; `call_keys` are what the
    call as a whole asks for (`CALLBACK_KEY`). Pure."""
    topics = tuple(with_stated(result, script, risk) for result in topics)
    contributions = _contributions(topics, answers, script, risk)
    score = min(100, round(sum(c.points for c in contributions)))
    tier: Tier = "high" if score >= risk.tiers["high"] else "medium" if score >= risk.tiers["medium"] else "low"
    return Scored(topics, score, tier, contributions, _actions(topics, risk, call_keys))


def with_stated(result: TopicResult, script: CallScript, risk: RiskConfig) -> TopicResult:
    """The topic result with what its clear answer states (a vague answer states nothing: its label scores it)."""
    rule = risk.stated.get(result.topic)
    if rule is None or result.label != "clear":
        return result
    spec = script.topics.get(result.topic)
    polar = spec is not None and spec.slot in POLAR_KINDS
    stated = stated_value(rule, result.answer_text, result.question_text,
                          result.slots if polar else (), risk.stated_negations,
                          spec.risk_terms if spec is not None else ())
    return replace(result, stated=stated.value if stated else None)


def _span(turns: list[Turn]) -> Span | None:
    if not turns:
        return None
    return (round(min(t.start_s for t in turns), 3), round(max(t.end_s for t in turns), 3))


def topic_result(topic: str, name: str, times_asked: int, verdict: Verdict | None,
                 by_id: dict[str, Turn]) -> TopicResult:
    """One checklist topic of the call: its standing verdict (None: not answered) with the turns it pairs."""
    if verdict is None:
        return TopicResult(topic, name, times_asked > 0, times_asked, None, None, (), (), None, None, None, None,
                           None)
    a = verdict.assessment
    question = by_id.get(verdict.question_utterance_id)
    answers = [by_id[i] for i in verdict.answer_utterance_ids if i in by_id]
    answer_span = _span(answers) or (
        (round(question.end_s, 3), round(verdict.answer_end_s, 3)) if question else None)  # the silence itself
    return TopicResult(
        topic, name, True, times_asked, a.label, round(a.confidence, 3), a.evidence, a.slots,
        a.mismatch, question.text if question else None,
        "，".join(t.text for t in answers) or None, _span([question]) if question else None, answer_span)


def _answer_record(verdict: Verdict, by_id: dict[str, Turn], name: str) -> AnswerRecord:
    result = topic_result(verdict.topic, name, 1, verdict, by_id)
    return AnswerRecord(verdict.topic, name, verdict.assessment.label, result.mismatch is not None,
                        result.question_text, result.answer_text, result.question_span, result.answer_span)


def _contributions(topics: tuple[TopicResult, ...], answers: tuple[AnswerRecord, ...], script: CallScript,
                   risk: RiskConfig) -> tuple[Contribution, ...]:
    out: list[Contribution] = []
    names = risk.label_names
    # Questions outside the script add points only where configs/risk.yaml says so (`other.<label>`).
    for answer in answers:
        points = risk.overrides.get(f"{answer.topic}.{answer.label}") if answer.topic == OTHER_TOPIC else None
        if points:
            out.append(Contribution(f"{answer.name}：{names.get(answer.label, answer.label)}", points, answer.topic,
                                    answer.label, answer.answer_text or "（沉默）", answer.answer_span))
    for result in topics:
        spec = script.topics.get(result.topic)
        sensitivity = spec.sensitivity if spec else "medium"
        if result.label and result.label != "clear":
            points = risk.overrides.get(f"{result.topic}.{result.label}")
            if points is None:
                points = risk.label_points.get(result.label, 0.0) * risk.sensitivity_factor.get(sensitivity, 1.0)
            cue = next((e.text for e in result.evidence if e.kind != "slot"), result.answer_text or "")
            out.append(Contribution(f"{result.name}：{names.get(result.label, result.label)}", points,
                                    result.topic, result.label, cue, result.answer_span))
        if result.mismatch:
            points = risk.mismatch_points.get(result.mismatch.field, 10.0)
            out.append(Contribution(
                f"{result.name}：{names.get('mismatch', 'mismatch')}", points, result.topic, "mismatch",
                f"客户称 {result.mismatch.stated:g}，档案为 {result.mismatch.on_file:g}", result.answer_span))
        stated = risk.stated[result.topic].values.get(result.stated) if result.stated else None
        if stated is not None and stated.points > 0:
            out.append(Contribution(f"{result.name}：{stated.reason}", stated.points, result.topic, result.label,
                                    result.answer_text or "", result.answer_span))
        if not result.asked and sensitivity in risk.not_asked_points:
            out.append(Contribution(f"{result.name}：未询问", risk.not_asked_points[sensitivity], result.topic, None,
                                    "坐席未问及该项", None))
    return tuple(sorted(out, key=lambda c: -c.points))


def _agent(summary: CallSummary, topics: tuple[TopicResult, ...]) -> AgentReview:
    asked = [t for t in topics if t.asked]
    return AgentReview(summary.coverage, len(asked), len(topics), tuple(t.topic for t in topics if not t.asked),
                       summary.prompts, sum(1 for p in summary.prompts if p.followed_up))


#: Call-level keys an action's `when` may name, with the evidence shown for them.
CALLBACK_KEY = "call.callback"
CALL_EVIDENCE = {CALLBACK_KEY: "开场询问是否方便时，客户表示现在不方便"}


def _actions(topics: tuple[TopicResult, ...], risk: RiskConfig, call_keys: tuple[str, ...] = ()) -> tuple[
        Action, ...]:
    keys: list[tuple[str, TopicResult]] = []
    for result in topics:
        if result.label and result.label != "clear":
            keys.append((f"{result.topic}.{result.label}", result))
        if result.mismatch:
            keys.append((f"{result.topic}.mismatch", result))
        if result.stated:
            keys.append((f"{result.topic}.stated:{result.stated}", result))
    actions = []
    for spec in risk.actions:
        matched = [r for key, r in keys if any(fnmatch.fnmatchcase(key, str(p)) for p in spec["when"])]
        for key in call_keys:  # 不方便 to the opening: the call is to be made again (no topic, no span)
            if key in spec["when"]:
                actions.append(Action(str(spec["id"]), str(spec["text"]), (), (CALL_EVIDENCE[key],), ()))
        if not matched:
            continue
        evidence = tuple(dict.fromkeys(
            f"{r.name}：{r.answer_text or '（沉默）'}" for r in matched))
        spans = tuple(r.answer_span for r in matched if r.answer_span)
        actions.append(Action(str(spec["id"]), str(spec["text"]), tuple(dict.fromkeys(r.topic for r in matched)),
                              evidence, spans))
    return tuple(actions)
