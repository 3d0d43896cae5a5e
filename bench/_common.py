"""Helpers shared by the benchmark scripts: where the shared data lives, machine facts, JSON-line output."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("HUIFANG_SHARED_DATA", REPO.parent / "shared" / "data"))


def require_shared(sub: str) -> Path:
    """The shared data folder `sub`, or exit with a clear reason when this checkout has none."""
    path = SHARED_DATA / sub
    if not path.exists():
        sys.exit(f"shared data not found at {path} (set HUIFANG_SHARED_DATA); nothing to measure")
    return path


#: The token benchmark servers accept (an admin token: benchmarks stream, upload and read reports).
BENCH_TOKEN = "bench-token"
AUTH = {"Authorization": f"Bearer {BENCH_TOKEN}"}


def bench_tokens_env(data_dir: str | Path) -> dict[str, str]:
    """Environment for a benchmark server: a tokens file in `data_dir` that accepts BENCH_TOKEN."""
    from service.auth import write_tokens_file

    path = Path(data_dir) / "bench-tokens.yaml"
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    write_tokens_file(path, {BENCH_TOKEN: ("admin", None)})
    return {"HUIFANG_AUTH__TOKENS_FILE": str(path)}


def fresh_data_dir(prefix: str = "huifang-bench-") -> str:
    """A new, empty data directory that reuses the already joined speech model (HUIFANG_DATA_DIR's, or the
    default data directory's). Each measured server gets one: a server started on an earlier run's data finds
    its queued jobs (live calls to re-decode, recordings to score) and runs them beside the calls measured."""
    from service.settings import Settings

    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    models = Settings().data_dir / "models"
    if models.is_dir():
        (data_dir / "models").symlink_to(models)
    return str(data_dir)


def emit(record: dict[str, object]) -> None:
    """Print one result as a JSON line, with the machine's core count."""
    record = {**record, "cores": os.cpu_count()}
    print(json.dumps(record, ensure_ascii=False), flush=True)
