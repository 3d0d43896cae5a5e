"""Extra delay of live calls' events through the Redis event bus (issue #17 point 10; aim: p95 <= 20 ms).

Starts Debian's `redis-server` on a free port, then for each load level N: N calls published on "replica A"
(one `RedisHub` with its own client) at a live call's pace (an event every 250 ms: partials, finals,
assessments), each watched by one screen on "replica B" (another hub and client, as another replica would),
for `--seconds`. The delay is from `publish` on A to the event in the screen's queue on B. The same load through
the in-process `CallHub` gives the baseline. Both hubs share this process's event loop, so the figure includes
their scheduling on one core as well as the Redis round trips.

    python -m bench.bus_delay [--calls 1 16 64] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import tempfile
import time

import numpy as np

from bench._common import emit
from bench.stream_latency import free_port
from service.live.hub import CallHub, EventBus, Subscription
from service.live.redis_bus import RedisHub, connect

#: Seconds between two events of one call (a busy live call: partials every ~1 s per channel, finals, verdicts).
EVENT_EVERY_S = 0.25


async def _collect(sub: Subscription, delays: list[float]) -> None:
    while True:
        text = await sub.queue.get()
        if text is None:
            return
        delays.append(time.perf_counter() - json.loads(text)["t"])


async def _load(publisher: EventBus, watcher: EventBus, calls: int, seconds: float, tag: str) -> list[float]:
    delays: list[float] = []
    ids = [f"bench-{tag}-{calls}-{i}" for i in range(calls)]
    subs = [watcher.subscribe(call_id) for call_id in ids]
    readers = [asyncio.create_task(_collect(sub, delays)) for sub in subs]
    await asyncio.sleep(0.5)  # the screens wait for their calls
    for call_id in ids:
        publisher.open(call_id)

    async def talk(i: int, call_id: str) -> None:
        await asyncio.sleep(EVENT_EVERY_S * i / calls)  # calls do not speak in lockstep
        n = 0
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            kind = "partial" if n % 3 else "final"
            publisher.publish(call_id, json.dumps({"type": kind, "n": n, "t": time.perf_counter()}), kind)
            n += 1
            await asyncio.sleep(EVENT_EVERY_S)
        publisher.close(call_id)

    await asyncio.gather(*(talk(i, c) for i, c in enumerate(ids)))
    await asyncio.wait_for(asyncio.gather(*readers), timeout=60)
    for sub in subs:
        watcher.unsubscribe(sub)
    return delays


def _summary(delays: list[float]) -> dict[str, object]:
    ms = np.array(delays) * 1000
    return {"events": len(delays), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p95_ms": round(float(np.percentile(ms, 95)), 2), "max_ms": round(float(ms.max()), 2)}


async def main(levels: list[int], seconds: float) -> None:
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("redis-server not installed (Debian's redis-server; .ci/run installs it)")
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                                 "no", "--dir", folder], stdout=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            url = f"redis://127.0.0.1:{port}/0"
            clients = [connect(url), connect(url)]
            a, b = RedisHub(clients[0], "bench-a"), RedisHub(clients[1], "bench-b")
            for hub in (a, b):
                await hub.start()
            for calls in levels:
                local = CallHub()
                base = _summary(await _load(local, local, calls, seconds, "local"))
                emit({"bench": "bus_delay", "bus": "in-process", "calls": calls, **base})
                redis = _summary(await _load(a, b, calls, seconds, "redis"))
                emit({"bench": "bus_delay", "bus": "redis", "calls": calls, **redis,
                      "events_per_s": round(calls / EVENT_EVERY_S, 1), "aim_p95_ms": 20,
                      "holds": float(redis["p95_ms"]) <= 20})  # type: ignore[arg-type]
            for hub in (a, b):
                await hub.stop()
            for client in clients:
                await client.aclose()
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 16, 64], help="live calls at once")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds each load level runs")
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.seconds))
