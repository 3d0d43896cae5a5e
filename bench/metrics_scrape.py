"""Cost of a Prometheus scrape of `huifang serve` (issue #17 point 10).

Starts a real server (packaged model, SQLite, metrics on their own port), streams one shared call into it at
full speed so that the histograms and labelled counters have values, then scrapes `/metrics` `--scrapes` times
back to back and reports the answer's size, the scrape's wall time (p50/p95) and the server's CPU time per
scrape (from /proc: user + system, all threads, over the whole series). Prometheus scrapes every 15-60 s, so
the last figure divided by that interval is the share of a core that metrics cost.

    python -m bench.metrics_scrape [--scrapes 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from asr.audio import load_call_audio
from bench._common import AUTH, emit, require_shared
from bench.stream_latency import free_port, start_server
from service.cli.replay import replay


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(scrapes: int) -> None:
    calls = require_shared("calls")
    port, metrics_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="huifang-bench-") as data:
        proc = start_server(port, {"HUIFANG_DATA_DIR": data, "HUIFANG_METRICS__PORT": str(metrics_port)})
        try:
            meta = json.loads((calls / "call_s01.json").read_text(encoding="utf-8"))
            audio = load_call_audio(str(calls / "call_s01.flac"), 16000)
            asyncio.run(replay(f"ws://127.0.0.1:{port}/v1/calls/bench-metrics/audio", audio, 16000,
                               ["agent", "customer"], loan_file=meta["loan_file"], headers=AUTH))
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            with httpx.Client() as client:
                body = client.get(url).text
                walls = []
                cpu0 = _cpu_s(proc.pid)
                for _ in range(scrapes):
                    began = time.perf_counter()
                    assert client.get(url).status_code == 200
                    walls.append(time.perf_counter() - began)
                cpu = _cpu_s(proc.pid) - cpu0
            series = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
            ms = np.array(walls) * 1000
            emit({"bench": "metrics_scrape", "scrapes": scrapes, "bytes": len(body.encode()), "series": series,
                  "wall_p50_ms": round(float(np.percentile(ms, 50)), 2),
                  "wall_p95_ms": round(float(np.percentile(ms, 95)), 2),
                  "server_cpu_ms_per_scrape": round(cpu / scrapes * 1000, 2)})
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scrapes", type=int, default=200)
    main(parser.parse_args().scrapes)
