"""Hardening (issue #16): each finding of the security review, reproduced against the app and shown fixed —
unauthenticated Twilio sockets, unbounded frames and nesting, Twilio timestamp gaps, unbounded loan files,
uploads spooled past the limit, demo replays, event-stream caps, tokens in logs, paths in /healthz."""

from __future__ import annotations

import base64
import io
import json
import logging
import resource
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.requests import Request

from service.app import create_app
from service.auth import write_tokens_file
from service.errors import ServiceError
from service.protocol import CloseCode
from service.settings import Settings
from tests.integration.test_auth import _closed
from tests.integration.test_live_socket import START, FakeTranscriber

INGEST, AGENT, ADMIN = "h-ingest", "h-agent", "h-admin"


@pytest.fixture()
def client(tmp_path: Path) -> Any:
    tokens = tmp_path / "tokens.yaml"
    write_tokens_file(tokens, {INGEST: ("ingest", None), AGENT: ("agent", "A1"), ADMIN: ("admin", None)})
    settings = Settings(data_dir=tmp_path / "data", auth={"tokens_file": tokens, "max_watchers_per_token": 2},
                        live={"idle_timeout_s": 3.0, "start_timeout_s": 1.0, "events_wait_s": 1.0,
                              "max_demo_calls": 1})
    app = create_app(settings, transcriber=FakeTranscriber())  # type: ignore[arg-type]
    with TestClient(app) as c:
        yield c


def _codes(events: list[dict[str, Any]]) -> list[str]:
    return [e["code"] for e in events if e["type"] == "error"]


def _twilio_start(token: str | None) -> str:
    params = {"token": token} if token else {}
    return json.dumps({"event": "start", "start": {"customParameters": params}})


def _media(timestamp: float, payload: bytes = b"\xff" * 160) -> str:
    return json.dumps({"event": "media", "media": {"track": "inbound", "timestamp": timestamp,
                                                   "payload": base64.b64encode(payload).decode()}})


# -- 1. Twilio sockets without a token, frames, nesting ------------------------------------------------------

def test_a_twilio_socket_without_a_start_is_closed_even_when_it_chatters(client: TestClient) -> None:
    began = time.monotonic()
    with client.websocket_connect("/v1/calls/t1/twilio") as ws:
        for _ in range(30):  # `connected` and `mark` do not count as activity
            ws.send_text(json.dumps({"event": "connected"}))
            ws.send_text(json.dumps({"event": "mark", "mark": {"name": "x"}}))
            time.sleep(0.05)
        events, code = _closed(ws)
    assert code == CloseCode.BAD_REQUEST and _codes(events) == ["start_timeout"]
    assert time.monotonic() - began < 5


def test_a_twilio_start_without_a_valid_token_is_refused(client: TestClient) -> None:
    with client.websocket_connect("/v1/calls/t2/twilio") as ws:
        ws.send_text(_twilio_start("not-a-token"))
        events, code = _closed(ws)
    assert code == CloseCode.UNAUTHORIZED and _codes(events) == ["unauthorized"]


@pytest.mark.parametrize("path", ["/v1/calls/n1/audio", "/v1/calls/n2/twilio"])
def test_deeply_nested_json_is_a_protocol_error_not_a_crash(client: TestClient, path: str) -> None:
    headers = {"Authorization": f"Bearer {INGEST}"}
    with client.websocket_connect(path, headers=headers) as ws:
        ws.send_text("[" * 60_000 + "]" * 60_000)
        events, code = _closed(ws)
    assert code != CloseCode.INTERNAL
    assert code == CloseCode.FRAME_TOO_LARGE or code == CloseCode.BAD_REQUEST, events
    with client.websocket_connect(path, headers=headers) as ws:
        ws.send_text("[" * 20_000 + "]" * 20_000)  # under the frame limit, over the parser's depth
        events, code = _closed(ws)
    assert code == CloseCode.BAD_REQUEST and _codes(events)[0] in ("bad_start", "bad_message"), events


def test_text_frames_are_bounded(client: TestClient) -> None:
    with client.websocket_connect("/v1/calls/big/audio", headers={"Authorization": f"Bearer {INGEST}"}) as ws:
        ws.send_text(json.dumps({**START, "pad": "x" * 100_000}))
        events, code = _closed(ws)
    assert code == CloseCode.FRAME_TOO_LARGE and _codes(events) == ["frame_too_large"]


# -- 4. Twilio timestamps ---------------------------------------------------------------------------------

def test_a_twilio_timestamp_far_ahead_allocates_nothing(client: TestClient) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with client.websocket_connect("/v1/calls/gap/twilio") as ws:
        ws.send_text(_twilio_start(INGEST))
        assert ws.receive_json()["type"] == "ready"
        ws.send_text(_media(1e8))  # 27 hours ahead: past the 3 h call limit
        events, code = _closed(ws)
    assert code == CloseCode.CALL_TOO_LONG and "call_too_long" in _codes(events)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB


def test_a_twilio_gap_within_the_call_is_filled_in_bounded_blocks() -> None:
    from service.live.sources.base import AudioChunk
    from service.live.sources.twilio import TwilioSource

    reader = TwilioSource(max_call_s=3600)
    reader.read(_twilio_start(INGEST))
    items = reader.read(_media(95_000))  # 95 s of skipped silence, then 20 ms of audio
    blocks = [i for i in items if isinstance(i, AudioChunk)]
    assert max(len(b.samples) for b in blocks) <= 80_000  # 10 s at 8 kHz
    assert sum(len(b.samples) for b in blocks) == 95_000 * 8 + 160
    assert reader.read(_media(95_020))[-1].samples.shape == (160,)  # the clock moved on: no new gap


# -- 7. Loan files -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("loan_file", [{"address": "路" * 5000}, {"nickname": "钱"}, {"borrower": "钱" * 200}])
def test_loan_files_are_bounded_and_closed(client: TestClient, loan_file: dict[str, Any]) -> None:
    with client.websocket_connect("/v1/calls/lf/audio", headers={"Authorization": f"Bearer {INGEST}"}) as ws:
        ws.send_json({**START, "loan_file": loan_file})
        events, code = _closed(ws)
    assert code == CloseCode.BAD_REQUEST and _codes(events) == ["bad_start"]
    upload = client.post("/v1/recordings", headers={"Authorization": f"Bearer {INGEST}"},
                         files={"file": ("a.wav", b"RIFF", "audio/wav")},
                         data={"loan_file": json.dumps(loan_file)})
    assert upload.status_code == 422 and upload.json()["code"] == "bad_loan_file"


def test_the_fields_redaction_and_contact_need_are_accepted(client: TestClient) -> None:
    loan = {"borrower": "钱多多", "address": "杭州市西湖区文三路90号", "customer_id": "C-1", "loan_id": "L-9",
            "phone": "13812345678", "id_number": "110101199003074477", "card_number": "6222020200112233445",
            "email": "q@example.com", "amount_yuan": 800000, "role": "borrower"}
    with client.websocket_connect("/v1/calls/ok/audio", headers={"Authorization": f"Bearer {INGEST}"}) as ws:
        ws.send_json({**START, "loan_file": loan})
        ready = ws.receive_json()
        assert ready["type"] == "ready" and ready["loan_file"]["borrower"] == "钱**"
        assert "phone" not in ready["loan_file"] and "address" not in ready["loan_file"]
        ws.send_json({"type": "stop"})


# -- 8. Uploads ----------------------------------------------------------------------------------------------

def test_an_upload_declaring_more_than_the_limit_is_refused_before_its_body(client: TestClient) -> None:
    response = client.post("/v1/recordings", headers={"Authorization": f"Bearer {INGEST}",
                                                      "Content-Type": "multipart/form-data; boundary=x",
                                                      "Content-Length": str(5 << 30)}, content=b"--x--")
    assert response.status_code == 413 and response.json()["code"] == "too_large"


@pytest.mark.asyncio
async def test_an_upload_body_is_counted_while_it_streams() -> None:
    """A body that grows past the limit (chunked, or with a lying Content-Length) stops being read there: the
    multipart parser never sees the rest."""
    from service.api.recordings import _bounded

    boundary = b"xyz"
    head = (b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
            b"Content-Type: audio/wav\r\n\r\n")
    chunks = [head] + [b"\0" * 65536] * 64  # 4 MiB of body
    sent = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        body = chunks[sent] if sent < len(chunks) else b""
        sent += 1
        return {"type": "http.request", "body": body, "more_body": sent < len(chunks)}

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [
        (b"content-type", b"multipart/form-data; boundary=" + boundary)], "query_string": b""}
    request = Request(scope, receive)  # type: ignore[arg-type]
    with pytest.raises(ServiceError) as refused:
        await _bounded(request, 1 << 20).form()
    assert refused.value.status == 413
    assert sent <= 20  # about 1 MiB read, not 4


def test_call_and_agent_ids_are_checked_whole(client: TestClient) -> None:
    auth = {"Authorization": f"Bearer {INGEST}"}
    for data in ({"call_id": "abc\n"}, {"agent_id": "A" * 65}):
        response = client.post("/v1/recordings", headers=auth, files={"file": ("a.wav", b"RIFF", "audio/wav")},
                               data=data)
        assert response.status_code == 422, response.json()
    with client.websocket_connect("/v1/calls/abc%0A/audio", headers=auth) as ws:
        events, code = _closed(ws)
    assert code == CloseCode.BAD_REQUEST and _codes(events) == ["bad_call_id"]


# -- 9. Demo replays --------------------------------------------------------------------------------------

def test_demo_replays_are_capped(client: TestClient) -> None:
    auth = {"Authorization": f"Bearer {AGENT}"}
    first = client.post("/v1/demo/calls", headers=auth, json={"speed": 4})
    assert first.status_code == 202
    second = client.post("/v1/demo/calls", headers=auth, json={"speed": 4})
    assert second.status_code == 429 and second.json()["code"] == "too_many_demos"


# -- 10. Event streams, /healthz, 500s, logs ---------------------------------------------------------------

def test_event_streams_are_capped_per_token_and_stop_waiting(client: TestClient) -> None:
    auth = {"Authorization": f"Bearer {AGENT}"}
    with client.websocket_connect("/v1/calls/w1/events", headers=auth), \
            client.websocket_connect("/v1/calls/w2/events", headers=auth), \
            client.websocket_connect("/v1/calls/w3/events", headers=auth) as third:
        events, code = _closed(third)
        assert code == CloseCode.TOO_MANY_CALLS and _codes(events) == ["too_many_watchers"]
    with client.websocket_connect("/v1/calls/never/events", headers=auth) as ws:
        events, code = _closed(ws)  # events_wait_s is 1 s here
    assert code == CloseCode.NOT_STARTED and _codes(events) == ["call_not_started"]


def test_healthz_names_no_paths_unless_an_admin_asks(client: TestClient, tmp_path: Path) -> None:
    anonymous = client.get("/healthz").json()
    assert str(tmp_path) not in json.dumps(anonymous) and "detail" not in anonymous
    admin = client.get("/healthz", headers={"Authorization": f"Bearer {ADMIN}"}).json()
    assert str(tmp_path) in admin["detail"]["database_url"]


def test_an_internal_error_still_carries_the_security_headers(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path), transcriber=FakeTranscriber())  # type: ignore[arg-type]

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom")

    with TestClient(app, raise_server_exceptions=False) as c:
        response = c.get("/boom")
    assert response.status_code == 500 and "kaboom" not in response.text
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors" in response.headers["Content-Security-Policy"]


def test_access_log_lines_keep_their_shape_and_lose_tokens_and_numbers() -> None:
    from uvicorn.logging import AccessFormatter

    from service.logs import PiiLogFilter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False))
    handler.addFilter(PiiLogFilter())
    logger = logging.getLogger("test.access")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.error('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET",
                     "/v1/calls/13812345678/audio/0?token=hf_abcdefghijklmnopqrstuvwx", "1.1", 200)
    finally:
        logger.removeHandler(handler)
    line = stream.getvalue()
    assert '"GET /v1/calls/[手机号]/audio/0?token=[masked] HTTP/1.1" 200' in line, line
    assert "hf_abc" not in line and "13812345678" not in line


# -- 5. Retention and deletion reach every stored byte -------------------------------------------------------

def _stored_job(store: Any, data_dir: Path, call_id: str, job_id: str) -> Any:
    folder = data_dir / "audio" / job_id
    folder.mkdir(parents=True)
    (folder / "call.wav").write_bytes(b"RIFF....")
    return store.create_job(call_id, [{"path": f"audio/{job_id}/call.wav", "channels": ["agent", "customer"]}],
                            {"borrower": "钱多多", "address": "杭州市西湖区文三路90号", "amount_yuan": 800000.0},
                            "A1", job_id)


def _context(store: Any, data_dir: Path, fail: bool = False) -> Any:
    from pipeline.recording import RecordingError, Scored
    from service.workers.jobs import JobContext
    from tests.integration.test_recordings import _report

    def score(call_id: str, parts: Any, loan: Any, progress: Any) -> Scored:
        if fail:
            raise RecordingError("the recording holds no speech (every channel is silent)")
        return Scored({**_report(call_id, "low", 5, {"term": "clear"}), "answers": []}, [])

    return JobContext(store, data_dir, score, 90.0)


def test_rescoring_a_call_leaves_nothing_of_the_earlier_scoring(tmp_path: Path) -> None:
    from service.store import Store
    from service.workers.jobs import run_job

    store = Store(f"sqlite:///{tmp_path / 'h.db'}")
    store.migrate()
    for job_id in ("j1", "j2"):
        job = _stored_job(store, tmp_path, "c1", job_id)
        run_job(_context(store, tmp_path), store.claim(job.id))
    assert not (tmp_path / "audio" / "j1").exists() and (tmp_path / "audio" / "j2").exists()
    assert store.get_job("j1") is None and store.get_call("c1").recording_id == "j2"  # type: ignore[union-attr]
    assert "address" not in (store.get_job("j2").loan_file or {})  # type: ignore[union-attr]


def test_a_failed_job_keeps_no_personal_data_and_can_be_deleted(tmp_path: Path) -> None:
    from service.store import Store
    from service.workers.jobs import run_job

    store = Store(f"sqlite:///{tmp_path / 'h.db'}")
    store.migrate()
    job = _stored_job(store, tmp_path, "c2", "j3")
    run_job(_context(store, tmp_path, fail=True), store.claim(job.id))
    failed = store.get_job("j3")
    assert failed is not None and failed.status == "failed" and "no speech" in (failed.error or "")
    assert failed.loan_file is None and failed.files == [] and not (tmp_path / "audio" / "j3").exists()
    found = store.call_footprint("c2")
    assert found is not None and not found.has_report
    assert store.delete_call("c2") == [] and store.call_footprint("c2") is None


def test_delete_reaches_failed_and_queued_jobs_and_waits_for_a_running_one(client: TestClient,
                                                                          tmp_path: Path) -> None:
    from service.app import state_of
    from service.store import Store, StoreError
    from service.store.models import Recording
    from service.workers.jobs import run_job

    state = state_of(client.app)  # type: ignore[arg-type]
    assert state.store is not None
    admin = {"Authorization": f"Bearer {ADMIN}"}
    assert client.delete("/v1/calls/nothing", headers=admin).status_code == 404
    data = state.settings.data_dir
    job = _stored_job(state.store, data, "c3", "j4")
    claimed = state.store.claim(job.id)
    if claimed is not None:
        run_job(_context(state.store, data, fail=True), claimed)
    deadline = time.monotonic() + 20  # else the service's own worker took it: its audio is no recording either
    while (current := state.store.get_job(job.id)) is not None and current.status != "failed":
        assert time.monotonic() < deadline, current
        time.sleep(0.1)
    assert client.delete("/v1/calls/c3", headers=admin).status_code == 204  # was 404: no report
    assert state.store.call_footprint("c3") is None and not (data / "audio" / "j4").exists()

    store = Store(f"sqlite:///{tmp_path / 'q.db'}")  # no workers here: the job stays where it is put
    store.migrate()
    job = _stored_job(store, tmp_path, "c4", "j5")
    with store.session() as s, s.begin():
        s.get(Recording, job.id).status = "running"  # type: ignore[union-attr]
    with pytest.raises(StoreError):
        store.delete_call("c4")
    with store.session() as s, s.begin():
        s.get(Recording, job.id).status = "queued"  # type: ignore[union-attr]
    assert store.delete_call("c4") == ["audio/j5"] and store.call_footprint("c4") is None


def test_serve_limits_malloc_arenas_unless_the_operator_chose() -> None:
    """A long-running server on glibc keeps two malloc arenas (its memory settles instead of creeping); an
    operator's MALLOC_ARENA_MAX is left alone. In a child process: the setting is for the whole process."""
    import os
    import subprocess
    import sys

    code = "from service.server import limit_malloc_arenas; print(limit_malloc_arenas())"
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    ours = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    theirs = subprocess.run([sys.executable, "-c", code], env={**env, "MALLOC_ARENA_MAX": "4"},
                            capture_output=True, text=True, check=True)
    assert (ours.stdout.strip(), theirs.stdout.strip()) == ("True", "False")
