"""The lifecycle of a live call, whatever carries its audio: the native socket, Twilio Media Streams or the
console's demo replay.

`LiveCalls` is the process's registry: `open` checks that the call may start (model loaded, not stopping) and
claims it (`CallClaims`: the id free on every replica, the token's call limit), builds the call's
`CallPipeline`, its `LiveCall` (audio -> finals) and `CallAssist` (dialogue -> prompts), and returns a
`LiveSession`. Every source's audio arrives as the same `AudioChunk`s (service/live/sources/). Every event of
the session goes to the caller's `send` (its socket; None for the demo), to the call's subscribers on the
`EventBus`, and (verdicts only) to the audit log. A session is used as: `ready()`, `feed()` with
`check_limits()` after each, then `end()` (stored), `fail()` (stored, incomplete) or `drop()` (kept
open for a reconnect), and always `close()`.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from nlu.assess import Assessor
from nlu.dialogue import DialogueOptions
from nlu.pii import public_loan_file
from pipeline.call import CallPipeline, assists
from service.errors import ServiceError, unavailable
from service.live.assist import CallAssist
from service.live.books import CallBook, LiveBooks, turns_of
from service.live.claims import CallClaims, LocalClaims, call_in_progress
from service.live.engine import LiveCall, LiveEngine
from service.live.hub import EventBus
from service.live.sources.base import AudioChunk
from service.loanbook.book import LoanBook, update_contact_from_loan_file
from service.metrics import ERRORS
from service.protocol import CloseCode, Emit, EndEvent, ErrorEvent, ReadyEvent, StartMessage, dump
from service.store import Store, audit

log = logging.getLogger(__name__)


#: Longest wait for the customer's history when a call starts.
CARRIED_OVER_WAIT_S = 2.0
#: What of a live event goes into the audit log (the verdict and its evidence; not the transcript).
_AUDITED: dict[str, set[str] | None] = {
    "assessment": {"topic", "label", "confidence", "evidence", "slots", "mismatch", "question_utterance_id",
                   "answer_utterance_ids", "answer_end_s", "revision"},
    "summary": {"coverage", "answers", "vague_answers", "mismatches"},
}


@dataclass(frozen=True, slots=True)
class LiveOptions:
    """What the registry needs of the settings."""

    assist: bool
    dialogue: DialogueOptions
    max_calls_per_token: int
    max_call_s: float


@dataclass
class LiveCalls:
    """The live calls of this process: registration, limits, and the parts every call shares."""

    engine: LiveEngine
    hub: EventBus
    assessor: Assessor
    nlu_executor: Executor
    options: LiveOptions
    store: Store | None = None
    #: The loan book (set with the store): what a customer's earlier calls left open, shown when a call starts.
    loanbook: LoanBook | None = None
    #: Why speech recognition is unavailable (then every call is refused), or None.
    asr_error: str | None = None
    #: Who may start a call (this process's counts by default; Redis's across replicas).
    claims: CallClaims = field(default_factory=LocalClaims)
    #: The calls streaming in this process, with the token that streams each.
    active: dict[str, str | None] = field(default_factory=dict)
    #: Set when the server stops: sources end their calls cleanly and no new call is accepted.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    #: Where calls are kept as they stream and stored when they end (set with the store; None: not stored).
    books: LiveBooks | None = None
    #: Calls whose connection's task was cancelled, being released in the background (a reconnect waits for it).
    releasing: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    async def open(self, call_id: str, start: StartMessage, send: Emit | None,
                   owner: str | None = None, owner_reads_loanbook: bool = False,
                   source: str = "live") -> LiveSession:
        """Register and build a call. Its events go to `send` and to the subscribers of
        `/v1/calls/{call_id}/events`; `send` gets the customer's carried-over items only when
        `owner_reads_loanbook` (the subscribers are the call's agent and supervisors, who may read them). The
        call is kept in the books as it streams and stored when it ends, with `source` (`live`, `demo`); a call id
        whose connection dropped continues. Raises `ServiceError` when the model is missing, the server is
        stopping, the id is streaming (on any replica) or stored already, or the owner's token streams its
        maximum of calls."""
        if self.asr_error:
            raise unavailable("asr_unavailable", "speech recognition is not available on this server "
                              "(GET /healthz says why)")
        if self.stopping.is_set():
            raise unavailable("shutting_down", "this server is shutting down: connect again (to another replica)")
        if call_id in self.active:
            raise call_in_progress(call_id)
        self.active[call_id] = owner  # before the await: a second socket for the id is refused at once
        try:
            await self.claims.claim(call_id, owner, self.options.max_calls_per_token)
        except BaseException:
            del self.active[call_id]
            raise
        book: CallBook | None = None
        try:
            if self.books is not None:
                book = await self._open_book(call_id, start, source)
            session = LiveSession(self, call_id, start, send, owner, owner_reads_loanbook, book)
            await session.restore()
        except BaseException:
            if book is not None:
                book.abandon()
            self.close(call_id)
            raise
        self.hub.open(call_id, start.agent_id)
        return session

    async def _open_book(self, call_id: str, start: StartMessage, source: str) -> CallBook | None:
        """The call's row in the books; None when the database cannot be reached (the call goes on unstored)."""
        assert self.books is not None
        if (pending := self.releasing.get(call_id)) is not None:
            await asyncio.gather(pending, return_exceptions=True)  # the dropped connection lets go first
        try:
            return await self.books.open(call_id, start, source)
        except ServiceError:
            raise
        except Exception:  # noqa: BLE001 - live calls work without a database; this one is not stored
            log.exception("call %s: the database cannot be reached; the call goes on but will not be stored",
                          call_id)
            return None

    async def drain(self, timeout_s: float) -> int:
        """Stop: refuse new calls, have every source end its call (finals flushed, `end` sent), and wait up to
        `timeout_s` for them; returns how many calls were still open then."""
        self.stopping.set()
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.active and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        return len(self.active)

    def close(self, call_id: str) -> None:
        """Unregister a call and end its subscribers' streams (after its `end` event was published)."""
        if call_id not in self.active:
            return
        owner = self.active.pop(call_id)
        self.claims.release(call_id, owner)
        self.hub.close(call_id)


class LiveSession:
    """One registered live call from `ready` to `close`."""

    def __init__(self, calls: LiveCalls, call_id: str, start: StartMessage, send: Emit | None,
                 owner: str | None, owner_reads_loanbook: bool = False, book: CallBook | None = None) -> None:
        self._calls = calls
        self.call_id = call_id
        self.start = start
        self._send = send
        self._owner = owner
        self._owner_reads_loanbook = owner_reads_loanbook
        self._closed = False
        #: Verdicts that could not be written to the audit log (the database is unreachable).
        self.unaudited = 0
        loan = start.loan_file.model_dump(exclude_none=True) if start.loan_file else None
        self._loan = loan
        pipeline = CallPipeline(call_id, start.channels, calls.assessor, loan, calls.options.dialogue)
        assist = (CallAssist(call_id, pipeline, calls.nlu_executor, self.emit)
                  if calls.options.assist and assists(start.channels) else None)
        #: The call's row, audio and finals in the store (None: not kept).
        self.book = book
        self.call = LiveCall(call_id, start, calls.engine, pipeline, self.emit, assist, book)

    @property
    def duration_s(self) -> float:
        """Seconds of call audio received so far."""
        return self.call.duration_s

    @property
    def stopping(self) -> bool:
        """Whether the server is shutting down (sources should end the call now)."""
        return self._calls.stopping.is_set()

    async def emit(self, event: BaseModel) -> None:
        """An event of this call: to the caller, to the call's subscribers, and verdicts to the audit log."""
        await self._say(event)
        kind = str(getattr(event, "type", ""))
        store = self._calls.store
        if store is not None and kind in _AUDITED:
            # The evidence trail of live verdicts; off the event loop, in the order they were made.
            payload = event.model_dump(include=_AUDITED[kind])
            try:
                await asyncio.to_thread(audit.append, store, f"live_{kind}", self._owner or "live", self.call_id,
                                        payload)
            except Exception:  # noqa: BLE001 - the call goes on; the gap is said on the call and in the log
                self.unaudited += 1
                log.exception("call %s: could not append to the audit log (%d verdicts unaudited)", self.call_id,
                              self.unaudited)
                if self.unaudited == 1:
                    await self._say(ErrorEvent(code="audit_unavailable", message="the database cannot be reached: "
                                               "this call's verdicts are not in the audit log (transcripts and "
                                               "prompts go on)"))

    async def _say(self, event: BaseModel, to_caller: BaseModel | None = None) -> None:
        """An event for the caller (`to_caller` instead, when given) and subscribers only (not audited)."""
        if isinstance(event, ErrorEvent):
            ERRORS.labels(event.code).inc()
        if self._send is not None:
            await self._send(to_caller or event)
        self._calls.hub.publish(self.call_id, dump(event), str(getattr(event, "type", "")))

    async def ready(self) -> None:
        """Tell the caller and subscribers the call is open (with the loan file as agents may see it). What the
        customer's earlier calls left open goes to the subscribers (the call's agent, supervisors) and to a
        caller that may read the loan book; a phone switch's ingest token gets none of it."""
        event = ReadyEvent(call_id=self.call_id, channels=self.start.channels,
                           loan_file=public_loan_file(self._loan) if self._loan else None,
                           carried_over=await self._carried_over())
        await self._say(event, None if self._owner_reads_loanbook else event.model_copy(update={"carried_over": []}))

    async def _carried_over(self) -> list[dict[str, Any]]:
        """What this customer's earlier calls left open, and the loan file's contact details stored. Bounded: a
        slow or unreachable database delays the call's start by at most CARRIED_OVER_WAIT_S and then the call
        starts without it (scoring of the call does not depend on it)."""
        book, customer_id = self._calls.loanbook, (self._loan or {}).get("customer_id")
        if book is None or not customer_id:
            return []

        def read() -> list[dict[str, Any]]:
            update_contact_from_loan_file(book, self._loan)
            items = book.carried_over(str(customer_id))
            audit.append(book.store, "customer_carried_over", self._owner or "live", self.call_id,
                         {"customer_id": str(customer_id), "topics": [i["topic"] for i in items]})
            return items

        try:
            return await asyncio.wait_for(asyncio.to_thread(read), CARRIED_OVER_WAIT_S)
        except Exception:  # noqa: BLE001 - the call goes on without the history
            log.warning("call %s: could not read what earlier calls left open", self.call_id, exc_info=True)
            return []

    async def feed(self, audio: AudioChunk) -> None:
        """Audio from any source: every channel at once, or one channel (protocols that send each track
        separately). Its rate must be the start's (the source said so in its `CallStart`)."""
        if audio.sample_rate_hz != self.start.sample_rate_hz:
            raise ValueError(f"call {self.call_id}: audio at {audio.sample_rate_hz} Hz on a call started at "
                             f"{self.start.sample_rate_hz} Hz")
        if audio.channel is None:
            await self.call.feed_block(audio.samples)
        else:
            await self.call.feed_channel(audio.channel, audio.samples)

    def check_limits(self) -> None:
        """Raise `ServiceError` (`call_too_long`) once the call has more audio than allowed."""
        max_s = self._calls.options.max_call_s
        if self.call.duration_s > max_s:
            raise ServiceError("call_too_long", f"the call exceeded {max_s:.0f} s of audio", 413,
                               CloseCode.CALL_TOO_LONG)

    @property
    def settled(self) -> bool:
        """Whether the call was stored or released on this connection (or is not kept at all)."""
        return self.book is None or self.book.settled

    async def restore(self) -> None:
        """A call continued after a dropped connection: its earlier turns go back into the dialogue (no events:
        they were sent on the earlier connection)."""
        if self.book is None or not self.book.finals:
            return
        pipeline = self.call.pipeline

        def replay() -> None:
            for turn in turns_of(self.book.finals if self.book else ()):
                pipeline.add(turn)

        await asyncio.get_running_loop().run_in_executor(self._calls.nlu_executor, replay)

    async def end(self) -> None:
        """End of audio: flush every final and the summary, store the call, then the `end` event (with the
        report's URL once stored)."""
        await self.call.finish()
        url = await self._store(complete=True)
        await self.emit(EndEvent(call_id=self.call_id, report_url=url))

    async def fail(self, error: ServiceError) -> None:
        """The call cannot go on: say why, flush what was already said (finals, summary), and store it as
        incomplete."""
        await self.emit(ErrorEvent(code=error.code, message=error.message))
        await self.call.finish()
        await self._store(complete=False)

    async def drop(self, tell: bool = False) -> None:
        """The connection went (or the server is stopping) before the call's end: flush the finals, and keep the
        call open for a connection with the same id to continue it, until its lease runs out (then it is stored
        as incomplete). With `tell`, the caller gets `end` with `resumable`."""
        await self.call.finish(conclude=False)
        if self.book is not None:
            await self.book.release()
        if tell:
            await self.emit(EndEvent(call_id=self.call_id, resumable=self.book is not None))

    async def _store(self, complete: bool) -> str | None:
        """Store the call (the report the live dialogue computed); its report's URL, or None when not stored."""
        if self.book is None:
            return None
        assist = self.call.assist
        try:
            stored = await self.book.store_report(self.call.pipeline, self.call.duration_s,
                                                  assist is not None and not assist.failed, complete)
        except Exception:  # noqa: BLE001 - the call's finals are in the database: a sweep stores it later
            log.exception("call %s: storing the call failed; its lease runs out and a sweep stores it", self.call_id)
            await self._say(ErrorEvent(code="not_stored", message="the call could not be stored now; it will be "
                                       "stored from what was kept, marked incomplete"))
            return None
        return f"/v1/calls/{self.call_id}/report" if stored else None

    def close(self) -> None:
        """Abandon pending work and unregister the call (idempotent). A call neither stored nor released here
        (its connection's task was cancelled, or failed) is released in the background: a reconnect continues
        it, or a sweep stores it once its lease runs out (also if this process dies first)."""
        if self._closed:
            return
        self._closed = True
        self.call.cancel()
        if self.book is not None and not self.book.settled:
            task = asyncio.get_running_loop().create_task(self.book.release())
            self._calls.releasing[self.call_id] = task
            task.add_done_callback(lambda _: self._calls.releasing.pop(self.call_id, None))
        self._calls.close(self.call_id)
