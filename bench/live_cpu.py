"""Where a live call's CPU goes: N calls streamed together at real-time pace through the real service, and the
server's own ledger of CPU seconds (`huifang_live_cpu_seconds_total`, asr/cpu.py) read from /metrics before and
after, per second of call audio.

    python -m bench.live_cpu [--calls 1,4,8] [--first 1]

One JSON line per N: CPU seconds per second of call audio by work and phase (`final.encoder`,
`partial_wasted.decoder`, `prefetch_used.encoder`, `listen.vad`, `assess.nlu`, `text.final`, ...), the event
loop's thread (`loop`, without the text work it does), what the ledger does not see (`other`: database writes,
the metrics thread, the garbage collector, ...) and the process total, with the call's latency figures beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import re

import httpx

from bench._common import emit, fresh_data_dir, require_shared
from bench.stream_latency import free_port, run_level, start_server

_SAMPLE = re.compile(r'^(huifang_live_cpu_seconds_total)\{phase="([^"]+)",work="([^"]+)"\} (\S+)$|'
                     r'^(huifang_event_loop_cpu_seconds_total|huifang_live_audio_seconds_total|'
                     r'process_cpu_seconds_total) (\S+)$')


def read_ledger(metrics_port: int) -> dict[str, float]:
    """The server's CPU counters now: `work.phase` -> seconds, plus `loop`, `audio` and `process`."""
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    values: dict[str, float] = {}
    names = {"huifang_event_loop_cpu_seconds_total": "loop", "huifang_live_audio_seconds_total": "audio",
             "process_cpu_seconds_total": "process"}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m is None:
            continue
        if m.group(1):
            values[f"{m.group(3)}.{m.group(2)}"] = float(m.group(4))
        else:
            values[names[m.group(5)]] = float(m.group(6))
    return values


def breakdown(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds per second of call audio between two readings, with `loop`, `other` and `total`."""
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    audio = delta.pop("audio", 0.0)
    total = delta.pop("process", 0.0)
    loop = delta.pop("loop", 0.0) - delta.get("text.final", 0.0) - delta.get("text.partial", 0.0)
    ledger = sum(delta.values())
    per = {k: v / audio for k, v in sorted(delta.items()) if v > 0} if audio else {}
    if audio:
        per["loop"] = loop / audio
        per["other"] = (total - ledger - loop) / audio
        per["total"] = total / audio
    return {k: round(v, 4) for k, v in per.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", default="1,4,8")
    parser.add_argument("--first", type=int, default=1, help="the first shared call streamed (1: call_s01)")
    args = parser.parse_args()
    calls = sorted(require_shared("calls").glob("call_s*.json"))
    for n in (int(x) for x in args.calls.split(",")):
        port, metrics_port = free_port(), free_port()
        server = start_server(port, {"HUIFANG_DATA_DIR": fresh_data_dir(),
                                     "HUIFANG_METRICS__PORT": str(metrics_port)})
        try:
            before = read_ledger(metrics_port)
            record = asyncio.run(run_level(n, calls, f"ws://127.0.0.1:{port}", 16000, 0.0, args.first - 1))
            after = read_ledger(metrics_port)
            per = breakdown(before, after)
            emit({"concurrent_calls": n, "first_call": f"call_s{args.first:02d}",
                  "call_audio_s": round(after.get("audio", 0.0) - before.get("audio", 0.0), 1),
                  "cpu_s_per_audio_s": per,
                  **{k: record[k] for k in ("latency_p50_s", "latency_p95_s", "finals_cer", "lost_utterances",
                                            "partials")}})
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
