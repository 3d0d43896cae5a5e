"""The event bus and call claims shared through Redis (service/live/redis_bus.py), between two "replicas" (two
bus instances with their own clients) on a real redis-server: a screen on B sees exactly the events of a call
streamed into A, in order, history first; claims hold across replicas and expire with a dead replica; an outage
of Redis neither blocks nor loses the call's events, and screens are told."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from service.errors import ServiceError
from service.live.hub import Subscription
from service.live.redis_bus import RedisClaims, RedisHub, connect
from tests.support.redis_server import RedisServer


@pytest_asyncio.fixture()
async def replicas(redis_server: RedisServer) -> AsyncIterator[tuple[RedisHub, RedisHub]]:
    clients = [connect(redis_server.url), connect(redis_server.url)]
    hubs = (RedisHub(clients[0], "replica-a", prefix="t"), RedisHub(clients[1], "replica-b", prefix="t"))
    for hub in hubs:
        await hub.start()
    yield hubs
    for hub in hubs:
        await hub.stop()
    for client in clients:
        await client.aclose()


def event(kind: str, n: int) -> str:
    return json.dumps({"type": kind, "n": n})


async def drain(sub: Subscription, timeout_s: float = 10.0) -> list[dict[str, object]]:
    """Everything the subscriber gets until its stream ends."""
    got = []
    while True:
        text = await asyncio.wait_for(sub.queue.get(), timeout_s)
        if text is None:
            return got
        got.append(json.loads(text))


@pytest.mark.asyncio
async def test_a_screen_on_another_replica_sees_the_call_in_order_and_a_late_one_sees_its_history(
        replicas: tuple[RedisHub, RedisHub]) -> None:
    a, b = replicas
    early = b.subscribe("call-1")  # before the call starts: waits for it
    await asyncio.sleep(0.2)
    assert not early.started
    a.open("call-1", None)
    sent = []
    for n in range(300):
        kind = "partial" if n % 3 == 0 else "final"
        a.publish("call-1", event(kind, n), kind)
        sent.append({"type": kind, "n": n})
    a.close("call-1")
    assert await drain(early) == sent and early.started
    late = b.subscribe("call-1")
    assert await drain(late) == [e for e in sent if e["type"] != "partial"]


@pytest.mark.asyncio
async def test_a_screen_joining_mid_call_gets_history_then_live_with_nothing_lost_or_doubled(
        replicas: tuple[RedisHub, RedisHub]) -> None:
    a, b = replicas
    a.open("call-2", "agent-7")

    async def stream() -> None:
        for n in range(600):
            a.publish("call-2", event("final", n), "final")
            if n % 20 == 0:
                await asyncio.sleep(0.01)
        a.close("call-2")

    talking = asyncio.create_task(stream())
    await asyncio.sleep(0.1)
    joined = [b.subscribe("call-2", "agent-7") for _ in range(3)]  # mid-call, several at once
    await talking
    for sub in joined:
        assert [e["n"] for e in await drain(sub)] == list(range(600))


@pytest.mark.asyncio
async def test_an_agent_sees_only_their_own_call_on_any_replica(replicas: tuple[RedisHub, RedisHub]) -> None:
    a, b = replicas
    waiting = b.subscribe("call-3", "agent-2")  # waits for a call that turns out to be someone else's
    await asyncio.sleep(0.2)
    a.open("call-3", "agent-1")
    a.publish("call-3", event("final", 0), "final")
    assert await drain(waiting) == [] and waiting.forbidden
    other = b.subscribe("call-3", "agent-2")
    own = b.subscribe("call-3", "agent-1")
    a.close("call-3")
    assert await drain(other) == [] and other.forbidden
    assert await drain(own) == [{"type": "final", "n": 0}] and not own.forbidden


@pytest.mark.asyncio
async def test_a_restarted_call_id_starts_a_fresh_history(replicas: tuple[RedisHub, RedisHub]) -> None:
    a, b = replicas
    a.open("call-4")
    a.publish("call-4", event("final", 1), "final")
    a.close("call-4")
    assert await drain(b.subscribe("call-4")) == [{"type": "final", "n": 1}]
    a.open("call-4")
    a.publish("call-4", event("final", 2), "final")
    a.close("call-4")
    await asyncio.sleep(0.2)
    assert await drain(b.subscribe("call-4")) == [{"type": "final", "n": 2}]


@pytest.mark.asyncio
async def test_redis_down_the_call_goes_on_screens_are_told_and_resume(redis_server: RedisServer,
                                                                       replicas: tuple[RedisHub, RedisHub]) -> None:
    a, b = replicas
    a.open("call-5")
    a.publish("call-5", event("final", 0), "final")
    sub = b.subscribe("call-5")
    assert json.loads(await asyncio.wait_for(sub.queue.get(), 10))["n"] == 0
    redis_server.stop()
    began = asyncio.get_running_loop().time()
    for n in range(1, 50):
        a.publish("call-5", event("final", n), "final")  # never raises, never waits
    assert asyncio.get_running_loop().time() - began < 0.05
    told = json.loads(await asyncio.wait_for(sub.queue.get(), 15))
    assert told["type"] == "error" and told["code"] == "events_unavailable"
    assert await a.check() is not None and await b.check() is not None
    redis_server.start()
    a.close("call-5")
    # What the call said during the outage was held and arrives in order once Redis is back.
    assert [e["n"] for e in await drain(sub, 30)] == list(range(1, 50))
    assert await a.check() is None


@pytest.mark.asyncio
async def test_a_wrong_password_is_reported_not_hidden(redis_server: RedisServer) -> None:
    client = connect(redis_server.url.replace("s3cret-pw", "wrong"))
    hub = RedisHub(client, "replica-x", prefix="t")
    problem = await hub.check()
    assert problem is not None and "Redis unreachable" in problem
    await client.aclose()


@pytest_asyncio.fixture()
async def claim_pair(redis_server: RedisServer) -> AsyncIterator[tuple[RedisClaims, RedisClaims]]:
    clients = [connect(redis_server.url), connect(redis_server.url)]
    pair = (RedisClaims(clients[0], "replica-a", prefix="t", lease_s=1.5),
            RedisClaims(clients[1], "replica-b", prefix="t", lease_s=1.5))
    for claims in pair:
        await claims.start()
    yield pair
    for claims in pair:
        await claims.stop()
    for client in clients:
        await client.aclose()


@pytest.mark.asyncio
async def test_a_call_id_is_live_on_one_replica_and_token_limits_hold_across_replicas(
        claim_pair: tuple[RedisClaims, RedisClaims]) -> None:
    a, b = claim_pair
    await a.claim("c1", "switch", 2)
    with pytest.raises(ServiceError) as refused:
        await b.claim("c1", "switch", 2)
    assert refused.value.code == "call_in_progress"
    await b.claim("c2", "switch", 2)
    with pytest.raises(ServiceError) as refused:
        await a.claim("c3", "switch", 2)
    assert refused.value.code == "too_many_calls"
    await a.claim("c3", "other-switch", 2)  # another token has its own count
    await asyncio.sleep(2.5)  # past the lease: the heartbeat keeps live calls claimed
    with pytest.raises(ServiceError):
        await b.claim("c1", "switch", 5)
    a.release("c1", "switch")
    await asyncio.sleep(0.2)
    await b.claim("c1", "switch", 2)


@pytest.mark.asyncio
async def test_claims_of_a_dead_replica_expire_and_demo_caps_hold_across_replicas(
        claim_pair: tuple[RedisClaims, RedisClaims]) -> None:
    a, b = claim_pair
    await a.claim("c9", "switch", 1)
    await a.claim_demo("demo-1", 2)
    await b.claim_demo("demo-2", 2)
    with pytest.raises(ServiceError) as refused:
        await b.claim_demo("demo-3", 2)
    assert refused.value.code == "too_many_demos"
    assert a._heartbeat is not None
    a._heartbeat.cancel()  # replica A dies: nothing renews or releases its claims
    await asyncio.sleep(2.0)
    await b.claim("c9", "switch", 1)
    await b.claim_demo("demo-3", 2)


@pytest.mark.asyncio
async def test_screens_of_a_call_whose_replica_died_are_told_and_closed(
        redis_server: RedisServer, replicas: tuple[RedisHub, RedisHub], claim_pair: tuple[RedisClaims, RedisClaims],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from service.live import redis_bus

    monkeypatch.setattr(redis_bus, "LOST_CHECK_S", 0.3)
    (a, b), (claims_a, _) = replicas, claim_pair
    await claims_a.claim("call-6", None, 1)
    a.open("call-6")
    a.publish("call-6", event("final", 0), "final")
    alive = b.subscribe("call-6")
    assert json.loads(await asyncio.wait_for(alive.queue.get(), 10))["n"] == 0
    await asyncio.sleep(1.5)
    assert alive.queue.empty()  # quiet, but its replica still holds it: nothing said
    assert claims_a._heartbeat is not None
    claims_a._heartbeat.cancel()  # replica A dies mid-call: no end, and its claim expires
    lost = json.loads(await asyncio.wait_for(alive.queue.get(), 15))
    assert lost["type"] == "error" and lost["code"] == "call_lost"
    assert await asyncio.wait_for(alive.queue.get(), 5) is None


def test_a_service_whose_redis_is_down_takes_calls_and_says_so_on_readyz(tmp_path: Path) -> None:
    """The app with HUIFANG_REDIS_URL pointing at no server: /healthz stays 200 (live), /readyz is 503 and names
    the event bus, and a live call still streams and ends (its own socket gets every event)."""
    from fastapi.testclient import TestClient

    from service.app import create_app, state_of
    from service.settings import Settings
    from tests.integration.test_live_socket import START, FakeTranscriber
    from tests.support.server import free_port

    settings = Settings(data_dir=tmp_path / "data", redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with TestClient(create_app(settings, transcriber=FakeTranscriber())) as client:  # type: ignore[arg-type]
        client.headers["Authorization"] = f"Bearer {state_of(client.app).dev_token}"  # type: ignore[arg-type]
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "event bus" in ready.json()["error"]
        with client.websocket_connect("/v1/calls/no-redis/audio") as ws:
            ws.send_text(json.dumps(START))
            assert json.loads(ws.receive_text())["type"] == "ready"
            ws.send_bytes(b"\0\0" * 2 * 1600)
            ws.send_text(json.dumps({"type": "stop"}))
            kinds: list[str] = []
            while not kinds or kinds[-1] != "end":
                kinds.append(json.loads(ws.receive_text())["type"])
        assert kinds[-1] == "end"


@pytest.mark.asyncio
async def test_a_batch_sent_again_after_a_lost_reply_adds_nothing_twice(redis_server: RedisServer,
                                                                       replicas: tuple[RedisHub, RedisHub]) -> None:
    _, b = replicas
    client = connect(redis_server.url)
    writer = RedisHub(client, "replica-w", prefix="t")  # not started: its batches are sent by hand below
    writer.open("call-7")
    for n in range(5):
        writer.publish("call-7", event("final", n), "final")
    first = [writer._outbox.get_nowait() for _ in range(6)]
    await writer._send(first)
    writer.publish("call-7", event("final", 5), "final")
    writer.close("call-7")
    second = [writer._outbox.get_nowait() for _ in range(2)]
    await writer._send(second)
    await writer._send(second)  # the reply was lost: the writer sends the batch again
    assert [e["n"] for e in await drain(b.subscribe("call-7"))] == list(range(6))
    await client.aclose()
