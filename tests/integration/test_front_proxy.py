"""The front proxy configuration (deploy/nginx.conf) in front of a running huifang: half-open connections are
timed out by nginx and never reach the service, which keeps answering; oversized and stalled uploads are cut
off; websockets pass through. Runs Debian's nginx (installed by .ci/run); skips with the reason without it."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from service.app import create_app
from service.auth import write_tokens_file
from service.settings import Settings
from tests.integration.test_live_socket import START, FakeTranscriber
from tests.support.proxy import front_proxy, require_nginx, wait_port
from tests.support.server import free_port

INGEST = "fp-ingest"
#: Shorter than deploy/nginx.conf's 10 s / 20 s, so the test does not wait long; the mechanism is the same.
HEADER_TIMEOUT_S, BODY_TIMEOUT_S = 2, 2


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    """huifang (uvicorn, a fake recogniser) on one port, the shipped nginx configuration in front of it on
    another; yields (proxy base URL, the uvicorn server)."""
    require_nginx()
    import uvicorn

    tmp = tmp_path_factory.mktemp("proxy")
    tokens = tmp / "tokens.yaml"
    write_tokens_file(tokens, {INGEST: ("ingest", None)})
    settings = Settings(data_dir=tmp / "data", auth={"tokens_file": tokens})
    app = create_app(settings, transcriber=FakeTranscriber())  # type: ignore[arg-type]
    service_port, proxy_port = free_port(), free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=service_port, log_level="warning",
                                           ws_max_size=128 * 1024))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_port(service_port)
        with front_proxy(tmp, proxy_port, [service_port], [
                (r"client_header_timeout \d+s;", f"client_header_timeout {HEADER_TIMEOUT_S}s;"),
                (r"client_body_timeout \d+s;", f"client_body_timeout {BODY_TIMEOUT_S}s;")]):
            yield f"http://127.0.0.1:{proxy_port}", server
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _half_open(port: int, n: int) -> list[socket.socket]:
    """`n` connections that send a request line and one header, then nothing."""
    sockets = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: huifang\r\n")
        sockets.append(s)
    return sockets


def _closed_by_peer(s: socket.socket, timeout_s: float) -> bool:
    s.settimeout(timeout_s)
    try:
        while True:
            data = s.recv(4096)
            if not data:
                return True
    except (TimeoutError, OSError):
        return False


def test_half_open_connections_are_timed_out_by_the_proxy_and_never_reach_the_service(
        proxied: tuple[str, Any]) -> None:
    base, server = proxied
    port = int(base.rsplit(":", 1)[1])
    stuck = _half_open(port, 300)
    try:
        assert len(server.server_state.connections) < 10  # nginx forwards only complete requests
        began = time.monotonic()
        healthy = httpx.get(f"{base}/healthz", timeout=5)  # the service answers while they hang
        assert healthy.status_code == 200 and time.monotonic() - began < 2
        closed = sum(_closed_by_peer(s, HEADER_TIMEOUT_S + 3) for s in stuck)
        assert closed == len(stuck), f"{len(stuck) - closed} half-open connections were left open"
    finally:
        for s in stuck:
            s.close()
    assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200


def test_an_oversized_upload_is_refused_at_once_and_a_stalled_one_cut_off(proxied: tuple[str, Any]) -> None:
    base, _ = proxied
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST /v1/recordings HTTP/1.1\r\nHost: huifang\r\nContent-Type: multipart/form-data; "
                  b"boundary=x\r\nContent-Length: 2147483648\r\n\r\n--x")
        s.settimeout(5)
        assert s.recv(64).startswith(b"HTTP/1.1 413")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST /v1/recordings HTTP/1.1\r\nHost: huifang\r\nContent-Type: multipart/form-data; "
                  b"boundary=x\r\nContent-Length: 100000\r\n\r\n--x")  # then nothing
        began = time.monotonic()
        assert _closed_by_peer(s, BODY_TIMEOUT_S + 5) and time.monotonic() - began < BODY_TIMEOUT_S + 5


def test_large_bodies_pass_only_on_the_upload_routes(proxied: tuple[str, Any]) -> None:
    """#26: a JSON route's large body is refused by nginx itself (the service never sees it), declared or
    chunked; the upload routes still take large bodies (refused by the service's own limits, after auth)."""
    base, _ = proxied
    port = int(base.rsplit(":", 1)[1])
    for path in ("/v1/tickets", "/v1/assess", "/v1/customers/C1/contact", "/v1/followups/f1/outcome"):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(f"POST {path} HTTP/1.1\r\nHost: huifang\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {100 << 20}\r\n\r\n[".encode())
            s.settimeout(5)
            assert s.recv(64).startswith(b"HTTP/1.1 413"), path
    chunked = httpx.post(f"{base}/v1/assess", content=iter([b"[" * 65536] * 4),
                         headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413
    small = httpx.post(f"{base}/v1/tickets", json={"call_id": "c1"}, headers={"Authorization": f"Bearer {INGEST}"})
    assert small.status_code == 201
    upload = httpx.post(f"{base}/v1/recordings", headers={"Authorization": f"Bearer {INGEST}"},
                        files={"file": ("a.wav", b"\0" * (2 << 20), "audio/wav")})
    assert upload.status_code == 422  # 2 MB reached the service (nginx would have said 413): not audio


@pytest.mark.asyncio
async def test_websockets_pass_through_the_proxy(proxied: tuple[str, Any]) -> None:
    import websockets

    base, _ = proxied
    url = base.replace("http", "ws") + "/v1/calls/through-proxy/audio"
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {INGEST}"}) as ws:
        await ws.send(json.dumps(START))
        ready = json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "stop"}))
        rest = [json.loads(m)["type"] async for m in ws]
    assert ready["type"] == "ready" and rest[-1] == "end"
