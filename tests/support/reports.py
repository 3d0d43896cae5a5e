"""Stored reports for tests that need a call in the database without scoring one: made from the report's own
dataclasses (`nlu.report.Report.to_dict`), so they are what `read_report`, and so every reader, accepts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nlu.report import Action, AgentReview, Report, Tier, TopicResult
from nlu.types import Mismatch


def stored_report(call_id: str, tier: Tier = "low", risk_score: int = 5,
                  labels: Mapping[str, str | None] | None = None, *, mismatch: tuple[str, ...] = (),
                  actions: Mapping[str, list[str]] | None = None, not_asked: tuple[str, ...] = (),
                  duration_s: float = 40.0, stated: Mapping[str, str] | None = None,
                  assessor_version: str = "", confidence: float = 0.8) -> dict[str, Any]:
    """A report as stored: `labels` topic -> standing label (None: asked, never answered), each answered at
    1-2 s; topics in `mismatch` contradicted the loan file's monthly payment; `actions` id -> topics; `not_asked`
    topics were left out. No utterances, contributions or answers (readers count those as none)."""
    topics = [TopicResult(t, t, True, 1, lab, confidence if lab else None, (), (),
                          Mismatch("monthly_yuan", 3000.0, 4200.0) if t in mismatch else None, None, None, None,
                          (1.0, 2.0) if lab else None, (stated or {}).get(t))
              for t, lab in (labels or {}).items()]
    topics += [TopicResult(t, t, False, 0, None, None, (), (), None, None, None, None, None) for t in not_asked]
    asked = len(topics) - len(not_asked)
    agent = AgentReview(asked / len(topics) if topics else 0.0, asked, len(topics), tuple(not_asked), (), 0)
    report = Report(call_id, duration_s, (), tuple(topics), risk_score, tier, (), agent,
                    tuple(Action(a, a, tuple(t), (), ()) for a, t in (actions or {}).items()),
                    assessor_version=assessor_version)
    return report.to_dict()
