"""The other ends of the outbox, run locally: a webhook receiver that verifies signatures as docs/outbox.md
tells receivers to and stores deliveries by idempotency key, and a real SMTP server that keeps what it receives.
Used by tests/integration/test_outbox.py and by the outbox benchmark (`bench.outbox`)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.server import free_port


def verify_signature(secret: bytes, timestamp: str, body: bytes, signature: str, now_s: float | None = None,
                     tolerance_s: float = 300.0) -> bool:
    """A receiver's check of `X-Huifang-Signature` (the snippet of docs/outbox.md): HMAC-SHA256 over the
    timestamp, a dot and the raw body, compared in constant time; a timestamp older than `tolerance_s` is a
    replay."""
    expected = "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    fresh = abs((time.time() if now_s is None else now_s) - int(timestamp)) <= tolerance_s
    return fresh and hmac.compare_digest(expected, signature)


class Receiver:
    """A webhook receiver on a free loopback port. Verifies signatures (401 otherwise), stores each delivery once
    by its idempotency key (a repeated key is acknowledged, not stored again) and can be told to answer the next
    requests with an error (`fail_next`, `fail_status`) or to store and then hang past the sender's timeout
    (`hang_next`, `hang_s`)."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.lock = threading.Lock()
        #: idempotency key -> the first payload received under it.
        self.deliveries: dict[str, dict[str, Any]] = {}
        #: (idempotency key, status answered), in arrival order.
        self.requests: list[tuple[str, int]] = []
        self.bad_signatures = 0
        self.fail_next, self.fail_status = 0, 503
        self.hang_next, self.hang_s = 0, 0.0
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def attempts(self, key: str) -> int:
        with self.lock:
            return sum(1 for k, _ in self.requests if k == key)

    def __enter__(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                key = self.headers.get("Idempotency-Key", "")
                ok = verify_signature(receiver.secret, self.headers.get("X-Huifang-Timestamp", "0"), body,
                                      self.headers.get("X-Huifang-Signature", ""))
                hang = 0.0
                with receiver.lock:
                    if not ok:
                        receiver.bad_signatures += 1
                        status = 401
                    elif receiver.fail_next > 0:
                        receiver.fail_next -= 1
                        status = receiver.fail_status
                    else:
                        status = 200
                        receiver.deliveries.setdefault(key, json.loads(body))  # deduplicated by key
                        if receiver.hang_next > 0:
                            receiver.hang_next -= 1
                            hang = receiver.hang_s
                    receiver.requests.append((key, status))
                if hang:
                    time.sleep(hang)  # stored, but the answer comes after the sender gave up
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender timed out and closed the connection

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()


class MailSink:
    """aiosmtpd's handler: keeps every message received (envelope and raw content)."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.messages.append(envelope)
        return "250 Message accepted for delivery"


@contextmanager
def smtp_server() -> Iterator[tuple[MailSink, int]]:
    """A real SMTP server (aiosmtpd) on a free loopback port: (its sink, its port)."""
    from aiosmtpd.controller import Controller

    sink = MailSink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()
