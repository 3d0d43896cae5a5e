"""A one-minute smoke of the soak benchmark (bench/soak.py) through a real server with the real model: live
calls looped with screens watching, a recording uploaded; nothing lost, no 5xx, every screen sees its call end.
The soak itself (30 minutes, slopes and latency drift) is run by hand and quoted in docs/benchmarks.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.model
def test_the_soak_runs_a_minute_clean(shared_data: Path, model_cache: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "models").symlink_to(model_cache)
    run = subprocess.run([sys.executable, "-m", "bench.soak", "--calls", "1", "--minutes", "1",
                          "--upload-every", "30"], cwd=REPO, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "HUIFANG_DATA_DIR": str(data)})
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    summary = lines[-1]
    assert summary["bench"] == "soak" and summary["calls"] >= 1, summary
    assert summary["lost_utterances"] == 0 and summary["http_5xx"] == 0, summary
    assert summary["screens_saw_end"] == summary["calls"] and summary["uploads_done"] >= 1, summary
    assert summary["open_files_last"] is not None and summary["rss_mb_last"] is not None
