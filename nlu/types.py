"""Records of answer assessment. The label and topic names are part of the public API."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

Label = Literal["clear", "omission", "unclear", "evasive"]
LABELS: tuple[Label, ...] = ("clear", "omission", "unclear", "evasive")
SlotKind = Literal["amount_yuan", "years", "day", "percent", "yes_no", "consent", "text"]
Sensitivity = Literal["low", "medium", "high"]


@dataclass(frozen=True, slots=True)
class Slot:
    """A fact stated in an answer, normalised: yuan, day of month, years, percent, or a yes/no as bool."""

    kind: SlotKind
    value: float | bool | str | None
    approximate: bool
    text: str


@dataclass(frozen=True, slots=True)
class Evidence:
    """Why a label was given: a cue word, a missing slot, a mismatch, silence, a counter-question, the stated slot,
    or for a learned decision its probability (`learned`) and the nearest corpus answers behind it (`example`)."""

    kind: Literal["cue", "missing_slot", "no_evidence", "mismatch", "silence", "counter_question", "slot", "learned",
                  "example"]
    text: str
    label: Label | None = None


@dataclass(frozen=True, slots=True)
class Mismatch:
    """A clearly stated figure that contradicts the bank's loan record."""

    field: str
    stated: float
    on_file: float


@dataclass(frozen=True, slots=True)
class LoanRecord:
    """The bank's record of the loan, as far as the assessment needs it."""

    amount_yuan: float | None = None
    term_years: float | None = None
    repay_day: int | None = None
    monthly_yuan: float | None = None
    rate_pct: float | None = None
    role: str | None = None

    @classmethod
    def from_mapping(cls, data: dict[str, object] | None) -> LoanRecord | None:
        if not data:
            return None

        def num(key: str) -> float | None:
            value = data.get(key)
            return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

        day = num("repay_day")
        role = data.get("role")
        return cls(num("amount_yuan"), num("term_years"), int(day) if day is not None else None,
                   num("monthly_yuan"), num("rate_pct"), role if isinstance(role, str) else None)


@dataclass(frozen=True, slots=True)
class Assessment:
    """The verdict on one (question, answer) pair."""

    topic: str | None
    label: Label
    confidence: float
    evidence: tuple[Evidence, ...]
    slots: tuple[Slot, ...]
    mismatch: Mismatch | None
    prompt: str | None
    topics_asked: tuple[str, ...] = field(default_factory=tuple)
    #: The assessor that produced this (learned weights, script, lexicons and options, hashed): `Assessor.version`.
    assessor_version: str = ""

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "topic": self.topic,
            "label": self.label,
            "confidence": round(self.confidence, 3),
            "evidence": [asdict(e) for e in self.evidence],
            "slots": [asdict(s) for s in self.slots],
            "mismatch": asdict(self.mismatch) if self.mismatch else None,
            "prompt": self.prompt,
            "assessor_version": self.assessor_version,
        }
