"""The lifecycle of a live call, whatever carries its audio: the native socket, Twilio Media Streams or the
console's demo replay.

`LiveCalls` is the process's registry: `admit` decides at a socket's upgrade whether this process decodes the
call, sends it on to a replica with room, or records it only (service/live/capacity.py); `open` checks that the
call may start (model loaded, not stopping) and claims it (`CallClaims`: the id free on every replica, the
token's call limit), builds the call's `CallPipeline`, its `LiveCall` (audio -> finals) and `CallAssist`
(dialogue -> prompts), and returns a `LiveSession`, or for a call recorded only a `RecordOnlySession` (its audio
kept, scored after the call). Every source's audio arrives as the same `AudioChunk`s (service/live/sources/).
Every event of the session goes to the caller's `send` (its socket; None for the demo), to the call's
subscribers on the `EventBus`, to the supervisors' floor (service/floor/: the call's tile), and (verdicts only)
to the audit log. A session is used as: `ready()`, `feed()`
with `check_limits()` after each, then `end()` (stored), `fail()` (stored, incomplete) or `drop()` (kept open
for a reconnect), and always `close()`.
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
from nlu.report import RiskConfig
from pipeline.call import CallPipeline, assists
from service.errors import ServiceError, unavailable
from service.floor import Floor
from service.live.assist import CallAssist
from service.live.books import CallBook, LiveBooks, turns_of
from service.live.capacity import (
    Admission,
    LiveLoad,
    LoadBoard,
    LocalBoard,
    Seat,
    admit,
    at_capacity,
    count_admission,
)
from service.live.claims import CallClaims, LocalClaims, call_in_progress
from service.live.engine import LiveCall, LiveEngine
from service.live.hub import EventBus
from service.live.listen import ListenTaps
from service.live.sources.base import AudioChunk
from service.loanbook.book import LoanBook, update_contact_from_loan_file
from service.metrics import ERRORS
from service.protocol import CloseCode, Emit, EndEvent, ErrorEvent, ReadyEvent, RecordOnlyEvent, StartMessage, dump
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
    #: The report's risk weights: with them, a call's risk as it stands is sent (`risk`) as its answers come.
    risk: RiskConfig | None = None


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
    #: This process's live calls against its capacity (`live.capacity`; by default no limit).
    load: LiveLoad = field(default_factory=lambda: LiveLoad(None))
    #: The other replicas' loads (Redis): whether a call this process has no room for can go elsewhere.
    board: LoadBoard = field(default_factory=LocalBoard)
    #: The supervisors' floor: every call's tile, fed with its events (service/floor/).
    floor: Floor = field(default_factory=Floor)
    #: Supervisors listening in on this process's calls (and, through Redis, on other replicas').
    taps: ListenTaps = field(default_factory=ListenTaps)

    async def admit(self, can_redirect: bool = True) -> tuple[Admission, Seat | None]:
        """Where a new call on a socket goes (`capacity.admit`), with its seat in this process's load (None when
        it is sent on to another replica). The other replicas' loads are read only when this process is full,
        and only when the call can be sent on (`can_redirect`: the server can answer the upgrade with 503)."""
        others = await self.board.others_have_room() if self.load.full and can_redirect else None
        # Decided on the counts as they are now, after the wait: no other admission came in between.
        outcome = admit(self.load.decoded, self.load.capacity, others, self.books is not None)
        count_admission(outcome)
        if outcome == "redirected":
            return outcome, None
        if outcome == "decoded" and self.load.full:
            log.warning("this replica is at its capacity (%s live calls) and no database is attached to record a "
                        "call: decoding it anyway", self.load.capacity)
        return outcome, self.load.take(outcome)

    async def open(self, call_id: str, start: StartMessage, send: Emit | None,
                   owner: str | None = None, owner_reads_loanbook: bool = False,
                   source: str = "live", seat: Seat | None = None) -> CallSession:
        """Register and build a call. Its events go to `send` and to the subscribers of
        `/v1/calls/{call_id}/events`; `send` gets the customer's carried-over items only when
        `owner_reads_loanbook` (the subscribers are the call's agent and supervisors, who may read them). The
        call is kept in the books as it streams and stored when it ends, with `source` (`live`, `demo`); a call id
        whose connection dropped continues. `seat` is the call's place in this process's load, taken when its
        socket was admitted (`admit`); without one (a demo) a decoded seat is taken here. A call admitted
        record-only, or continuing a call that was, is recorded only (`RecordOnlySession`); one admitted
        record-only that cannot be kept (no database) is decoded. The session gives the seat back when it
        closes. Raises `ServiceError` when the model is missing, the server is stopping, the id is streaming (on
        any replica) or stored already, the owner's token streams its maximum of calls, or (without a seat) this
        process decodes its capacity of calls already."""
        if self.asr_error:
            raise unavailable("asr_unavailable", "speech recognition is not available on this server "
                              "(GET /healthz says why)")
        if self.stopping.is_set():
            raise unavailable("shutting_down", "this server is shutting down: connect again (to another replica)")
        if call_id in self.active:
            raise call_in_progress(call_id)
        own_seat = seat is None
        if seat is None:
            if self.load.full:
                raise at_capacity(self.load.capacity)
            count_admission("decoded")
            seat = self.load.take("decoded")
        self.active[call_id] = owner  # before the await: a second socket for the id is refused at once
        try:
            await self.claims.claim(call_id, owner, self.options.max_calls_per_token)
        except BaseException:
            del self.active[call_id]
            if own_seat:
                seat.release()
            raise
        book: CallBook | None = None
        session: CallSession
        try:
            if self.books is not None:
                book = await self._open_book(call_id, start, source)
            if book is not None and await self._records_only(book, seat):
                session = RecordOnlySession(self, call_id, start, send, owner, owner_reads_loanbook, book, seat)
            else:
                if seat.mode == "record_only":
                    log.warning("call %s: taken record-only, but the database cannot be reached to keep it: "
                                "decoding it beyond capacity instead", call_id)
                    seat.move("decoded")
                session = LiveSession(self, call_id, start, send, owner, owner_reads_loanbook, book, seat)
                await session.restore()
        except BaseException:
            if book is not None:
                book.abandon()
            if own_seat:
                seat.release()
            self.close(call_id)
            raise
        self.hub.open(call_id, start.agent_id)
        self.floor.open(call_id, start.agent_id)
        self.taps.open(call_id, start.sample_rate_hz, start.channels)
        return session

    @staticmethod
    async def _records_only(book: CallBook, seat: Seat) -> bool:
        """Whether the call is recorded only: admitted so, or continuing a call that was (its earlier connection
        marked it beside its audio). Marks it so, and moves its seat."""
        audio = book.audio
        if seat.mode != "record_only" and not await asyncio.to_thread(lambda: audio.record_only):
            return False
        await asyncio.to_thread(audio.mark_record_only)
        seat.move("record_only")
        return True

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
        self.floor.close(call_id)
        self.taps.close(call_id)


class CallSession:
    """One registered live call from `ready` to `close`, however it is carried: decoded live (`LiveSession`) or
    recorded only (`RecordOnlySession`). Every source drives both alike."""

    def __init__(self, calls: LiveCalls, call_id: str, start: StartMessage, send: Emit | None,
                 owner: str | None, owner_reads_loanbook: bool = False, book: CallBook | None = None,
                 seat: Seat | None = None) -> None:
        self._calls = calls
        self.call_id = call_id
        self.start = start
        self._send = send
        self._owner = owner
        self._owner_reads_loanbook = owner_reads_loanbook
        self._closed = False
        #: Verdicts that could not be written to the audit log (the database is unreachable).
        self.unaudited = 0
        self._loan = start.loan_file.model_dump(exclude_none=True) if start.loan_file else None
        #: The call's row, audio and finals in the store (None: not kept).
        self.book = book
        #: The call's place in this process's load, given back when it closes.
        self.seat = seat

    @property
    def duration_s(self) -> float:
        """Seconds of call audio received so far (with a continued call's earlier connections)."""
        raise NotImplementedError

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
        self._calls.floor.observe(self.call_id, event)

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

    def _check_rate(self, audio: AudioChunk) -> None:
        if audio.sample_rate_hz != self.start.sample_rate_hz:
            raise ValueError(f"call {self.call_id}: audio at {audio.sample_rate_hz} Hz on a call started at "
                             f"{self.start.sample_rate_hz} Hz")

    async def feed(self, audio: AudioChunk) -> None:
        """Audio from any source: every channel at once, or one channel (protocols that send each track
        separately). Its rate must be the start's (the source said so in its `CallStart`)."""
        raise NotImplementedError

    def check_limits(self) -> None:
        """Raise `ServiceError` (`call_too_long`) once the call has more audio than allowed."""
        max_s = self._calls.options.max_call_s
        if self.duration_s > max_s:
            raise ServiceError("call_too_long", f"the call exceeded {max_s:.0f} s of audio", 413,
                               CloseCode.CALL_TOO_LONG)

    @property
    def settled(self) -> bool:
        """Whether the call was stored or released on this connection (or is not kept at all)."""
        return self.book is None or self.book.settled

    async def end(self) -> None:
        """End of audio: the call is over (stored, or queued to be), then the `end` event."""
        raise NotImplementedError

    async def fail(self, error: ServiceError) -> None:
        """The call cannot go on: say why and store what came, as incomplete."""
        raise NotImplementedError

    async def drop(self, tell: bool = False) -> None:
        """The connection went (or the server is stopping) before the call's end: keep the call open for a
        connection with the same id to continue it, until its lease runs out (then it is stored as incomplete).
        With `tell`, the caller gets `end` with `resumable`."""
        raise NotImplementedError

    def _cancel(self) -> None:
        """Abandon the call's pending work (its connection is gone)."""

    def close(self) -> None:
        """Abandon pending work, give the seat back and unregister the call (idempotent). A call neither stored
        nor released here (its connection's task was cancelled, or failed) is released in the background: a
        reconnect continues it, or a sweep stores it once its lease runs out (also if this process dies first)."""
        if self._closed:
            return
        self._closed = True
        self._cancel()
        if self.book is not None and not self.book.settled:
            task = asyncio.get_running_loop().create_task(self.book.release())
            self._calls.releasing[self.call_id] = task
            task.add_done_callback(lambda _: self._calls.releasing.pop(self.call_id, None))
        if self.seat is not None:
            self.seat.release()
        self._calls.close(self.call_id)


class LiveSession(CallSession):
    """A call decoded live: finals, verdicts and prompts as it streams; stored from them when it ends."""

    def __init__(self, calls: LiveCalls, call_id: str, start: StartMessage, send: Emit | None,
                 owner: str | None, owner_reads_loanbook: bool = False, book: CallBook | None = None,
                 seat: Seat | None = None) -> None:
        super().__init__(calls, call_id, start, send, owner, owner_reads_loanbook, book, seat)
        pipeline = CallPipeline(call_id, start.channels, calls.assessor, self._loan, calls.options.dialogue)
        assist = (CallAssist(call_id, pipeline, calls.nlu_executor, self.emit, calls.options.risk)
                  if calls.options.assist and assists(start.channels) else None)
        self.call = LiveCall(call_id, start, calls.engine, pipeline, self.emit, assist, book)

    @property
    def duration_s(self) -> float:
        """Seconds of call audio received so far."""
        return self.call.duration_s

    async def feed(self, audio: AudioChunk) -> None:
        self._check_rate(audio)
        self._calls.taps.feed(self.call_id, audio)
        if audio.channel is None:
            await self.call.feed_block(audio.samples)
        else:
            await self.call.feed_channel(audio.channel, audio.samples)

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

    def _cancel(self) -> None:
        self.call.cancel()


#: What a call recorded only is told, right after `ready`.
RECORD_ONLY_MESSAGE = ("every server is decoding its capacity of live calls: this call is recorded only (no live "
                       "transcript, verdicts or prompts) and scored after it ends, as a recording")


class RecordOnlySession(CallSession):
    """A call taken when no replica had room to decode it live: nothing is decoded while it streams. Its audio
    is kept as a decoded call's is (`CallBook`: appended per channel, flushed every `audio_flush_s`), the
    caller and the call's screens are told (`record_only`, after `ready`), and when it ends its audio is stored
    and its row queued as a `score` job: a worker scores it after the call as an uploaded recording (the report,
    the features' rows, the loan book's re-planning). A dropped connection is released like a decoded call's;
    the call stays recorded only on any replica it continues on (the mark beside its audio), and a sweep queues
    it for scoring if nobody continues it."""

    def __init__(self, calls: LiveCalls, call_id: str, start: StartMessage, send: Emit | None,
                 owner: str | None, owner_reads_loanbook: bool, book: CallBook, seat: Seat | None = None) -> None:
        super().__init__(calls, call_id, start, send, owner, owner_reads_loanbook, book, seat)
        self._book = book
        self._samples_in = 0

    @property
    def duration_s(self) -> float:
        return self._book.offset_s + self._samples_in / self.start.sample_rate_hz

    async def ready(self) -> None:
        await super().ready()
        await self._say(RecordOnlyEvent(call_id=self.call_id, message=RECORD_ONLY_MESSAGE))

    async def feed(self, audio: AudioChunk) -> None:
        self._check_rate(audio)
        self._calls.taps.feed(self.call_id, audio)
        # Appending is a small write now and then (every `audio_flush_s`): off the event loop all the same.
        await asyncio.to_thread(self._keep, audio)

    def _keep(self, audio: AudioChunk) -> None:
        if audio.channel is None:
            for index, samples in enumerate(audio.samples):
                self._book.keep_audio(index, samples)
            self._samples_in += audio.samples.shape[1]
        else:
            self._book.keep_audio(audio.channel, audio.samples)
            if audio.channel == 0:
                self._samples_in += audio.samples.shape[0]

    async def end(self) -> None:
        """End of audio: store the audio and queue the call to be scored, then `end` (without a report URL: the
        report comes once a worker has scored the call)."""
        await self._queue()
        await self.emit(EndEvent(call_id=self.call_id))

    async def fail(self, error: ServiceError) -> None:
        """The call cannot go on: say why, and queue what came to be scored."""
        await self.emit(ErrorEvent(code=error.code, message=error.message))
        await self._queue()

    async def drop(self, tell: bool = False) -> None:
        await self._book.release()
        if tell:
            await self.emit(EndEvent(call_id=self.call_id, resumable=True))

    async def _queue(self) -> None:
        try:
            await self._book.queue_recorded()
        except Exception:  # noqa: BLE001 - the audio is kept: once the lease runs out a sweep queues the call
            log.exception("call %s: queueing the recorded call failed; a sweep queues it once its lease runs out",
                          self.call_id)
            await self._say(ErrorEvent(code="not_stored", message="the call could not be queued for scoring now; "
                                       "it will be from its kept audio"))
