"""What storage is handed when a report is stored, and what features add to it.

Storage keeps a report as JSON and never reads inside it: the caller, which holds the typed report, hands over the
columns calls are listed and filtered by (`ReportRow`). Features that derive rows of their own from a report
(coaching's per-call figures, the loan book's call summary) register a `ReportRows` at start-up; the store runs
each one in the transaction that stores the report, so a crash leaves either all of them or none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.orm import Session

from service.store.models import Call


@dataclass(frozen=True, slots=True)
class AnswerRow:
    """One assessed topic of a report: what `GET /v1/calls?label=` filters by."""

    topic: str
    label: str
    confidence: float
    mismatch: bool
    start_s: float | None
    end_s: float | None


@dataclass(frozen=True, slots=True)
class ReportRow:
    """A report as storage keeps it: the JSON as written, with its listing columns and answers."""

    report: dict[str, Any]
    duration_s: float
    risk_score: int
    tier: str
    answers: tuple[AnswerRow, ...]


class ReportRows(Protocol):
    """Rows a feature derives from each stored report, written in the report's own transaction."""

    def write(self, s: Session, call: Call, loan_file: Mapping[str, Any] | None) -> None:
        """Add this feature's rows for `call` (already in `s`), replacing any it has: a re-scored report
        rewrites them. `loan_file` is the call's loan file as the job received it (None: none came)."""
