"""Scoring an archive of recorded calls through the job queue (`huifang score-archive`).

An archive is a manifest (CSV with the columns `audio`, `call_id` and `loan_file`) or a folder of recordings
(what `huifang score-dir` takes). Its calls become ordinary jobs in the service's job queue, the table uploads go
into, so whoever consumes that queue scores them: this process's workers, the service's replicas, or a pool of
Ray actors (`service.workers.ray_pool`). Each job is scored once however many consume the queue: a worker leases a job
(`Store.claim_next`), keeps the lease with a heartbeat while it scores (`service.workers.jobs.renew_lease`) and records
the outcome only under that lease (`service.workers.jobs.run_job`).

Archive audio is referenced in place (the job's file is its absolute path), not copied: a backfill of a million
calls is not duplicated into the data directory. Audio outside the data directory's audio area is only ever read:
never rewritten with personal data silenced, never given a retention expiry, never deleted or served
(`service.workers.jobs.stored_audio`). Every worker must therefore see the archive at the same path.

Enqueueing is idempotent: a call id that has a report or a queued or running job is not queued again, so a run
stopped anywhere is resumed by starting it again. An archive's jobs share an id prefix (its batch) derived from
where the archive lies; its progress is counted by that prefix.

The store and scorer helpers at the end are shared with `huifang score` and `score-dir`.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from nlu.pii import minimal_loan_file
from pipeline.call import roles_problem
from service.errors import ServiceError
from service.ids import process_name
from service.protocol import LoanFileError, parse_loan_file, valid_call_id
from service.store import JobRecord, Store
from service.workers.jobs import RENEW_EVERY, JobContext, renew_lease, run_job

log = logging.getLogger(__name__)

#: Files a folder of recordings is read for (`score-dir`, `score-archive DIR`).
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a")
#: Columns of a manifest; `loan_file` may be left out.
MANIFEST_COLUMNS = ("audio", "call_id", "loan_file")
#: Start of every archive job's id; the rest of the prefix names the archive (see `batch_prefix`).
BATCH_MARK = "arc-"


@dataclass(frozen=True, slots=True)
class ArchiveCall:
    """One call of an archive: its call id, recording (absolute path) and validated loan file."""

    call_id: str
    audio: Path
    loan_file: dict[str, Any] | None
    #: Where it was read from, for messages: `manifest.csv line 12`, or the recording's name.
    source: str


@dataclass(frozen=True, slots=True)
class ArchiveProblem:
    """A manifest row or recording that cannot be queued, and why."""

    source: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"


@dataclass(frozen=True, slots=True)
class Archive:
    """What an archive holds: the calls that can be queued, the rows that cannot, and its batch (job id prefix)."""

    calls: list[ArchiveCall]
    problems: list[ArchiveProblem]
    batch: str


def batch_prefix(source: Path) -> str:
    """The job id prefix of the archive at `source`: the same archive (by its absolute path) always has the same
    one, so a second run counts the first run's jobs as its own."""
    digest = hashlib.sha256(str(source.resolve()).encode("utf-8")).hexdigest()[:10]
    return f"{BATCH_MARK}{digest}-"


def read_archive(source: Path) -> Archive:
    """The calls of a manifest or a folder of recordings, each row checked (file present, call id well formed
    and unique, loan file valid). Raises `ServiceError` when `source` cannot be read at all."""
    if source.is_dir():
        calls, problems = _read_folder(source)
    elif source.is_file():
        calls, problems = _read_manifest(source)
    else:
        raise ServiceError("usage", f"{source}: no such manifest or folder")
    seen: dict[str, str] = {}
    unique: list[ArchiveCall] = []
    for call in calls:
        if call.call_id in seen:
            problems.append(ArchiveProblem(call.source, f"call id {call.call_id} is also at {seen[call.call_id]}"))
            continue
        seen[call.call_id] = call.source
        unique.append(call)
    return Archive(unique, problems, batch_prefix(source))


def recordings_in(folder: Path) -> list[Path]:
    """The recordings of a folder (not its sub-folders), by name. Raises `ServiceError` when there are none."""
    if not folder.is_dir():
        raise ServiceError("usage", f"{folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise ServiceError("usage", f"no recordings ({', '.join(AUDIO_SUFFIXES)}) in {folder}")
    return files


def call_id_of(path: Path) -> str:
    """The call id of a recording in a folder: its name up to the first dot (`call_s01.8k.wav` -> `call_s01`)."""
    return path.name.split(".")[0]


def read_loan_file(path: Path) -> dict[str, Any] | None:
    """A loan file from a JSON file: the object itself, or an object with a `loan_file` key (the sidecars of the
    shared calls). Raises `LoanFileError` saying what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LoanFileError(f"cannot read loan file {path}: {e}") from e
    if isinstance(data, dict) and isinstance(data.get("loan_file"), dict):
        data = data["loan_file"]
    return parse_loan_file(json.dumps(data, ensure_ascii=False))


def _read_folder(folder: Path) -> tuple[list[ArchiveCall], list[ArchiveProblem]]:
    calls: list[ArchiveCall] = []
    problems: list[ArchiveProblem] = []
    for path in recordings_in(folder):
        call_id = call_id_of(path)
        if not valid_call_id(call_id):
            problems.append(ArchiveProblem(path.name, _bad_call_id(call_id)))
            continue
        sidecar = path.with_suffix(".json")
        try:
            loan = read_loan_file(sidecar) if sidecar.exists() else None
        except LoanFileError as e:
            problems.append(ArchiveProblem(path.name, str(e)))
            continue
        calls.append(ArchiveCall(call_id, path.resolve(), loan, path.name))
    return calls, problems


def _read_manifest(path: Path) -> tuple[list[ArchiveCall], list[ArchiveProblem]]:
    base = path.resolve().parent
    calls: list[ArchiveCall] = []
    problems: list[ArchiveProblem] = []
    try:
        # utf-8-sig: a manifest saved by a spreadsheet starts with a byte-order mark.
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in ("audio", "call_id") if c not in columns]
            unknown = [c for c in columns if c not in MANIFEST_COLUMNS]
            if missing or unknown:
                # An unknown column is most likely a misspelt one: a loan file silently left out would change
                # every verdict that compares a stated figure with the file.
                raise ServiceError("usage", f"{path}: the header must name the columns {', '.join(MANIFEST_COLUMNS)} "
                                   f"(loan_file may be left out); got {', '.join(columns) or 'none'}")
            reader.fieldnames = columns
            for row in reader:
                where = f"{path.name} line {reader.line_num}"
                call, problem = _manifest_row(row, base, where)
                if call is not None:
                    calls.append(call)
                if problem is not None:
                    problems.append(problem)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ServiceError("usage", f"cannot read manifest {path}: {e}") from e
    if not calls and not problems:
        raise ServiceError("usage", f"{path}: the manifest lists no calls")
    return calls, problems


def _manifest_row(row: dict[str, Any], base: Path, where: str) -> tuple[ArchiveCall | None, ArchiveProblem | None]:
    if None in row:  # more cells than columns
        return None, ArchiveProblem(where, "more cells than the header has columns (quote a loan file's JSON)")
    audio = (row.get("audio") or "").strip()
    call_id = (row.get("call_id") or "").strip()
    loan_text = (row.get("loan_file") or "").strip()
    if not audio:
        return None, ArchiveProblem(where, "no audio path")
    path = base / audio  # relative paths are read from the manifest's folder
    if not path.is_file():
        return None, ArchiveProblem(where, f"audio {path} not found")
    if not valid_call_id(call_id):
        return None, ArchiveProblem(where, _bad_call_id(call_id))
    try:
        # The cell holds the loan file's JSON itself, or the path of a JSON file.
        loan = parse_loan_file(loan_text) if loan_text.startswith("{") else (
            read_loan_file(base / loan_text) if loan_text else None)
    except LoanFileError as e:
        return None, ArchiveProblem(where, f"loan file: {e}")
    return ArchiveCall(call_id, path.resolve(), loan, where), None


def _bad_call_id(call_id: str) -> str:
    return (f"call id {call_id!r} is not valid: 1-128 letters, digits, '.', '_', ':' or '-', starting with a "
            "letter or digit")


# -- the queue --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Enqueued:
    """What queueing an archive did: calls queued now, and calls left alone because they already had a report
    or a job waiting or running (queued by an earlier run, an upload, or another process)."""

    queued: int
    scored_before: int
    pending_before: int


def check_channels(channels: tuple[str, ...]) -> None:
    """The roles of an archive's channels: agent and customer, each once (a stereo file per call)."""
    problem = roles_problem(channels, both=True)
    if problem is not None:
        raise ServiceError("usage", f"--channels {problem}")


def enqueue(store: Store, archive: Archive, channels: tuple[str, ...],
            on_call: Callable[[int], None] | None = None) -> Enqueued:
    """Queue every call of `archive` that has neither a report nor a queued or running job. The job references
    the audio in place and keeps only the loan file's fields that scoring needs (`minimal_loan_file`), as
    uploads do. `on_call` gets the count of calls looked at so far."""
    check_channels(channels)
    queued = scored = pending = 0
    for index, call in enumerate(archive.calls):
        footprint = store.call_footprint(call.call_id)
        if footprint is not None and footprint.has_report:
            scored += 1
        elif footprint is not None and footprint.pending:
            pending += 1
        else:
            # A call whose earlier job failed has neither: it is queued again (the failure may have been
            # transient; a failed job keeps no audio or loan file to retry from).
            store.create_job(call.call_id, [{"path": str(call.audio), "channels": list(channels)}],
                             minimal_loan_file(call.loan_file), None, archive.batch + secrets.token_hex(8))
            queued += 1
        if on_call is not None:
            on_call(index + 1)
    return Enqueued(queued, scored, pending)


@dataclass(frozen=True, slots=True)
class BatchProgress:
    """An archive's jobs by status, as the database has them."""

    queued: int
    running: int
    done: int
    failed: int

    @classmethod
    def read(cls, store: Store, batch: str) -> BatchProgress:
        counts = store.batch_counts(batch)
        return cls(counts["queued"], counts["running"], counts["done"], counts["failed"])

    @property
    def pending(self) -> int:
        return self.queued + self.running

    @property
    def finished(self) -> int:
        return self.done + self.failed

    def line(self, finished_before: int, elapsed_s: float) -> str:
        """One progress line; the rate counts what finished since `finished_before` over `elapsed_s`."""
        total = self.finished + self.pending
        text = (f"{self.done}/{total} scored, {self.failed} failed, {self.running} running, {self.queued} queued")
        newly = self.finished - finished_before
        if newly > 0 and elapsed_s > 0:
            rate_per_h = newly / elapsed_s * 3600
            left_s = self.pending / rate_per_h * 3600
            text += f"; {rate_per_h:.0f} calls/h, about {_duration(left_s)} left"
        return text


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


# -- consuming the queue ----------------------------------------------------------------------------------


@dataclass(slots=True)
class DrainCounts:
    """What one or more workers did to the queue."""

    done: int = 0
    failed: int = 0
    #: Jobs whose outcome this worker did not record: its lease was lost (taken over, handed back) or the
    #: database failed while the outcome was written; another worker scores them.
    dropped: int = 0

    def add(self, other: DrainCounts) -> None:
        self.done += other.done
        self.failed += other.failed
        self.dropped += other.dropped


@contextlib.contextmanager
def leased(store: Store, job: JobRecord, owner: str, lease_s: float) -> Iterator[None]:
    """Keep `owner`'s lease on `job` while the body runs, with the service workers' heartbeat (one beat every
    `RENEW_EVERY` of the lease) on a thread of its own, since the body blocks while it scores."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(lease_s * RENEW_EVERY):
            if not renew_lease(store, job, owner, lease_s):
                return

    heartbeat = threading.Thread(target=beat, name=f"lease-{job.id}", daemon=True)
    heartbeat.start()
    try:
        yield
    finally:
        stop.set()
        heartbeat.join()


def drain_queue(ctx: JobContext, owner: str, lease_s: float, stop: threading.Event | None = None) -> DrainCounts:
    """Score jobs from the queue, one at a time, until none is left to claim (or `stop` is set): claim with a
    lease, score under a heartbeat, record the fenced outcome. Synchronous; the same for a worker thread of
    `huifang score-archive` and a Ray actor. Jobs of any origin are taken (uploads too): it is one queue."""
    counts = DrainCounts()
    while stop is None or not stop.is_set():
        job = ctx.store.claim_next(owner, lease_s)
        if job is None:
            break
        try:
            with leased(ctx.store, job, owner, lease_s):
                run_job(ctx, job)
        except Exception:  # noqa: BLE001 - the database failed while the outcome was written: the lease runs out
            log.exception("recording %s: its outcome could not be recorded", job.id)
        after = ctx.store.get_job(job.id)
        if after is None or after.lease_version != job.lease_version or after.status not in ("done", "failed"):
            counts.dropped += 1
        elif after.status == "done":
            counts.done += 1
        else:
            counts.failed += 1
    return counts


class Workers(Protocol):
    """Queue consumers that `score_until_drained` starts and waits for: threads of this process
    (`ThreadWorkers`) or Ray actors (`service.workers.ray_pool.RayWorkers`)."""

    size: int

    def start(self, index: int) -> None:
        """Have worker `index` drain the queue (`drain_queue`)."""

    def wait(self, timeout_s: float) -> list[tuple[int, DrainCounts | BaseException, bool]]:
        """Workers that finished a drain within `timeout_s` (at least one unless it ran out): (index, counts or
        the error it raised, whether it can be started again)."""
        ...

    def close(self) -> int:
        """Stop every worker; the jobs they were scoring go back to the queue at once. Returns how many."""
        ...


class ThreadWorkers:
    """`size` worker threads of this process sharing one loaded scorer (as the service's workers do)."""

    def __init__(self, ctx: JobContext, size: int, lease_s: float) -> None:
        self.ctx = ctx
        self.size = size
        self.lease_s = lease_s
        self.owner = process_name("archive")
        self._stop = threading.Event()
        self._finished: queue.Queue[tuple[int, DrainCounts | BaseException, bool]] = queue.Queue()

    def start(self, index: int) -> None:
        # Daemon threads: an interrupted run exits without waiting for a decode; `close` hands their jobs back.
        threading.Thread(target=self._drain, args=(index,), name=f"archive-{index}", daemon=True).start()

    def _drain(self, index: int) -> None:
        outcome: DrainCounts | BaseException
        try:
            outcome = drain_queue(self.ctx, self.owner, self.lease_s, self._stop)
        except Exception as e:  # noqa: BLE001 - reported by the supervisor, which starts the worker again
            outcome = e
        self._finished.put((index, outcome, True))

    def wait(self, timeout_s: float) -> list[tuple[int, DrainCounts | BaseException, bool]]:
        try:
            finished = [self._finished.get(timeout=timeout_s)]
        except queue.Empty:
            return []
        while not self._finished.empty():
            finished.append(self._finished.get_nowait())
        return finished

    def close(self) -> int:
        self._stop.set()
        return self.ctx.store.hand_back(self.owner)


def score_until_drained(store: Store, batch: str, workers: Workers, interval_s: float,
                        report: Callable[[str], None]) -> DrainCounts:
    """Keep `workers` draining the queue until the archive `batch` has no job queued or running, reporting its
    progress every `interval_s`. A worker whose drain ended (the queue looked empty, or it failed) starts again
    after `interval_s` while the batch still has jobs: a job held by a worker that died becomes claimable when
    its lease runs out, one handed back at once. Raises `ServiceError` when every worker is gone."""
    totals = DrainCounts()
    idle = dict.fromkeys(range(workers.size), 0.0)  # worker -> when it may start again
    gone: set[int] = set()
    began = time.monotonic()
    finished_before = BatchProgress.read(store, batch).finished
    next_line = began
    while True:
        now = time.monotonic()
        progress = BatchProgress.read(store, batch)
        busy = workers.size - len(idle) - len(gone)
        if now >= next_line or (not progress.pending and not busy):
            report(progress.line(finished_before, now - began))
            next_line = now + interval_s
        if not progress.pending and not busy:
            return totals
        if len(gone) == workers.size:
            raise ServiceError("usage", f"every worker stopped with {progress.pending} job(s) of the archive left; "
                               "run the same command again to resume")
        if progress.pending:
            for index, ready_at in list(idle.items()):
                if ready_at <= now:
                    del idle[index]
                    workers.start(index)
        waits = [next_line - now] + ([t - now for t in idle.values()] if progress.pending else [])
        for index, outcome, alive in workers.wait(max(0.05, min(waits))):
            if isinstance(outcome, BaseException):
                log.warning("archive worker %d: %s", index, outcome)
            else:
                totals.add(outcome)
            if alive:
                idle[index] = time.monotonic() + interval_s
            else:
                gone.add(index)


