"""Loading the call script (`configs/call_script.yaml`) and cue lexicons (`configs/cues.yaml`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import yaml

from huifang_configs import configs_file
from nlu.types import LABELS, Sensitivity, SlotKind

DEFAULT_SCRIPT_FILE = configs_file("call_script.yaml")
DEFAULT_CUES_FILE = configs_file("cues.yaml")
_SLOTS = ("amount_yuan", "years", "day", "percent", "yes_no", "consent", "text")


class ScriptError(ValueError):
    """The call script or cue file is malformed; the message names the file and the entry."""


@dataclass(frozen=True, slots=True)
class Topic:
    """One question of the call script."""

    id: str
    name: str
    slot: SlotKind
    sensitivity: Sensitivity
    keywords: tuple[str, ...]
    examples: tuple[str, ...]
    prompts: dict[str, str]
    loan_field: str | None = None
    #: Only looked for in calls to these roles (empty: every call).
    roles: tuple[str, ...] = ()
    #: Generic question frames (您了解这笔贷款吗) that name the topic only when no topic's keyword is there.
    frames: tuple[str, ...] = ()
    #: Words whose presence makes an answer a concrete statement of a free-text topic (自住, 出租, 上班): the
    #: positive evidence that a `text` answer gives what was asked.
    answer_terms: tuple[str, ...] = ()
    #: On every call's checklist (default); False for a topic asked only in some calls (an instalment due or
    #: late), which is on the checklist once asked and never counts as not asked.
    checklist: bool = True
    #: Statements of the risk the topic asks about (没钱, 周转不开): a yes that a hedge about the future beside it
    #: restates rather than takes back.
    risk_terms: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CallScript:
    """The topics of the script, the prompts used when a topic has none, and the topic of an agent question
    outside the script (`other`: assessed for non-answers only, never on the checklist)."""

    topics: dict[str, Topic]
    fallback_prompts: dict[str, str]
    other: Topic | None = None
    #: What an agent asks before the script begins (方便吗, 请问是张先生吗): not a question to assess.
    opening: tuple[str, ...] = ()
    #: An answer to an opening that asks to be called back (不方便, 在开车): an action for the report.
    decline: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Cues:
    """Cue lexicons by label, plus the words that settle yes/no questions."""

    omission: tuple[str, ...]
    unclear: tuple[str, ...]
    evasive: tuple[str, ...]
    hedge_particles: tuple[str, ...]
    rounding: tuple[str, ...]
    yes_words: tuple[str, ...]
    no_words: tuple[str, ...]
    #: What an agent says to show they are listening (嗯, 好的): it does not end the customer's answer.
    backchannels: tuple[str, ...] = ()
    #: Words after which digits name something (尾号8866, 卡号): never an amount, a day or a rate.
    identifier_markers: tuple[str, ...] = ()
    #: Words with which a customer corrects what they just said (不对，准确说是…): cues before the last one
    #: no longer count.
    corrections: tuple[str, ...] = ()
    #: Deferring to someone else (你问她): omission for a fact, evasive for the customer's own consent.
    deferral: tuple[str, ...] = ()
    #: Hedges that make a whole answer conditional (看情况): a concrete statement beside them does not make it clear.
    conditional_hedges: tuple[str, ...] = ()
    #: Verbs of the same act (还/扣/转, 知道/晓得): any of them taken up answers a polar question asking another.
    acts: tuple[tuple[str, ...], ...] = ()


def read_mapping(path: Path, error: type[Exception] = ScriptError) -> dict[str, Any]:
    """The YAML mapping in `path` (a file of configs/); `error` naming the file when it cannot be read or is not a
    mapping."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise error(f"cannot read {path}: {e}") from e
    if not isinstance(data, dict):
        raise error(f"{path} must be a mapping")
    return data


def _strings(path: Path, where: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ScriptError(f"{path}: {where} must be a list of non-empty strings")
    return tuple(value)


def load_script(path: str | Path | None = None) -> CallScript:
    """Read and validate the call script."""
    path = Path(path) if path else DEFAULT_SCRIPT_FILE
    data = read_mapping(path)
    raw = data.get("topics")
    if not isinstance(raw, dict) or not raw:
        raise ScriptError(f"{path}: `topics` must be a non-empty mapping")
    if "other" in raw:
        raise ScriptError(f"{path}: `other` is reserved for questions outside the script (a top-level section)")
    topics = {str(topic_id): _topic(path, str(topic_id), spec) for topic_id, spec in raw.items()}
    other = _topic(path, "other", data["other"]) if data.get("other") is not None else None
    fallback = data.get("fallback_prompts") or {}
    if not isinstance(fallback, dict):
        raise ScriptError(f"{path}: `fallback_prompts` must be a mapping")
    opening = data.get("opening") or {}
    if not isinstance(opening, dict):
        raise ScriptError(f"{path}: `opening` must be a mapping with `asks` and `decline`")
    asks = _strings(path, "opening.asks", opening["asks"]) if opening.get("asks") else ()
    decline = _strings(path, "opening.decline", opening["decline"]) if opening.get("decline") else ()
    return CallScript(topics, {str(k): str(v) for k, v in fallback.items()}, other, asks, decline)


def _topic(path: Path, topic_id: str, spec: object) -> Topic:
    if not isinstance(spec, dict):
        raise ScriptError(f"{path}: topic {topic_id} must be a mapping")
    slot = spec.get("slot")
    if slot not in _SLOTS:
        raise ScriptError(f"{path}: topic {topic_id}: slot must be one of {', '.join(_SLOTS)}")
    sensitivity = spec.get("sensitivity", "medium")
    if sensitivity not in ("low", "medium", "high"):
        raise ScriptError(f"{path}: topic {topic_id}: sensitivity must be low, medium or high")
    prompts = spec.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(k in (*LABELS, "mismatch") for k in prompts):
        raise ScriptError(f"{path}: topic {topic_id}: prompts must be keyed by label or 'mismatch'")

    def strings(key: str) -> tuple[str, ...]:
        return _strings(path, f"topic {topic_id}: {key}", spec[key]) if spec.get(key) else ()

    keywords = strings("keywords")
    if not keywords and topic_id != "other":
        raise ScriptError(f"{path}: topic {topic_id}: keywords must be a non-empty list")
    return Topic(
        id=topic_id,
        name=str(spec.get("name", topic_id)),
        slot=cast(SlotKind, slot),
        sensitivity=cast(Sensitivity, sensitivity),
        keywords=keywords,
        examples=strings("examples"),
        prompts={str(k): str(v) for k, v in prompts.items()},
        loan_field=spec.get("loan_field"),
        roles=strings("roles"),
        frames=strings("frames"),
        answer_terms=strings("answer_terms"),
        checklist=_flag(path, topic_id, spec, "checklist", True),
        risk_terms=strings("risk_terms"),
    )


def _flag(path: Path, topic_id: str, spec: dict[str, Any], key: str, default: bool) -> bool:
    value = spec.get(key, default)
    if not isinstance(value, bool):
        raise ScriptError(f"{path}: topic {topic_id}: {key} must be true or false")
    return value


def load_cues(path: str | Path | None = None) -> Cues:
    """Read and validate the cue lexicons."""
    path = Path(path) if path else DEFAULT_CUES_FILE
    raw = read_mapping(path)
    def lexicon(key: str) -> tuple[str, ...]:
        return _strings(path, key, raw.get(key))

    return Cues(
        omission=lexicon("omission"), unclear=lexicon("unclear"), evasive=lexicon("evasive"),
        hedge_particles=lexicon("hedge_particles"), rounding=lexicon("rounding"), yes_words=lexicon("yes_words"),
        no_words=lexicon("no_words"),
        backchannels=lexicon("backchannels") if raw.get("backchannels") else (),
        identifier_markers=lexicon("identifier_markers") if raw.get("identifier_markers") else (),
        corrections=lexicon("corrections") if raw.get("corrections") else (),
        deferral=lexicon("deferral") if raw.get("deferral") else (),
        conditional_hedges=lexicon("conditional_hedges") if raw.get("conditional_hedges") else (),
        acts=tuple(_strings(path, f"acts[{i}]", group) for i, group in enumerate(raw.get("acts") or [])),
    )
