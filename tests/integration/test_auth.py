"""Access control: every refusal (401, 403, websocket close codes), agents limited to their calls, tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from service.app import create_app, state_of
from service.auth import AuthError, load_tokens_file, write_tokens_file
from service.protocol import CloseCode
from service.reports import report_row
from service.settings import Settings
from tests.integration.test_live_socket import START, FakeTranscriber
from tests.support.reports import stored_report
from tests.support.server import bearer, tokens_client

TOKENS = {"ing": ("ingest", None), "a1": ("agent", "A1"), "a2": ("agent", "A2"), "sup": ("supervisor", None),
          "adm": ("admin", None)}


@pytest.fixture()
def client(tmp_path: Path) -> Any:
    with tokens_client(tmp_path, TOKENS, FakeTranscriber(), auth={"max_calls_per_token": 1}) as c:
        yield c


def _closed(ws: Any) -> tuple[list[dict[str, Any]], int]:
    events = []
    with pytest.raises(WebSocketDisconnect) as closed:
        while True:
            events.append(ws.receive_json())
    return events, closed.value.code


def _store_call(client: TestClient, call_id: str, agent_id: str) -> None:
    store = state_of(client.app).store  # type: ignore[arg-type]
    job = store.create_job(call_id, [], None, agent_id)
    assert store.claim(job.id) is not None
    store.complete_job(job.id, report_row(stored_report(call_id, duration_s=10.0)), agent_id, None, None)


def test_http_routes_need_a_token_of_the_right_role(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200  # open, as are static assets and page shells
    assert client.get("/static/console.js").status_code == 200 and client.get("/console").status_code == 200
    missing = client.get("/v1/calls")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/calls", headers=bearer("nope")).status_code == 401
    assert client.get("/v1/calls", headers=bearer("ing")).status_code == 403  # a switch reads no reports
    assert client.get("/v1/calls", headers=bearer("sup")).status_code == 200
    assert client.post("/v1/assess", json={"question": "月供多少", "answer": "四千二"},
                       headers=bearer("ing")).status_code == 403
    assert client.post("/v1/assess", json={"question": "月供多少", "answer": "四千二"},
                       headers=bearer("a1")).status_code == 200
    assert client.post("/v1/recordings", files={"file": ("a.wav", b"x")}, headers=bearer("a1")).status_code == 403
    # A token is never taken from a URL (URLs end up in access logs and browser history).
    assert client.get("/v1/calls?token=sup").status_code == 401


def test_agents_see_only_their_calls_and_only_admins_delete(client: TestClient) -> None:
    _store_call(client, "mine", "A1")
    _store_call(client, "theirs", "A2")
    listed = client.get("/v1/calls", headers=bearer("a1")).json()
    assert [c["call_id"] for c in listed["items"]] == ["mine"]
    assert client.get("/v1/calls", params={"agent": "A2"}, headers=bearer("a1")).status_code == 403
    assert client.get("/v1/calls/mine/report", headers=bearer("a1")).status_code == 200
    assert client.get("/v1/calls/theirs/report", headers=bearer("a1")).status_code == 403
    assert client.get("/v1/calls/theirs/report", headers=bearer("sup")).status_code == 200
    assert client.get("/v1/calls/theirs/audio/0", headers=bearer("a1")).status_code == 403
    assert client.delete("/v1/calls/mine", headers=bearer("sup")).status_code == 403
    assert client.delete("/v1/calls/mine", headers=bearer("a1")).status_code == 403
    assert client.delete("/v1/calls/mine", headers=bearer("adm")).status_code == 204


@pytest.mark.parametrize("path,token,code", [
    ("/v1/calls/c1/audio", None, CloseCode.UNAUTHORIZED),
    ("/v1/calls/c1/audio", "wrong", CloseCode.UNAUTHORIZED),
    ("/v1/calls/c1/audio", "a1", CloseCode.FORBIDDEN),
    ("/v1/calls/c1/audio", "sup", CloseCode.FORBIDDEN),
    ("/v1/calls/c1/events", None, CloseCode.UNAUTHORIZED),
    ("/v1/calls/c1/events", "ing", CloseCode.FORBIDDEN),
])
def test_websockets_refuse_with_a_close_code(client: TestClient, path: str, token: str | None, code: int) -> None:
    with client.websocket_connect(path, headers=bearer(token) if token else {}) as ws:
        events, closed = _closed(ws)
    assert closed == code and events[0]["type"] == "error"


def test_twilio_takes_the_token_from_custom_parameters(client: TestClient) -> None:
    start = {"event": "start", "start": {"customParameters": {"token": "ing", "agent_id": "A1"}}}
    with client.websocket_connect("/v1/calls/tw/twilio") as ws:
        ws.send_json({"event": "connected"})
        ws.send_json(start)
        assert ws.receive_json()["type"] == "ready"
        ws.send_json({"event": "stop"})
        events, closed = _closed(ws)
    assert closed == CloseCode.NORMAL
    with client.websocket_connect("/v1/calls/tw2/twilio") as ws:
        ws.send_json({"event": "start", "start": {"customParameters": {"token": "a1"}}})
        events, closed = _closed(ws)
    assert closed == CloseCode.FORBIDDEN


def test_an_agent_cannot_watch_another_agents_call(client: TestClient) -> None:
    with client.websocket_connect("/v1/calls/c2/events", headers=bearer("a2")) as waiting, \
            client.websocket_connect("/v1/calls/c2/events", headers=bearer("a1")) as owner, \
            client.websocket_connect("/v1/calls/c2/audio", headers=bearer("ing")) as switch:
        switch.send_json({**START, "agent_id": "A1"})
        assert switch.receive_json()["type"] == "ready"
        events, closed = _closed(waiting)  # waited for the call; it turned out to be A1's
        assert closed == CloseCode.FORBIDDEN and events[-1]["code"] == "forbidden"
        with client.websocket_connect("/v1/calls/c2/events", headers=bearer("a2")) as late:
            assert _closed(late)[1] == CloseCode.FORBIDDEN
        switch.send_json({"type": "stop"})
        _closed(switch)
        seen, closed = _closed(owner)
    assert closed == CloseCode.NORMAL and seen[0]["type"] == "ready"


def test_a_token_streams_a_limited_number_of_calls(client: TestClient) -> None:
    with client.websocket_connect("/v1/calls/one/audio", headers=bearer("ing")) as first:
        first.send_json(START)
        assert first.receive_json()["type"] == "ready"
        with client.websocket_connect("/v1/calls/two/audio", headers=bearer("ing")) as second:
            second.send_json(START)
            events, closed = _closed(second)
        assert closed == CloseCode.TOO_MANY_CALLS and events[0]["code"] == "too_many_calls"
        first.send_json({"type": "stop"})
        _closed(first)


def test_without_tokens_a_development_token_is_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app = create_app(Settings(data_dir=tmp_path), transcriber=FakeTranscriber())  # type: ignore[arg-type]
    with TestClient(app) as c:
        out = capsys.readouterr().out
        token = state_of(app).dev_token
        assert f"token: {token}\n" in out and f"/console#token={token}" in out and "?token=" not in out
        assert c.get("/v1/calls", headers=bearer(token)).status_code == 200
        assert c.get("/v1/calls").status_code == 401


def test_tokens_files_are_checked(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    for text in ("tokens: 3", "tokens: [{name: x, role: root, sha256: " + "0" * 64 + "}]",
                 "tokens: [{name: x, role: agent, sha256: " + "0" * 64 + "}]",
                 "tokens: [{name: x, role: admin, sha256: abc}]", "{{{"):
        bad.write_text(text)
        with pytest.raises(AuthError):
            load_tokens_file(bad)
    good = tmp_path / "good.yaml"
    write_tokens_file(good, {"secret": ("agent", "A9")})
    entries = load_tokens_file(good)
    assert "secret" not in good.read_text() and [p.agent_id for p in entries.values()] == ["A9"]


def test_browsers_open_websockets_with_a_short_lived_ticket_for_one_call(client: TestClient) -> None:
    """The token stays in the header: a page asks for a ticket (one call, 60 s, the token's role) and puts only
    that in the websocket URL."""
    from service.auth import Principal

    refused = client.post("/v1/tickets", json={"call_id": "c5"})
    assert refused.status_code == 401
    issued = client.post("/v1/tickets", json={"call_id": "c5"}, headers=bearer("a1"))
    assert issued.status_code == 201 and issued.json()["expires_in_s"] == 60
    ticket = issued.json()["ticket"]
    with client.websocket_connect(f"/v1/calls/c5/events?ticket={ticket}") as watcher, \
            client.websocket_connect("/v1/calls/c5/audio", headers=bearer("ing")) as switch:
        switch.send_json({**START, "agent_id": "A1"})
        assert switch.receive_json()["type"] == "ready"
        switch.send_json({"type": "stop"})
        _closed(switch)
        seen, closed = _closed(watcher)
    assert closed == CloseCode.NORMAL and seen[0]["type"] == "ready"
    with client.websocket_connect(f"/v1/calls/other/events?ticket={ticket}") as ws:  # another call
        assert _closed(ws)[1] == CloseCode.UNAUTHORIZED
    with client.websocket_connect(f"/v1/calls/c5/events?ticket={ticket}") as ws:  # used once already (#26)
        assert _closed(ws)[1] == CloseCode.UNAUTHORIZED
    fresh = client.post("/v1/tickets", json={"call_id": "c5"}, headers=bearer("a1")).json()["ticket"]
    with client.websocket_connect(f"/v1/calls/c5/audio?ticket={fresh}") as ws:  # an agent's, not a switch's
        assert _closed(ws)[1] == CloseCode.FORBIDDEN
    assert client.get(f"/v1/calls?ticket={ticket}").status_code == 401  # HTTP routes want the header
    tickets = state_of(client.app).tickets  # type: ignore[arg-type]
    stale = tickets.mint(Principal("agent-1", "agent", "A1"), "c6", now=0.0)
    assert tickets.redeem(stale, "c6") is None
    forged = tickets.mint(Principal("agent-1", "agent", "A1"), "c6")
    body, sig = forged.split(".")
    assert tickets.redeem(body[:-2] + "xx." + sig, "c6") is None and tickets.redeem(forged, "c6") is not None
