"""Soak: live calls, uploads and agent screens together through one real server for a long time.

N live calls (default 4) are streamed at real-time pace, each restarted as soon as it ends (the shared calls in
turn), for M minutes (default 30); each call has one screen on `/v1/calls/{id}/events`; a recording is uploaded
every `--upload-every` seconds and followed to its report. Every 10 s the server's resident memory and open
files are sampled. Prints one JSON line per 5-minute window (finals, lost utterances, p95 final latency, 5xx)
and a summary line: RSS and open-file slopes fitted over the second two thirds of the run (minutes 10-30 of the
default), lost utterances, 5xx answers, p95 drift between windows, and whether the aims hold (RSS slope
< 20 MB/h, no open-file growth, nothing lost, no 5xx, p95 within 20% of the first full window).

    python -m bench.soak [--calls 4] [--minutes 30] [--upload-every 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asr.audio import load_call_audio
from bench._common import AUTH, emit, require_shared
from bench.stream_latency import free_port, score_call, start_server
from service.cli.replay import replay

WINDOW_S = 300.0
SAMPLE_S = 10.0


@dataclass
class Tally:
    """What the soak saw, by window."""

    started: float
    latencies: dict[int, list[float]] = field(default_factory=dict)
    lost: dict[int, int] = field(default_factory=dict)
    finals: dict[int, int] = field(default_factory=dict)
    http_5xx: dict[int, int] = field(default_factory=dict)
    samples: list[tuple[float, float, int]] = field(default_factory=list)  # (minutes, rss MB, open files)
    calls: int = 0
    uploads: int = 0
    screens_ok: int = 0

    def window(self) -> int:
        return int((time.monotonic() - self.started) // WINDOW_S)


def _rss_and_fds(pid: int) -> tuple[float, int]:
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


async def _screen(url: str) -> bool:
    """An agent screen on the call's events until the call ends; True when it saw the `end`."""
    import websockets

    try:
        async with websockets.connect(url, additional_headers=AUTH, max_size=2**22) as ws:
            async for message in ws:
                if json.loads(message).get("type") == "end":
                    return True
    except (OSError, websockets.ConnectionClosed):
        return False
    return False


async def _call_loop(slot: int, base: str, calls: list[Path], until: float, tally: Tally) -> None:
    n = 0
    while time.monotonic() < until:
        path = calls[(slot + n * 3) % len(calls)]
        script = json.loads(path.read_text(encoding="utf-8"))
        audio = load_call_audio(str(path.with_suffix(".flac")), 16000)
        call_id = f"soak-{slot}-{n}"
        window = tally.window()
        screen = asyncio.create_task(_screen(f"{base}/v1/calls/{call_id}/events"))
        result = await replay(f"{base}/v1/calls/{call_id}/audio", audio, 16000, ["agent", "customer"],
                              loan_file=script.get("loan_file"), headers=AUTH, realtime=True)
        latencies, lost, _, _ = score_call(script, result)
        tally.latencies.setdefault(window, []).extend(latencies)
        tally.lost[window] = tally.lost.get(window, 0) + lost
        tally.finals[window] = tally.finals.get(window, 0) + len(result.finals())
        tally.screens_ok += bool(await screen)
        tally.calls += 1
        n += 1


async def _uploads(http: str, calls: list[Path], every_s: float, until: float, tally: Tally) -> None:
    import httpx

    n = 0
    async with httpx.AsyncClient(base_url=http, headers=AUTH, timeout=60) as client:
        while time.monotonic() + every_s < until:
            await asyncio.sleep(every_s)
            path = calls[n % len(calls)]
            script = json.loads(path.read_text(encoding="utf-8"))
            with open(path.with_suffix(".flac"), "rb") as f:
                response = await client.post("/v1/recordings", files={"file": (path.name, f.read(), "audio/flac")},
                                             data={"call_id": f"soak-upload-{n}",
                                                   "loan_file": json.dumps(script.get("loan_file") or {})})
            n += 1
            if response.status_code >= 500:
                tally.http_5xx[tally.window()] = tally.http_5xx.get(tally.window(), 0) + 1
                continue
            job = response.json().get("id")
            while job and time.monotonic() < until + 300:  # a job started near the end is still followed
                status = await client.get(f"/v1/recordings/{job}")
                if status.status_code >= 500:
                    tally.http_5xx[tally.window()] = tally.http_5xx.get(tally.window(), 0) + 1
                    break
                if status.json().get("status") in ("done", "failed"):
                    tally.uploads += status.json()["status"] == "done"
                    break
                await asyncio.sleep(5)


async def _sampler(pid: int, until: float, tally: Tally) -> None:
    while time.monotonic() < until:
        rss, fds = _rss_and_fds(pid)
        tally.samples.append(((time.monotonic() - tally.started) / 60, rss, fds))
        await asyncio.sleep(SAMPLE_S)


def _slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    if len(points) < 3:
        return None
    minutes, values = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    return round(float(np.polyfit(minutes, values, 1)[0]) * 60, 2)


async def soak(n_calls: int, minutes: float, upload_every_s: float, port: int, pid: int) -> dict[str, Any]:
    calls = sorted(require_shared("calls").glob("call_s*.json"))
    tally = Tally(time.monotonic())
    until = tally.started + minutes * 60
    base, http = f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}"
    await asyncio.gather(_sampler(pid, until, tally), _uploads(http, calls, upload_every_s, until, tally),
                         *(_call_loop(i, base, calls, until, tally) for i in range(n_calls)))
    windows = sorted(set(tally.latencies) | set(tally.http_5xx))
    p95 = {}
    for w in windows:
        lat = tally.latencies.get(w, [])
        p95[w] = round(float(np.percentile(lat, 95)), 3) if lat else None
        emit({"bench": "soak_window", "window": w, "minutes": [w * WINDOW_S / 60, (w + 1) * WINDOW_S / 60],
              "finals": tally.finals.get(w, 0), "lost_utterances": tally.lost.get(w, 0),
              "final_latency_p95_s": p95[w], "http_5xx": tally.http_5xx.get(w, 0)})
    settled = [s for s in tally.samples if s[0] >= minutes / 3]  # minutes 10-30 of a 30-minute soak
    rss_slope = _slope_per_hour([(m, r) for m, r, _ in settled])
    fd_slope = _slope_per_hour([(m, float(f)) for m, _, f in settled])
    full = [p95[w] for w in windows if p95[w] is not None and (w + 1) * WINDOW_S <= minutes * 60]
    drift = round(max(full) / full[0] - 1, 3) if len(full) >= 2 else None
    lost, errors = sum(tally.lost.values()), sum(tally.http_5xx.values())
    return {
        "bench": "soak", "concurrent_calls": n_calls, "minutes": minutes, "calls": tally.calls,
        "uploads_done": tally.uploads, "screens_saw_end": tally.screens_ok, "lost_utterances": lost,
        "http_5xx": errors, "rss_mb_first": round(tally.samples[0][1]) if tally.samples else None,
        "rss_mb_last": round(tally.samples[-1][1]) if tally.samples else None,
        "rss_slope_mb_per_h": rss_slope, "open_files_first": tally.samples[0][2] if tally.samples else None,
        "open_files_last": tally.samples[-1][2] if tally.samples else None, "open_files_slope_per_h": fd_slope,
        "final_latency_p95_by_window_s": [p95[w] for w in windows], "p95_drift": drift,
        # The shape of the curve tells a leak (straight) from a process settling (flattening).
        "rss_mb_by_5_min": [round(r) for m, r, _ in tally.samples if m % 5 < SAMPLE_S / 60],
        "aims_hold": bool(rss_slope is not None and rss_slope < 20 and (fd_slope or 0) <= 1 and lost == 0
                          and errors == 0 and (drift is None or drift <= 0.2)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=4, help="live calls at once")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--upload-every", type=float, default=60.0, help="seconds between recording uploads")
    args = parser.parse_args()
    port = free_port()
    server = start_server(port, {"HUIFANG_DATA_DIR": os.environ.get("HUIFANG_DATA_DIR",
                                                                    tempfile.mkdtemp(prefix="huifang-soak-"))})
    try:
        emit(asyncio.run(soak(args.calls, args.minutes, args.upload_every, port, server.pid)))
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
