"""Archive scoring throughput: `huifang score-dir` against `huifang score-archive`, in its own process and on a
pool of Ray actors (a local runtime), over the shared calls.

Every mode gets a fresh data directory (the model linked, not joined again) and the same folder: the shared calls
(stereo FLAC with their loan files), each `--copies` times under another call id. Each command runs to the end as
a user runs it. From the database: the scoring span (first claim to last finish) gives calls per hour and the
real-time factor (span / call duration; each call has two channels); `wall_s` adds the start-up (loading the
model in every actor, starting Ray). `score-dir` also copies each recording into the data directory and silences
the spoken personal data in the copy (a second decoding pass for the words of one call); archive jobs read the
audio in place and never rewrite it.

    python -m bench.archive_scoring [--copies 1] [--modes score-dir,archive,ray-1,ray-2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._common import REPO, emit, require_shared

#: mode -> (Ray actors, or None for no Ray)
MODES = {"score-dir": None, "archive": None, "ray-1": 1, "ray-2": 2}


def make_archive(calls: Path, target: Path, copies: int) -> float:
    """The shared calls copied into `target`, `copies` times each under new call ids; returns their duration."""
    target.mkdir(parents=True)
    audio_s = 0.0
    for script_path in sorted(calls.glob("call_*.json")):
        script = json.loads(script_path.read_text(encoding="utf-8"))
        for k in range(copies):
            name = f"{script_path.stem}-{k}"
            shutil.copyfile(calls / f"{script_path.stem}.flac", target / f"{name}.flac")
            shutil.copyfile(script_path, target / f"{name}.json")
            audio_s += float(script["duration_s"])
    return audio_s


def models_dir() -> Path | None:
    """A data directory's joined model cache to link, so that no run joins the packaged model again."""
    from service.settings import Settings

    base = Path(os.environ["HUIFANG_DATA_DIR"]) if os.environ.get("HUIFANG_DATA_DIR") else Settings().data_dir
    return base / "models" if (base / "models").is_dir() else None


def scoring_span(data_dir: Path) -> tuple[int, int, float]:
    """(done, failed, seconds from the first claim to the last finish) of every job in the database."""
    from sqlalchemy import func, select

    from service.settings import Settings
    from service.store import Store
    from service.store.models import Recording

    store = Store(Settings(data_dir=data_dir).db_url)
    with store.session() as s:
        statuses = dict(s.execute(select(Recording.status, func.count()).group_by(Recording.status)).all())
        first, last = s.execute(select(func.min(Recording.started_at), func.max(Recording.finished_at))).one()
    store.close()
    return int(statuses.get("done", 0)), int(statuses.get("failed", 0)), (last - first).total_seconds()


def command(mode: str, folder: Path, cores: int) -> list[str]:
    actors = MODES[mode]
    if mode == "score-dir":
        return ["score-dir", str(folder), "--no-progress"]
    if actors is None:
        return ["score-archive", str(folder)]
    return ["score-archive", str(folder), "--ray", "--actors", str(actors), "--cpus-per-actor",
            str(max(1, cores // actors))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=1, help="each shared call this many times (new call ids)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    args = parser.parse_args()
    calls = require_shared("calls")
    cores = os.cpu_count() or 1
    models = models_dir()
    for mode in [m for m in args.modes.split(",") if m]:
        if mode not in MODES:
            sys.exit(f"unknown mode {mode!r}: one of {', '.join(MODES)}")
        root = Path(tempfile.mkdtemp(prefix="huifang-archive-bench-"))
        try:
            audio_s = make_archive(calls, root / "archive", args.copies)
            data_dir = root / "data"
            data_dir.mkdir()
            if models is not None:
                (data_dir / "models").symlink_to(models)
            argv = command(mode, root / "archive", cores)
            started = time.monotonic()
            run = subprocess.run([sys.executable, "-m", "service.cli", *argv], cwd=REPO, capture_output=True,
                                 text=True, env={**os.environ, "HUIFANG_DATA_DIR": str(data_dir)})
            wall = time.monotonic() - started
            if run.returncode not in (0, 1):
                sys.exit(f"{mode}: {' '.join(argv)} failed ({run.returncode}): {run.stderr[-2000:]}")
            done, failed, span = scoring_span(data_dir)
            actors = MODES[mode]
            emit({"bench": "archive_scoring", "mode": mode, "actors": actors,
                  "cpus_per_actor": max(1, cores // actors) if actors else None, "calls": done + failed,
                  "failed": failed, "audio_s": round(audio_s, 1), "wall_s": round(wall, 1),
                  "scoring_s": round(span, 1), "calls_per_hour": round(done / span * 3600),
                  "calls_per_hour_per_core": round(done / span * 3600 / cores), "rtf": round(span / audio_s, 3)})
        finally:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
