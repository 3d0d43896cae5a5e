"""A scored report as storage keeps it: the JSON, and the columns and answer rows calls are listed and filtered by.

Storage reads nothing inside a report; this is the one place that turns a report into what it stores
(`service.store.rows.ReportRow`), for the recording jobs, re-scoring and live calls alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nlu.report import Report, read_report
from service.store.rows import AnswerRow, ReportRow


def answer_labels(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The (topic, label) of each answer row `report_row` makes of `report`: what `huifang audit` checks the
    stored answer rows against."""
    return [(a.topic, a.label) for a in report_row(report).answers]


def report_row(report: Mapping[str, Any], typed: Report | None = None) -> ReportRow:
    """What storage keeps of `report` (as `nlu.report.Report.to_dict` writes it, read by `read_report`): the
    JSON as written, its listing columns, and an answer row per topic with a standing label. A caller that has
    already read it passes `typed`, so it is not read twice."""
    typed = typed if typed is not None else read_report(report)
    answers = tuple(
        AnswerRow(topic=t.topic, label=t.label, confidence=t.confidence or 0.0, mismatch=t.mismatch is not None,
                  start_s=t.answer_span[0] if t.answer_span else None,
                  end_s=t.answer_span[1] if t.answer_span else None)
        for t in typed.topics if t.label)
    return ReportRow(report=dict(report), duration_s=typed.duration_s, risk_score=typed.risk_score, tier=typed.tier,
                     answers=answers)
