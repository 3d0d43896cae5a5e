"""Two `huifang serve` replicas behind the shipped nginx configuration, sharing PostgreSQL, Redis, an audio
volume and their secrets (issue #17 point 8), with the real model: a shared call streamed into the service is
watched, event for event, from both replicas; recordings uploaded through each are scored once each and their
audio is served by either; both answer /readyz and /metrics. Each replica decodes one live call at once (issue
#30): with one full a new call goes to the other through nginx, with both full it is recorded and scored after.

Needs PostgreSQL (HUIFANG_TEST_POSTGRES_URL), redis-server and nginx; .ci/run provides all three."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from asr.audio import load_call_audio
from service.auth import load_or_create_secret
from service.cli.replay import replay
from service.privacy import RawTextCipher
from service.store.anchor import load_or_create_key
from tests.support.postgres import fresh_postgres_schema
from tests.support.proxy import front_proxy
from tests.support.redis_server import RedisServer
from tests.support.server import INGEST, SUPERVISOR, bearer, free_port, running_server


@dataclass
class Cluster:
    proxy: str
    replicas: list[int]
    metrics: list[int]
    database_url: str


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, model_cache: Path, shared_data: Path) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("replicas")
    secrets = tmp / "secrets"  # what every replica must share: tokens, ticket key, raw-text key, audit key
    load_or_create_secret(secrets / "ticket.key")
    RawTextCipher(secrets / "raw-text.key")  # a Fernet key: raw transcripts and customers' contact details
    load_or_create_key(secrets / "audit-ed25519.key")
    shared_audio = tmp / "shared-audio"  # the shared volume, mounted as <data dir>/audio on every replica
    shared_audio.mkdir()
    ports, metrics = [], []
    with ExitStack() as stack:
        database_url = stack.enter_context(fresh_postgres_schema())
        redis = RedisServer(tmp)
        redis.start()
        stack.callback(redis.stop)
        env = {"HUIFANG_DATABASE_URL": database_url, "HUIFANG_REDIS_URL": redis.url,
               "HUIFANG_AUTH__TICKET_KEY_FILE": str(secrets / "ticket.key"),
               "HUIFANG_PRIVACY__KEY_FILE": str(secrets / "raw-text.key"),
               "HUIFANG_PRIVACY__AUDIT_KEY_FILE": str(secrets / "audit-ed25519.key"),
               "HUIFANG_LIVE__CAPACITY": "1"}
        for name in ("a", "b"):
            data = tmp / name
            data.mkdir()
            (data / "audio").symlink_to(shared_audio)
            metrics.append(free_port())
            ports.append(stack.enter_context(running_server(data, model_cache, env_extra={
                **env, "HUIFANG_METRICS__PORT": str(metrics[-1])})))
        proxy_port = free_port()
        (tmp / "nginx").mkdir()
        stack.enter_context(front_proxy(tmp / "nginx", proxy_port, ports))
        yield Cluster(f"http://127.0.0.1:{proxy_port}", ports, metrics, database_url)


def test_both_replicas_are_ready_and_serve_metrics(cluster: Cluster) -> None:
    for port, metrics_port in zip(cluster.replicas, cluster.metrics, strict=True):
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        assert scraped.status_code == 200 and "huifang_live_calls" in scraped.text


async def _watch(url: str) -> list[dict[str, Any]]:
    import websockets

    async with websockets.connect(url, additional_headers=bearer(SUPERVISOR), max_size=2**22) as ws:
        return [json.loads(m) async for m in ws]


@pytest.mark.asyncio
async def test_a_call_streamed_through_the_proxy_is_watched_identically_from_both_replicas(
        cluster: Cluster, shared_data: Path) -> None:
    meta = json.loads((shared_data / "calls" / "call_s01.json").read_text(encoding="utf-8"))
    audio = load_call_audio(str(shared_data / "calls" / "call_s01.flac"), 16000)
    call_id = "replicas-live-1"
    watchers = [asyncio.create_task(_watch(f"ws://127.0.0.1:{port}/v1/calls/{call_id}/events"))
                for port in cluster.replicas]
    await asyncio.sleep(1.0)  # both screens wait for the call before it starts
    streamed = await replay(cluster.proxy.replace("http", "ws") + f"/v1/calls/{call_id}/audio", audio, 16000,
                            ["agent", "customer"], loan_file=meta["loan_file"], headers=bearer(INGEST))
    seen = await asyncio.wait_for(asyncio.gather(*watchers), timeout=60)
    assert streamed.close_code == 1000
    assert [e["type"] for e in streamed.events][0] == "ready" and streamed.events[-1]["type"] == "end"
    assert len(streamed.finals()) >= 5 and any(e["type"] == "assessment" for e in streamed.events)
    # One of the two screens is on the other replica: both see exactly what the call's own socket got.
    for events in seen:
        assert events == streamed.events
    # A screen opened after the end, on either replica, gets the history (no partials).
    history = [e for e in streamed.events if e["type"] != "partial"]
    for port in cluster.replicas:
        assert await _watch(f"ws://127.0.0.1:{port}/v1/calls/{call_id}/events") == history
    # In the books as it ended (issue #29), on the shared database: either replica lists it as live and serves
    # its report and audio (the shared volume).
    assert streamed.events[-1]["report_url"] == f"/v1/calls/{call_id}/report"
    for port in cluster.replicas:
        base = f"http://127.0.0.1:{port}"
        listed = httpx.get(f"{base}/v1/calls", headers=bearer(SUPERVISOR), timeout=10).json()["items"]
        assert [(c["source"], c["complete"]) for c in listed if c["call_id"] == call_id] == [("live", True)]
        report = httpx.get(f"{base}/v1/calls/{call_id}/report", headers=bearer(SUPERVISOR), timeout=10).json()
        assert len(report["utterances"]) >= len(streamed.finals()) - 1 and len(report["audio"]) == 2
        for link in report["audio"]:
            assert httpx.get(base + link["url"], headers=bearer(SUPERVISOR), timeout=30).status_code == 200


@pytest.mark.asyncio
async def test_a_call_streamed_into_one_replica_is_on_the_other_replicas_floor(cluster: Cluster,
                                                                                shared_data: Path) -> None:
    """Issue #31: the supervisors' floor fans in through Redis: B's wallboard socket and B's `GET /v1/live/calls`
    show a call streamed into A, with its tile and the alert a hedged guarantor consent raises."""
    import websockets

    meta = json.loads((shared_data / "calls" / "call_s05.json").read_text(encoding="utf-8"))
    audio = load_call_audio(str(shared_data / "calls" / "call_s05.flac"), 16000)[:, : 24 * 16000]
    a, b = cluster.replicas
    call_id = "replicas-floor"
    async with websockets.connect(f"ws://127.0.0.1:{b}/v1/live/events", additional_headers=bearer(SUPERVISOR),
                                  max_size=2**22) as board:
        assert json.loads(await board.recv())["type"] == "snapshot"
        streamed = await replay(f"ws://127.0.0.1:{a}/v1/calls/{call_id}/audio", audio, 16000, ["agent", "customer"],
                                loan_file=meta["loan_file"], headers=bearer(INGEST))
        assert streamed.close_code == 1000
        seen: list[dict[str, Any]] = []
        while not any(m["type"] == "call_ended" and m["call_id"] == call_id for m in seen):
            seen.append(json.loads(await asyncio.wait_for(board.recv(), timeout=30)))
    mine = [m for m in seen if m.get("call_id") == call_id]
    assert mine[0]["type"] == "call_started" and mine[-1]["tile"]["state"] == "ended"
    assert any(m["type"] == "alert" and m["alert"]["rule"] == "guarantor_hedged" for m in mine)
    listed = httpx.get(f"http://127.0.0.1:{b}/v1/live/calls", headers=bearer(SUPERVISOR), timeout=10).json()
    tile = next(t for t in listed["calls"] if t["call_id"] == call_id)
    assert tile["customer"] == "刘*" and tile["risk"] is not None and sum(tile["vague"].values()) >= 1
    assert any(x["call_id"] == call_id and x["rule"] == "guarantor_hedged" for x in listed["alerts"])


async def _stream_part(url: str, start: dict[str, Any], pcm: bytes, stop: bool) -> list[dict[str, Any]]:
    """Stream `pcm` on a new connection; with `stop` end the call and read to the close, else drop the socket
    once a final came back (the line went dead mid-call). Retries while the id is still held by the connection
    that dropped (its replica has not noticed yet)."""
    import websockets

    for _ in range(60):
        async with websockets.connect(url, additional_headers=bearer(INGEST), max_size=2**22) as ws:
            await ws.send(json.dumps(start))
            first = json.loads(await ws.recv())
            if first["type"] == "error" and first["code"] == "call_in_progress":
                await asyncio.sleep(0.5)
                continue
            assert first["type"] == "ready", first
            for i in range(0, len(pcm), 12800):
                await ws.send(pcm[i: i + 12800])
            events = [first]
            if stop:
                await ws.send(json.dumps({"type": "stop"}))
                events += [json.loads(m) async for m in ws]
                return events
            while not any(e["type"] == "final" and e["text"] for e in events):
                events.append(json.loads(await asyncio.wait_for(ws.recv(), timeout=120)))
            await ws.close(code=1001)  # the switch went away (a normal close would end the call)
            return events
    raise AssertionError("the call id stayed held")


@pytest.mark.asyncio
async def test_a_call_dropped_on_one_replica_continues_on_the_other(cluster: Cluster, shared_data: Path) -> None:
    meta = json.loads((shared_data / "calls" / "call_s02.json").read_text(encoding="utf-8"))
    audio = load_call_audio(str(shared_data / "calls" / "call_s02.flac"), 16000)
    pcm = (np.clip(audio.T.reshape(-1), -1, 1) * 32767).astype("<i2").tobytes()
    cut = len(pcm) // 2 // 4 * 4
    start = {"type": "start", "sample_rate_hz": 16000, "encoding": "pcm16", "channels": ["agent", "customer"],
             "loan_file": meta["loan_file"]}
    a, b = cluster.replicas
    call_id = "replicas-reconnect"
    first = await _stream_part(f"ws://127.0.0.1:{a}/v1/calls/{call_id}/audio", start, pcm[:cut], stop=False)
    second = await _stream_part(f"ws://127.0.0.1:{b}/v1/calls/{call_id}/audio", start, pcm[cut:], stop=True)
    assert second[-1]["type"] == "end" and second[-1]["report_url"] == f"/v1/calls/{call_id}/report"
    report = httpx.get(f"{cluster.proxy}/v1/calls/{call_id}/report", headers=bearer(SUPERVISOR), timeout=10).json()
    said = [e for e in first + second if e["type"] == "final" and e["text"]]
    ids = [u["utterance_id"] for u in report["utterances"]]
    # One call: what both connections said, each utterance once, on one clock.
    assert {e["utterance_id"] for e in said} <= set(ids) and len(ids) == len(set(ids))
    assert [u["start_s"] for u in report["utterances"]] == sorted(u["start_s"] for u in report["utterances"])
    assert report["complete"] and report["source"] == "live"


def test_a_call_id_streaming_on_one_replica_is_refused_on_the_other(cluster: Cluster) -> None:
    import websockets.sync.client as ws_client

    start = json.dumps({"type": "start", "sample_rate_hz": 16000, "encoding": "pcm16", "channels": ["agent"]})
    a, b = cluster.replicas
    with ws_client.connect(f"ws://127.0.0.1:{a}/v1/calls/replicas-dup/audio", additional_headers=bearer(INGEST)) \
            as first:
        first.send(start)
        assert json.loads(first.recv(timeout=10))["type"] == "ready"
        with ws_client.connect(f"ws://127.0.0.1:{b}/v1/calls/replicas-dup/audio",
                               additional_headers=bearer(INGEST)) as second:
            second.send(start)
            refused = json.loads(second.recv(timeout=10))
        assert refused["type"] == "error" and refused["code"] == "call_in_progress"
        first.send(json.dumps({"type": "stop"}))


def test_recordings_uploaded_through_each_replica_are_scored_once_and_served_by_either(
        cluster: Cluster, shared_data: Path) -> None:
    from sqlalchemy import create_engine, func, select
    from sqlalchemy.orm import Session

    from service.store.models import AuditEntry, Recording

    jobs = {}
    for i, port in enumerate(cluster.replicas):
        call_id = f"replicas-rec-{i}"
        with open(shared_data / "calls" / f"call_s0{i + 2}.flac", "rb") as f:
            answer = httpx.post(f"http://127.0.0.1:{port}/v1/recordings", headers=bearer(INGEST), timeout=60,
                                files={"file": (f"call_s0{i + 2}.flac", f, "audio/flac")},
                                data={"call_id": call_id})
        assert answer.status_code == 202, answer.text
        jobs[call_id] = answer.json()["id"]
    deadline = time.monotonic() + 600
    for call_id, job_id in jobs.items():
        while True:
            status = httpx.get(f"{cluster.proxy}/v1/recordings/{job_id}", headers=bearer(SUPERVISOR),
                               timeout=10).json()["status"]
            if status in ("done", "failed"):
                break
            assert time.monotonic() < deadline, f"{call_id} not scored in time"
            time.sleep(1)
        assert status == "done"
        for port in cluster.replicas:  # the audio lies on the shared volume: either replica serves it
            audio = httpx.get(f"http://127.0.0.1:{port}/v1/calls/{call_id}/audio/0", headers=bearer(SUPERVISOR),
                              timeout=30)
            assert audio.status_code == 200 and len(audio.content) > 10_000
    engine = create_engine(cluster.database_url)
    with Session(engine) as s:
        for call_id, job_id in jobs.items():
            reports = s.scalar(select(func.count()).select_from(AuditEntry).where(
                AuditEntry.kind == "report", AuditEntry.call_id == call_id))
            attempts = s.scalar(select(Recording.attempts).where(Recording.id == job_id))
            assert (reports, attempts) == (1, 1)
    engine.dispose()


def _live_load(port: int) -> dict[str, Any]:
    load: dict[str, Any] = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).json()["live"]
    return load


async def _hold(url: str, stack: AsyncExitStack) -> Any:
    """A call that streams no audio, held open until `stack` closes (it takes a replica's one live seat)."""
    import websockets

    ws = await stack.enter_async_context(websockets.connect(url, additional_headers=bearer(INGEST)))
    await ws.send(json.dumps({"type": "start", "sample_rate_hz": 16000, "encoding": "pcm16",
                              "channels": ["agent", "customer"]}))
    first = json.loads(await ws.recv())
    assert first["type"] == "ready", first
    return ws


@pytest.mark.asyncio
async def test_a_call_goes_to_the_replica_with_room_and_is_recorded_when_none_has(
        cluster: Cluster, shared_data: Path) -> None:
    import websockets

    a, b = cluster.replicas
    proxy = cluster.proxy.replace("http", "ws")
    meta = json.loads((shared_data / "calls" / "call_s03.json").read_text(encoding="utf-8"))
    audio = load_call_audio(str(shared_data / "calls" / "call_s03.flac"), 16000)[:, : 20 * 16000]
    pcm = (np.clip(audio.T.reshape(-1), -1, 1) * 32767).astype("<i2").tobytes()
    async with AsyncExitStack() as stack:
        await _hold(f"ws://127.0.0.1:{a}/v1/calls/replicas-full-a/audio", stack)
        assert _live_load(a)["full"] and not _live_load(b)["full"]
        # Through nginx, whichever replica it picks first: A answers 503 (B has room) and nginx tries B.
        await _hold(f"{proxy}/v1/calls/replicas-moved/audio", stack)
        assert [_live_load(p)["calls"] for p in (a, b)] == [1, 1]
        await asyncio.sleep(0.5)  # both loads published (at once on each admission; this is margin)
        # Both full: the call is taken record-only by the replica it reaches, its audio kept.
        async with websockets.connect(f"{proxy}/v1/calls/replicas-recorded/audio", additional_headers=bearer(INGEST),
                                      max_size=2**22) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate_hz": 16000, "encoding": "pcm16",
                                      "channels": ["agent", "customer"], "loan_file": meta["loan_file"]}))
            ready, told = json.loads(await ws.recv()), json.loads(await ws.recv())
            assert ready["type"] == "ready" and told["type"] == "record_only"
            assert sorted(_live_load(p)["record_only"] for p in (a, b)) == [0, 1]
            for i in range(0, len(pcm), 12800):
                await ws.send(pcm[i: i + 12800])
            await ws.send(json.dumps({"type": "stop"}))
            rest = [json.loads(m) async for m in ws]
        assert [e["type"] for e in rest] == ["end"] and ws.close_code == 1000
    # Scored after the call by a job worker of either replica, from the kept audio, with the real model.
    deadline = time.monotonic() + 300
    while (answer := httpx.get(f"{cluster.proxy}/v1/calls/replicas-recorded/report", headers=bearer(SUPERVISOR),
                               timeout=10)).status_code != 200:
        assert time.monotonic() < deadline, answer.text
        await asyncio.sleep(1)
    report = answer.json()
    assert report["source"] == "live" and report["utterances"] and len(report["audio"]) == 2
    assert abs(report["duration_s"] - 20) < 0.5
    for port in cluster.replicas:
        load = _live_load(port)
        assert (load["calls"], load["record_only"], load["capacity"]) == (0, 0, 1)
