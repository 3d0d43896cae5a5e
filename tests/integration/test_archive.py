"""Archive scoring (`huifang score-archive`, issue #17 point 5): manifests checked row by row, idempotent and
resumable queueing, leased draining of the shared queue, archive audio that is only ever read, and a pool of Ray
actors on a local runtime scoring two shared calls with the real model.

The queue tests use a stand-in scorer (the claim is about wiring, on SQLite and the PostgreSQL of .ci/run); the
Ray test runs the real model. Without the `ray` extra that test is skipped, unless HUIFANG_REQUIRE_RAY=1 (CI).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.recording import AudioPart, Scored
from service.cli import main
from service.errors import ServiceError
from service.store import Store
from service.workers.archive import (
    BatchProgress,
    ThreadWorkers,
    batch_prefix,
    drain_queue,
    enqueue,
    read_archive,
    score_until_drained,
)
from service.workers.jobs import JobContext, remove_audio, stored_audio, sweep_audio
from tests.integration.test_recordings import _report
from tests.support.audiogen import write_audio

REPO = Path(__file__).resolve().parents[2]
STEREO = ("agent", "customer")
LOAN = {"borrower": "钱学文", "role": "borrower", "amount_yuan": 720000, "term_years": 30, "repay_day": 11,
        "monthly_yuan": 3700, "rate_pct": 3.6, "phone": "13812345678", "id_number": "110105198003154231"}


def _recording(path: Path) -> Path:
    """A short stereo WAV: the queue never decodes audio, so any recording will do."""
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = "flac" if path.suffix == ".flac" else "pcm_s16le"
    return write_audio(path, np.zeros((2, 1600), dtype=np.float32), 16000, codec)


def _manifest(folder: Path, rows: list[str], header: str = "audio,call_id,loan_file") -> Path:
    path = folder / "manifest.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def _scorer(seconds: float = 0.0, seen: list[list[AudioPart]] | None = None) -> Any:
    """A stand-in for the recording scorer: waits `seconds`, reports a low-risk call."""
    def score(call_id: str, parts: list[AudioPart], loan: Any, progress: Any) -> Scored:
        if seen is not None:
            seen.append(parts)
        time.sleep(seconds)
        return Scored({**_report(call_id, "low", 5, {"term": "clear"}), "answers": []}, [])
    return score


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The embedded SQLite database, or a fresh schema of the test PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'huifang.db'}"
    return str(request.getfixturevalue("postgres_schema"))


def _store(url: str) -> Store:
    store = Store(url)
    store.migrate()
    return store


def test_manifest_rows_are_checked_one_by_one(tmp_path: Path) -> None:
    archive_dir = tmp_path / "archive"
    _recording(archive_dir / "2024" / "a.wav")
    _recording(archive_dir / "2024" / "b.wav")
    (archive_dir / "b.json").write_text(json.dumps({"loan_file": LOAN}, ensure_ascii=False), encoding="utf-8")
    inline = json.dumps({"amount_yuan": 500000, "term_years": 20}).replace('"', '""')
    manifest = _manifest(archive_dir, [
        f'2024/a.wav,call-a,"{inline}"',
        "2024/b.wav,call-b,b.json",
        "2024/missing.wav,call-c,",
        "2024/a.wav,bad id,",
        '2024/a.wav,call-d,"{""amount_yuan"": ""#""}"',
        '2024/a.wav,call-e,"{""salary"": 1}"',
        "2024/b.wav,call-f,nowhere.json",
        "2024/b.wav,call-a,",
        "2024/a.wav,call-g,,surplus",
    ])
    archive = read_archive(manifest)
    assert [(c.call_id, c.audio, c.loan_file) for c in archive.calls] == [
        ("call-a", (archive_dir / "2024" / "a.wav").resolve(), {"amount_yuan": 500000.0, "term_years": 20.0}),
        ("call-b", (archive_dir / "2024" / "b.wav").resolve(), LOAN),
    ]
    problems = [str(p) for p in archive.problems]
    assert problems[0].startswith("manifest.csv line 4: audio ") and problems[0].endswith("missing.wav not found")
    assert problems[1].startswith("manifest.csv line 5: call id 'bad id' is not valid")
    assert problems[2].startswith("manifest.csv line 6: loan file: ") and "amount_yuan" in problems[2]
    assert problems[3].startswith("manifest.csv line 7: loan file: ") and "salary" in problems[3]
    assert problems[4].startswith("manifest.csv line 8: loan file: cannot read loan file")
    assert problems[5].startswith("manifest.csv line 10: more cells than the header has columns")
    assert problems[6] == "manifest.csv line 9: call id call-a is also at manifest.csv line 2"
    assert len(problems) == 7
    assert archive.batch == batch_prefix(manifest) and len(archive.batch + "0" * 16) <= 32  # a job id's length

    with pytest.raises(ServiceError, match="header must name the columns"):
        read_archive(_manifest(tmp_path, ["a.wav,x,"], header="audio,callid,loan_file"))
    with pytest.raises(ServiceError, match="no such manifest or folder"):
        read_archive(tmp_path / "nope.csv")


def test_a_folder_is_read_as_score_dir_reads_it(tmp_path: Path) -> None:
    folder = tmp_path / "calls"
    _recording(folder / "call_s01.flac")
    (folder / "call_s01.json").write_text(json.dumps({"loan_file": LOAN}, ensure_ascii=False), encoding="utf-8")
    _recording(folder / "call_s02.flac")
    _recording(folder / "call_s02.8k.wav")  # the same call id again
    (folder / "notes.txt").write_text("not audio", encoding="utf-8")
    archive = read_archive(folder)
    assert [(c.call_id, c.audio.name, c.loan_file is not None) for c in archive.calls] == [
        ("call_s01", "call_s01.flac", True), ("call_s02", "call_s02.8k.wav", False)]
    assert [str(p) for p in archive.problems] == ["call_s02.flac: call id call_s02 is also at call_s02.8k.wav"]


def test_queueing_is_idempotent_and_archive_audio_is_only_read(tmp_path: Path, db_url: str) -> None:
    """Queued twice, scored, queued again: each call is queued once and scored once. The job reads the audio in
    place and keeps no phone or ID number; the scored call gets no audio folder or expiry, so retention and
    deletion never reach the archive."""
    archive_dir = tmp_path / "archive"
    for name in ("a", "b", "c"):
        _recording(archive_dir / f"{name}.wav")
    loan = json.dumps(LOAN, ensure_ascii=False).replace('"', '""')
    manifest = _manifest(archive_dir, [f'a.wav,call-a,"{loan}"', "b.wav,call-b,", "c.wav,call-c,"])
    archive = read_archive(manifest)
    store = _store(db_url)
    store.create_job("upload-1", [], None, None, "upload-job")  # another origin, in the same queue

    first = enqueue(store, archive, STEREO)
    assert (first.queued, first.scored_before, first.pending_before) == (3, 0, 0)
    again = enqueue(store, archive, STEREO)
    assert (again.queued, again.scored_before, again.pending_before) == (0, 0, 3)
    assert BatchProgress.read(store, archive.batch) == BatchProgress(queued=3, running=0, done=0, failed=0)
    job = store.active_job_for("call-a")
    assert job is not None and job.files == [{"path": str((archive_dir / "a.wav").resolve()),
                                              "channels": ["agent", "customer"]}]
    assert job.loan_file is not None and "phone" not in job.loan_file and "id_number" not in job.loan_file

    seen: list[list[AudioPart]] = []
    data_dir = tmp_path / "data"
    counts = drain_queue(JobContext(store, data_dir, _scorer(seen=seen), 0.00001), "test-worker", 30.0)
    assert (counts.done, counts.failed, counts.dropped) == (4, 0, 0)  # the upload's job too: one queue
    assert all(not part.writable for parts in seen for part in parts)  # never rewritten (personal data silenced)
    call = store.get_call("call-a")
    assert call is not None and call.audio_dir is None and call.audio_expires_at is None
    time.sleep(0.01)
    assert sweep_audio(store, data_dir) == 0
    remove_audio(data_dir, str(archive_dir))  # what a deletion would be asked to do with an absolute folder
    assert (archive_dir / "a.wav").exists()
    assert stored_audio(data_dir, "audio/job1") and not stored_audio(data_dir, str(archive_dir / "a.wav"))

    third = enqueue(store, archive, STEREO)
    assert (third.queued, third.scored_before, third.pending_before) == (0, 3, 0)
    assert BatchProgress.read(store, archive.batch) == BatchProgress(queued=0, running=0, done=3, failed=0)
    with pytest.raises(ServiceError, match="--channels"):
        enqueue(store, archive, ("agent",))
    store.close()


def test_a_failed_call_is_queued_again_on_the_next_run(tmp_path: Path) -> None:
    archive_dir = tmp_path / "archive"
    _recording(archive_dir / "a.wav")
    archive = read_archive(_manifest(archive_dir, ["a.wav,call-a,"]))
    store = _store(f"sqlite:///{tmp_path / 'h.db'}")
    enqueue(store, archive, STEREO)

    def broken(call_id: str, parts: Any, loan: Any, progress: Any) -> Scored:
        from pipeline.recording import RecordingError

        raise RecordingError("the recording holds no speech")

    counts = drain_queue(JobContext(store, tmp_path, broken, 90.0), "w", 30.0)
    assert counts.failed == 1 and [j.error for j in store.batch_failures(archive.batch)] == [
        "the recording holds no speech"]
    assert (archive_dir / "a.wav").exists()  # a failed job deletes its stored audio, never archive audio
    assert enqueue(store, archive, STEREO).queued == 1
    store.close()


def test_two_drains_share_the_queue_and_keep_their_leases(tmp_path: Path, db_url: str) -> None:
    """Scoring takes longer than the lease: the heartbeat keeps it, so no job is taken over and each yields one
    report and one audit entry."""
    from sqlalchemy import func, select

    from service.store.models import AuditEntry, Recording

    store = _store(db_url)
    for i in range(4):
        store.create_job(f"c{i}", [], None, None, f"job{i}")
    ctx = JobContext(store, tmp_path, _scorer(seconds=1.2), 90.0)
    results: list[Any] = []
    threads = [threading.Thread(target=lambda o=owner: results.append(drain_queue(ctx, o, 0.5)))
               for owner in ("w1", "w2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sum(r.done for r in results) == 4 and all(r.done >= 1 and not r.dropped for r in results)
    with store.session() as s:
        assert sorted(s.scalars(select(Recording.attempts))) == [1, 1, 1, 1]  # never taken over
        assert s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.kind == "report")) == 4
    store.close()


def test_the_supervisor_takes_over_a_dead_workers_job_and_reports_progress(tmp_path: Path) -> None:
    """A job of the archive is held by a worker that died: the supervisor keeps starting idle workers until its
    lease runs out and it is scored; progress lines count the batch."""
    archive_dir = tmp_path / "archive"
    for name in ("a", "b"):
        _recording(archive_dir / f"{name}.wav")
    archive = read_archive(_manifest(archive_dir, ["a.wav,call-a,", "b.wav,call-b,"]))
    store = _store(f"sqlite:///{tmp_path / 'h.db'}")
    enqueue(store, archive, STEREO)
    held = store.claim_next("a-worker-that-died", lease_s=1.0)
    assert held is not None
    lines: list[str] = []
    workers = ThreadWorkers(JobContext(store, tmp_path, _scorer(), 90.0), size=2, lease_s=30.0)
    totals = score_until_drained(store, archive.batch, workers, 0.2, lines.append)
    assert workers.close() == 0
    assert totals.done == 2
    assert BatchProgress.read(store, archive.batch) == BatchProgress(queued=0, running=0, done=2, failed=0)
    assert any("1 running" in line for line in lines) and lines[-1].startswith("2/2 scored, 0 failed")
    taken_over = store.get_job(held.id)
    assert taken_over is not None and taken_over.status == "done" and taken_over.lease_version > held.lease_version
    store.close()


@pytest.fixture()
def cli_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from service.settings import Settings, get_settings

    data = tmp_path / "data"
    monkeypatch.setenv("HUIFANG_DATA_DIR", str(data))
    get_settings.cache_clear()
    yield Settings(data_dir=data)
    get_settings.cache_clear()


def test_cli_enqueue_only_and_clear_refusals(tmp_path: Path, cli_data: Any, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    archive_dir = tmp_path / "archive"
    _recording(archive_dir / "a.wav")
    good = _manifest(archive_dir, ["a.wav,call-a,"])
    assert main(["score-archive", str(good), "--enqueue-only"]) == 0
    assert "1 queued now, 0 scored before, 0 already queued or running" in capsys.readouterr().err
    assert main(["score-archive", str(good), "--enqueue-only"]) == 0
    assert "0 queued now, 0 scored before, 1 already queued or running" in capsys.readouterr().err

    bad = tmp_path / "bad"
    _recording(bad / "a.wav")
    manifest = _manifest(bad, ["a.wav,call-x,", "gone.wav,call-y,"])
    assert main(["score-archive", str(manifest), "--enqueue-only"]) == 2
    err = capsys.readouterr().err
    assert "manifest.csv line 3: audio " in err and "1 of 2 calls of the archive cannot be queued" in err
    assert main(["score-archive", str(manifest), "--enqueue-only", "--skip-invalid"]) == 0

    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    other = tmp_path / "other"
    _recording(other / "z.wav")
    assert main(["score-archive", str(_manifest(other, ["z.wav,call-z,"])), "--ray"]) == 2
    assert "pip install 'huifang[ray]'" in capsys.readouterr().err
    assert main(["score-archive", "--ray", str(other / "manifest.csv")]) == 2  # the bare flag took the source
    assert "pip install 'huifang[ray]'" in capsys.readouterr().err
    store = Store(cli_data.db_url)
    assert store.active_job_for("call-z") is None  # refused before anything was queued
    store.close()


# -- Ray, with the real model ----------------------------------------------------------------------------


def _require_ray() -> None:
    if importlib.util.find_spec("ray") is None:
        if os.environ.get("HUIFANG_REQUIRE_RAY") == "1":
            raise AssertionError("ray is not installed (CI installs the extra: pip install -e '.[dev,ray]')")
        pytest.skip("ray is not installed: pip install 'huifang[ray]' (HUIFANG_REQUIRE_RAY=1 makes this a failure)")


def _processes_with(marker: str) -> list[int]:
    """Processes whose environment holds `marker` (everything a run started inherits it)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker.encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def _assert_all_exited(marker: str) -> None:
    """Every process of the run has exited (a shutdown may take a few seconds to reach them all); any left is
    killed, and the test fails."""
    deadline = time.monotonic() + 20
    while (left := _processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"{len(left)} process(es) of the Ray runtime outlived the command"


@pytest.mark.model
def test_ray_actors_score_each_call_once(model_cache: Path, tmp_path: Path, shared_data: Path) -> None:
    """Two Ray actors on a local runtime drain the archive of two shared calls (one with a spoken phone number
    and ID and card digits): one report and one audit entry per call, the archive audio unchanged, and a second
    run does nothing. No Ray process outlives the command."""
    _require_ray()
    from sqlalchemy import func, select

    from service.settings import Settings
    from service.store.models import AuditEntry, Recording

    archive_dir = tmp_path / "archive"
    archive_dir.mkdir()
    rows = []
    for name in ("call_s05", "call_s11"):
        for suffix in (".flac", ".json"):
            (archive_dir / f"{name}{suffix}").write_bytes((shared_data / "calls" / f"{name}{suffix}").read_bytes())
        rows.append(f"{name}.flac,{name},{name}.json")
    manifest = _manifest(archive_dir, rows)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in archive_dir.iterdir()}
    data = tmp_path / "data"
    data.mkdir()
    (data / "models").symlink_to(model_cache)
    marker = f"HUIFANG_TEST_RUN={uuid.uuid4().hex}"
    env = {**os.environ, "HUIFANG_DATA_DIR": str(data), marker.split("=")[0]: marker.split("=")[1]}
    command = [sys.executable, "-m", "service.cli", "score-archive", str(manifest), "--ray", "--actors", "2",
               "--interval", "5"]

    began = time.monotonic()
    run = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    took = time.monotonic() - began
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().startswith("2 scored, 0 failed, 0 left"), run.stdout
    _assert_all_exited(marker)

    store = Store(Settings(data_dir=data).db_url)
    with store.session() as s:
        jobs = s.execute(select(Recording.call_id, Recording.status, Recording.attempts)).all()
        audited = {call_id: n for call_id, n in s.execute(
            select(AuditEntry.call_id, func.count()).where(AuditEntry.kind == "report").group_by(AuditEntry.call_id))}
    assert sorted(tuple(j) for j in jobs) == [("call_s05", "done", 1), ("call_s11", "done", 1)]
    assert audited == {"call_s05": 1, "call_s11": 1}
    for name in ("call_s05", "call_s11"):
        call = store.get_call(name)
        script = json.loads((archive_dir / f"{name}.json").read_text(encoding="utf-8"))
        assert call is not None and call.audio_dir is None and call.audio_expires_at is None
        assert abs(call.report["duration_s"] - script["duration_s"]) < 1.0
        assert any(t["label"] for t in call.report["topics"])  # answers were heard and assessed
        assert call.report["silenced_audio"] == []  # archive audio is never rewritten
    s11 = json.dumps(store.get_call("call_s11").report, ensure_ascii=False)  # type: ignore[union-attr]
    assert "13901234567" not in s11  # the spoken phone number is redacted in the report all the same
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in archive_dir.iterdir()} == before

    again = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 queued now, 2 scored before" in again.stderr and again.stdout.startswith("2 scored, 0 failed")
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.kind == "report")) == 2
        assert s.scalar(select(func.count()).select_from(Recording)) == 2
    store.close()
    print(f"ray smoke test: first run {took:.0f} s")
