"""The repository: every read and write of jobs and reports, each in one transaction.

Synchronous SQLAlchemy; the service calls it from worker threads (`asyncio.to_thread`), never on the event loop.
SQLite (the embedded default, a file under the data directory) and PostgreSQL (by URL) run the same code; the
schema comes from the Alembic migrations, applied by `migrate()` at start-up.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, and_, create_engine, delete, event, func, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from service.store.anchor import Anchor
from service.store.leases import LeasedRows
from service.store.models import Answer, Call, CallVersion, LiveFinal, PromptFeedback, Recording, ReportVersion
from service.store.rows import ReportRow, ReportRows

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: Seconds a claimed job is leased for; its worker renews the lease well before it runs out.
LEASE_S = 60.0
#: Advisory lock taken while migrating (PostgreSQL): an arbitrary constant shared by every huifang process.
MIGRATION_LOCK_KEY = 0x68756966616E67  # "huifang"


class StoreError(RuntimeError):
    """The database cannot be used (unreachable, wrong URL, failed migration)."""


def utcnow() -> datetime:
    """Naive UTC, as stored (SQLite has no time zones)."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A recording job as the API shows it."""

    id: str
    call_id: str
    status: str
    progress: float
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    files: list[dict[str, Any]]
    loan_file: dict[str, Any] | None
    agent_id: str | None
    #: The claim this record was read under: completion and failure must present it (see `Store.claim_next`).
    lease_version: int = 0
    #: `upload`, `live` or `demo` (`models.Recording.source`).
    source: str = "upload"
    #: `score` or `redecode` (`models.Recording.kind`).
    kind: str = "score"


@dataclass(frozen=True, slots=True)
class CallFilter:
    """Filters of `GET /v1/calls`."""

    date_from: datetime | None = None
    date_to: datetime | None = None
    tier: str | None = None
    label: str | None = None
    agent_id: str | None = None
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Footprint:
    """What is stored under a call id: since when, whether it has a report, and jobs still queued or running."""

    call_id: str
    created_at: datetime
    has_report: bool
    pending: tuple[str, ...]


def folder_of(files: list[dict[str, Any]] | None) -> str | None:
    """The audio folder (relative to the data directory) a job's files are stored in."""
    return str(Path(files[0]["path"]).parent) if files else None


def _job(r: Recording) -> JobRecord:
    return JobRecord(r.id, r.call_id, r.status, r.progress, r.error, r.created_at, r.started_at, r.finished_at,
                     list(r.files or []), r.loan_file, r.agent_id, r.lease_version or 0, r.source or "upload",
                     r.kind or "score")


def _read_job(s: Session, job_id: str) -> JobRecord | None:
    """The job as its claim just wrote it."""
    row = s.get(Recording, job_id, populate_existing=True)
    return _job(row) if row else None


#: Recording jobs as leased rows: a queued job is claimable, oldest first; a running one once its lease ran out.
JOB_LEASES = LeasedRows(Recording, "running", lambda now: Recording.status == "queued",
                        (Recording.created_at, Recording.id), lambda now: {"started_at": now})


#: Live calls as leased rows (status `live`): the replica streaming a call holds its lease and renews it. A call
#: whose socket dropped is released (no owner) until its lease runs out, for a reconnect on any replica to take; a
#: call whose lease ran out (its replica died, or nobody reconnected) is taken by whichever replica looks first and
#: stored as incomplete (`Store.claim_abandoned_live`).
LIVE_LEASES = LeasedRows(Recording, "live", lambda now: and_(Recording.status == "live",
                                                             Recording.lease_owner.is_(None)),
                         (Recording.created_at, Recording.id))


class LeaseLost(StoreError):
    """The job was taken over (its lease expired) or handed back: this worker's outcome is not recorded."""


class CallConflict(StoreError):
    """A live call cannot start under this id: it is stored already, a recording of it is being scored, or it is
    streaming on another connection (`live`)."""

    def __init__(self, message: str, live: bool = False) -> None:
        super().__init__(message)
        self.live = live


@dataclass(frozen=True, slots=True)
class LiveFinalRecord:
    """A final of a live call as stored while the call streams (`models.LiveFinal`)."""

    seq: int
    channel: str
    utterance_id: str
    start_s: float
    end_s: float
    text: str
    masked: bool
    degraded: bool


@dataclass(frozen=True, slots=True)
class LiveClaim:
    """A live call's row as its streaming connection (or the replica storing it) holds it, with the finals earlier
    connections of the call already wrote (a reconnect continues after them)."""

    job: JobRecord
    finals: tuple[LiveFinalRecord, ...]
    #: The call had an earlier connection (this one continues it).
    resumed: bool = False


@dataclass(frozen=True, slots=True)
class EarlierReport:
    """A report a call had before its current one. `reason` says what replaced it: `replace` (an admin's new
    upload), `rescore` (`huifang rescore`), `redecode` (a live call's utterances decoded again after it) or
    `review` (a supervisor upheld an agent's dispute); `created_at` is when the call came in, `replaced_at` when
    this report stopped being current (both naive UTC)."""

    version: int
    reason: str
    created_at: datetime
    replaced_at: datetime
    recording_id: str | None
    agent_id: str | None
    report: dict[str, Any]


class Store:
    """Jobs, calls and answers in one database."""

    def __init__(self, url: str, report_rows: Iterable[ReportRows] = ()) -> None:
        self.url = url
        #: What features derive from each stored report, written in its transaction (`add_report_rows`).
        self.report_rows: list[ReportRows] = list(report_rows)
        try:
            self.engine: Engine = create_engine(url, pool_pre_ping=True, future=True)
        except (SQLAlchemyError, ImportError, ValueError) as e:
            raise StoreError(f"cannot use database {self.safe_url}: {e}") from e
        #: Where the audit chain's head is checkpointed outside the database (service/store/anchor.py), if set.
        self.anchor: Anchor | None = None
        if self.engine.dialect.name == "sqlite":
            @event.listens_for(self.engine, "connect")
            def _sqlite_pragmas(conn: Any, _: Any) -> None:
                cursor = conn.cursor()
                cursor.execute("PRAGMA foreign_keys=ON")  # ON DELETE CASCADE for answers
                cursor.execute("PRAGMA journal_mode=WAL")  # readers do not wait for the scoring writer
                cursor.execute("PRAGMA busy_timeout=10000")
                cursor.execute("PRAGMA secure_delete=ON")  # deleted rows are overwritten, not left in free pages
                cursor.close()
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    def add_report_rows(self, rows: ReportRows) -> None:
        """Have `rows` written with every report stored from now on (a feature registers at start-up)."""
        self.report_rows.append(rows)

    def _add_report_rows(self, s: Session, call: Call, row: ReportRow, loan_file: Mapping[str, Any] | None) -> None:
        """The rows a stored report brings, in its transaction: the answers calls are filtered by, then each
        registered feature's (`complete_job`, `replace_report`)."""
        call.answers.extend(Answer(topic=a.topic, label=a.label, confidence=a.confidence, mismatch=a.mismatch,
                                   start_s=a.start_s, end_s=a.end_s) for a in row.answers)
        s.add(call)
        s.flush()  # the call first: no relationship tells the unit of work to insert it before rows naming it
        for rows in self.report_rows:
            rows.write(s, call, loan_file)

    @property
    def safe_url(self) -> str:
        """The URL without its password, for messages and logs."""
        try:
            from sqlalchemy.engine import make_url

            return make_url(self.url).render_as_string(hide_password=True)
        except Exception:  # noqa: BLE001 - a malformed URL is reported by the caller
            return "<unparseable database URL>"

    def migrate(self) -> None:
        """Bring the schema to the latest migration (idempotent). Replicas starting together take turns: on
        PostgreSQL the upgrade runs under a transaction-scoped advisory lock, so the second one finds the schema
        done instead of racing to create the same tables."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        try:
            with self.engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
        except (SQLAlchemyError, OSError) as e:
            raise StoreError(f"cannot prepare database {self.safe_url}: {e}") from e

    def close(self) -> None:
        self.engine.dispose()

    def session(self) -> Session:
        return self._session()

    # -- jobs --------------------------------------------------------------------------------------------

    def create_job(self, call_id: str, files: list[dict[str, Any]], loan_file: dict[str, Any] | None,
                   agent_id: str | None, job_id: str | None = None, created_at: datetime | None = None,
                   kind: str = "score", source: str = "upload") -> JobRecord:
        """A queued job for files already stored under the data directory; `created_at` (naive UTC, default now)
        is when the call came in, which its stored call keeps (the demo seed dates calls in the past). `kind`
        `redecode` re-decodes a stored live call's degraded finals (`source` says which call it was)."""
        with self.session() as s, s.begin():
            row = Recording(id=job_id or secrets.token_hex(8), call_id=call_id, status="queued", progress=0.0,
                            attempts=0, created_at=created_at or utcnow(), files=files, loan_file=loan_file,
                            agent_id=agent_id, kind=kind, source=source)
            s.add(row)
        return _job(row)

    def get_job(self, job_id: str) -> JobRecord | None:
        with self.session() as s:
            row = s.get(Recording, job_id)
            return _job(row) if row else None

    def active_job_for(self, call_id: str) -> JobRecord | None:
        """A queued or running job of this call id, if any."""
        with self.session() as s:
            row = s.scalars(select(Recording).where(Recording.call_id == call_id,
                                                    Recording.status.in_(("queued", "running")))).first()
            return _job(row) if row else None

    def queued_jobs(self, kind: str | None = None) -> int:
        """How many jobs wait (of `kind`, or of any kind)."""
        query = select(func.count()).select_from(Recording).where(Recording.status == "queued")
        if kind is not None:
            query = query.where(Recording.kind == kind)
        with self.session() as s:
            return int(s.scalar(query) or 0)

    def batch_counts(self, id_prefix: str) -> dict[str, int]:
        """Jobs whose id starts with `id_prefix` (one archive's, `service.workers.archive`) by status: queued, running,
        done and failed, each present (0 when none)."""
        with self.session() as s:
            rows = s.execute(select(Recording.status, func.count())
                             .where(Recording.id.startswith(id_prefix, autoescape=True))
                             .group_by(Recording.status)).all()
        counts = dict.fromkeys(("queued", "running", "done", "failed"), 0)
        counts.update({str(status): int(n) for status, n in rows})
        return counts

    def batch_failures(self, id_prefix: str, limit: int = 100) -> list[JobRecord]:
        """Failed jobs whose id starts with `id_prefix`, oldest first, at most `limit` (their call ids and
        errors)."""
        with self.session() as s:
            rows = s.scalars(select(Recording).where(Recording.id.startswith(id_prefix, autoescape=True),
                                                     Recording.status == "failed")
                             .order_by(Recording.created_at, Recording.id).limit(limit))
            return [_job(r) for r in rows]

    def hand_back(self, owner: str) -> int:
        """Jobs `owner` was scoring when it stopped: queued again at once (running -> queued, a new version), not
        when their leases expire."""
        with self.session() as s, s.begin():
            result = s.execute(update(Recording).where(Recording.lease_owner == owner, Recording.status == "running")
                               .values(status="queued", progress=0.0, lease_owner=None, lease_expires_at=None,
                                       lease_version=Recording.lease_version + 1))
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def claim_next(self, owner: str = "local", lease_s: float = LEASE_S) -> JobRecord | None:
        """Take the oldest claimable job (queued, or running under a lease that ran out) for `owner` with a lease
        of `lease_s`, safely against other workers and processes (`service.store.leases`)."""
        return JOB_LEASES.claim_next(self.session, owner, lease_s, utcnow, _read_job)

    def claim(self, job_id: str, owner: str = "local", lease_s: float = LEASE_S) -> JobRecord | None:
        """Take this job if it is claimable; None when another worker holds it (or it is finished)."""
        return JOB_LEASES.claim(self.session, job_id, owner, lease_s, utcnow, _read_job)

    def renew(self, job_id: str, owner: str, version: int, lease_s: float = LEASE_S) -> bool:
        """Extend `owner`'s lease on a job it is scoring; False when the lease is no longer its own."""
        return JOB_LEASES.renew(self.session, job_id, owner, version, lease_s, utcnow)

    def set_progress(self, job_id: str, progress: float) -> None:
        with self.session() as s, s.begin():
            s.execute(update(Recording).where(Recording.id == job_id).values(progress=round(progress, 3)))

    def fail_job(self, job_id: str, error: str, version: int | None = None) -> str | None:
        """Mark a job failed for good. It keeps no personal data: the loan file and the list of stored files are
        dropped; returns the job's audio folder, which the caller deletes. With `version`, only under that claim
        (raises `LeaseLost` otherwise)."""
        with self.session() as s, s.begin():
            job = s.get(Recording, job_id, with_for_update=True)
            if job is None:
                return None
            _fence(job, version)
            folder = folder_of(job.files)
            job.status, job.error, job.finished_at = "failed", error[:2000], utcnow()
            job.lease_owner, job.lease_expires_at = None, None
            job.loan_file, job.files = None, []
            return folder

    # -- live calls ----------------------------------------------------------------------------------------

    def open_live(self, call_id: str, owner: str, lease_s: float, files: list[dict[str, Any]],
                  loan_file: dict[str, Any] | None, agent_id: str | None, source: str,
                  recording_id: str | None = None) -> LiveClaim:
        """Hold the row of a live call starting on this connection: a new one, or the call's own row when it was
        released (its socket dropped) or its lease ran out, so that a reconnect continues the call (the finals
        already written come back with it). A new row gets `recording_id` (default: a random one). Raises
        `CallConflict` when the call id is stored already, has a
        recording queued or being scored, or is held by another connection."""
        now = utcnow()
        with self.session() as s, s.begin():
            if s.get(Call, call_id) is not None:
                raise CallConflict(f"call {call_id} is stored already: a call id is streamed once")
            rows = list(s.scalars(select(Recording).where(Recording.call_id == call_id,
                                                          Recording.status.in_(("queued", "running", "live")))))
            if any(r.status != "live" for r in rows):
                raise CallConflict(f"a recording of call {call_id} is being scored")
            if rows:
                row = rows[0]
                if not LIVE_LEASES.take(s, row.id, row.lease_version, owner, lease_s, now):
                    raise CallConflict(f"call {call_id} is streaming on another connection", live=True)
                job = _read_job(s, row.id)
                assert job is not None
                return LiveClaim(job, _finals_of(s, row.id), resumed=True)
            row = Recording(id=recording_id or secrets.token_hex(8), call_id=call_id, status="live", progress=0.0,
                            attempts=1, created_at=now, started_at=now, files=files, loan_file=loan_file,
                            agent_id=agent_id, lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_s),
                            lease_version=1, source=source)
            s.add(row)
            s.flush()
            return LiveClaim(_job(row), ())

    def add_live_final(self, recording_id: str, final: LiveFinalRecord) -> None:
        """Keep a final of a live call as it is sent (what a crash of its replica must not lose)."""
        with self.session() as s, s.begin():
            s.add(LiveFinal(recording_id=recording_id, seq=final.seq, channel=final.channel,
                            utterance_id=final.utterance_id, start_s=final.start_s, end_s=final.end_s,
                            text=final.text, masked=final.masked, degraded=final.degraded))

    def stored_live_finals(self, call_id: str) -> list[LiveFinalRecord]:
        """The finals the stored live call `call_id` wrote while it streamed, in order (none for an upload)."""
        with self.session() as s:
            row = s.scalars(select(Recording.id).where(Recording.call_id == call_id, Recording.status == "done",
                                                       Recording.kind == "score",
                                                       Recording.source.in_(("live", "demo")))).first()
            return list(_finals_of(s, row)) if row is not None else []

    def renew_live(self, recording_id: str, owner: str, version: int, lease_s: float) -> bool:
        """Extend the lease of a live call `owner` streams; False when it is no longer its own."""
        return LIVE_LEASES.renew(self.session, recording_id, owner, version, lease_s, utcnow)

    def release_live(self, recording_id: str, owner: str, version: int) -> bool:
        """The call's socket dropped: let a reconnect (on any replica) take the call until its lease runs out,
        after which it is stored as it stands (`claim_abandoned_live`). False when the lease was not its own."""
        with self.session() as s, s.begin():
            result = s.execute(update(Recording).where(
                Recording.id == recording_id, Recording.lease_owner == owner, Recording.lease_version == version,
                Recording.status == "live").values(lease_owner=None))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def queue_live(self, recording_id: str, version: int, files: list[dict[str, Any]]) -> None:
        """A live call that was recorded only (no replica had room to decode it), its audio stored as `files`:
        its row becomes a queued `score` job, scored as an uploaded recording is (its `source` stays). Raises
        `LeaseLost` unless the row is still live under the claim `version`."""
        with self.session() as s, s.begin():
            job = s.get(Recording, recording_id, with_for_update=True)
            if job is None or job.status != "live":
                raise LeaseLost(f"live call {recording_id} is no longer live")
            _fence(job, version)
            job.status, job.files, job.progress, job.kind = "queued", files, 0.0, "score"
            job.lease_owner, job.lease_expires_at = None, None

    def claim_abandoned_live(self, owner: str, lease_s: float) -> LiveClaim | None:
        """Take the oldest live call whose lease ran out (its replica died, or its socket dropped and nobody
        reconnected in time), to store it as it stands; None when there is none."""
        def then(s: Session, row_id: str) -> LiveClaim:
            job = _read_job(s, row_id)
            assert job is not None
            return LiveClaim(job, _finals_of(s, row_id))

        return LIVE_LEASES.claim_next(self.session, owner, lease_s, utcnow, then,
                                      where=(Recording.status == "live", Recording.lease_expires_at < utcnow()))

    def complete_job(self, job_id: str, row: ReportRow, agent_id: str | None, audio_dir: str | None,
                     audio_expires_at: datetime | None, raw_encrypted: bytes | None = None,
                     files: list[dict[str, Any]] | None = None, version: int | None = None,
                     loan_file_kept: dict[str, Any] | None = None, complete: bool = True) -> list[str]:
        """Store the report (replacing an earlier one of the same call) with the rows features derive from it
        (`add_report_rows`), and mark the job done: one transaction, so a crash leaves either no trace or the
        whole result. Returns the audio folders of what it replaced (the earlier scoring's recording), which the
        caller deletes: nothing stored is left unreachable. With `version`, only under that claim: a worker whose
        job was taken over records nothing (`LeaseLost`), so a job yields one report however often it was
        started. The finished job keeps `loan_file_kept` instead of its loan file (names and addresses were
        needed only to redact; the caller says what may stay). A live call's row is completed the same way
        (`complete` False: it did not end cleanly)."""
        with self.session() as s, s.begin():
            job = s.get(Recording, job_id, with_for_update=True)
            if job is None:
                raise StoreError(f"job {job_id} vanished")
            _fence(job, version)
            superseded = [r for r in s.scalars(select(Recording).where(
                Recording.call_id == job.call_id, Recording.id != job_id, Recording.status.in_(("done", "failed"))))]
            # Locked as replace_report locks it: a review or re-scoring committing meanwhile would otherwise have
            # its kept report (report_versions) deleted with the row below before it is copied.
            old = s.get(Call, job.call_id, with_for_update=True)
            stale = {f for f in [old.audio_dir if old else None, *(folder_of(r.files) for r in superseded)]
                     if f and f != audio_dir}
            if old is not None:
                # The report replaced stays readable to admins until the call is deleted (its audio does not);
                # so do the reports a re-scoring kept (report_versions, which go with the call row deleted below).
                earlier = int(s.scalar(select(func.count()).select_from(CallVersion)
                                       .where(CallVersion.call_id == job.call_id)) or 0)
                rescored = s.scalars(select(ReportVersion).where(ReportVersion.call_id == job.call_id)
                                     .order_by(ReportVersion.version)).all()
                now = utcnow()
                for kept, reason, at in [*((r.report, r.reason, r.created_at) for r in rescored),
                                         (old.report, "replace", now)]:
                    earlier += 1
                    s.add(CallVersion(call_id=old.call_id, version=earlier, recording_id=old.recording_id,
                                      agent_id=old.agent_id, customer_id=old.customer_id, created_at=old.created_at,
                                      replaced_at=at, report=kept, reason=reason))
            for earlier_job in superseded:
                s.delete(earlier_job)
            s.execute(delete(Call).where(Call.call_id == job.call_id))
            s.flush()
            call = Call(call_id=job.call_id, recording_id=job_id, agent_id=agent_id, created_at=job.created_at,
                        duration_s=row.duration_s, risk_score=row.risk_score, tier=row.tier, report=row.report,
                        audio_dir=audio_dir, audio_expires_at=audio_expires_at, raw_encrypted=raw_encrypted,
                        customer_id=_loan_key(job.loan_file, "customer_id"),
                        loan_id=_loan_key(job.loan_file, "loan_id"), source=job.source or "upload",
                        complete=complete)
            self._add_report_rows(s, call, row, job.loan_file)
            job.status, job.progress, job.finished_at, job.error = "done", 1.0, utcnow(), None
            job.lease_owner, job.lease_expires_at = None, None
            if files is not None:
                job.files = files  # the stored audio was rewritten (personal data silenced)
            job.loan_file = loan_file_kept
        return sorted(stale)

    def replace_report(self, call_id: str, previous: dict[str, Any], row: ReportRow, assessor_version: str,
                       loan_file: Mapping[str, Any] | None = None, reason: str = "rescore",
                       job: JobRecord | None = None) -> int | None:
        """Make `row` the call's current report, keeping `previous` (the one it was made from, by
        `assessor_version`) as the call's next earlier version (`report_versions`); answers and the features'
        rows are rewritten from it as `complete_job` writes them, in one transaction. The features read the
        loan file the call's recording kept, or `loan_file` for a call stored without one. Returns the kept
        version's number; None (nothing written) when the call is gone or its report is no longer `previous` (a
        new upload replaced it meanwhile). With `job` (a `redecode` job, held under its claim, else `LeaseLost`)
        the job is finished in the same transaction, done or, when nothing was written, failed; either way it
        keeps no loan file."""
        with self.session() as s, s.begin():
            held = None
            if job is not None:
                held = s.get(Recording, job.id, with_for_update=True)
                if held is None:
                    raise StoreError(f"job {job.id} vanished")
                _fence(held, job.lease_version)
                held.lease_owner, held.lease_expires_at, held.loan_file = None, None, None
                held.finished_at, held.progress = utcnow(), 1.0
                held.status, held.error = "failed", "the call was deleted or replaced meanwhile"
            call = s.get(Call, call_id, with_for_update=True)
            if call is None or call.report != previous:
                return None
            if held is not None:
                held.status, held.error = "done", None
            version = int(s.scalar(select(func.max(ReportVersion.version))
                                   .where(ReportVersion.call_id == call_id)) or 0) + 1
            s.add(ReportVersion(call_id=call_id, version=version, assessor_version=assessor_version,
                                report=previous, created_at=utcnow(), reason=reason))
            call.answers.clear()
            s.flush()
            call.report, call.risk_score, call.tier = row.report, row.risk_score, row.tier
            call.duration_s = row.duration_s
            recording = s.get(Recording, call.recording_id) if call.recording_id else None
            self._add_report_rows(s, call, row, recording.loan_file if recording is not None else loan_file)
            return version

    def report_versions(self, call_id: str) -> list[ReportVersion]:
        """The call's earlier reports, oldest first."""
        with self.session() as s:
            return list(s.scalars(select(ReportVersion).where(ReportVersion.call_id == call_id)
                                  .order_by(ReportVersion.version)))

    def earlier_reports(self, call_id: str) -> list[EarlierReport]:
        """Every report the call had before its current one, oldest first, numbered from 1 and each with why it
        was replaced: those an admin's replacement kept (`call_versions`), then those re-scorings, re-decodings
        and reviews of the current call kept (`report_versions`). Nothing kept is left out."""
        with self.session() as s:
            replaced = s.scalars(select(CallVersion).where(CallVersion.call_id == call_id)
                                 .order_by(CallVersion.version)).all()
            call = s.get(Call, call_id)
            kept = s.scalars(select(ReportVersion).where(ReportVersion.call_id == call_id)
                             .order_by(ReportVersion.version)).all() if call is not None else []
            out = [EarlierReport(0, v.reason or "replace", v.created_at, v.replaced_at, v.recording_id, v.agent_id,
                                 v.report) for v in replaced]
            if call is not None:
                out += [EarlierReport(0, v.reason, call.created_at, v.created_at, call.recording_id, call.agent_id,
                                      v.report) for v in kept]
        return [replace(e, version=n) for n, e in enumerate(out, start=1)]

    # -- calls -------------------------------------------------------------------------------------------

    def get_call(self, call_id: str) -> Call | None:
        with self.session() as s:
            return s.get(Call, call_id)

    def list_calls(self, f: CallFilter) -> tuple[list[Call], int]:
        """One page of calls (newest first) and the total matching the filters."""
        query = select(Call)
        if f.date_from is not None:
            query = query.where(Call.created_at >= f.date_from)
        if f.date_to is not None:
            query = query.where(Call.created_at < f.date_to)
        if f.tier:
            query = query.where(Call.tier == f.tier)
        if f.agent_id:
            query = query.where(Call.agent_id == f.agent_id)
        if f.label:
            query = query.where(Call.call_id.in_(select(Answer.call_id).where(Answer.label == f.label)))
        with self.session() as s:
            total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = s.scalars(query.order_by(Call.created_at.desc(), Call.call_id)
                             .limit(f.limit).offset(f.offset)).all()
            return list(rows), int(total)

    def call_ids(self, since: datetime | None = None, call_id: str | None = None) -> list[str]:
        """The ids of stored calls in call-time order: those at or after `since`, or only `call_id`."""
        query = select(Call.call_id)
        if call_id is not None:
            query = query.where(Call.call_id == call_id)
        if since is not None:
            query = query.where(Call.created_at >= since)
        with self.session() as s:
            return list(s.scalars(query.order_by(Call.created_at, Call.call_id)))

    def call_footprint(self, call_id: str) -> Footprint | None:
        """What is stored for a call id (its report and every job), or None when nothing is."""
        with self.session() as s:
            call = s.get(Call, call_id)
            jobs = list(s.scalars(select(Recording).where(Recording.call_id == call_id)))
            if call is None and not jobs:
                return None
            times = [j.created_at for j in jobs] + ([call.created_at] if call else [])
            return Footprint(call_id, min(times), call is not None,
                             tuple(sorted(j.status for j in jobs if j.status in ("queued", "running", "live"))))

    def delete_call(self, call_id: str) -> list[str]:
        """Remove a call's report, answers and every job not running; returns the audio folders they held (the
        caller deletes them). Raises `StoreError` while a job of the call is running."""
        with self.session() as s, s.begin():
            jobs = list(s.scalars(select(Recording).where(Recording.call_id == call_id)))
            if any(j.status == "running" for j in jobs):
                raise StoreError(f"call {call_id} is being scored; delete it when the job has finished")
            if any(j.status == "live" for j in jobs):
                raise StoreError(f"call {call_id} is streaming live; delete it once it has ended")
            call = s.get(Call, call_id)
            folders = {f for f in [call.audio_dir if call else None, *(folder_of(j.files) for j in jobs)] if f}
            if call is not None:
                s.delete(call)
            for job in jobs:
                s.delete(job)
            s.execute(delete(CallVersion).where(CallVersion.call_id == call_id))
            # Agents' verdicts on its prompts keep its redacted question and answer: they go with the call.
            s.execute(delete(PromptFeedback).where(PromptFeedback.call_id == call_id))
            return sorted(folders)

    def flush_deleted(self) -> None:
        """After an erasure: with SQLite, copy the write-ahead log into the database (whose freed pages
        `secure_delete` zeroed) and truncate it, so that the deleted rows' old page images do not linger in the
        WAL file until the next automatic checkpoint. Nothing to do on PostgreSQL (its own vacuum)."""
        if self.engine.dialect.name != "sqlite":
            return
        with self.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    def call_versions(self, call_id: str) -> list[CallVersion]:
        """The reports a call's replacements superseded, oldest first."""
        with self.session() as s:
            return list(s.scalars(select(CallVersion).where(CallVersion.call_id == call_id)
                                  .order_by(CallVersion.version)))

    def sweep_expired_audio(self, now: datetime, remove: Callable[[str], None]) -> int:
        """For each call whose audio passed its retention: `remove(folder)`, then forget the folder; returns how
        many. One call at a time under its row lock (FOR UPDATE SKIP LOCKED on PostgreSQL), the files removed
        before the row is updated: replicas sweeping at once never take the same call, and a sweeper that dies
        midway leaves the call for the next sweep instead of a folder nothing points to."""
        count = 0
        while True:
            with self.session() as s, s.begin():
                query = select(Call).where(Call.audio_dir.is_not(None), Call.audio_expires_at <= now).limit(1)
                if self.engine.dialect.name == "postgresql":
                    query = query.with_for_update(skip_locked=True)
                call = s.execute(query).scalar_one_or_none()
                if call is None:
                    return count
                remove(str(call.audio_dir))
                call.audio_dir, call.audio_expires_at = None, None
            count += 1


def _loan_key(loan_file: Mapping[str, Any] | None, key: str) -> str | None:
    """The customer or loan a job's loan file names (None: none), which the stored call is filed under."""
    value = (loan_file or {}).get(key)
    return str(value) if value not in (None, "") else None


def _finals_of(s: Session, recording_id: str) -> tuple[LiveFinalRecord, ...]:
    """The finals a live call's row `recording_id` has written, in order."""
    return tuple(LiveFinalRecord(f.seq, f.channel, f.utterance_id, f.start_s, f.end_s, f.text, f.masked, f.degraded)
                 for f in s.scalars(select(LiveFinal).where(LiveFinal.recording_id == recording_id)
                                    .order_by(LiveFinal.seq)))


def _fence(job: Recording, version: int | None) -> None:
    """Raise `LeaseLost` unless the job is still running (or streaming live) under the claim `version` (None: no
    fencing)."""
    if version is not None and (job.status not in ("running", "live") or job.lease_version != version):
        raise LeaseLost(f"job {job.id} was taken over or handed back (claim {version}, now {job.lease_version})")
