"""Live calls in the books: every live call ends as a stored call, like a scored recording.

While a call streams, its replica holds the call's row in the database (a `recordings` row of status `live`,
leased like a job and renewed), writes each final there as it is sent (`live_finals`, redacted text) and appends
the audio as received to one raw 16-bit file per channel, flushed at least every `audio_flush_s`. So a replica
that dies loses at most the audio since its last flush and nothing said before its last final.

A call that ends cleanly is stored at once from what the live dialogue computed (nothing is assessed again): its
report goes through `service.workers.jobs.file_report`, the same code and transaction as a scored recording (the
features' rows, the loan book's re-planning, the audit entry), with `source` live (or demo) on the call. A call
that cannot go on (an error, a limit) is stored the same way, marked incomplete. A call whose socket dropped is
released: a reconnect with the same call id, on any replica, continues it (its finals replayed into the dialogue,
its audio appended) until its lease runs out; after that, or when its replica died, whichever replica sees the
expired lease stores it from its written finals, marked incomplete (`LiveBooks.sweep`, also run at start-up).

Audio is stored as received (one FLAC per channel, at the call's rate) with every utterance that had personal
data masked silenced whole, unless `keep_audio` is off (the report is stored either way).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from asr.audio import write_flac
from nlu.assess import Assessor
from nlu.dialogue import DialogueOptions, Turn
from nlu.pii import public_loan_file
from nlu.report import Report, RiskConfig, SilencedSpan, read_report
from pipeline.call import AGENT, ROLES, CallPipeline, Final, assists
from pipeline.recording import finish_report
from service.errors import ServiceError
from service.ids import process_name
from service.live.claims import call_in_progress
from service.metrics import REDECODE_SKIPPED
from service.protocol import CloseCode, StartMessage
from service.store import Store
from service.store.store import CallConflict, JobRecord, LeaseLost, LiveClaim, LiveFinalRecord
from service.workers.jobs import RENEW_EVERY, JobContext, fail_for_good, file_report
from service.workers.loop import WorkerLoop

log = logging.getLogger(__name__)

#: Attempts this process makes at storing an abandoned call before it marks it failed.
SWEEP_TRIES = 3
#: Raw audio as kept while a call streams: little-endian 16-bit samples, one file per channel.
_SAMPLE = np.dtype("<i2")
#: The file beside a call's kept audio that says the call was recorded only (service/live/capacity.py).
RECORD_ONLY_MARK = "record_only"


@dataclass(frozen=True, slots=True)
class BooksOptions:
    """What storing live calls needs of the settings."""

    keep_audio: bool
    lease_s: float
    audio_flush_s: float
    risk: RiskConfig
    sweep_s: float = 10.0
    #: Re-decode jobs waiting beyond which a call's degraded finals are not re-decoded (0: never).
    redecode_backlog: int = 0


class AudioKeeper:
    """A live call's audio as received: one raw 16-bit file per channel, appended as audio arrives and written
    out whenever a channel has `flush_s` of audio buffered. `add` runs on the call's audio worker thread; the
    rest once the audio has stopped."""

    def __init__(self, data_dir: Path, folder: Path, channels: Sequence[str], rate_hz: int, flush_s: float) -> None:
        self.data_dir = data_dir
        #: Relative to the data directory (as stored on the call).
        self.folder = folder
        self.channels = tuple(channels)
        self.rate_hz = rate_hz
        self._flush_bytes = max(1, int(flush_s * rate_hz)) * _SAMPLE.itemsize
        self._buffers = [bytearray() for _ in self.channels]
        self._lock = threading.Lock()

    def path(self, index: int) -> Path:
        return self.data_dir / self.folder / f"{self.channels[index]}.pcm"

    def add(self, index: int, samples: np.ndarray) -> None:
        """Samples (float, -1..1, at the call's rate) of channel `index`."""
        pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype(_SAMPLE).tobytes()
        with self._lock:
            self._buffers[index] += pcm
            if len(self._buffers[index]) >= self._flush_bytes:
                self._write(index)

    def flush(self) -> None:
        """Write out what is buffered (the call's audio stopped, or the call is being handed over)."""
        with self._lock:
            for index in range(len(self.channels)):
                self._write(index)

    def _write(self, index: int) -> None:
        if not self._buffers[index]:
            return
        self.path(index).parent.mkdir(parents=True, exist_ok=True)
        with open(self.path(index), "ab") as f:
            f.write(self._buffers[index])
        self._buffers[index].clear()

    def align(self) -> float:
        """Pad every channel's file with silence to the longest (a reconnect continues all channels at one time);
        returns the seconds of audio kept so far."""
        sizes = [self.path(i).stat().st_size if self.path(i).exists() else 0 for i in range(len(self.channels))]
        longest = max(sizes, default=0)
        for index, size in enumerate(sizes):
            if size < longest:
                self.path(index).parent.mkdir(parents=True, exist_ok=True)
                with open(self.path(index), "ab") as f:
                    f.write(bytes(longest - size))
        return longest / _SAMPLE.itemsize / self.rate_hz

    def seconds(self) -> float:
        """Seconds of the longest channel written so far."""
        sizes = [self.path(i).stat().st_size for i in range(len(self.channels)) if self.path(i).exists()]
        return max(sizes, default=0) / _SAMPLE.itemsize / self.rate_hz

    def store(self, silence: Sequence[SilencedSpan]) -> list[dict[str, Any]]:
        """One FLAC per channel (at the call's rate) with the `silence` spans zeroed, the raw files removed;
        returns the stored files' entries (paths relative to the data directory)."""
        entries: list[dict[str, Any]] = []
        for index, name in enumerate(self.channels):
            raw = self.path(index)
            target = self.folder / f"{name}.flac"
            if not raw.exists():
                if (self.data_dir / target).exists():  # stored by a replica whose lease was then lost
                    entries.append({"path": str(target), "channels": [name], "rate_hz": self.rate_hz})
                continue
            samples = np.fromfile(raw, dtype=_SAMPLE).astype(np.float32) / 32767
            for span in silence:
                if span.channel == name:
                    samples[int(span.start_s * self.rate_hz): int(span.end_s * self.rate_hz)] = 0.0
            tmp = self.data_dir / target.with_suffix(".partial")
            write_flac(tmp, samples[np.newaxis, :], self.rate_hz)
            os.replace(tmp, self.data_dir / target)
            raw.unlink()
            entries.append({"path": str(target), "channels": [name], "rate_hz": self.rate_hz})
        return entries

    def discard(self) -> None:
        for index in range(len(self.channels)):
            self.path(index).unlink(missing_ok=True)

    @property
    def _record_only_mark(self) -> Path:
        return self.data_dir / self.folder / RECORD_ONLY_MARK

    @property
    def record_only(self) -> bool:
        """Whether the call was recorded only on some connection (it is scored from its audio after the call)."""
        return self._record_only_mark.exists()

    def mark_record_only(self) -> None:
        """Mark the call as recorded only, beside its audio: a reconnect on any replica, or the sweep storing it
        after its replica died, scores it from the audio rather than from finals it does not have."""
        self._record_only_mark.parent.mkdir(parents=True, exist_ok=True)
        self._record_only_mark.touch()

    def unmark_record_only(self) -> None:
        self._record_only_mark.unlink(missing_ok=True)


def silenced_spans(finals: Sequence[LiveFinalRecord]) -> list[SilencedSpan]:
    """The audio to silence before it is stored: every utterance in which personal data was masked, whole (the
    live path has no word times to cut closer)."""
    return [SilencedSpan(f.channel, round(f.start_s, 3), round(f.end_s, 3)) for f in finals if f.masked]


def turns_of(finals: Sequence[LiveFinalRecord]) -> list[Turn]:
    """The dialogue turns of a call's written finals (agent and customer channels, with text), in order."""
    return [Turn(f.utterance_id, "agent" if f.channel == AGENT else "customer", f.text, f.start_s, f.end_s)
            for f in finals if f.channel in ROLES and f.text]


def call_stored(call_id: str, message: str) -> ServiceError:
    return ServiceError("call_exists", message, 409, CloseCode.CALL_IN_PROGRESS)


class LiveBooks:
    """The store side of this process's live calls: opening (or resuming) a call's row, and storing calls that
    ended here or whose replica died (`sweep`)."""

    def __init__(self, ctx: JobContext, options: BooksOptions, assessor: Assessor, dialogue: DialogueOptions) -> None:
        self.ctx = ctx
        self.options = options
        #: What a call stored from its written finals is replayed with (the live calls' own).
        self.assessor = assessor
        self.dialogue = dialogue
        #: This process's name on the live calls it holds.
        self.owner = process_name("live")
        #: Called when a re-decode job was queued (wakes the job workers).
        self.on_queued: Callable[[], None] | None = None
        #: Failed attempts to store an abandoned call, by its row.
        self._failures: dict[str, int] = {}
        self._sweeper = WorkerLoop("live calls sweep", self._sweep_step, 1, options.sweep_s)

    @property
    def store(self) -> Store:
        return self.ctx.store

    async def start(self) -> None:
        """Store the calls left by a replica that died (at start-up: a single box's own last run), then keep
        looking every `sweep_s`."""
        await self._sweeper.start()

    async def close(self) -> None:
        await self._sweeper.stop()

    async def open(self, call_id: str, start: StartMessage, source: str) -> CallBook:
        """Hold the call's row (new, or a dropped call's, to continue it). Raises `ServiceError` 4409 when the id
        is stored already, has a recording being scored, or streams on another connection."""
        recording_id = os.urandom(8).hex()
        folder = Path("audio") / recording_id
        files = [{"path": str(folder / f"{name}.flac"), "channels": [name], "rate_hz": start.sample_rate_hz}
                 for name in start.channels]
        loan = start.loan_file.model_dump(exclude_none=True) if start.loan_file else None
        try:
            claim = await asyncio.to_thread(self.store.open_live, call_id, self.owner, self.options.lease_s, files,
                                            loan, start.agent_id, source, recording_id)
        except CallConflict as e:
            # Streaming on another connection: retry later (the call continues); stored: give up.
            raise (call_in_progress(call_id) if e.live else call_stored(call_id, str(e))) from e
        job = claim.job
        book = CallBook(self, job, self.audio_of(job), claim.finals)
        if claim.resumed:
            book.offset_s = await asyncio.to_thread(book.audio.align)
            log.info("call %s continues after a dropped connection (%d finals, %.1f s of audio kept)", call_id,
                     len(claim.finals), book.offset_s)
        book.start_heartbeat()
        return book

    async def sweep(self) -> int:
        """Store every live call whose lease ran out; returns how many."""
        count = 0
        while await self._sweep_step(0):
            count += 1
        return count

    async def _sweep_step(self, _: int) -> bool:
        claim = await asyncio.to_thread(self.store.claim_abandoned_live, self.owner, self.options.lease_s)
        if claim is None:
            return False
        job = claim.job
        log.warning("call %s: its live connection ended without storing it (replica gone or never reconnected); "
                    "storing what it said up to its last final", job.call_id)
        try:
            await asyncio.to_thread(self.store_abandoned, claim)
        except Exception:
            # Taken again once this claim's lease runs out; a call that cannot be stored at all is given up on,
            # not retried for ever.
            self._failures[job.id] = failures = self._failures.get(job.id, 0) + 1
            if failures >= SWEEP_TRIES:
                log.exception("call %s could not be stored after %d tries; marked failed", job.call_id, failures)
                with contextlib.suppress(LeaseLost):
                    await asyncio.to_thread(self.store.fail_job, job.id, "the live call could not be stored",
                                            job.lease_version)
                self._failures.pop(job.id, None)
                return True
            raise
        self._failures.pop(job.id, None)
        return True

    def store_abandoned(self, claim: LiveClaim) -> bool:
        """Store a call from its written finals and kept audio, marked incomplete (worker thread); a call that
        was recorded only is queued to be scored from its audio instead."""
        audio = self.audio_of(claim.job)
        if audio.record_only:
            return self.queue_recorded(claim.job, audio)
        duration = max(audio.seconds(), max((f.end_s for f in claim.finals), default=0.0))
        return self.store_call(claim.job, audio, claim.finals, duration, complete=False)

    def store_call(self, job: JobRecord, audio: AudioKeeper, finals: Sequence[LiveFinalRecord], duration_s: float,
                   complete: bool, live: CallPipeline | None = None) -> bool:
        """Store a call from its finals (worker thread): the report of its `live` dialogue when that was stepped
        with every turn, else the turns replayed as a recording's are. A call in which nothing was said, or
        without agent and customer channels, is not stored (its row fails, its audio goes). False when nothing
        was stored."""
        turns = turns_of(finals)
        if not turns or not assists(audio.channels):
            audio.discard()
            fail_for_good(self.ctx, job, "nothing was said" if assists(audio.channels) else
                          "a call without agent and customer channels")
            log.info("call %s: nothing stored", job.call_id)
            return False
        silence = silenced_spans(finals)
        if live is not None and len(live.turns) == len(turns):
            report = replace(live.report(duration_s, self.options.risk), loan_file=public_loan_file(job.loan_file),
                             silenced_audio=tuple(silence)).to_dict()
        else:
            replay = CallPipeline(job.call_id, ROLES, self.assessor, job.loan_file, self.dialogue)
            report = finish_report(replay, turns, duration_s, self.options.risk, job.loan_file,
                                   [asdict(s) for s in silence])
        return self.file(job, report, read_report(report), audio, finals, complete)

    def queue_recorded(self, job: JobRecord, audio: AudioKeeper) -> bool:
        """A call recorded only (no replica had room to decode it live): its audio is stored as received (one
        FLAC per channel, whatever `keep_audio` says: it is all there is of the call) and its row queued as a
        `score` job, which a worker scores as an uploaded recording (report, rows, re-planning; personal data
        silenced in the audio). A call with no audio is not stored. False when nothing was queued (worker
        thread)."""
        audio.flush()
        audio.align()
        files = audio.store(())
        if not files:
            audio.unmark_record_only()
            fail_for_good(self.ctx, job, "no audio was received")
            log.info("call %s (recorded only): no audio, nothing stored", job.call_id)
            return False
        try:
            self.store.queue_live(job.id, job.lease_version, files)
        except LeaseLost as e:
            log.warning("call %s: %s; it is not queued here", job.call_id, e)
            return False
        audio.unmark_record_only()
        log.info("call %s (recorded only) queued to be scored from its audio", job.call_id)
        if self.on_queued is not None:
            self.on_queued()
        return True

    def audio_of(self, job: JobRecord) -> AudioKeeper:
        """Where a live call's audio is kept: the folder, channels and rate its row was opened with."""
        channels = [c for f in job.files for c in f["channels"]]
        rates = {int(f.get("rate_hz", 16000)) for f in job.files} or {16000}
        folder = Path(job.files[0]["path"]).parent if job.files else Path("audio") / job.id
        return AudioKeeper(self.ctx.data_dir, folder, channels, max(rates), self.options.audio_flush_s)

    def file(self, job: JobRecord, report: dict[str, Any], typed: Report, audio: AudioKeeper,
             finals: Sequence[LiveFinalRecord], complete: bool) -> bool:
        """Store a live call's report with its audio (worker thread), and queue the re-decoding of its finals
        decoded greedily under load; False when another replica had taken the call over (nothing is stored here
        then)."""
        audio.flush()
        files: list[dict[str, Any]] = []
        if self.options.keep_audio:
            files = audio.store(silenced_spans(finals))
        else:
            audio.discard()
        stored = file_report(self.ctx, job, report, typed, raw=None, files=files,
                             audio_dir=str(audio.folder) if files else None, complete=complete, actor=job.source)
        if stored and any(f.degraded and not f.masked for f in finals):
            self._queue_redecode(job, files)
        return stored

    def _queue_redecode(self, job: JobRecord, files: list[dict[str, Any]]) -> None:
        """A job to decode the call's degraded finals again at full quality, unless the queue is full or no audio
        was kept (then its live verdicts stand, counted)."""
        backlog = self.options.redecode_backlog
        if not files or not backlog or self.store.queued_jobs("redecode") >= backlog:
            REDECODE_SKIPPED.inc()
            log.info("call %s: its degraded finals are not re-decoded (%s)", job.call_id,
                     "no audio kept" if not files else "re-decoding is off" if not backlog else "queue full")
            return
        # The job keeps the loan file until it is done: re-decoded text is masked with its names.
        self.store.create_job(job.call_id, files, job.loan_file, job.agent_id, kind="redecode", source=job.source)
        if self.on_queued is not None:
            self.on_queued()



@dataclass
class CallBook:
    """One live call's row, audio and finals while it streams on this connection."""

    books: LiveBooks
    job: JobRecord
    audio: AudioKeeper
    #: The finals earlier connections of the call wrote (a reconnect continues after them), then this one's.
    finals: tuple[LiveFinalRecord, ...] = ()
    #: Seconds of call audio before this connection (a reconnect continues the call's clock).
    offset_s: float = 0.0
    _written: list[LiveFinalRecord] = field(default_factory=list)
    _queue: asyncio.Queue[tuple[LiveFinalRecord, asyncio.Future[None]] | None] = field(
        default_factory=asyncio.Queue)
    _writer: asyncio.Task[None] | None = None
    _heartbeat: asyncio.Task[None] | None = None
    #: Set when the lease was lost (another replica took the call): nothing more is written here.
    lost: bool = False
    #: Set once the call was stored, released or abandoned on this connection.
    settled: bool = False

    def __post_init__(self) -> None:
        self._written = list(self.finals)
        self._writer = asyncio.create_task(self._write_finals())

    @property
    def store(self) -> Store:
        return self.books.store

    def start_heartbeat(self) -> None:
        self._heartbeat = asyncio.create_task(self._renew())

    def earlier_utterances(self, channel: str) -> int:
        """The highest utterance number `channel` reached before this connection (utterance ids continue after
        it; utterances that held no speech were never written, so this is not a count)."""
        numbers = [f.utterance_id.rpartition("-")[2] for f in self.finals if f.channel == channel]
        return max((int(n) for n in numbers if n.isdigit()), default=0)

    def keep_audio(self, index: int, samples: np.ndarray) -> None:
        """Audio of channel `index` as received (the call's audio worker thread)."""
        self.audio.add(index, samples)

    def keep_final(self, final: Final, start_s: float, end_s: float, degraded: bool) -> asyncio.Future[None]:
        """A final about to be sent: written in order by a background task; the future is done once it is (or
        once writing it failed: the report is stored from memory at the end)."""
        record = LiveFinalRecord(len(self._written) + 1, final.channel, final.utterance_id, start_s, end_s,
                                 final.text, bool(final.masked), degraded)
        self._written.append(record)
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.settled:
            written.set_result(None)
        else:
            self._queue.put_nowait((record, written))
        return written

    async def _write_finals(self) -> None:
        while (item := await self._queue.get()) is not None:
            record, written = item
            for attempt in range(0 if self.lost else 3):  # another replica took the call: it writes no more here
                try:
                    await asyncio.to_thread(self.store.add_live_final, self.job.id, record)
                    break
                except Exception:  # noqa: BLE001 - the report is stored from memory at the end
                    log.warning("call %s: could not write final %d (attempt %d)", self.job.call_id, record.seq,
                                attempt + 1, exc_info=True)
                    await asyncio.sleep(1.0)
            if not written.done():
                written.set_result(None)

    async def _renew(self) -> None:
        lease_s = self.books.options.lease_s
        while True:
            await asyncio.sleep(lease_s * RENEW_EVERY)
            try:
                kept = await asyncio.to_thread(self.store.renew_live, self.job.id, self.books.owner,
                                               self.job.lease_version, lease_s)
            except Exception:  # noqa: BLE001 - the database is away: the next beat tries again
                log.warning("call %s: could not renew its lease", self.job.call_id, exc_info=True)
                continue
            if not kept:
                log.warning("call %s: lease lost (another replica took the call over)", self.job.call_id)
                self.lost = True
                return

    def abandon(self) -> None:
        """The connection ended without storing or releasing the call (an internal error): stop renewing, so that
        the lease runs out and the call is stored as incomplete by a sweep; finals queued are still written."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if not self.settled:
            self.settled = True
            self._queue.put_nowait(None)

    async def _settle(self) -> None:
        """Stop renewing and wait until every final is written."""
        self.abandon()
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)

    async def store_report(self, pipeline: CallPipeline, duration_s: float, live_dialogue: bool,
                           complete: bool) -> bool:
        """Store the call: from the live dialogue (`live_dialogue`: it was stepped with every turn) or, when it
        was not (assistance off or failed), by replaying the call's turns. False when nothing was stored."""
        await self._settle()
        return await asyncio.to_thread(self.books.store_call, self.job, self.audio, self._written, duration_s,
                                       complete, pipeline if live_dialogue else None)


    async def queue_recorded(self) -> bool:
        """Store a call recorded only: its audio, and its row queued to be scored (`LiveBooks.queue_recorded`).
        False when nothing was queued."""
        await self._settle()
        return await asyncio.to_thread(self.books.queue_recorded, self.job, self.audio)

    async def release(self) -> None:
        """The socket dropped: keep what came, and let a reconnect continue the call until its lease runs out."""
        await self._settle()
        await asyncio.to_thread(self.audio.flush)
        try:
            await asyncio.to_thread(self.store.release_live, self.job.id, self.books.owner, self.job.lease_version)
        except Exception:  # noqa: BLE001 - the lease runs out anyway, then the call is stored
            log.warning("call %s: could not release it for a reconnect", self.job.call_id, exc_info=True)


