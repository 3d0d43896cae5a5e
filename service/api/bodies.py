"""Request bodies of the JSON routes: the caller is authenticated before a byte of the body is read, the body is
counted while it streams and refused past its route's (small) limit, and its nesting is checked before any
parser sees it.

FastAPI reads and parses a route's JSON body before it runs the route's dependencies, authentication included:
without this guard an anonymous client could make the server read and parse any amount of JSON. The guard is a
plain ASGI middleware in front of the routes; it answers 401, 413 or 400 itself without reading further, and
hands a body it accepts to the route whole. The upload routes (multipart audio) are not guarded here: their
handlers authenticate through their dependencies before they read the form, and count the form against the audio
limits as it streams (service/api/recordings.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.auth import bearer_token
from service.errors import ServiceError, unauthorized, unavailable
from service.metrics import ERRORS

KIB = 1024


@dataclass(frozen=True, slots=True)
class BodyLimit:
    """The largest body (bytes) a route with a JSON body takes."""

    method: str
    path: re.Pattern[str]
    max_bytes: int


#: Each JSON route's limit, a few times the largest valid body (UTF-8 Chinese text takes 3 bytes a character).
JSON_LIMITS: tuple[BodyLimit, ...] = (
    BodyLimit("POST", re.compile(r"/v1/tickets"), 2 * KIB),
    BodyLimit("POST", re.compile(r"/v1/demo/calls"), 1 * KIB),
    BodyLimit("POST", re.compile(r"/v1/assess"), 32 * KIB),  # two texts of 2000 characters and a loan file
    BodyLimit("PUT", re.compile(r"/v1/customers/[^/]+/contact"), 4 * KIB),
    BodyLimit("POST", re.compile(r"/v1/followups/[^/]+/assign"), 1 * KIB),
    BodyLimit("POST", re.compile(r"/v1/followups/[^/]+/outcome"), 16 * KIB),  # a note of 2000 characters
)
#: Any other request with a body (none today): small until its route is given a limit above.
DEFAULT_MAX_BYTES = 4 * KIB
#: Routes whose bodies are multipart audio, bounded by their own limits (HUIFANG_AUDIO__*, HUIFANG_TRANSCRIPTIONS__*).
UPLOAD_PATHS = frozenset({"/v1/recordings", "/v1/audio/transcriptions"})
#: Deepest nesting of arrays and objects accepted: the deepest valid body (a loan file in a request) has 3.
MAX_DEPTH = 16
_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS"})


def body_limit(method: str, path: str) -> int:
    """The largest body `method path` takes (bytes)."""
    for limit in JSON_LIMITS:
        if limit.method == method and limit.path.fullmatch(path):
            return limit.max_bytes
    return DEFAULT_MAX_BYTES


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


def nesting_depth(body: bytes) -> int:
    """How deeply arrays and objects nest in the JSON text `body` (strings skipped; malformed text is measured
    all the same and refused later by the parser)."""
    brackets = _STRING.sub(b"", body).translate(None, delete=_NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        if byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


class JsonBodyGuard:
    """ASGI middleware: authenticate, then read a bounded body, for every request with a body outside the upload
    routes. The token registry is read from the app's state (`app.state.huifang.tokens`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _NO_BODY or scope["path"] in UPLOAD_PATHS:
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read(scope, receive)
        except ServiceError as e:
            ERRORS.labels(e.code).inc()
            # Answered before the body was read (or in the middle of it): the connection is not reused.
            response = JSONResponse({"detail": e.message, "code": e.code}, status_code=e.status,
                                    headers={**(e.headers or {}), "Connection": "close"})
            await response(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # a disconnect, for a route that waits for one

        await self.app(scope, replay, send)

    async def _read(self, scope: Scope, receive: Receive) -> bytes:
        """The body, once the caller is known and while it stays within its route's limit."""
        state = getattr(scope["app"].state, "huifang", None)
        if state is None:
            raise unavailable("starting", "the service is still starting")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if state.tokens.authenticate(bearer_token(headers)) is None:
            raise unauthorized()
        limit = body_limit(scope["method"], scope["path"])
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ServiceError("client_gone", "the client went away", 400)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if nesting_depth(body) > MAX_DEPTH:
            raise ServiceError("too_deep", f"JSON nested deeper than {MAX_DEPTH} levels", 400)
        return body


def _too_large(limit: int) -> ServiceError:
    return ServiceError("too_large", f"the request body exceeds this route's limit of {limit} bytes", 413)
