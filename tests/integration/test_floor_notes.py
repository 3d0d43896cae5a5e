"""Supervisors' notes to the agent of a live call (issue #31): who may send and read them, redaction before
anything keeps or sends them, the audit trail, the `supervisor_note` event on the call's screens (live and in the
history of a screen opened later), the report; and a note posted on one replica for a call streaming on another,
through Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from fastapi.testclient import TestClient
from sqlalchemy import select
from starlette.websockets import WebSocketDisconnect

from service.app import state_of
from service.live.hub import Subscription
from service.live.redis_bus import RedisClaims, RedisHub, connect
from service.metrics import NOTES
from service.protocol import CloseCode
from service.store.models import CallNote
from tests.integration.test_live_socket import START, FakeTranscriber, _speech, _stereo_pcm16
from tests.support.redis_server import RedisServer
from tests.support.server import audited, bearer, tokens_client

TOKENS = {"ing": ("ingest", None), "a1": ("agent", "A1"), "a2": ("agent", "A2"), "sup": ("supervisor", None),
          "adm": ("admin", None)}

#: A note with an identity card number, a mobile number and an address in it: none of them may be kept or sent.
NOTE = "客户身份证号11010519491231002X，手机13812345678，住朝阳区建国路88号，请再核实还款日"
SECRETS = ("11010519491231002X", "13812345678", "建国路88号")


@pytest.fixture()
def client(tmp_path: Path) -> Iterator[TestClient]:
    with tokens_client(tmp_path, TOKENS, FakeTranscriber()) as c:
        yield c


def _until_closed(ws: Any) -> tuple[list[dict[str, Any]], int]:
    events = []
    with pytest.raises(WebSocketDisconnect) as closed:
        while True:
            events.append(ws.receive_json())
    return events, closed.value.code


def _next_of(ws: Any, kind: str) -> dict[str, Any]:
    while True:
        event = ws.receive_json()
        if event["type"] == kind:
            return event


def _say_something(switch: Any, shared_data: Path) -> None:
    """A few seconds of speech on the agent's channel, so that the call has a transcript and is stored."""
    speech = _speech(shared_data)
    audio = _stereo_pcm16(np.concatenate([speech, np.zeros(16000, dtype=np.float32)]))
    for i in range(0, len(audio), 6400):
        switch.send_bytes(audio[i: i + 6400])


def test_a_note_reaches_the_calls_screens_redacted_audited_and_stays_in_the_report(client: TestClient,
                                                                                   shared_data: Path) -> None:
    sent_before = NOTES._value.get()
    with client.websocket_connect("/v1/calls/n1/audio", headers=bearer("ing")) as switch, \
            client.websocket_connect("/v1/calls/n1/events", headers=bearer("a1")) as console:
        switch.send_json({**START, "agent_id": "A1"})
        assert switch.receive_json()["type"] == "ready"
        assert _next_of(console, "ready")["call_id"] == "n1"

        # Only supervisors (and admins) write notes.
        for token in ("ing", "a1", "a2"):
            assert client.post("/v1/calls/n1/notes", json={"text": "看这里"}, headers=bearer(token)).status_code == 403
        assert client.post("/v1/calls/n1/notes", json={"text": "  "}, headers=bearer("sup")).status_code == 422
        assert client.post("/v1/calls/n1/notes", json={"text": "长" * 501}, headers=bearer("sup")).status_code == 422

        answer = client.post("/v1/calls/n1/notes", json={"text": NOTE}, headers=bearer("sup"))
        assert answer.status_code == 201, answer.text
        note = answer.json()
        assert note["delivered"] and note["agent_id"] == "A1" and note["author"] == "supervisor-3"
        assert "还款日" in note["text"] and not any(s in note["text"] for s in SECRETS)

        event = _next_of(console, "supervisor_note")
        assert event == {"type": "supervisor_note", "note_id": note["note_id"], "text": note["text"],
                         "author": "supervisor-3", "at": note["at"]}
        # A console opened later gets the note with the call's history.
        with client.websocket_connect("/v1/calls/n1/events", headers=bearer("sup")) as late:
            assert _next_of(late, "supervisor_note")["note_id"] == note["note_id"]
            _say_something(switch, shared_data)
            switch.send_json({"type": "stop"})
            _until_closed(late)
        _until_closed(switch)
        _until_closed(console)

    assert NOTES._value.get() == sent_before + 1
    store = state_of(client.app).store  # type: ignore[arg-type]
    assert store is not None
    with store.session() as s:
        rows = list(s.scalars(select(CallNote)))
    assert [(r.call_id, r.agent_id, r.text) for r in rows] == [("n1", "A1", note["text"])]
    entries = audited(client, "supervisor_note")
    assert [(e.call_id, e.actor) for e in entries] == [("n1", "supervisor-3")]
    payload = json.loads(entries[0].payload)
    assert payload["note_id"] == note["note_id"] and payload["agent_id"] == "A1"
    assert "text" not in payload and not any(s in entries[0].payload for s in SECRETS)

    # Readers: supervisors any call's notes, an agent their own calls' only, a switch none.
    assert [n["note_id"] for n in client.get("/v1/calls/n1/notes", headers=bearer("a1")).json()] == [note["note_id"]]
    assert client.get("/v1/calls/n1/notes", headers=bearer("sup")).json()[0]["text"] == note["text"]
    assert client.get("/v1/calls/n1/notes", headers=bearer("a2")).status_code == 403
    assert client.get("/v1/calls/n1/notes", headers=bearer("ing")).status_code == 403
    report = client.get("/v1/calls/n1/report", headers=bearer("a1"))
    assert report.status_code == 200, report.text
    assert [(n["note_id"], n["text"]) for n in report.json()["notes"]] == [(note["note_id"], note["text"])]

    # The call is over: a note no longer reaches anyone, and the supervisor is told why.
    ended = client.post("/v1/calls/n1/notes", json={"text": "还在吗"}, headers=bearer("sup"))
    assert ended.status_code == 409 and ended.json()["code"] == "call_not_live"
    unknown = client.post("/v1/calls/nobody/notes", json={"text": "还在吗"}, headers=bearer("adm"))
    assert unknown.status_code == 404 and "no live call" in unknown.json()["detail"]


def test_an_agent_reads_the_notes_of_their_live_call_only(client: TestClient) -> None:
    with client.websocket_connect("/v1/calls/n2/audio", headers=bearer("ing")) as switch:
        switch.send_json({**START, "agent_id": "A2"})
        assert switch.receive_json()["type"] == "ready"
        assert client.post("/v1/calls/n2/notes", json={"text": "语速放慢"}, headers=bearer("sup")).status_code == 201
        assert [n["text"] for n in client.get("/v1/calls/n2/notes", headers=bearer("a2")).json()] == ["语速放慢"]
        assert client.get("/v1/calls/n2/notes", headers=bearer("a1")).status_code == 403
        switch.send_json({"type": "stop"})
        events, code = _until_closed(switch)
    assert code == CloseCode.NORMAL
    # A note is for the call's screens (its event feed), not for the phone switch streaming the audio.
    assert "supervisor_note" not in [e["type"] for e in events]


# -- across replicas ------------------------------------------------------------------------------------------------

@pytest_asyncio.fixture()
async def replicas(redis_server: RedisServer) -> AsyncIterator[tuple[RedisHub, RedisHub, RedisClaims]]:
    clients = [connect(redis_server.url), connect(redis_server.url)]
    a, b = RedisHub(clients[0], "replica-a", prefix="t"), RedisHub(clients[1], "replica-b", prefix="t")
    claims = RedisClaims(clients[0], "replica-a", prefix="t")
    for part in (a, b, claims):
        await part.start()
    yield a, b, claims
    for part in (claims, a, b):
        await part.stop()
    for c in clients:
        await c.aclose()


async def _next_event(sub: Subscription, kind: str) -> dict[str, Any]:
    while True:
        text = await asyncio.wait_for(sub.queue.get(), 10.0)
        assert text is not None, f"the stream ended before a {kind} event"
        event = json.loads(text)
        if event["type"] == kind:
            return dict(event)


@pytest.mark.asyncio
async def test_a_note_posted_on_another_replica_reaches_the_screens_of_the_replica_streaming_the_call(
        replicas: tuple[RedisHub, RedisHub, RedisClaims]) -> None:
    a, b, claims = replicas
    await claims.claim("far-1", "ing", 5)
    a.open("far-1", "A1")
    screen = a.subscribe("far-1", "A1")  # the agent's console, on the replica streaming the call
    a.publish("far-1", json.dumps({"type": "final", "n": 1}), "final")
    assert (await _next_event(screen, "final"))["n"] == 1
    for _ in range(100):  # the call's agent is written beside its stream by A's writer
        live = await b.streaming("far-1")
        if live is not None and live.agent_id == "A1":
            break
        await asyncio.sleep(0.05)
    assert live is not None and live.agent_id == "A1"

    note = json.dumps({"type": "supervisor_note", "note_id": 7, "text": "注意语气", "author": "s", "at": "t"},
                      ensure_ascii=False)
    assert await b.post("far-1", note, "supervisor_note")
    assert (await _next_event(screen, "supervisor_note"))["note_id"] == 7
    a.publish("far-1", json.dumps({"type": "final", "n": 2}), "final")  # A's own entries still go in after it
    assert (await _next_event(screen, "final"))["n"] == 2

    later = b.subscribe("far-1")  # a console opened later on B: the note is in the call's history, in order
    history = [await _next_event(later, "final"), await _next_event(later, "supervisor_note")]
    assert [e["type"] for e in history] == ["final", "supervisor_note"]
    assert (await _next_event(later, "final"))["n"] == 2

    a.close("far-1")
    claims.release("far-1", "ing")
    for _ in range(100):
        if await b.streaming("far-1") is None:
            break
        await asyncio.sleep(0.05)
    assert not await b.post("far-1", note, "supervisor_note")  # no replica streams it any more
    a.unsubscribe(screen)
    b.unsubscribe(later)
