"""One error family for every way huifang refuses or cannot serve a request.

A `ServiceError` carries a stable `code` (`bad_start`, `call_in_progress`, `unauthorized`, ...), a message for the
person reading it, the HTTP status an HTTP route answers with, and the close code a websocket closes with after
an `error` event. Routes raise it; the app's exception handler (HTTP) and the live socket runner (websocket)
turn it into the response, so no route formats errors by hand.
"""

from __future__ import annotations

from service.protocol import CloseCode


class ServiceError(Exception):
    """A refusal with `code`, `message`, HTTP `status` and websocket `close_code`."""

    def __init__(self, code: str, message: str, status: int = 400, close_code: int = CloseCode.BAD_REQUEST,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.close_code = close_code
        self.headers = headers

    def __repr__(self) -> str:
        return f"ServiceError({self.code!r}, {self.message!r}, status={self.status}, close_code={self.close_code})"


def unauthorized() -> ServiceError:
    """No token, or one nobody issued."""
    return ServiceError("unauthorized", "a valid token is required (Authorization: Bearer TOKEN; websockets from a "
                        "browser: ?ticket= from POST /v1/tickets)", 401,
                        CloseCode.UNAUTHORIZED, {"WWW-Authenticate": "Bearer"})


def forbidden(message: str) -> ServiceError:
    """A known token that may not do this (its role, or another agent's call)."""
    return ServiceError("forbidden", message, 403, CloseCode.FORBIDDEN)


def bad_call_id(problem: str | None = None) -> ServiceError:
    """A call id that is not 1-128 letters, digits, '.', '_', ':' or '-', or looks like a personal number
    (service/ids.py: it names files, URLs and log lines)."""
    return bad_id("call", problem)


def bad_id(kind: str, problem: str | None = None) -> ServiceError:
    """An id of `kind` (call, agent, customer, loan) that service/ids.py refuses: 422 / 4400, code `bad_{kind}_id`."""
    return ServiceError(f"bad_{kind}_id", problem or f"{kind}_id: letters, digits, '.', '_', ':' or '-', starting "
                        "with a letter or digit, and no personal number", 422, CloseCode.BAD_REQUEST)


def unavailable(code: str, message: str) -> ServiceError:
    """A part of the service that is down (the speech model, the database): 503 / 4503."""
    return ServiceError(code, message, 503, CloseCode.UNAVAILABLE)
