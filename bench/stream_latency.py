"""Live transcription latency: N concurrent calls streamed at real-time pace through the real service.

For N = 1, 2, 4, 8 (both channels of each call), the shared calls of ../shared/data/calls are replayed over the
websocket exactly as a switch would send them. For every scripted spoken turn the final whose audio overlaps it
is found; latency is (arrival of that final) - (wall time when the turn's last audio was sent), so it includes
the endpointing pause. Prints one JSON line per N: p50/p95 latency, partial cadence, lost utterances, dropped
partials, peak RSS and CPU seconds (start-up included) of the server process.

    python -m bench.stream_latency [--calls 1,2,4,8] [--rate 16000] [--workers 1] [--batch 8]
        [--stagger 0] [--first 1]

All calls start at the same instant by default, so that their opening greetings (11 s in every shared call)
end together: the worst case. `--stagger S` starts call i at i*S seconds, as calls arrive in a contact centre.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from asr.audio import load_call_audio
from bench._common import AUTH, bench_tokens_env, emit, fresh_data_dir, require_shared
from service.cli.replay import ReplayResult, replay
from tools.cer import corpus_cer

VERBOSE = False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int, env_extra: dict[str, str]) -> subprocess.Popen[str]:
    """`huifang serve` on `port`, accepting bench._common.BENCH_TOKEN; returns once /healthz is 200."""
    # Capacity off unless asked for (HUIFANG_LIVE__CAPACITY, `--capacity`): a benchmark measures what the decoding
    # does with N calls, not how many the admission lets in.
    env = {"HUIFANG_METRICS__PORT": "0", "HUIFANG_LIVE__CAPACITY": "off", **os.environ, **env_extra}
    env.update(bench_tokens_env(env.get("HUIFANG_DATA_DIR") or tempfile.mkdtemp(prefix="huifang-bench-")))
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.5)
    proc.kill()
    sys.exit("server did not become healthy")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def score_call(
    script: dict[str, Any], result: ReplayResult
) -> tuple[list[float], int, list[float], list[tuple[str, str]]]:
    """Latencies of matched turns, number of lost turns, partial intervals (s), (script, finals) text pairs."""
    finals = [(e, t) for e, t in zip(result.events, result.arrival, strict=True) if e.get("type") == "final"]
    latencies, lost = [], 0
    pairs: list[tuple[str, str]] = []
    for turn in script["turns"]:
        if not turn["text"]:
            continue
        match = [(e, t) for e, t in finals if e["channel"] == turn["speaker"] and e["text"]
                 and e["start_s"] < turn["end_s"] and e["end_s"] > turn["start_s"]]
        if not match:
            lost += 1
            continue
        pairs.append((turn["text"], "".join(e["text"] for e, _ in match)))
        arrival = max(t for _, t in match)
        latencies.append(arrival - result.sent_at(turn["end_s"]))
        if VERBOSE:
            print(f"  {turn['speaker']:8s} {turn['start_s']:6.2f}-{turn['end_s']:6.2f} "
                  f"latency {latencies[-1]:.2f} s  {match[-1][0]['text']}", file=sys.stderr)
    intervals: list[float] = []
    last: dict[str, float] = {}
    for event, t in zip(result.events, result.arrival, strict=True):
        if event.get("type") == "partial":
            key = event["utterance_id"]
            if key in last:
                intervals.append(t - last[key])
            last[key] = t
    return latencies, lost, intervals, pairs


async def _replay_after(delay_s: float, url: str, audio: np.ndarray, rate: int) -> ReplayResult:
    await asyncio.sleep(delay_s)
    return await replay(url, audio, rate, ["agent", "customer"], headers=AUTH,
                        encoding="pcm16" if rate == 16000 else "mulaw", realtime=True)


async def run_level(n: int, calls: list[Path], url: str, rate: int, stagger_s: float,
                    offset: int = 0) -> dict[str, Any]:
    """N calls streamed together (the shared calls from the `offset`-th on, round the list), scored."""
    chosen = [calls[(offset + i) % len(calls)] for i in range(n)]
    audios = [load_call_audio(str(p.with_suffix(".flac")), rate) for p in chosen]
    # Live calls are stored when they end (#29): ids new to the data directory, or a rerun is refused as a repeat.
    run = secrets.token_hex(3)
    tasks = [_replay_after(i * stagger_s, f"{url}/v1/calls/bench-{run}-{n}-{i}/audio", audio, rate)
             for i, audio in enumerate(audios)]
    results = await asyncio.gather(*tasks)
    latencies: list[float] = []
    intervals: list[float] = []
    lost = turns = partials = 0
    pairs: list[tuple[str, str]] = []
    recorded = 0
    for path, result in zip(chosen, results, strict=True):
        if any(e.get("type") == "record_only" for e in result.events):
            recorded += 1  # beyond the capacity: recorded and scored after the call, no live transcript
            continue
        script = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        lat, lost_here, iv, text_pairs = score_call(script, result)
        pairs += text_pairs
        latencies += lat
        intervals += iv
        lost += lost_here
        turns += sum(1 for t in script["turns"] if t["text"])
        partials += sum(1 for e in result.events if e.get("type") == "partial")
    return {
        "concurrent_calls": n,
        "record_only_calls": recorded,
        "turns": turns,
        "lost_utterances": lost,
        "latency_p50_s": round(float(np.percentile(latencies, 50)), 3) if latencies else None,
        "latency_p95_s": round(float(np.percentile(latencies, 95)), 3) if latencies else None,
        "latency_max_s": round(max(latencies), 3) if latencies else None,
        "partial_interval_p50_s": round(float(np.percentile(intervals, 50)), 3) if intervals else None,
        "partials": partials,
        "finals_cer": round(corpus_cer(pairs).cer, 4),
    }


def dropped_partials(metrics_port: int) -> int:
    import httpx

    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    return sum(int(float(line.split()[-1])) for line in text.splitlines()
               if line.startswith("huifang_dropped_partials_total"))


def server_cpu_s(pid: int) -> float:
    """User plus system CPU seconds the server process has used so far (from /proc, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", default="1,2,4,8")
    parser.add_argument("--rate", type=int, choices=(8000, 16000), default=16000)
    parser.add_argument("--workers", type=int, default=1, help="HUIFANG_LIVE__DECODE_WORKERS")
    parser.add_argument("--batch", type=int, default=8, help="HUIFANG_LIVE__DECODE_BATCH (1: one by one)")
    parser.add_argument("--threads", type=int, default=0, help="HUIFANG_ASR__CPU_THREADS (0: default)")
    parser.add_argument("--final-beam", type=int, default=None, help="HUIFANG_LIVE__FINAL_BEAM_SIZE")
    parser.add_argument("--stagger", type=float, default=0.0,
                        help="call i starts i * STAGGER seconds after the first (0: all at once, the worst case)")
    parser.add_argument("--capacity", default="off", help="HUIFANG_LIVE__CAPACITY (auto, off or a number); calls "
                        "beyond it are recorded only and left out of the figures")
    parser.add_argument("--first", type=int, default=1, help="the first shared call streamed (1: call_s01; 6 with "
                        "--calls 6 streams s06-s11)")
    parser.add_argument("--verbose", action="store_true", help="per-turn latency on stderr")
    args = parser.parse_args()
    global VERBOSE
    VERBOSE = args.verbose

    calls = sorted(require_shared("calls").glob("call_s*.json"))
    env = {"HUIFANG_LIVE__CAPACITY": args.capacity, "HUIFANG_LIVE__DECODE_WORKERS": str(args.workers),
           "HUIFANG_ASR__CPU_THREADS": str(args.threads),
           "HUIFANG_LIVE__DECODE_BATCH": str(args.batch)}
    if args.final_beam:
        env["HUIFANG_LIVE__FINAL_BEAM_SIZE"] = str(args.final_beam)
    for n in (int(x) for x in args.calls.split(",")):
        port, metrics_port = free_port(), free_port()
        server = start_server(port, {**env, "HUIFANG_METRICS__PORT": str(metrics_port),
                                     "HUIFANG_DATA_DIR": fresh_data_dir()})
        try:
            record = asyncio.run(run_level(n, calls, f"ws://127.0.0.1:{port}", args.rate, args.stagger,
                                           args.first - 1))
            # Partials skipped for want of a free decode worker: the server's own count (a fresh server per level;
            # `overload` events no longer report them, issue #27).
            record["dropped_partials"] = dropped_partials(metrics_port)
            record.update({"rate_hz": args.rate, "decode_workers": args.workers,
                           "decode_batch": args.batch, "cpu_threads": args.threads,
                           "final_beam": args.final_beam or 5, "stagger_s": args.stagger,
                           "first_call": f"call_s{args.first:02d}", "capacity": args.capacity,
                           "server_peak_rss_mb": round(peak_rss_mb(server.pid)),
                           "server_cpu_s": round(server_cpu_s(server.pid), 1)})
            emit(record)
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
