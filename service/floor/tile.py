"""One live call as the floor shows it: the `Tile` record and the pure fold of the call's events into it.

`fold(tile, event, at_s)` takes the protocol events a call emits (service/protocol.py) and returns the tile
after it, or the same object when the event changes nothing the floor shows (partials and finals, errors,
overload notices): the caller tells a change by identity, and only a change is published. Vague answers are
counted on the latest revision of each (question, topic): a customer who went on answering replaces the
earlier verdict, as the console does. No clock, no I/O: `at_s` is the wall-clock time of the event.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel

from service.protocol import (
    AssessmentEvent,
    ChecklistEvent,
    ChecklistItemModel,
    EndEvent,
    PromptEvent,
    ReadyEvent,
    RecordOnlyEvent,
    RiskEvent,
    SummaryEvent,
)

TileState = Literal["live", "ended", "record_only"]
#: The labels counted as vague answers on a tile, in the order the tile lists them.
VAGUE_LABELS = ("omission", "unclear", "evasive")
#: The loan file's roles as the console names them.
ROLE_NAMES = {"borrower": "借款人", "coborrower": "共同还款人", "guarantor": "担保人"}


@dataclass(frozen=True, slots=True)
class ChecklistEntry:
    """One topic of the call script on the tile: not_asked, asked, clear or vague, with its label."""

    topic: str
    name: str
    state: str
    label: str | None


@dataclass(frozen=True, slots=True)
class Answer:
    """The verdict that stands for one (question, topic) of the call."""

    question_utterance_id: str
    topic: str
    label: str
    revision: int


@dataclass(frozen=True, slots=True)
class TileRisk:
    """The call's live risk: the report's score (0-100) and tier."""

    score: float
    tier: str


@dataclass(frozen=True, slots=True)
class LastPrompt:
    """The last prompt the agent was shown."""

    text: str
    topic_name: str
    label: str


@dataclass(frozen=True, slots=True)
class Tile:
    """One call on the floor. `started_at_s` and `updated_at_s` are wall-clock seconds since the epoch;
    `duration_s` is the call's audio length once it ended (None while live: the wallboard counts from the start);
    `alerts` the ids of its open alerts; `seq` counts the tile's changes."""

    call_id: str
    agent_id: str | None
    started_at_s: float
    state: TileState = "live"
    customer: str | None = None
    loan: str | None = None
    checklist: tuple[ChecklistEntry, ...] = ()
    coverage: float = 0.0
    answers: tuple[Answer, ...] = ()
    risk: TileRisk | None = None
    last_prompt: LastPrompt | None = None
    alerts: tuple[str, ...] = ()
    duration_s: float | None = None
    seq: int = 0
    updated_at_s: float = 0.0

    @property
    def vague(self) -> dict[str, int]:
        """Vague answers so far by label (the verdict that stands per question and topic)."""
        counts = dict.fromkeys(VAGUE_LABELS, 0)
        for answer in self.answers:
            if answer.label in counts:
                counts[answer.label] += 1
        return counts

    def to_json(self, now_s: float) -> dict[str, Any]:
        """The tile as `GET /v1/live/calls` and `/v1/live/events` carry it (docs/floor.md); a live tile's
        `duration_s` is the wall-clock time since it started, at `now_s`."""
        duration = self.duration_s if self.duration_s is not None else max(0.0, now_s - self.started_at_s)
        return {
            "call_id": self.call_id, "agent_id": self.agent_id, "customer": self.customer, "loan": self.loan,
            "started_at": iso(self.started_at_s), "duration_s": round(duration, 1), "state": self.state,
            "checklist": {"items": [{"topic": i.topic, "name": i.name, "state": i.state, "label": i.label}
                                    for i in self.checklist], "coverage": self.coverage},
            "vague": self.vague,
            "risk": {"score": self.risk.score, "tier": self.risk.tier} if self.risk else None,
            "last_prompt": ({"text": self.last_prompt.text, "topic_name": self.last_prompt.topic_name,
                             "label": self.last_prompt.label} if self.last_prompt else None),
            "alerts": list(self.alerts), "seq": self.seq, "updated_at": iso(self.updated_at_s),
        }


def iso(at_s: float) -> str:
    """Wall-clock seconds since the epoch as an ISO 8601 UTC time with milliseconds."""
    return datetime.fromtimestamp(at_s, UTC).isoformat(timespec="milliseconds")


def new_tile(call_id: str, agent_id: str | None, at_s: float) -> Tile:
    """The tile of a call that has just started."""
    return Tile(call_id, agent_id, at_s, updated_at_s=at_s)


def fold(tile: Tile, event: BaseModel, at_s: float) -> Tile:
    """The tile after one of its call's events; `tile` itself when the event changes nothing shown. Pure."""
    changes = _changes(tile, event)
    if not changes:
        return tile
    return replace(tile, **changes, seq=tile.seq + 1, updated_at_s=at_s)


def with_alerts(tile: Tile, alerts: tuple[str, ...], at_s: float) -> Tile:
    """The tile with these open alert ids (`tile` itself when they are the same)."""
    if alerts == tile.alerts:
        return tile
    return replace(tile, alerts=alerts, seq=tile.seq + 1, updated_at_s=at_s)


def ended(tile: Tile, at_s: float) -> Tile:
    """The tile of a call whose connection closed without `end` (dropped, failed): no longer live."""
    if tile.state == "ended":
        return tile
    return replace(tile, state="ended", seq=tile.seq + 1, updated_at_s=at_s)


def _changes(tile: Tile, event: BaseModel) -> dict[str, Any]:
    if isinstance(event, ReadyEvent):
        customer, loan = masked_parties(event.loan_file)
        return {"customer": customer, "loan": loan} if (customer, loan) != (tile.customer, tile.loan) else {}
    if isinstance(event, RecordOnlyEvent):
        return {"state": "record_only"}
    if isinstance(event, ChecklistEvent):
        return _checklist(tile, event.items, event.coverage)
    if isinstance(event, AssessmentEvent):
        return _answer(tile, event)
    if isinstance(event, PromptEvent):
        return {"last_prompt": LastPrompt(event.text, event.topic_name, event.label)}
    if isinstance(event, RiskEvent):
        risk = TileRisk(event.score, event.tier)
        return {"risk": risk} if risk != tile.risk else {}
    if isinstance(event, SummaryEvent):
        return {**_checklist(tile, event.checklist, event.coverage), "duration_s": round(event.duration_s, 1)}
    if isinstance(event, EndEvent):
        # A call kept open for a reconnect (`resumable`) is not over, but this connection's part of it is.
        return {"state": "ended"} if tile.state != "ended" else {}
    return {}


def _checklist(tile: Tile, items: list[ChecklistItemModel], coverage: float) -> dict[str, Any]:
    entries = tuple(ChecklistEntry(i.topic, i.name, i.state, i.label) for i in items)
    if (entries, coverage) == (tile.checklist, tile.coverage):
        return {}
    return {"checklist": entries, "coverage": coverage}


def _answer(tile: Tile, event: AssessmentEvent) -> dict[str, Any]:
    key = (event.question_utterance_id, event.topic)
    answers = list(tile.answers)
    for i, answer in enumerate(answers):
        if (answer.question_utterance_id, answer.topic) == key:
            if answer.revision > event.revision:
                return {}  # an older revision arriving late changes nothing
            answers[i] = Answer(*key, event.label, event.revision)
            return {"answers": tuple(answers)}
    return {"answers": (*answers, Answer(*key, event.label, event.revision))}


def mask_id(value: str) -> str:
    """An id as a wallboard shows it: its last four characters (a loan or customer id is told apart by them)."""
    return "****" + value[-4:] if len(value) > 4 else "****"


def masked_parties(loan_file: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """(customer, loan) as the floor shows them, from the loan file as the `ready` event carries it
    (nlu.pii.public_loan_file: the borrower's name already reduced to the surname): the masked name, else the
    masked customer id; the masked loan id with the role and amount. Never an id whole, a phone or a card."""
    if not loan_file:
        return None, None
    name, customer_id = loan_file.get("borrower"), loan_file.get("customer_id")
    customer = name if isinstance(name, str) and name else mask_id(str(customer_id)) if customer_id else None
    parts = []
    if loan_file.get("loan_id"):
        parts.append(mask_id(str(loan_file["loan_id"])))
    if loan_file.get("role") in ROLE_NAMES:
        parts.append(ROLE_NAMES[str(loan_file["role"])])
    amount = loan_file.get("amount_yuan")
    if isinstance(amount, int | float):
        parts.append(f"{amount / 10000:g} 万元")
    return customer, " · ".join(parts) or None
