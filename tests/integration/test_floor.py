"""The supervisors' floor through the service (service/api/floor.py): a live call (the real VAD and live path,
the recogniser scripted with the shared call's text) shows in `GET /v1/live/calls` and on `/v1/live/events`
with its checklist, vague answers, live risk and last prompt; a hedged guarantor consent raises an alert, whose
acknowledgement is audited and broadcast; only supervisors and admins see the floor; and two replicas sharing a
Redis see each other's calls and acknowledgements."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from service.floor import Floor, RedisFloorBus, load_alert_rules
from service.live.redis_bus import connect
from service.protocol import CloseCode
from tests.integration.test_live_assist import ScriptedTranscriber
from tests.support.redis_server import RedisServer
from tests.support.server import ADMIN, AGENT, AGENT_ID, INGEST, SUPERVISOR, audited, bearer, tokens_client

TOKENS: dict[str, tuple[str, str | None]] = {INGEST: ("ingest", None), AGENT: ("agent", AGENT_ID),
                                             SUPERVISOR: ("supervisor", None), ADMIN: ("admin", None)}
#: Rules only: the verdicts of call_s05 do not need the learned half, and the app starts in a second.
NLU = {"classifier": "none"}


def _call(shared_data: Path) -> tuple[dict[str, Any], bytes]:
    """call_s05: a guarantor asked twice whether they consent, who hedges both times (看情况吧)."""
    from asr.audio import load_call_audio

    script = json.loads((shared_data / "calls" / "call_s05.json").read_text(encoding="utf-8"))
    audio = load_call_audio(str(shared_data / "calls" / "call_s05.flac"), 16000)
    return script, (np.clip(audio.T.reshape(-1), -1, 1) * 32767).astype("<i2").tobytes()


def _start(script: dict[str, Any]) -> dict[str, Any]:
    return {"type": "start", "sample_rate_hz": 16000, "encoding": "pcm16", "channels": ["agent", "customer"],
            "loan_file": {**script["loan_file"], "loan_id": "L-2024-0093", "phone": "13812345678"},
            "agent_id": AGENT_ID}


def _until(read: Callable[[], Any], ok: Callable[[Any], bool], timeout_s: float = 30.0) -> Any:
    """Poll `read` until `ok` holds for its answer (the floor is fed asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = read()
        if ok(got):
            return got
        assert time.monotonic() < deadline, got
        time.sleep(0.05)


def _floor(client: TestClient, token: str = SUPERVISOR) -> dict[str, Any]:
    answer = client.get("/v1/live/calls", headers=bearer(token))
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    return data


def _tile(client: TestClient, call_id: str) -> dict[str, Any] | None:
    return next((c for c in _floor(client)["calls"] if c["call_id"] == call_id), None)


def _read_until(ws: Any, kind: str, call_id: str) -> list[dict[str, Any]]:
    """Messages of a floor socket up to the first `kind` of `call_id` (included)."""
    got = []
    while True:
        message = ws.receive_json()
        got.append(message)
        if message["type"] == kind and message.get("call_id") == call_id:
            return got


@pytest.fixture()
def client(tmp_path: Path, shared_data: Path) -> Iterator[TestClient]:
    script, _ = _call(shared_data)
    with tokens_client(tmp_path, TOKENS, ScriptedTranscriber(script), nlu=NLU) as c:
        yield c


def test_a_live_call_shows_on_the_floor_raises_an_alert_and_its_ack_is_audited_and_broadcast(
        client: TestClient, shared_data: Path) -> None:
    script, pcm = _call(shared_data)
    raised_before = _metric("huifang_floor_alerts_total", rule="guarantor_hedged")
    with client.websocket_connect("/v1/live/events", headers=bearer(SUPERVISOR)) as board:
        first = board.receive_json()
        assert first["type"] == "snapshot" and first["calls"] == [] and first["alerts"] == []
        assert isinstance(first["sent_at"], int)
        with client.websocket_connect("/v1/calls/floor-1/audio", headers=bearer(INGEST)) as call:
            call.send_json(_start(script))
            assert call.receive_json()["type"] == "ready"
            for i in range(0, len(pcm), 12800):
                call.send_bytes(pcm[i: i + 12800])
            # Mid-call (the socket still open): the tile has the hedged answers, the risk, the prompt and the alert.
            tile = _until(lambda: _tile(client, "floor-1"),
                          lambda t: t is not None and t["vague"]["unclear"] == 2 and t["last_prompt"] and t["alerts"])
            assert tile["state"] == "live" and tile["agent_id"] == AGENT_ID
            assert (tile["customer"], tile["loan"]) == ("刘*", "****0093 · 担保人 · 90 万元")
            assert "13812345678" not in json.dumps(_floor(client), ensure_ascii=False)
            items = {i["topic"]: i for i in tile["checklist"]["items"]}
            assert items["guarantor"]["state"] == "vague" and items["guarantor"]["label"] == "unclear"
            assert tile["risk"]["tier"] in ("medium", "high") and tile["risk"]["score"] >= 35
            assert tile["last_prompt"]["topic_name"] == "担保意愿" and tile["last_prompt"]["label"] == "unclear"
            alerts = _floor(client)["alerts"]
            assert {a["rule"] for a in alerts} >= {"guarantor_hedged"}
            hedged = next(a for a in alerts if a["rule"] == "guarantor_hedged")
            assert hedged["call_id"] == "floor-1" and hedged["topic"] == "guarantor" and hedged["title"]
            assert hedged["alert_id"] in tile["alerts"]
            # Prometheus: raised and open, by rule (the registry is the process's: compared, not absolute).
            assert _metric("huifang_floor_alerts_total", rule="guarantor_hedged") >= raised_before + 1
            open_before_ack = _metric("huifang_floor_alerts_open", rule="guarantor_hedged")
            assert open_before_ack >= 1
            # Acknowledged mid-call: audited, off the tile, told to the wallboard.
            acked = client.post(f"/v1/live/alerts/{hedged['alert_id']}/ack", headers=bearer(SUPERVISOR))
            assert acked.status_code == 200, acked.text
            assert acked.json()["acknowledged_by"] == "supervisor-2" and acked.json()["acknowledged_at"]
            again = client.post(f"/v1/live/alerts/{hedged['alert_id']}/ack", headers=bearer(ADMIN))
            assert again.status_code == 200 and again.json()["acknowledged_by"] == "supervisor-2"
            _until(lambda: _tile(client, "floor-1"), lambda t: t is not None and hedged["alert_id"] not in t["alerts"])
            assert _metric("huifang_floor_alerts_open", rule="guarantor_hedged") == open_before_ack - 1
            call.send_json({"type": "stop"})
            with pytest.raises(WebSocketDisconnect):
                while True:
                    call.receive_json()
        seen = _read_until(board, "call_ended", "floor-1")
    kinds = [m["type"] for m in seen]
    assert kinds[0] == "call_started" and "tile" in kinds and "alert" in kinds and "alert_ack" in kinds
    assert all(isinstance(m["sent_at"], int) and isinstance(m["seq"], int) for m in seen)
    seqs = [m["tile"]["seq"] for m in seen if "tile" in m]
    assert seqs == sorted(seqs)
    ack = next(m for m in seen if m["type"] == "alert_ack")
    assert ack["alert"]["alert_id"] == hedged["alert_id"] and ack["alert"]["acknowledged_by"] == "supervisor-2"
    last = seen[-1]["tile"]
    assert last["state"] == "ended" and last["duration_s"] == pytest.approx(script["duration_s"], abs=1.0)
    # The last live risk is the stored report's.
    report = client.get("/v1/calls/floor-1/report", headers=bearer(SUPERVISOR)).json()
    assert (last["risk"]["score"], last["risk"]["tier"]) == (report["risk_score"], report["tier"])
    [entry] = audited(client, "alert_ack")
    assert entry.call_id == "floor-1" and entry.actor == "supervisor-2"
    assert json.loads(entry.payload)["alert_id"] == hedged["alert_id"]
    assert client.post("/v1/live/alerts/floor-1:nothing/ack", headers=bearer(SUPERVISOR)).status_code == 404


def test_a_guarantor_who_plainly_refuses_raises_the_refusal_alert_not_a_hedge(tmp_path: Path,
                                                                             shared_data: Path) -> None:
    """call_s05 with the guarantor's answers made a plain refusal: clear answers, so no hedge alert and no
    prompt, but what they state (configs/risk.yaml: guarantor `no`) raises `guarantor_refuses`, once."""
    script, pcm = _call(shared_data)
    refusals = iter(["这个担保我不同意。", "不同意，我不担保了。"])
    turns = [{**t, "text": next(refusals)} if t["speaker"] == "customer" and t["start_s"] > 12 else t
             for t in script["turns"]]
    script = {**script, "turns": turns}
    raised_before = _metric("huifang_floor_alerts_total", rule="guarantor_refuses")
    with tokens_client(tmp_path, TOKENS, ScriptedTranscriber(script), nlu=NLU) as client:
        with client.websocket_connect("/v1/calls/floor-r/audio", headers=bearer(INGEST)) as call:
            call.send_json(_start(script))
            assert call.receive_json()["type"] == "ready"
            for i in range(0, len(pcm), 12800):
                call.send_bytes(pcm[i: i + 12800])
            call.send_json({"type": "stop"})
            with pytest.raises(WebSocketDisconnect):
                while True:
                    call.receive_json()
        tile = _until(lambda: _tile(client, "floor-r"), lambda t: t is not None and t["state"] == "ended")
        alerts = [a for a in _floor(client)["alerts"] if a["call_id"] == "floor-r"]
        refused = [a for a in alerts if a["rule"] == "guarantor_refuses"]
        assert [(a["topic"], a["label"], a["title"]) for a in refused] == [
            ("guarantor", "stated:no", "担保人明确拒绝承担担保责任")], alerts
        assert refused[0]["alert_id"] in tile["alerts"]
        # Raised once, though the refusal stands in every risk event after it (the board would hide a second).
        assert _metric("huifang_floor_alerts_total", rule="guarantor_refuses") == raised_before + 1
        assert not [a for a in alerts if a["rule"] == "guarantor_hedged"]
        assert tile["vague"] == {"omission": 0, "unclear": 0, "evasive": 0}
        report = client.get("/v1/calls/floor-r/report", headers=bearer(SUPERVISOR)).json()
        assert next(t for t in report["topics"] if t["topic"] == "guarantor")["stated"] == "no"


def _metric(name: str, **labels: str) -> float:
    from service.metrics import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def _closed_with(client: TestClient, url: str, code: int, **kwargs: Any) -> None:
    with client.websocket_connect(url, **kwargs) as ws, pytest.raises(WebSocketDisconnect) as closed:
        while True:
            ws.receive_json()
    assert closed.value.code == code


def test_only_supervisors_and_admins_see_the_floor(client: TestClient) -> None:
    for token, status in ((SUPERVISOR, 200), (ADMIN, 200), (AGENT, 403), (INGEST, 403)):
        assert client.get("/v1/live/calls", headers=bearer(token)).status_code == status
        assert client.post("/v1/live/alerts/x:y/ack", headers=bearer(token)).status_code == (
            404 if status == 200 else 403)
    assert client.get("/v1/live/calls").status_code == 401
    _closed_with(client, "/v1/live/events", CloseCode.UNAUTHORIZED)
    _closed_with(client, "/v1/live/events", CloseCode.FORBIDDEN, headers=bearer(AGENT))
    _closed_with(client, "/v1/live/events", CloseCode.FORBIDDEN, headers=bearer(INGEST))
    with client.websocket_connect("/v1/live/events", headers=bearer(ADMIN)) as ws:
        assert ws.receive_json()["type"] == "snapshot"
    # A browser: a ticket of scope `live`, for one socket; a call's ticket does not open the floor, nor the
    # floor's a call's; agents get none.
    ticket = client.post("/v1/tickets", json={"scope": "live"}, headers=bearer(SUPERVISOR)).json()["ticket"]
    with client.websocket_connect(f"/v1/live/events?ticket={ticket}") as ws:
        assert ws.receive_json()["type"] == "snapshot"
    _closed_with(client, f"/v1/live/events?ticket={ticket}", CloseCode.UNAUTHORIZED)  # used once
    floor_ticket = client.post("/v1/tickets", json={"scope": "live"}, headers=bearer(SUPERVISOR)).json()["ticket"]
    _closed_with(client, f"/v1/calls/some-call/events?ticket={floor_ticket}", CloseCode.UNAUTHORIZED)
    call_ticket = client.post("/v1/tickets", json={"call_id": "some-call"}, headers=bearer(SUPERVISOR)).json()
    _closed_with(client, f"/v1/live/events?ticket={call_ticket['ticket']}", CloseCode.UNAUTHORIZED)
    assert client.post("/v1/tickets", json={"scope": "live"}, headers=bearer(AGENT)).status_code == 403
    assert client.post("/v1/tickets", json={"scope": "live"}, headers=bearer(INGEST)).status_code == 403
    assert client.post("/v1/tickets", json={}, headers=bearer(SUPERVISOR)).status_code == 422


def test_two_replicas_sharing_a_redis_see_each_others_calls_and_acknowledgements(
        tmp_path: Path, shared_data: Path, redis_server: RedisServer) -> None:
    script, pcm = _call(shared_data)

    def replica(name: str) -> TestClient:
        (tmp_path / name).mkdir()
        return stack.enter_context(tokens_client(tmp_path / name, TOKENS, ScriptedTranscriber(script), nlu=NLU,
                                                 redis_url=redis_server.url, redis_prefix="floor-test"))

    with ExitStack() as stack:
        a, b = replica("a"), replica("b")
        on_a = stack.enter_context(a.websocket_connect("/v1/live/events", headers=bearer(SUPERVISOR)))
        on_b = stack.enter_context(b.websocket_connect("/v1/live/events", headers=bearer(SUPERVISOR)))
        assert on_a.receive_json()["type"] == on_b.receive_json()["type"] == "snapshot"
        with a.websocket_connect("/v1/calls/floor-2/audio", headers=bearer(INGEST)) as call:
            call.send_json(_start(script))
            assert call.receive_json()["type"] == "ready"
            for i in range(0, len(pcm), 12800):
                call.send_bytes(pcm[i: i + 12800])
            # Streamed into A, on B's floor with its alert.
            tile = _until(lambda: _tile(b, "floor-2"), lambda t: t is not None and t["alerts"])
            assert tile["customer"] == "刘*" and tile["vague"]["unclear"] >= 1
            alert = next(x for x in _floor(b)["alerts"]
                         if x["call_id"] == "floor-2" and x["rule"] == "guarantor_hedged")
            # Acknowledged on B: A (which streams the call) takes it off its tile and its wallboard hears of it.
            assert b.post(f"/v1/live/alerts/{alert['alert_id']}/ack", headers=bearer(SUPERVISOR)).status_code == 200
            _until(lambda: _floor(a)["alerts"], lambda open_alerts: alert["alert_id"] not in
                   [x["alert_id"] for x in open_alerts])
            _until(lambda: _tile(a, "floor-2"), lambda t: t is not None and alert["alert_id"] not in t["alerts"])
            call.send_json({"type": "stop"})
            with pytest.raises(WebSocketDisconnect):
                while True:
                    call.receive_json()
        seen_a = _read_until(on_a, "call_ended", "floor-2")
        seen_b = _read_until(on_b, "call_ended", "floor-2")
        assert any(m["type"] == "alert_ack" and m["alert"]["alert_id"] == alert["alert_id"] for m in seen_a)
        assert {"call_started", "tile", "alert", "alert_ack", "call_ended"} <= {m["type"] for m in seen_b}
        assert seen_b[-1]["tile"]["state"] == "ended"
        assert audited(b, "alert_ack") and not audited(a, "alert_ack")  # audited where it was acknowledged
        # A replica starting now rebuilds the floor from the stream's history.
        late = asyncio.run(_rebuilt(redis_server.url))
        rebuilt = next(t for t in late["calls"] if t["call_id"] == "floor-2")
        assert rebuilt["state"] == "ended" and rebuilt["alerts"] == _tile(b, "floor-2")["alerts"]  # type: ignore[index]
        assert alert["alert_id"] not in rebuilt["alerts"]
        assert [x["alert_id"] for x in late["alerts"]] == [x["alert_id"] for x in _floor(b)["alerts"]]


async def _rebuilt(redis_url: str) -> dict[str, Any]:
    """The board of a floor that starts on the shared Redis now, once it has read the stream's history."""
    redis = connect(redis_url)
    bus = RedisFloorBus(redis, "replica-late", prefix="floor-test")
    floor = Floor(load_alert_rules(), bus, "replica-late")
    await floor.start()
    try:
        await asyncio.wait_for(bus.caught_up.wait(), timeout=10)
        return floor.board.snapshot(time.time())
    finally:
        await floor.stop()
        await redis.aclose()
