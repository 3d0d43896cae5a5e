"""Property-based tests: no input to the live socket or the upload API yields a 5xx or kills the server."""

from __future__ import annotations

import io
import json
import wave
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.websockets import WebSocketDisconnect

from service.app import create_app
from service.protocol import CloseCode
from service.settings import Settings
from tests.integration.test_live_socket import FakeTranscriber
from tests.support.server import authed

#: Close codes a client may legitimately get; 4500 (internal error) is never one of them.
EXPECTED_CLOSES = {CloseCode.NORMAL, CloseCode.BAD_REQUEST, CloseCode.FRAME_TOO_LARGE, CloseCode.CALL_IN_PROGRESS,
                   CloseCode.SLOW_CONSUMER, CloseCode.CALL_TOO_LONG, CloseCode.TOO_MANY_CALLS}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Any:
    data = tmp_path_factory.mktemp("fuzz")
    app = create_app(Settings(data_dir=data, live={"idle_timeout_s": 2.0}, audio={"max_duration_s": 20}),
                     transcriber=FakeTranscriber())  # type: ignore[arg-type]
    with authed(app) as c:
        yield c


json_values = st.recursive(st.none() | st.booleans() | st.integers(-10**9, 10**9) | st.floats(allow_nan=False)
                           | st.text(max_size=20), lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
starts = st.fixed_dictionaries({"type": st.sampled_from(["start", "stop", "Start", ""])}, optional={
    "sample_rate_hz": st.sampled_from([8000, 16000, 44100, 0, -1, "16000"]),
    "encoding": st.sampled_from(["pcm16", "mulaw", "alaw", "", None]),
    "channels": st.lists(st.text(max_size=10), max_size=3) | json_values,
    "loan_file": json_values | st.fixed_dictionaries({"repay_day": st.integers(-5, 40)}),
    "agent_id": json_values,
})
frames = st.lists(st.one_of(
    st.binary(max_size=2048).map(lambda b: ("bytes", b)),
    st.integers(1, 70_000).map(lambda n: ("bytes", b"\x01" * n)),
    st.text(max_size=50).map(lambda t: ("text", t)),
    json_values.map(lambda v: ("text", json.dumps(v))),
    st.just(("text", '{"type":"stop"}')),
), max_size=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=st.one_of(starts.map(json.dumps), st.text(max_size=40), st.binary(max_size=64)), rest=frames)
def test_no_message_sequence_breaks_the_live_socket(client: Any, first: Any, rest: list[tuple[str, Any]]) -> None:
    code = None
    with client.websocket_connect("/v1/calls/fuzz/audio") as ws:
        try:
            ws.send_bytes(first) if isinstance(first, bytes) else ws.send_text(first)
            for kind, payload in rest:
                ws.send_bytes(payload) if kind == "bytes" else ws.send_text(payload)
            ws.send_text('{"type":"stop"}')
            while True:
                event = ws.receive_json()
                assert event.get("code") != "internal", event
        except WebSocketDisconnect as closed:
            code = closed.code
    assert code in EXPECTED_CLOSES
    assert client.get("/healthz").status_code == 200


def _wav(seconds: float, channels: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x10\x00" * channels * int(8000 * seconds))
    return buf.getvalue()


files = st.one_of(
    st.binary(max_size=4096),
    st.builds(lambda s, c: _wav(s, c), st.floats(0, 2), st.integers(1, 3)),
    st.builds(lambda s, c, cut: _wav(s, c)[:cut], st.floats(0.1, 1), st.integers(1, 2), st.integers(0, 200)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(["file", "agent", "customer", "other"]), content=files,
       data=st.dictionaries(st.sampled_from(["call_id", "channels", "loan_file", "agent_id", "x"]),
                            st.text(max_size=40) | json_values.map(json.dumps), max_size=4))
def test_no_upload_yields_a_server_error(client: Any, field: str, content: bytes, data: dict[str, str]) -> None:
    response = client.post("/v1/recordings", files={field: ("f.wav", content, "audio/wav")}, data=data)
    assert response.status_code < 500, response.text
    assert "Traceback" not in response.text


#: The attacks of the security review (issue #16), as generators: deep nesting, huge and odd loan files, Twilio
#: timestamps far ahead or not numbers, call ids with control characters.
deep = st.integers(100, 50_000).map(lambda n: "[" * n + "]" * n)
twilio_messages = st.lists(st.one_of(
    st.just({"event": "connected"}),
    st.builds(lambda token: {"event": "start", "start": {"customParameters": {"token": token}}},
              st.sampled_from([None, "nope", ""])),
    st.builds(lambda ts, payload: {"event": "media", "media": {"track": "inbound", "timestamp": ts,
                                                               "payload": payload}},
              st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**12, 10**12),
                        st.text(max_size=8)), st.sampled_from(["/w==", "", "not base64", "AAAA" * 10])),
    st.builds(lambda mark: {"event": "mark", "mark": mark}, json_values),
), max_size=5).map(lambda ms: [json.dumps(m, default=str) for m in ms])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.one_of(twilio_messages, st.lists(deep, min_size=1, max_size=1)))
# Found in CI: a media message with an empty payload closed the call with 4500.
@example(messages=['{"event": "start", "start": {"customParameters": {"token": null}}}',
                   '{"event": "media", "media": {"track": "inbound", "timestamp": 0.0, "payload": ""}}'])
def test_no_twilio_stream_breaks_the_socket(client: Any, messages: list[str]) -> None:
    """Without a token nothing gets past `start`; whatever comes, the close is one a client may get."""
    code = None
    with client.websocket_connect("/v1/calls/fuzz-tw/twilio") as ws:
        try:
            for text in messages:
                ws.send_text(text)
            while True:
                assert ws.receive_json().get("code") != "internal"
        except WebSocketDisconnect as closed:
            code = closed.code
    assert code in EXPECTED_CLOSES | {CloseCode.UNAUTHORIZED, CloseCode.FORBIDDEN}
    assert client.get("/healthz").status_code == 200


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(call_id=st.text(min_size=1, max_size=140), loan=st.one_of(json_values, deep, st.builds(
    lambda key, size: {key: "路" * size}, st.sampled_from(["address", "borrower", "nickname"]),
    st.integers(0, 300_000))))
def test_no_call_id_or_loan_file_yields_a_server_error(client: Any, call_id: str, loan: Any) -> None:
    text = loan if isinstance(loan, str) else json.dumps(loan, ensure_ascii=False)
    response = client.post("/v1/recordings", files={"file": ("f.wav", _wav(0.5, 2), "audio/wav")},
                           data={"call_id": call_id, "loan_file": text})
    assert response.status_code < 500 and "Traceback" not in response.text, response.text


def test_large_input_leaves_the_memory_bounded(client: Any) -> None:
    """Frames and bodies far over the limits are refused without the process growing by their size."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(5):
        with client.websocket_connect("/v1/calls/big-frames/audio") as ws:
            ws.send_text("x" * 2_000_000)
            with pytest.raises(WebSocketDisconnect):
                while True:
                    ws.receive_json()
        response = client.post("/v1/recordings", content=b"\0" * 1000,
                               headers={"Content-Type": "multipart/form-data; boundary=x",
                                        "Content-Length": str(50 << 30)})
        assert response.status_code == 413
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB


def test_responses_carry_security_headers_and_no_cors(client: Any, tmp_path: Path) -> None:
    response = client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert "access-control-allow-origin" not in response.headers
