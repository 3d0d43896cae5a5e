"""The audio side of one live call: audio in, partial and final transcript events out.

`LiveCall` owns a `ChannelStream` per channel, converts incoming audio to 16 kHz, runs the VAD off the event
loop, sends decode requests to the shared `DecodeScheduler` and emits events through the `emit` callback it
is given, in order per channel. Each final's text goes through the call's `CallPipeline` (redaction, turn)
before it is emitted, exactly as a recording's utterances do; turns go on to `CallAssist` for the dialogue. It
knows nothing about websockets, so the same class serves the native protocol, Twilio, the demo and the tests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from asr.cpu import LEDGER, Account, Tab
from asr.streaming import (
    ChannelStream,
    FinalRequest,
    PartialRequest,
    PieceRequest,
    PrefetchRequest,
    StreamOptions,
    StreamRequest,
    Upsampler,
    VadStep,
)
from asr.transcribe import Transcriber, join_parts
from asr.types import Utterance
from nlu.dialogue import Turn
from pipeline.call import CallPipeline, Final
from service.live.assist import CallAssist
from service.live.scheduler import DecodeScheduler
from service.metrics import FINAL_LATENCY, FINALS, LIVE_AUDIO
from service.protocol import (
    Emit,
    ErrorEvent,
    FinalEvent,
    OverloadClearedEvent,
    OverloadEvent,
    PartialEvent,
    StartMessage,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LiveEngine:
    """What every live call of the process shares: the model, the VAD network, the decode pool."""

    transcriber: Transcriber
    vad: VadStep
    scheduler: DecodeScheduler
    vad_executor: Executor
    stream_options: StreamOptions
    partial_beam_size: int
    final_beam_size: int
    min_window_s: float
    #: A final later than this after its utterance ended means the call is overloaded (the `overload` event).
    #: Skipped partials are not: partials run only on idle capacity, so one busy decode worker skips some on
    #: every call, idle server or not.
    overload_final_delay_s: float = 2.0
    #: Shortest encoder window of partials (finals and decodes ahead use `min_window_s`: the same text as after
    #: the call).
    partial_window_s: float = 5.0

    def decode_finals(self, spans: Sequence[_Span]) -> list[Utterance | None]:
        """Finals (and pieces of finals) of any calls that waited together, decoded in one batch (in a decode
        worker thread). Greedy when more than one waits: beam search costs several times the decoder time,
        and the queue must stay short."""
        width = 1 if len(spans) > 1 or self.scheduler.backlog > 0 else self.final_beam_size
        FINALS.labels("greedy" if width == 1 else "beam").inc(len(spans))
        with LEDGER.job(Account()) as account:
            decoded = self.transcriber.transcribe_spans([(s.audio, s.channel, s.start_s) for s in spans], width,
                                                        self.min_window_s)
        LEDGER.charge("final", account)
        return decoded


#: Longest a final waits for its own write to the database before it is sent anyway.
KEEP_FINAL_WAIT_S = 0.25


class CallKeeper(Protocol):
    """Where a call's audio and finals are kept as they come (service/live/books.py)."""

    offset_s: float

    def earlier_utterances(self, channel: str) -> int:
        """How many utterances `channel` had on the call's earlier connections."""

    def keep_audio(self, index: int, samples: np.ndarray) -> None:
        """Audio of channel `index` as received (called on the audio worker thread, in order)."""

    def keep_final(self, final: Final, start_s: float, end_s: float, degraded: bool) -> asyncio.Future[None]:
        """A final about to be sent (on the event loop; must not block): done once it is written."""


@dataclass(frozen=True, slots=True)
class _Span:
    """Audio of one final or piece, waiting to be decoded."""

    audio: np.ndarray
    channel: str
    start_s: float


@dataclass
class _Channel:
    name: str
    stream: ChannelStream
    upsample: Upsampler
    last_final: asyncio.Task[None] | None = None
    finalised: set[str] = field(default_factory=set)
    partial_shown: set[str] = field(default_factory=set)
    #: Early decodes keyed by (utterance id, start, end); used when the final's tail is exactly that audio.
    prefetched: dict[tuple[str, float, float], tuple[asyncio.Future[Utterance | None], Tab]] = field(
        default_factory=dict)
    #: Decodes of the pieces of utterances still open or not yet final, in order, by utterance id.
    pieces: dict[str, list[asyncio.Future[Utterance | None]]] = field(default_factory=dict)


class LiveCall:
    """The audio side of one call: its channels' endpointers and decodes; finals go through `pipeline`."""

    def __init__(self, call_id: str, start: StartMessage, engine: LiveEngine, pipeline: CallPipeline, emit: Emit,
                 assist: CallAssist | None = None, keeper: CallKeeper | None = None) -> None:
        self.call_id = call_id
        #: The call's text path (redaction, turns), shared with the dialogue.
        self.pipeline = pipeline
        #: Agent assistance (turn pairing, assessment, prompts); None for transcript-only calls.
        self.assist = assist
        self.start = start
        self.engine = engine
        self._emit = emit
        options = engine.stream_options.for_source_rate(start.sample_rate_hz)
        self.channels = [_Channel(name, ChannelStream(name, options, engine.vad), Upsampler(start.sample_rate_hz))
                         for name in start.channels]
        self._tasks: set[asyncio.Task[None]] = set()
        #: Finals overdue now (utterance id -> when its end was detected), and whether `overload` was said and
        #: not yet cleared: said once when finals fall behind, cleared once when they are on time again.
        self._late: dict[str, float] = {}
        self._overloaded = False
        self._dropped_partials = 0
        self.samples_in = 0
        #: Where the call's audio and finals are kept as they come (None: nowhere, no database).
        self.keeper = keeper
        #: Call time before this connection, and each channel's utterances then: a call continued after a dropped
        #: connection goes on with its clock and its utterance numbers.
        self.offset_s = keeper.offset_s if keeper is not None else 0.0
        self._earlier = {c.name: keeper.earlier_utterances(c.name) for c in self.channels} if keeper else {}

    @property
    def duration_s(self) -> float:
        """Seconds of call audio so far (with a continued call's earlier connections)."""
        return self.offset_s + self.samples_in / self.start.sample_rate_hz

    async def feed_block(self, block: np.ndarray) -> None:
        """Float32 audio (channels, n) at the call's sample rate (decoded by its source)."""
        self.samples_in += block.shape[1]
        await self._feed(list(enumerate(block)))

    async def feed_channel(self, index: int, samples: np.ndarray) -> None:
        """Audio for one channel only (protocols that send each track separately)."""
        if index == 0:
            self.samples_in += samples.shape[0]
        await self._feed([(index, samples)])

    async def _feed(self, blocks: list[tuple[int, np.ndarray]]) -> None:
        loop = asyncio.get_running_loop()
        # Resampling and the VAD network are small but real work: keep them off the event loop too.
        requests = await loop.run_in_executor(self.engine.vad_executor, self._process, blocks)
        for request in requests:
            self._handle(request)
        if self.assist is not None:
            busy = self.assist.turns_pending > 0 or any(c.stream.in_speech for c in self.channels)
            await self.assist.tick(self.duration_s, busy)

    def _process(self, blocks: list[tuple[int, np.ndarray]]) -> list[StreamRequest]:
        requests: list[StreamRequest] = []
        keep_s = 0.0
        began = time.thread_time()
        for index, samples in blocks:
            channel = self.channels[index]
            if self.keeper is not None:
                kept = time.thread_time()
                self.keeper.keep_audio(index, samples)
                keep_s += time.thread_time() - kept
            requests.extend(channel.stream.feed(channel.upsample(samples)))
        LEDGER.add("listen", "vad", time.thread_time() - began - keep_s)  # resampling, Silero, endpointing
        if keep_s:
            LEDGER.add("keep", "audio", keep_s)
        if blocks and blocks[0][0] == 0:
            LIVE_AUDIO.inc(len(blocks[0][1]) / self.start.sample_rate_hz)
        return requests

    async def finish(self, conclude: bool = True) -> None:
        """End of audio: close open utterances and wait until every final has been emitted; then, when the call
        is over (`conclude`; not when its connection dropped and it may continue), the dialogue's end."""
        for channel in self.channels:
            for request in channel.stream.finish():
                self._handle(request)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        for channel in self.channels:  # pauses that no final followed (the call ended in speech)
            for _, tab in channel.prefetched.values():
                tab.settle("prefetch_wasted")
            channel.prefetched.clear()
        if self._overloaded:  # every final is out: nothing is late any more
            await self._clear_overload("the call ended; every final was sent")
        if self.assist is not None and conclude:
            await self.assist.finish(self.duration_s)

    def cancel(self) -> None:
        """Abandon pending work (the connection is gone and nobody needs the results)."""
        for task in self._tasks:
            task.cancel()

    # -- requests -> events ------------------------------------------------------------------------------

    def _handle(self, request: StreamRequest) -> None:
        channel = next(c for c in self.channels if c.name == request.channel)
        if isinstance(request, FinalRequest):
            previous = channel.last_final
            decoded: asyncio.Future[Turn | None] = asyncio.get_running_loop().create_future()
            task = self._spawn(self._final(channel, request, previous, decoded))
            channel.last_final = task
            if self.assist is not None:
                self._spawn(self.assist.turn_in_order(decoded))
        elif isinstance(request, PieceRequest):
            # As much a part of the final as its tail: queued like a final, never dropped.
            piece = self._submit_final(request)
            channel.pieces.setdefault(request.utterance_id, []).append(piece)
        elif isinstance(request, PartialRequest):
            self._partial(channel, request)
        elif isinstance(request, PrefetchRequest):
            # Only on idle capacity, like a partial: a prefetch must never delay anybody's final.
            tab = Tab(LEDGER)
            future = self.engine.scheduler.offer_partial(
                self._decode_job(request, self.engine.final_beam_size, tab), count_drop=False)
            if future is not None:
                channel.prefetched[(request.utterance_id, request.start_s, request.end_s)] = (future, tab)

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _submit_final(self, request: FinalRequest | PieceRequest) -> asyncio.Future[Utterance | None]:
        engine = self.engine
        return engine.scheduler.submit_batchable(_Span(request.audio, request.channel, request.start_s),
                                                 engine.decode_finals)

    def _decode_job(self, request: StreamRequest, beam: int, tab: Tab) -> Callable[[], Utterance | None]:
        transcriber, scheduler = self.engine.transcriber, self.engine.scheduler
        # A partial is shown for a second at most: one decoding pass, no temperature retries (those cost up
        # to 20 s on a looping window, during which nobody's final could run).
        provisional = isinstance(request, PartialRequest)
        window = self.engine.partial_window_s if provisional else self.engine.min_window_s

        def finals_waiting() -> bool:  # a partial yields to them after its encoder pass instead of decoding on
            return scheduler.backlog > 0

        def job() -> Utterance | None:
            # Decided when the job starts: with finals waiting behind it, greedy search keeps the queue short
            # (the encoder pass is the same; beam search costs several times the decoder time).
            width = 1 if scheduler.backlog > 0 else beam
            if not provisional:  # a final's audio decoded ahead (prefetch)
                FINALS.labels("greedy" if width == 1 else "beam").inc()
            with tab.running():
                return transcriber.transcribe_span(request.audio, request.channel, request.start_s, width, window,
                                                   provisional=provisional, abandon=finals_waiting)

        return job

    async def _final(self, channel: _Channel, request: FinalRequest, previous: asyncio.Task[None] | None,
                     decoded: asyncio.Future[Turn | None]) -> None:
        turn: Turn | None = None
        try:
            turn = await self._final_event(channel, request, previous)
        finally:
            if not decoded.done():
                decoded.set_result(turn)  # None when cancelled or failed: the dialogue goes on without it

    async def _final_event(self, channel: _Channel, request: FinalRequest,
                           previous: asyncio.Task[None] | None) -> Turn | None:
        detected = time.monotonic()  # the endpoint was just found (this task starts right after)
        overdue = asyncio.get_running_loop().call_later(self.engine.overload_final_delay_s, self._final_overdue,
                                                        request.utterance_id, detected)
        try:
            return await self._decode_and_emit(channel, request, previous, detected)
        finally:
            overdue.cancel()
            self._late.pop(request.utterance_id, None)

    async def _decode_and_emit(self, channel: _Channel, request: FinalRequest, previous: asyncio.Task[None] | None,
                               detected: float) -> Turn | None:
        key = (request.utterance_id, request.tail_start_s, request.end_s)
        ahead = channel.prefetched.pop(key, None)
        future = None
        if ahead is not None:
            future, tab = ahead
            tab.settle("prefetch_used")
        for stale in [k for k in channel.prefetched if k[0] == request.utterance_id]:
            stale_future, stale_tab = channel.prefetched.pop(stale)  # the speaker went on after that pause
            stale_future.cancel()
            stale_tab.settle("prefetch_wasted")
        tail = request.tail()
        if future is None and len(tail) > 0:
            tail_request = FinalRequest(request.channel, request.utterance_id, request.tail_start_s, request.end_s,
                                        tail, request.forced)
            future = self._submit_final(tail_request)
        parts = [*channel.pieces.pop(request.utterance_id, []), *([future] if future is not None else [])]
        try:
            decoded = [await part for part in parts]
            utterance = join_parts(decoded, request.channel, request.start_s, request.end_s)
        except Exception:
            # One utterance that cannot be decoded must not end the call: say so and go on.
            log.exception("call %s: decoding %s failed", self.call_id, request.utterance_id)
            channel.finalised.add(request.utterance_id)
            await self._emit(ErrorEvent(code="decode_failed",
                                        message=f"utterance {request.utterance_id} could not be transcribed"))
            return None
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)  # keep each channel's finals in order
        channel.finalised.add(request.utterance_id)
        start_s, end_s = self.offset_s + request.start_s, self.offset_s + request.end_s
        began = time.thread_time()
        final = self.pipeline.final(channel.name, utterance.text if utterance else "", start_s, end_s,
                                    self._public_id(channel.name, request.utterance_id))
        LEDGER.add("text", "final", time.thread_time() - began)  # redaction and the turn
        if not final.text and request.utterance_id not in channel.partial_shown:
            return None  # nothing was said and nothing was shown: no event
        if self.keeper is not None and final.text:
            # Greedy under load while the final beam is wider: re-decoded after the call.
            degraded = utterance is not None and utterance.greedy and self.engine.final_beam_size > 1
            written = self.keeper.keep_final(final, start_s, end_s, degraded)
            # Kept before anyone sees it, so a crash loses no final shown; a slow database delays it a moment only.
            await asyncio.wait({written}, timeout=KEEP_FINAL_WAIT_S)
        delay_s = time.monotonic() - detected
        FINAL_LATENCY.observe(delay_s)
        await self._emit(FinalEvent(channel=request.channel, utterance_id=final.utterance_id, text=final.text,
                                    start_s=start_s, end_s=end_s))
        self._late.pop(request.utterance_id, None)
        if self._overloaded and not self._late and delay_s <= self.engine.overload_final_delay_s:
            await self._clear_overload("finals are on time again")
        return final.turn

    def _public_id(self, channel: str, utterance_id: str) -> str:
        """The id an utterance is known by outside (events, turns, storage): numbered after the channel's
        utterances on earlier connections of the call."""
        earlier = self._earlier.get(channel, 0)
        if not earlier:
            return utterance_id
        head, _, number = utterance_id.rpartition("-")
        return f"{head}-{int(number) + earlier}" if number.isdigit() else utterance_id

    def _final_overdue(self, utterance_id: str, detected: float) -> None:
        """A final is still not out `overload_final_delay_s` after its utterance ended (a timer callback)."""
        self._late[utterance_id] = detected
        if self._overloaded:
            return
        self._overloaded = True
        self._spawn(self._emit(OverloadEvent(
            final_delay_s=time.monotonic() - detected, dropped_partials=self._dropped_partials,
            message="decoding is behind: finals arrive late (live transcript delayed; the report is not affected)",
        )))

    async def _clear_overload(self, message: str) -> None:
        self._overloaded = False
        await self._emit(OverloadClearedEvent(message=message))

    def _partial(self, channel: _Channel, request: PartialRequest) -> None:
        tab = Tab(LEDGER)
        future = self.engine.scheduler.offer_partial(self._decode_job(request, self.engine.partial_beam_size, tab))
        if future is None:
            # Normal whenever a final is decoding (partials run on idle capacity only): counted, not announced.
            self._dropped_partials += 1
            return

        async def deliver() -> None:
            shown = False
            try:
                shown = await show()
            finally:
                tab.settle("partial_shown" if shown else "partial_wasted")

        async def show() -> bool:
            try:
                utterance = await future
            except Exception:
                log.debug("call %s: partial decode failed", self.call_id, exc_info=True)
                return False  # the final will report it if the utterance cannot be decoded at all
            if request.utterance_id in channel.finalised:
                return False  # the final overtook it
            pieces = channel.pieces.get(request.utterance_id, [])
            if not all(p.done() and not p.cancelled() and p.exception() is None for p in pieces):
                return False  # the utterance's earlier pieces are not decoded yet: the next partial shows them
            joined = join_parts([*(p.result() for p in pieces), utterance], request.channel,
                                request.utterance_start_s, request.end_s)
            if joined is None:
                return False  # nothing recognisable yet (or the partial gave way to a final)
            channel.partial_shown.add(request.utterance_id)
            began = time.thread_time()
            text = self.pipeline.partial(channel.name, joined.text)
            LEDGER.add("text", "partial", time.thread_time() - began)
            await self._emit(PartialEvent(channel=request.channel,
                                          utterance_id=self._public_id(channel.name, request.utterance_id),
                                          text=text, start_s=self.offset_s + request.utterance_start_s))
            return True

        self._spawn(deliver())

