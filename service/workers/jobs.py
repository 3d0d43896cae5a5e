"""Background scoring of uploaded recordings: a fixed number of workers take queued jobs from the database.

Jobs live in the database, not in memory, so none is lost to a restart. A worker claims a job with a lease
(owner, expiry, version) and renews it while it scores; a job whose worker died is taken over by any worker of
any replica once its lease runs out, and the outcome is fenced by the claim's version, so a job yields one
report however often it was started. A stopping process hands its jobs back at once. Workers poll the database
now and then besides being woken by new uploads, so jobs queued by another process run too. Scoring is
CPU-bound and runs on worker threads; the event loop only waits.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from sqlalchemy.exc import SQLAlchemyError

from asr.audio import decode_audio
from asr.errors import AsrError
from nlu.pii import public_loan_file
from nlu.report import Report, read_report
from pipeline.recording import AudioPart, RecordingError, Redo, Scored
from service.ids import process_name
from service.metrics import JOB_DURATION, JOBS, LIVE_FINAL_LABELS, REDECODED
from service.privacy import RawTextCipher
from service.reports import report_row
from service.store import JobRecord, Store, audit
from service.store.store import LEASE_S, LeaseLost, StoreError, folder_of, utcnow
from service.workers.loop import WorkerLoop

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds between looks at the queue when nobody wakes the workers.
POLL_S = 5.0
#: Seconds between retention sweeps.
SWEEP_S = 3600.0


@dataclass
class JobContext:
    """What scoring a job needs; built once by the app."""

    store: Store
    data_dir: Path
    score: Callable[[str, list[AudioPart], dict[str, Any] | None, Callable[[float], None]], Scored]
    retention_days: float
    #: Set when the unredacted transcript is kept (encrypted); None: it is dropped.
    cipher: RawTextCipher | None = None
    #: Called with the customer id of each report stored (the loan book re-plans that customer).
    after_report: Callable[[str], object] | None = None
    #: Re-decodes a stored live call's degraded finals (`pipeline.recording.redecode_report` with the scorer):
    #: (stored report, utterances to redo, 16 kHz audio by channel, loan file) -> the new report.
    redecode: Callable[[Report, list[Redo], dict[str, np.ndarray], dict[str, Any] | None], dict[str, Any]] | None = None


def run_job(ctx: JobContext, job: JobRecord) -> None:
    """Score one claimed job and record the outcome (synchronous: call on a worker thread)."""
    if job.kind == "redecode":
        run_redecode(ctx, job)
        return
    # Audio outside the service's own area (an archive scored in place by `huifang score-archive`) is only ever
    # read: never rewritten with personal data silenced, never given a retention expiry, never served or deleted.
    stored = all(stored_audio(ctx.data_dir, f["path"]) for f in job.files)
    parts = [AudioPart(ctx.data_dir / f["path"], tuple(f["channels"]), writable=stored) for f in job.files]
    last = [0.0]

    def progress(p: float) -> None:
        if p - last[0] >= 0.05 or p >= 1.0:  # a write per 5%, not per utterance
            last[0] = p
            ctx.store.set_progress(job.id, p)

    began = time.monotonic()
    try:
        scored = ctx.score(job.call_id, parts, job.loan_file, progress)
        # Read back as every later reader will: a report no reader can read is never stored.
        typed = read_report(scored.report)
    except (AsrError, RecordingError) as e:
        log.warning("recording %s (call %s) failed: %s", job.id, job.call_id, e)
        fail_for_good(ctx, job, str(e))
        JOBS.labels("failed").inc()
        return
    except Exception as e:  # noqa: BLE001 - one bad recording must not stop the workers
        log.exception("recording %s (call %s) failed", job.id, job.call_id)
        fail_for_good(ctx, job, f"internal error while scoring ({type(e).__name__})")
        JOBS.labels("error").inc()
        return
    JOB_DURATION.observe(time.monotonic() - began)
    raw = ctx.cipher.encrypt(scored.raw) if ctx.cipher is not None else None
    files = [_current(ctx.data_dir, f) for f in job.files]
    if file_report(ctx, job, scored.report, typed, raw, files, folder_of(job.files) if stored else None):
        JOBS.labels("done").inc()
        log.info("recording %s scored: call %s, risk %s (%s)", job.id, job.call_id, typed.risk_score, typed.tier)
    else:
        JOBS.labels("superseded").inc()


def file_report(ctx: JobContext, job: JobRecord, report: dict[str, Any], typed: Report, raw: bytes | None,
                files: list[dict[str, Any]], audio_dir: str | None, complete: bool = True,
                actor: str = "scoring") -> bool:
    """Store a call's report under its job (a scored recording, or a live call's row) with everything that
    follows from it: the features' rows in the same transaction, the earlier scoring's audio removed, the audit
    entry, and the customer re-planned (not for a `demo` call). `audio_dir` is the call's stored audio folder
    (None: none kept), which retention expires. Retries while the database is away; returns False when the job
    was taken over meanwhile (`LeaseLost`: nothing is stored here). Synchronous: call on a worker thread."""
    expires = utcnow() + timedelta(days=ctx.retention_days) if audio_dir else None
    try:
        # Names and addresses were needed only to redact; the finished job keeps the loan's figures.
        row = report_row(report, typed)
        stale = _retrying(lambda: ctx.store.complete_job(job.id, row, job.agent_id, audio_dir, expires, raw, files,
                                                         version=job.lease_version,
                                                         loan_file_kept=public_loan_file(job.loan_file),
                                                         complete=complete))
    except LeaseLost as e:
        log.warning("call %s (job %s): %s; this result is dropped", job.call_id, job.id, e)
        return False
    for folder in stale:
        remove_audio(ctx.data_dir, folder)  # an earlier scoring of the same call id: nothing points to it now
    loan = job.loan_file or {}
    entry = {"recording_id": job.id, "report_sha256": audit.digest(report), "agent_id": job.agent_id,
             "customer_id": loan.get("customer_id"), "loan_id": loan.get("loan_id"),
             "risk_score": typed.risk_score, "tier": typed.tier, "source": job.source, "complete": complete,
             "answers": [{"topic": a.topic, "label": a.label, "mismatch": a.mismatch} for a in typed.answers]}
    _retrying(lambda: audit.append(ctx.store, "report", actor, job.call_id, entry))
    _replan(ctx, job, loan.get("customer_id"))
    return True


def _replan(ctx: JobContext, job: JobRecord, customer_id: Any) -> None:
    """Re-plan the customer of a call whose report was just stored (not for a `demo` call, nor without one)."""
    if ctx.after_report is None or not customer_id or job.source == "demo":
        return
    try:
        ctx.after_report(str(customer_id))
    except Exception:  # noqa: BLE001 - the report is stored; the daily plan (`huifang plan`) catches up
        log.exception("call %s: could not plan the customer's follow-ups; the next planning run will", job.call_id)


def run_redecode(ctx: JobContext, job: JobRecord) -> None:
    """Decode again, at full quality, the finals a stored live call decoded greedily under load, and store the
    report that follows (the live verdicts kept in it; the one before kept as an earlier version). Synchronous."""
    call = ctx.store.get_call(job.call_id)
    if call is None or ctx.redecode is None:
        fail_for_good(ctx, job, "the call is gone" if call is None else "this worker cannot re-decode",
                      keep_audio=True)
        return
    previous = read_report(call.report)
    redo = [Redo(f.utterance_id, f.channel, f.start_s, f.end_s) for f in ctx.store.stored_live_finals(job.call_id)
            if f.degraded and not f.masked]
    try:
        audio = {name: decode_audio(str(ctx.data_dir / f["path"])).samples[i]
                 for f in job.files for i, name in enumerate(f["channels"])}
        report = ctx.redecode(previous, redo, audio, job.loan_file)
        typed = read_report(report)
    except Exception as e:  # noqa: BLE001 - the live verdicts stand; the job says why
        log.exception("call %s: re-decoding its degraded finals failed", job.call_id)
        fail_for_good(ctx, job, f"re-decoding failed ({type(e).__name__}); the live verdicts stand", keep_audio=True)
        JOBS.labels("error").inc()
        return
    try:
        kept = _retrying(lambda: ctx.store.replace_report(job.call_id, call.report, report_row(report, typed),
                                                          previous.assessor_version, reason="redecode", job=job))
    except LeaseLost as e:
        log.warning("call %s: %s; this re-decoding is dropped", job.call_id, e)
        JOBS.labels("superseded").inc()
        return
    if kept is None:
        log.info("call %s was deleted or replaced before its re-decoding was stored", job.call_id)
        return
    REDECODED.inc(len(typed.redecoded))
    final = {t.topic: t.label for t in typed.topics if t.label}
    for topic in set(final) | set(typed.live_labels):
        LIVE_FINAL_LABELS.labels(str(final.get(topic) == typed.live_labels.get(topic)).lower()).inc()
    _retrying(lambda: audit.append(ctx.store, "report_redecoded", "scoring", job.call_id, {
        "report_sha256": audit.digest(report), "redecoded": list(typed.redecoded),
        "changed": sorted(t for t in set(final) | set(typed.live_labels)
                          if final.get(t) != typed.live_labels.get(t))}))
    _replan(ctx, job, call.customer_id)
    JOBS.labels("done").inc()


#: Seconds between attempts to record an outcome while the database is unreachable.
_RETRY_S = (1.0, 2.0, 4.0, 8.0, 16.0)


def _retrying(write: Callable[[], T]) -> T:
    """`write()`, tried again with back-off while the database is unreachable (the result is kept in memory
    meanwhile; if it never comes back the lease runs out and another worker scores the job again)."""
    for delay in (*_RETRY_S, None):
        try:
            return write()
        except LeaseLost:
            raise
        except (StoreError, SQLAlchemyError) as e:
            if delay is None:
                raise
            log.warning("database unavailable while recording a job's outcome (%s); again in %.0f s", e, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def fail_for_good(ctx: JobContext, job: JobRecord, error: str, keep_audio: bool = False) -> None:
    """A job that failed for good keeps no personal data: its loan file goes, and its audio unless `keep_audio`
    (a re-decoding's audio is the stored call's); the error stays."""
    try:
        folder = _retrying(lambda: ctx.store.fail_job(job.id, error, version=job.lease_version))
    except LeaseLost as e:
        log.warning("call %s (job %s): %s; its failure is not recorded", job.call_id, job.id, e)
        return
    if not keep_audio:
        remove_audio(ctx.data_dir, folder)


def _current(data_dir: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """A stored file entry after scoring: silencing personal data rewrites a recording as FLAC."""
    path = Path(entry["path"])
    if not (data_dir / path).exists() and (data_dir / path.with_suffix(".flac")).exists():
        return {**entry, "path": str(path.with_suffix(".flac"))}
    return entry


class JobRunner:
    """N workers over the database queue, plus the retention sweeper (each a `WorkerLoop`)."""

    def __init__(self, ctx: JobContext, workers: int, lease_s: float = LEASE_S) -> None:
        self.ctx = ctx
        self.workers = workers
        self.lease_s = lease_s
        #: This process's name on the jobs it leases.
        self.owner = process_name()
        self._workers = WorkerLoop("recording worker", self._score_next, workers, POLL_S)
        self._sweeper = WorkerLoop("retention sweep", self._sweep, 1, SWEEP_S)

    async def start(self) -> None:
        await self._workers.start()
        await self._sweeper.start()

    def notify(self) -> None:
        """A job was queued: wake an idle worker now rather than at the next poll."""
        self._workers.notify()

    async def close(self) -> None:
        """Stop the workers; jobs they were scoring go back to the queue at once (another process, or the next
        start, takes them), not when this process is next started."""
        await self._workers.stop()
        await self._sweeper.stop()
        handed = await asyncio.to_thread(self.ctx.store.hand_back, self.owner)
        if handed:
            log.info("stopping: %d recording job(s) handed back to the queue", handed)

    async def _score_next(self, index: int) -> bool:
        """Claim the oldest claimable job and score it under a renewed lease; False when none is queued."""
        job = await asyncio.to_thread(self.ctx.store.claim_next, self.owner, self.lease_s)
        if job is None:
            return False
        # A cancelled worker (shutdown) hands its job back in `close`.
        heartbeat = asyncio.create_task(self._renew(job))
        try:
            await asyncio.to_thread(run_job, self.ctx, job)
        except Exception:  # noqa: BLE001 - the database failed while recording the outcome: go on
            log.exception("worker %d: recording the outcome of job %s failed", index, job.id)
        finally:
            heartbeat.cancel()
        return True

    async def _renew(self, job: JobRecord) -> None:
        """Keep the lease of a job being scored (see `renew_lease`)."""
        while True:
            await asyncio.sleep(self.lease_s * RENEW_EVERY)
            if not await asyncio.to_thread(renew_lease, self.ctx.store, job, self.owner, self.lease_s):
                return

    async def _sweep(self, _: int) -> bool:
        removed = await asyncio.to_thread(sweep_audio, self.ctx.store, self.ctx.data_dir)
        if removed:
            log.info("retention: removed the audio of %d call(s)", removed)
        return False  # next sweep in SWEEP_S


#: A lease is renewed at this fraction of its length, so two missed renewals still leave it the worker's.
RENEW_EVERY = 1 / 3


def renew_lease(store: Store, job: JobRecord, owner: str, lease_s: float) -> bool:
    """One beat of the heartbeat that keeps `owner`'s lease on a job it is scoring (every `RENEW_EVERY` of the
    lease; the service's workers and `huifang score-archive`'s share it). False once the lease is lost (taken
    over or handed back: stop beating, the result will be dropped); a database that is away counts as kept, and
    the next beat tries again."""
    try:
        if store.renew(job.id, owner, job.lease_version, lease_s):
            return True
    except Exception:  # noqa: BLE001 - the database is away: try again at the next beat
        log.warning("recording %s: could not renew its lease", job.id, exc_info=True)
        return True
    log.warning("recording %s: lease lost (taken over); its result will be dropped", job.id)
    return False


def sweep_audio(store: Store, data_dir: Path) -> int:
    """Delete stored audio past its retention (the report stays). Every replica sweeps; each call's audio is
    removed by one of them (`Store.sweep_expired_audio`)."""
    return store.sweep_expired_audio(utcnow(), lambda folder: remove_audio(data_dir, folder))


def stored_audio(data_dir: Path, path: str) -> bool:
    """Whether `path` (a job's file or audio folder: relative to the data directory, or absolute) lies in the
    service's own audio area, where uploads are stored. Only there is audio rewritten, expired or deleted."""
    return (data_dir / "audio").resolve() in (data_dir / path).resolve().parents


def remove_audio(data_dir: Path, folder: str | None) -> None:
    """Delete a stored audio folder, refusing anything outside the data directory's audio area."""
    if folder and stored_audio(data_dir, folder):
        shutil.rmtree((data_dir / folder).resolve(), ignore_errors=True)
