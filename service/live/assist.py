"""Agent assistance for one live call: finals and the audio clock in, assessment/prompt/checklist events out.

`CallAssist` steps the dialogue of the call's `pipeline.call.CallPipeline` for the event loop: turns reach it in
the order their utterances ended (decoding may finish them out of order, and an answer must never reach the
dialogue before the question it answers), each step runs on a worker thread, one at a time per call, and its
verdicts become protocol events, with the call's risk as it stands (`risk`, by the report's own code) when it
changed. If the NLU stage fails, the call degrades to transcript only (one `error`
event, code `assessment_failed`); the socket and other calls go on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from dataclasses import asdict
from typing import Any

from asr.cpu import LEDGER
from nlu.dialogue import CallSummary, ChecklistItem, Turn, Verdict
from nlu.report import LiveRisk, RiskConfig, live_risk
from pipeline.call import CallPipeline
from service.metrics import ASSESSMENTS, PROMPTS
from service.protocol import (
    AssessmentEvent,
    ChecklistEvent,
    ChecklistItemModel,
    Emit,
    ErrorEvent,
    EvidenceItem,
    MismatchInfo,
    PromptEvent,
    PromptSummary,
    RiskEvent,
    SlotValue,
    SummaryEvent,
)

log = logging.getLogger(__name__)


#: What one dialogue step produced: its verdicts, the checklist when it changed, the risk when it changed.
_Stepped = tuple[list[Verdict], tuple[ChecklistItem, ...] | None, LiveRisk | None]


class CallAssist:
    """The NLU side of one live call (its pipeline must have a dialogue: agent and customer channels). With
    `risk` (the report's weights), the call's live risk is computed after each step that made verdicts."""

    def __init__(self, call_id: str, pipeline: CallPipeline, executor: Executor, emit: Emit,
                 risk: RiskConfig | None = None) -> None:
        self.call_id = call_id
        self.pipeline = pipeline
        self._names = pipeline.topic_names
        self._executor = executor
        self._emit = emit
        self._lock = asyncio.Lock()  # one dialogue step at a time, in the order they were asked for
        self._checklist: tuple[ChecklistItem, ...] | None = None
        self._risk = risk
        #: The risk last sent (read and written by the worker thread's step only).
        self._sent_risk: LiveRisk | None = None
        #: The step of the last final handed over: the next one waits for it (endpoint order).
        self._last: asyncio.Future[None] | None = None
        #: Finals handed over whose turn has not reached the dialogue yet.
        self.turns_pending = 0
        self.failed = False

    def turn_in_order(self, decoded: asyncio.Future[Turn | None]) -> Coroutine[Any, Any, None]:
        """Hand over a final that has just ended (call in endpoint order, across channels; the bookkeeping is
        done at once, so that `turns_pending` counts it before the next clock tick). Returns the coroutine that
        waits for its turn (`decoded` gives None when it had no text or failed) and steps the dialogue with it
        after every final handed over before it."""
        previous = self._last
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._last = done
        self.turns_pending += 1
        return self._in_order(decoded, previous, done)

    async def _in_order(self, decoded: asyncio.Future[Turn | None], previous: asyncio.Future[None] | None,
                        done: asyncio.Future[None]) -> None:
        try:
            turn = await decoded
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            if turn is not None:
                await self._step(self.pipeline.add, turn)
        finally:
            self.turns_pending -= 1
            done.set_result(None)

    async def tick(self, now_s: float, busy: bool) -> None:
        """The audio clock moved on; `busy` when someone is speaking or a final is still being decoded."""
        due = self.pipeline.silence_due_s()  # a cheap read, so that most ticks need no thread hop
        if self.failed or busy or due is None or now_s < due:
            return
        await self._step(self.pipeline.tick, now_s)

    async def finish(self, duration_s: float) -> None:
        """End of the call: last silence check, the risk as the report counts it, then the summary."""
        await self._step(self.pipeline.finish, duration_s, ended=True)
        if self.failed:
            return
        summary = self.pipeline.summary()
        if summary is not None:
            await self._emit(self._summary_event(summary, duration_s))

    async def _step(self, fn: Callable[..., list[Verdict]], *args: Any, ended: bool = False) -> None:
        if self.failed:
            return
        async with self._lock:
            loop = asyncio.get_running_loop()
            try:
                verdicts, checklist, risk = await loop.run_in_executor(self._executor, self._run, fn, args, ended)
            except Exception:
                # The NLU must never take the call down: keep the transcript flowing and say so once.
                log.exception("call %s: assessment failed; continuing with transcripts only", self.call_id)
                self.failed = True
                await self._emit(ErrorEvent(code="assessment_failed", message="answer assessment failed for this "
                                            "call; transcripts continue without prompts"))
                return
        for verdict in verdicts:
            ASSESSMENTS.labels(verdict.assessment.label).inc()
            await self._emit(self._assessment_event(verdict))
            if verdict.prompt:
                PROMPTS.labels(verdict.topic, verdict.assessment.label).inc()
                assessment = verdict.assessment
                await self._emit(PromptEvent(text=verdict.prompt, topic=verdict.topic,
                                             topic_name=self._names.get(verdict.topic, verdict.topic),
                                             label=assessment.label, mismatch=assessment.mismatch is not None,
                                             question_utterance_id=verdict.question_utterance_id,
                                             answer_end_s=verdict.answer_end_s))
        if checklist is not None and (summary := self.pipeline.summary()) is not None:
            await self._emit(ChecklistEvent(items=[_item(i) for i in checklist], coverage=summary.coverage))
        if risk is not None:
            await self._emit(RiskEvent(score=risk.score, tier=risk.tier, stated=dict(risk.stated)))

    def _run(self, fn: Callable[..., list[Verdict]], args: tuple[Any, ...], ended: bool) -> _Stepped:
        began = time.thread_time()
        verdicts = fn(*args)
        checklist = self.pipeline.checklist()
        risk = self._risk_now(ended) if verdicts or ended else None
        LEDGER.add("assess", "nlu", time.thread_time() - began)  # the answer classifier runs in this thread
        if checklist == self._checklist:
            return verdicts, None, risk
        self._checklist = checklist
        return verdicts, checklist, risk

    def _risk_now(self, ended: bool) -> LiveRisk | None:
        """The call's risk after this step when it differs from the one last sent (worker thread). Only verdicts
        move it (and the end of the call), so steps without any skip it."""
        dialogue = self.pipeline.dialogue
        if self._risk is None or dialogue is None:
            return None
        now = live_risk(self.pipeline.turns, dialogue, self.pipeline.assessor.script, self._risk, ended)
        if now == self._sent_risk:
            return None
        self._sent_risk = now
        return now

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
