"""Agent assistance for one live call: finals and the audio clock in, assessment/prompt/checklist events out.

`CallAssist` wraps the pure `nlu.dialogue.CallDialogue` for the event loop: the dialogue runs on a worker
thread, one step at a time per call, and its verdicts become protocol events. If the NLU stage fails, the call
degrades to transcript only (one `error` event, code `assessment_failed`); the socket and other calls go on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import asdict
from typing import Any, TypeVar

from pydantic import BaseModel

from nlu.assess import Assessor
from nlu.dialogue import CallDialogue, CallSummary, ChecklistItem, DialogueOptions, Turn, Verdict
from nlu.types import LoanRecord
from service.protocol import (
    AssessmentEvent,
    ChecklistEvent,
    ChecklistItemModel,
    ErrorEvent,
    EvidenceItem,
    MismatchInfo,
    PromptEvent,
    PromptSummary,
    SlotValue,
    SummaryEvent,
)

log = logging.getLogger(__name__)

Emit = Callable[[BaseModel], Awaitable[None]]
T = TypeVar("T")

#: Channel names that take part in the dialogue; other names (a mono mix, say) get transcripts only.
AGENT, CUSTOMER = "agent", "customer"


def assists(channels: list[str]) -> bool:
    """Whether a call with these channel roles can be assisted: it needs an agent and a customer channel."""
    return AGENT in channels and CUSTOMER in channels


class CallAssist:
    """The NLU side of one live call."""

    def __init__(self, call_id: str, assessor: Assessor, loan_file: dict[str, Any] | None, options: DialogueOptions,
                 executor: Executor, emit: Emit) -> None:
        self.call_id = call_id
        self.dialogue = CallDialogue(assessor, LoanRecord.from_mapping(loan_file), options)
        self._names = {t.id: t.name for t in assessor.script.topics.values()}
        if assessor.script.other is not None:
            self._names[assessor.script.other.id] = assessor.script.other.name
        self._executor = executor
        self._emit = emit
        self._lock = asyncio.Lock()  # one dialogue step at a time, in the order they were asked for
        self._checklist: tuple[ChecklistItem, ...] | None = None
        self.failed = False

    async def final(self, turn: Turn) -> None:
        """A finished utterance (call in endpoint order)."""
        await self._step(self.dialogue.add, turn)

    async def tick(self, now_s: float, busy: bool) -> None:
        """The audio clock moved on; `busy` when someone is speaking or a final is still being decoded."""
        due = self.dialogue.silence_due_s()  # a cheap read, so that most ticks need no thread hop
        if self.failed or busy or due is None or now_s < due:
            return
        await self._step(self.dialogue.tick, now_s, False)

    async def finish(self, duration_s: float) -> None:
        """End of the call: last silence check, then the summary."""
        await self._step(self.dialogue.finish, duration_s)
        if self.failed:
            return
        summary = self.dialogue.summary()
        await self._emit(self._summary_event(summary, duration_s))

    async def _step(self, fn: Callable[..., list[Verdict]], *args: Any) -> None:
        if self.failed:
            return
        async with self._lock:
            loop = asyncio.get_running_loop()
            try:
                verdicts, checklist = await loop.run_in_executor(self._executor, self._run, fn, args)
            except Exception:
                # The NLU must never take the call down: keep the transcript flowing and say so once.
                log.exception("call %s: assessment failed; continuing with transcripts only", self.call_id)
                self.failed = True
                await self._emit(ErrorEvent(code="assessment_failed", message="answer assessment failed for this "
                                            "call; transcripts continue without prompts"))
                return
        for verdict in verdicts:
            await self._emit(self._assessment_event(verdict))
            if verdict.prompt:
                assessment = verdict.assessment
                await self._emit(PromptEvent(text=verdict.prompt, topic=verdict.topic,
                                             topic_name=self._names.get(verdict.topic, verdict.topic),
                                             label=assessment.label, mismatch=assessment.mismatch is not None,
                                             question_utterance_id=verdict.question_utterance_id,
                                             answer_end_s=verdict.answer_end_s))
        if checklist is not None:
            await self._emit(ChecklistEvent(items=[_item(i) for i in checklist],
                                            coverage=self.dialogue.summary().coverage))

    def _run(self, fn: Callable[..., list[Verdict]], args: tuple[Any, ...]) -> tuple[list[Verdict],
                                                                                   tuple[ChecklistItem, ...] | None]:
        verdicts = fn(*args)
        checklist = self.dialogue.checklist()
        if checklist == self._checklist:
            return verdicts, None
        self._checklist = checklist
        return verdicts, checklist

    def _assessment_event(self, verdict: Verdict) -> AssessmentEvent:
        a = verdict.assessment
        return AssessmentEvent(
            topic=verdict.topic, topic_name=self._names.get(verdict.topic, verdict.topic), label=a.label,
            confidence=round(a.confidence, 3),
            evidence=[EvidenceItem(**asdict(e)) for e in a.evidence],
            slots=[SlotValue(**asdict(s)) for s in a.slots],
            mismatch=MismatchInfo(**asdict(a.mismatch)) if a.mismatch else None,
            question_utterance_id=verdict.question_utterance_id,
            answer_utterance_id=verdict.answer_utterance_ids[-1] if verdict.answer_utterance_ids else None,
            answer_utterance_ids=list(verdict.answer_utterance_ids), answer_end_s=verdict.answer_end_s,
            revision=verdict.revision, suggestion=a.prompt, assessor_version=a.assessor_version,
        )

    def _summary_event(self, summary: CallSummary, duration_s: float) -> SummaryEvent:
        return SummaryEvent(
            call_id=self.call_id, duration_s=duration_s, checklist=[_item(i) for i in summary.checklist],
            coverage=summary.coverage, answers=summary.answers, vague_answers=summary.vague_answers,
            mismatches=summary.mismatches, assessments=[self._assessment_event(v) for v in summary.verdicts],
            prompts=[PromptSummary(**asdict(p)) for p in summary.prompts],
        )


def _item(item: ChecklistItem) -> ChecklistItemModel:
    return ChecklistItemModel(**asdict(item))
