"""Listening in (监听, issue #31): a supervisor's socket hears the call's audio as streamed (PCM16, both channels),
audited at start and stop; agents, switches and a server whose policy forbids it are refused; and across
replicas, the audio of a call streamed on A reaches a listener on B through Redis only while someone listens."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from service.live.listen import ListenTaps, RedisAudioRelay, TapFormat
from service.live.redis_bus import connect, live_key
from service.live.sources.base import AudioChunk
from service.protocol import CloseCode
from tests.integration.test_live_socket import START, FakeTranscriber
from tests.support.redis_server import RedisServer
from tests.support.server import audited, bearer, tokens_client

TOKENS = {"ing": ("ingest", None), "a1": ("agent", "A1"), "sup": ("supervisor", None)}


@pytest.fixture()
def client(tmp_path: Path) -> Iterator[TestClient]:
    with tokens_client(tmp_path, TOKENS, FakeTranscriber()) as c:
        yield c


def _refused(ws: Any) -> tuple[dict[str, Any], int, str]:
    """The error a refused socket says, its close code and reason."""
    said = ws.receive_json()
    with pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_json()
    return said, closed.value.code, closed.value.reason


def _pcm(n: int, seed: int) -> tuple[np.ndarray, bytes]:
    """`n` stereo PCM16 samples of noise: (samples of shape (n, 2), the interleaved bytes)."""
    samples = np.random.default_rng(seed).integers(-20000, 20000, size=(n, 2), dtype=np.int16)
    return samples, samples.astype("<i2").tobytes()


def test_a_supervisor_hears_both_channels_of_the_call_as_streamed(client: TestClient) -> None:
    with client.websocket_connect("/v1/calls/l1/audio", headers=bearer("ing")) as switch:
        switch.send_json({**START, "agent_id": "A1"})
        assert switch.receive_json()["type"] == "ready"
        with client.websocket_connect("/v1/calls/l1/listen", headers=bearer("sup")) as ear:
            assert ear.receive_json() == {"type": "listen_format", "call_id": "l1", "sample_rate_hz": 16000,
                                          "channels": 2, "roles": ["agent", "customer"], "encoding": "pcm16"}
            samples, pcm = _pcm(16000, seed=1)  # one second
            for i in range(0, len(pcm), 6400):
                switch.send_bytes(pcm[i: i + 6400])
            heard = b""
            while len(heard) < len(pcm):
                heard += ear.receive_bytes()
            assert heard == pcm  # PCM16 in, the same PCM16 out: nothing converted on the way
            both = np.frombuffer(heard, dtype="<i2").reshape(-1, 2)
            assert np.array_equal(both, samples)
            switch.send_json({"type": "stop"})
            assert ear.receive_json() == {"type": "end", "call_id": "l1", "report_url": None, "resumable": False}
            with pytest.raises(WebSocketDisconnect):  # the server closes once the listening's stop is audited
                ear.receive_json()
    entries = audited(client, "listen_in")
    assert [(e.call_id, e.actor, json.loads(e.payload)["event"]) for e in entries] == [
        ("l1", "supervisor-2", "start"), ("l1", "supervisor-2", "stop")]
    assert client.get("/v1/listen-in", headers=bearer("sup")).json() == {"enabled": True}


def test_only_supervisors_listen_and_only_to_a_live_call(client: TestClient) -> None:
    with client.websocket_connect("/v1/calls/l2/audio", headers=bearer("ing")) as switch:
        switch.send_json({**START, "agent_id": "A1"})
        assert switch.receive_json()["type"] == "ready"
        for token in ("a1", "ing"):  # not even the call's own agent: listening in is the supervisor's
            with client.websocket_connect("/v1/calls/l2/listen", headers=bearer(token)) as ws:
                said, code, _ = _refused(ws)
            assert code == CloseCode.FORBIDDEN and said["code"] == "forbidden"
        with client.websocket_connect("/v1/calls/l2/listen") as ws:
            assert _refused(ws)[1] == CloseCode.UNAUTHORIZED
        switch.send_json({"type": "stop"})
    with client.websocket_connect("/v1/calls/l2/listen", headers=bearer("sup")) as ws:
        said, code, reason = _refused(ws)
    assert code == CloseCode.NOT_STARTED and reason == "call_not_live" and "not live" in said["message"]
    assert client.get("/v1/listen-in", headers=bearer("a1")).status_code == 403
    assert audited(client, "listen_in") == []


def test_a_bank_can_turn_listening_in_off(tmp_path: Path) -> None:
    with tokens_client(tmp_path, TOKENS, FakeTranscriber(), floor={"listen_in": False}) as client:
        assert client.get("/v1/listen-in", headers=bearer("sup")).json() == {"enabled": False}
        with client.websocket_connect("/v1/calls/l3/audio", headers=bearer("ing")) as switch:
            switch.send_json(START)
            assert switch.receive_json()["type"] == "ready"
            with client.websocket_connect("/v1/calls/l3/listen", headers=bearer("sup")) as ws:
                said, code, reason = _refused(ws)
            switch.send_json({"type": "stop"})
        assert code == CloseCode.FORBIDDEN and reason == "listen_in_disabled" and "turned off" in said["message"]
        assert audited(client, "listen_in") == []


def test_tracks_sent_one_at_a_time_are_heard_paired() -> None:
    taps = ListenTaps()
    taps.open("tw", 8000, ["agent", "customer"])
    opened = taps.listen("tw")
    assert opened is not None
    listener, fmt = opened
    agent = np.linspace(-0.5, 0.5, 160, dtype=np.float32)
    customer = -agent
    taps.feed("tw", AudioChunk(agent, 8000, 0))
    assert not listener.frames  # the customer's track has not come yet
    taps.feed("tw", AudioChunk(customer, 8000, 1))
    frame = listener.frames.popleft()
    assert frame is not None and frame[0] == fmt == TapFormat(8000, ("agent", "customer"))
    pairs = np.frombuffer(frame[1], dtype="<i2").reshape(-1, 2)
    assert np.array_equal(pairs[:, 0], -pairs[:, 1]) and pairs[0, 0] == -16384


def test_a_listener_that_falls_behind_skips_to_the_live_edge() -> None:
    taps = ListenTaps()
    taps.open("slow", 16000, ["agent", "customer"])
    opened = taps.listen("slow")
    assert opened is not None
    listener = opened[0]
    second = AudioChunk(np.zeros((2, 16000), dtype=np.float32), 16000)
    for _ in range(10):  # ten seconds nobody read
        taps.feed("slow", second)
    assert listener.queued_bytes <= listener.limit_bytes and listener.skipped_s >= 6.0
    taps.unlisten(listener)
    taps.feed("slow", second)
    assert listener.queued_bytes <= listener.limit_bytes


@pytest.mark.asyncio
async def test_a_listener_on_another_replica_hears_the_call_through_redis(redis_server: RedisServer) -> None:
    clients = [connect(redis_server.url), connect(redis_server.url)]
    taps_a, taps_b = ListenTaps(), ListenTaps()
    relays = [RedisAudioRelay(clients[0], taps_a, prefix="t", live_key=lambda c: live_key("t", c)),
              RedisAudioRelay(clients[1], taps_b, prefix="t", live_key=lambda c: live_key("t", c))]
    for relay in relays:
        await relay.start()
    try:
        await clients[0].set(live_key("t", "far"), "replica-a")  # A's claim on the call
        taps_a.open("far", 16000, ["agent", "customer"])
        chunk = np.random.default_rng(2).uniform(-0.5, 0.5, size=(2, 320)).astype(np.float32)
        taps_a.feed("far", AudioChunk(chunk, 16000))  # nobody listens anywhere yet: nothing relayed
        listener = await relays[1].listen("far")
        frame = None
        for _ in range(100):  # A sees the listener at its next look (every POLL_S) and starts relaying
            taps_a.feed("far", AudioChunk(chunk, 16000))
            try:
                frame = await asyncio.wait_for(listener.get(), 0.1)
                break
            except TimeoutError:
                continue
        assert frame is not None and frame[0] == TapFormat(16000, ("agent", "customer"))
        expected = np.clip(np.rint(chunk.T * 32768), -32768, 32767).astype("<i2").tobytes()
        assert frame[1] == expected
        taps_a.close("far")  # the call ends on A: the listener on B is told
        while (frame := await asyncio.wait_for(listener.get(), 5.0)) is not None:
            pass
        await relays[1].unlisten(listener)
        assert await clients[0].zcard("t:listeners:far") == 0  # B's lease is given back
    finally:
        for relay in relays:
            await relay.stop()
        for c in clients:
            await c.aclose()
