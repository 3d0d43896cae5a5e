"""Reviewed disputes as an evaluation set for the assessor (`huifang export-feedback`): JSON lines in the format
of the shared validation set `nlu_dev` (`id`, `topic`, `question`, `answer`, `label`, `source`), so that
`python -m bench.nlu_eval --extra FILE` scores the assessor on the bank's own customers.

The label is the reviewer's whether they upheld the dispute or overturned it (the gold label either way); the topic
is the one the reviewer named, else the prompt's. Question and answer are the redacted utterances the prompt was
about (an empty answer is a silent non-answer, as in nlu_dev). No call id, agent or note leaves: a line says what
was asked and answered, not who or when. Pure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from service.feedback.repository import FeedbackRecord

#: `source` of every exported line (nlu_dev's are `written` or `asr_like`).
SOURCE = "agent_feedback"


def export_row(record: FeedbackRecord) -> dict[str, Any]:
    """One reviewed dispute as an nlu_dev line."""
    return {"id": f"fb{record.id}", "topic": record.reviewer_topic or record.topic,
            "question": record.question_text or "", "answer": record.answer_text or "",
            "label": record.reviewer_label, "source": SOURCE}


def export_lines(records: Iterable[FeedbackRecord]) -> Iterator[str]:
    """The JSON lines (no newline) of the reviewed disputes among `records`."""
    for record in records:
        if record.review_status in ("upheld", "overturned") and record.reviewer_label:
            yield json.dumps(export_row(record), ensure_ascii=False)
