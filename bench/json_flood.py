"""Unauthenticated large JSON bodies (issue #26, point 1): N clients at once each send bodies of `--body-mb` MB
(one after another for `--seconds`) to one JSON route, for every JSON route, straight to uvicorn and through the
shipped nginx configuration; meanwhile `/healthz` is timed and the server's resident memory sampled.

Aims: the server's RSS stays within 50 MB of idle and `/healthz` p95 within 100 ms during the attack. One JSON line
per (target, route), with the machine's core count and `/healthz`'s p95 while idle just before (a loaded machine's
baseline). Traffic goes only to 127.0.0.1; every loop is bounded (each
client sends at most its body, the whole run has a deadline per route).

    python -m bench.json_flood                         # 20 clients x 100 MB per route, both targets
    python -m bench.json_flood --clients 5 --body-mb 10 --targets uvicorn
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import tempfile
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from queue import Empty

import httpx

from bench._common import emit
from bench.stream_latency import free_port, start_server

#: The JSON routes (method, path) and the large-body upload routes are not among them.
ROUTES = [("POST", "/v1/tickets"), ("POST", "/v1/assess"), ("POST", "/v1/demo/calls"),
          ("PUT", "/v1/customers/C1/contact"), ("POST", "/v1/followups/f1/assign"),
          ("POST", "/v1/followups/f1/outcome")]
CHUNK = 64 * 1024


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def attacker(port: int, method: str, path: str, body_bytes: int, deadline: float) -> tuple[str, int]:
    """One anonymous client: headers declaring `body_bytes`, then the body in chunks until the server answers or
    closes (or all of it is sent, or the deadline passes). Returns (status line or how it ended, bytes sent)."""
    sent = 0
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as e:
        return f"connect: {type(e).__name__}", 0
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {body_bytes}\r\n\r\n").encode()
    chunk = b"[" * CHUNK
    answer = asyncio.ensure_future(reader.readline())
    outcome = "sent whole body"
    try:
        writer.write(head)
        await writer.drain()
        while sent < body_bytes and time.monotonic() < deadline:
            if answer.done():
                break
            piece = chunk[: min(CHUNK, body_bytes - sent)]
            writer.write(piece)
            await asyncio.wait_for(writer.drain(), timeout=max(0.1, deadline - time.monotonic()))
            sent += len(piece)
        line = await asyncio.wait_for(answer, timeout=max(0.1, deadline - time.monotonic()))
        outcome = line.decode("latin-1").strip() or "closed"
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
        outcome = f"ended: {type(e).__name__}"  # refused by a reset before any answer could be read
        if answer.done() and not answer.cancelled() and answer.exception() is None and answer.result():
            outcome = answer.result().decode("latin-1").strip()
    finally:
        answer.cancel()
        writer.close()
    return outcome.split(" ", 2)[1] if outcome.startswith("HTTP/") else outcome, sent


#: The clients start a new body together every this many seconds (each as soon as its last one ended, if later):
#: N bodies in flight at once, round after round, rather than a flood of connections.
ROUND_S = 0.5


async def flood(port: int, method: str, path: str, body_bytes: int, began: float,
                until: float) -> list[tuple[str, int]]:
    """One of the concurrent clients: a body each round until `until` (a bounded loop: each attempt ends with the
    server's answer or close, or at the deadline)."""
    outcomes = []
    next_round = began
    while next_round < until:
        await asyncio.sleep(max(0.0, next_round - time.monotonic()))
        outcomes.append(await attacker(port, method, path, body_bytes, until + 5))
        next_round += ROUND_S
    return outcomes


def probe(port: int, stop: Event, out: Queue[tuple[float, float]]) -> None:
    """In a process of its own (the attackers' event loop must not delay it): (time.monotonic(), `/healthz`
    latency in ms), one request every 20 ms on a fresh connection, until `stop`."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        while not stop.is_set():
            began = time.monotonic()
            try:
                client.get("/healthz", headers={"Connection": "close"})
                out.put((began, (time.monotonic() - began) * 1000))
            except httpx.TransportError:
                out.put((began, 10_000.0))
            time.sleep(0.02)


def drain(queue: Queue[tuple[float, float]], start: float, end: float) -> list[float]:
    """The probe's latencies of requests sent between `start` and `end`."""
    samples: list[float] = []
    while True:
        try:
            at, ms = queue.get_nowait()
        except Empty:
            return samples
        if start <= at <= end:
            samples.append(ms)


async def sample_rss(pid: int, stop: asyncio.Event) -> float:
    peak = 0.0
    while not stop.is_set():
        peak = max(peak, rss_mb(pid))
        await asyncio.sleep(0.05)
    return peak


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else float("nan")


async def attack(target: str, port: int, probes: Queue[tuple[float, float]], pid: int, method: str, path: str,
                 clients: int, body_mb: int, duration_s: float) -> dict[str, object]:
    drain(probes, 0, 0)  # what came before this route
    quiet = time.monotonic()
    await asyncio.sleep(min(duration_s, 5.0))  # the same probe with nobody attacking: this machine's baseline
    idle_latencies = drain(probes, quiet, time.monotonic())
    idle = rss_mb(pid)
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(pid, stop))
    began = time.monotonic()
    rounds = await asyncio.gather(*(flood(port, method, path, body_mb << 20, began, began + duration_s)
                                    for _ in range(clients)))
    ended = time.monotonic()
    seconds = ended - began
    stop.set()
    peak = await sampler
    await asyncio.sleep(0.2)  # the probe's last samples of the window
    latencies = drain(probes, began, ended)
    results = [r for attempts in rounds for r in attempts]
    statuses: dict[str, int] = {}
    for status, _ in results:
        statuses[status] = statuses.get(status, 0) + 1
    return {"bench": "json_flood", "target": target, "route": f"{method} {path}", "clients": clients,
            "body_mb": body_mb, "bodies": len(results), "statuses": statuses,
            "sent_mb": round(sum(s for _, s in results) / 2**20, 1),
            "seconds": round(seconds, 2), "rss_idle_mb": round(idle, 1), "rss_peak_mb": round(peak, 1),
            "rss_over_idle_mb": round(peak - idle, 1), "healthz_idle_p95_ms": round(p95(idle_latencies), 1),
            "healthz_p95_ms": round(p95(latencies), 1),
            "healthz_max_ms": round(max(latencies, default=float("nan")), 1), "healthz_n": len(latencies),
            "rss_within_50mb": peak - idle <= 50, "healthz_p95_within_100ms": p95(latencies) <= 100}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--body-mb", type=int, default=100)
    parser.add_argument("--targets", default="uvicorn,nginx", help="comma-separated: uvicorn, nginx")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long each route is attacked (clients send "
                        "body after body meanwhile)")
    args = parser.parse_args()
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    port = free_port()
    data = tempfile.mkdtemp(prefix="huifang-flood-")
    server = start_server(port, {"HUIFANG_DATA_DIR": os.environ.get("HUIFANG_DATA_DIR", data),
                                 "HUIFANG_LOG_LEVEL": "warning"})
    try:
        ports = {"uvicorn": port}
        proxy = None
        if "nginx" in targets:
            from tests.support.proxy import front_proxy

            proxy_port = free_port()
            proxy = front_proxy(Path(tempfile.mkdtemp(prefix="huifang-flood-nginx-")), proxy_port, [port])
            proxy.__enter__()
            ports["nginx"] = proxy_port
        # /healthz is timed straight at uvicorn, all along, from a process of its own: the question is whether the
        # service stays responsive.
        context = multiprocessing.get_context("spawn")
        probe_stop, probes = context.Event(), context.Queue()
        prober = context.Process(target=probe, args=(port, probe_stop, probes))
        prober.start()
        try:
            probes.get(timeout=60)  # probing
            for target in targets:
                for method, path in ROUTES:
                    emit(asyncio.run(attack(target, ports[target], probes, server.pid, method, path, args.clients,
                                            args.body_mb, args.seconds)))
        finally:
            probe_stop.set()
            drain(probes, 0, 0)
            prober.join(timeout=10)
            if proxy is not None:
                proxy.__exit__(None, None, None)
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
