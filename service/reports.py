"""A scored report as storage keeps it: the JSON, and the columns and answer rows calls are listed and filtered by.

Storage reads nothing inside a report; this is the one place that turns a report into what it stores
(`service.store.rows.ReportRow`), for the recording jobs, re-scoring and live calls alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.store.rows import AnswerRow, ReportRow


def report_row(report: Mapping[str, Any]) -> ReportRow:
    """What storage keeps of `report` (as `nlu.report.Report.to_dict` writes it)."""
    answers = []
    for topic in report["topics"]:
        if topic.get("label"):
            span = topic.get("answer_span") or (None, None)
            answers.append(AnswerRow(topic=str(topic["topic"]), label=str(topic["label"]),
                                     confidence=float(topic.get("confidence") or 0.0),
                                     mismatch=bool(topic.get("mismatch")), start_s=span[0], end_s=span[1]))
    return ReportRow(report=dict(report), duration_s=float(report["duration_s"]),
                     risk_score=int(report["risk_score"]), tier=str(report["tier"]), answers=tuple(answers))
