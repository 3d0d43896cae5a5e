"""Recording jobs across processes (issue #17 point 4): leases, take-over after a worker dies, fenced outcomes,
a database that goes away while a result is being written. The scorer is a stand-in: the claim is about the
queue's wiring, which runs on the real PostgreSQL of .ci/run (and SQLite where it applies)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from pipeline.recording import Scored
from service.reports import report_row
from service.store import Store
from service.workers.jobs import JobContext, run_job
from tests.integration.test_recordings import _report

REPO = Path(__file__).resolve().parents[2]

_WORKER = """
import asyncio, sys, time
from pipeline.recording import Scored
from service.workers.jobs import JobContext, JobRunner
from service.store import Store
from tests.integration.test_recordings import _report

def score(call_id, parts, loan, progress):
    time.sleep(float(sys.argv[3]))  # seconds per job
    return Scored({**_report(call_id, "low", 5, {"term": "clear"}), "answers": []}, [])

async def main():
    store = Store(sys.argv[1])
    runner = JobRunner(JobContext(store, __import__("pathlib").Path(sys.argv[2]), score, 90.0), workers=1,
                       lease_s=1.5)
    await runner.start()
    while store.queued_jobs() or _busy(store):
        runner.notify()
        await asyncio.sleep(0.2)
    await runner.close()

def _busy(store):
    from sqlalchemy import func, select
    from service.store.models import Recording
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(Recording).where(Recording.status == "running"))

asyncio.run(main())
"""


def _holds_a_job(store: Store, pid: int) -> bool:
    from sqlalchemy import func, select

    from service.store.models import Recording

    with store.session() as s:
        return bool(s.scalar(select(func.count()).select_from(Recording).where(
            Recording.status == "running", Recording.lease_owner.contains(f":{pid}:"))))


def test_two_workers_one_killed_every_job_scored_once(postgres_schema: str, tmp_path: Path) -> None:
    from sqlalchemy import func, select

    from service.store.models import AuditEntry, Call, Recording

    store = Store(postgres_schema)
    store.migrate()
    for i in range(50):
        store.create_job(f"c{i:02d}", [], None, None, f"job{i:02d}")
    # The first worker takes 30 s a job, so it is surely mid-job when it is killed; the second 0.1 s. The second
    # starts once the first holds a job (start-up may take a while on a busy machine), and both run together.
    def worker(pace: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", _WORKER, postgres_schema, str(tmp_path), pace], cwd=REPO,
                                stderr=subprocess.PIPE)

    workers = [worker("30")]
    deadline = time.monotonic() + 120
    while not _holds_a_job(store, workers[0].pid):
        assert time.monotonic() < deadline and workers[0].poll() is None, "the first worker never took a job"
        time.sleep(0.2)
    workers.append(worker("0.1"))
    time.sleep(2)
    workers[0].send_signal(signal.SIGKILL)  # its lease will run out and the other takes its job over
    assert workers[1].wait(timeout=180) == 0, workers[1].stderr.read().decode()[-2000:] if workers[1].stderr else ""
    workers[0].wait()
    with store.session() as s:
        statuses = dict(s.execute(select(Recording.status, func.count()).group_by(Recording.status)).all())
        calls = s.scalar(select(func.count()).select_from(Call))
        reports = s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.kind == "report"))
        attempts = sorted(s.scalars(select(Recording.attempts)))
    assert statuses == {"done": 50} and calls == 50
    assert reports == 50  # one audit entry per job, however often it was started
    assert attempts[-1] == 2 and attempts[:-1] == [1] * 49  # the killed worker's job was taken over, once
    store.close()


def test_a_result_waits_out_a_database_outage_and_is_recorded_once(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import service.workers.jobs

    monkeypatch.setattr(service.workers.jobs, "_RETRY_S", (0.05, 0.05, 0.05))
    store = Store(f"sqlite:///{tmp_path / 'o.db'}")
    store.migrate()
    job = store.create_job("c1", [], None, None, "j1")
    real = store.complete_job
    outages = [2]

    def flaky(*args: Any, **kwargs: Any) -> list[str]:
        if outages[0]:
            outages[0] -= 1
            raise OperationalError("UPDATE recordings", {}, Exception("server closed the connection"))
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "complete_job", flaky)

    def score(call_id: str, parts: Any, loan: Any, progress: Any) -> Scored:
        return Scored({**_report(call_id, "low", 5, {"term": "clear"}), "answers": []}, [])

    claimed = store.claim(job.id, "worker-1")
    assert claimed is not None
    run_job(JobContext(store, tmp_path, score, 90.0), claimed)
    assert outages == [0] and store.get_job("j1").status == "done"  # type: ignore[union-attr]
    assert store.get_call("c1") is not None


def test_retention_removes_each_call_s_audio_once_across_replicas(postgres_schema: str) -> None:
    """Two replicas' sweepers at once over 40 expired calls: every folder is removed by exactly one of them."""
    import threading
    from datetime import timedelta

    from sqlalchemy import update

    from service.store.models import Call
    from service.store.store import utcnow

    store = Store(postgres_schema)
    store.migrate()
    for i in range(40):
        job = store.create_job(f"r{i:02d}", [], None, None, f"rjob{i:02d}")
        claimed = store.claim(job.id)
        assert claimed is not None
        store.complete_job(job.id, report_row(_report(job.call_id, "low", 5, {"term": "clear"})), None,
                           f"audio/rjob{i:02d}", utcnow() + timedelta(days=1), None, [], version=claimed.lease_version)
    with store.session() as s, s.begin():
        s.execute(update(Call).values(audio_expires_at=utcnow() - timedelta(seconds=1)))
    removed: list[str] = []
    lock = threading.Lock()

    def remove(folder: str) -> None:
        time.sleep(0.01)  # deleting files takes a while: the sweepers overlap
        with lock:
            removed.append(folder)

    replicas = [Store(postgres_schema) for _ in range(2)]
    counts = [0, 0]

    def sweep(i: int) -> None:
        counts[i] = replicas[i].sweep_expired_audio(utcnow(), remove)

    threads = [threading.Thread(target=sweep, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(removed) == [f"audio/rjob{i:02d}" for i in range(40)]  # each once
    assert sum(counts) == 40 and min(counts) > 0  # both swept, neither took a call the other had
    assert store.sweep_expired_audio(utcnow(), remove) == 0
    for s in (*replicas, store):
        s.close()
