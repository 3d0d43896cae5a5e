"""Access control: bearer tokens with roles, stored only as SHA-256 hashes.

Roles: `ingest` (a phone switch: streams audio, uploads recordings), `agent` (watches and reads the calls assigned
to their `agent_id`), `supervisor` (every call and report), `admin` (everything, plus tokens, deletion and raw
text). Tokens come from a YAML file (`HUIFANG_AUTH__TOKENS_FILE`) and from the database (`POST /v1/tokens`);
with neither, `huifang serve` makes a development admin token and prints it once.

HTTP clients send `Authorization: Bearer TOKEN`; browsers may use `?token=` where they cannot set headers
(websockets, `<audio src>`). A missing or unknown token is 401 (websocket close 4401), a known token of the
wrong role or another agent's call is 403 (close 4403).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, cast

import yaml
from fastapi import Depends, HTTPException, Request
from starlette.websockets import WebSocket

Role = Literal["ingest", "agent", "supervisor", "admin"]
ROLES: tuple[Role, ...] = ("ingest", "agent", "supervisor", "admin")


class AuthError(ValueError):
    """A tokens file that cannot be used."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a token belongs to."""

    name: str
    role: Role
    agent_id: str | None = None

    def may_see(self, call_agent_id: str | None) -> bool:
        """Whether this principal may read a call assigned to `call_agent_id`."""
        if self.role in ("supervisor", "admin"):
            return True
        return self.role == "agent" and self.agent_id is not None and call_agent_id == self.agent_id


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return "hf_" + secrets.token_urlsafe(24)


class TokenRegistry:
    """Token hashes -> principals; lookups compare hashes in constant time."""

    def __init__(self) -> None:
        self._by_hash: dict[str, Principal] = {}

    def __len__(self) -> int:
        return len(self._by_hash)

    def add(self, token_hash: str, principal: Principal) -> None:
        self._by_hash[token_hash] = principal

    def replace(self, entries: dict[str, Principal]) -> None:
        self._by_hash = dict(entries)

    def authenticate(self, token: str | None) -> Principal | None:
        if not token:
            return None
        digest = hash_token(token)
        for known, principal in self._by_hash.items():
            if hmac.compare_digest(known, digest):
                return principal
        return None


def load_tokens_file(path: Path) -> dict[str, Principal]:
    """`tokens: [{name, role, sha256, agent_id?}]` from YAML."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise AuthError(f"cannot read tokens file {path}: {e}") from e
    entries = raw.get("tokens") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise AuthError(f"{path}: expected `tokens:` with a list of {{name, role, sha256, agent_id}}")
    out: dict[str, Principal] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or entry.get("role") not in ROLES or not entry.get("name"):
            raise AuthError(f"{path}: token {i + 1} needs a name and a role ({', '.join(ROLES)})")
        digest = str(entry.get("sha256", "")).lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise AuthError(f"{path}: token {entry['name']}: sha256 must be the 64 hex digits of the token's hash")
        if entry["role"] == "agent" and not entry.get("agent_id"):
            raise AuthError(f"{path}: agent token {entry['name']} needs an agent_id")
        out[digest] = Principal(str(entry["name"]), cast(Role, entry["role"]),
                                str(entry["agent_id"]) if entry.get("agent_id") else None)
    return out


def write_tokens_file(path: Path, tokens: dict[str, tuple[Role, str | None]]) -> None:
    """A tokens file for `{token: (role, agent_id)}` (tests, benchmarks, `huifang token`)."""
    entries = [{"name": f"{role}-{i}", "role": role, "sha256": hash_token(token),
                **({"agent_id": agent_id} if agent_id else {})}
               for i, (token, (role, agent_id)) in enumerate(tokens.items())]
    path.write_text(yaml.safe_dump({"tokens": entries}, allow_unicode=True), encoding="utf-8")


def _bearer(headers: dict[str, str] | object, query: dict[str, str] | object) -> str | None:
    value = getattr(headers, "get", lambda _k: None)("authorization")
    if isinstance(value, str) and value.lower().startswith("bearer "):
        return value[7:].strip()
    token = getattr(query, "get", lambda _k: None)("token")
    return token if isinstance(token, str) else None


def principal_of(request: Request) -> Principal | None:
    registry: TokenRegistry = request.app.state.tokens
    return registry.authenticate(_bearer(request.headers, request.query_params))


def require(*roles: Role) -> object:
    """Dependency: the caller's principal, which must hold one of `roles` (admin always may)."""

    def dependency(request: Request) -> Principal:
        principal = principal_of(request)
        if principal is None:
            raise HTTPException(401, "a valid token is required (Authorization: Bearer TOKEN)",
                                headers={"WWW-Authenticate": "Bearer"})
        if principal.role not in roles and principal.role != "admin":
            raise HTTPException(403, f"the {principal.role} role may not do this")
        return principal

    return Depends(dependency)


#: Annotated dependencies for the common role sets.
Viewer = Annotated[Principal, require("agent", "supervisor")]
Supervisor = Annotated[Principal, require("supervisor")]
Admin = Annotated[Principal, require()]
Ingest = Annotated[Principal, require("ingest", "supervisor")]


class WsRefused(Exception):
    """A websocket that may not proceed: close with `code` after an error event."""

    def __init__(self, code: int, error: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.error = error
        self.message = message


def ws_principal(ws: WebSocket, roles: tuple[Role, ...], token: str | None = None) -> Principal:
    """The principal of a websocket (header, `?token=`, or `token` given by the protocol), or WsRefused."""
    registry: TokenRegistry = ws.app.state.tokens
    principal = registry.authenticate(token or _bearer(ws.headers, ws.query_params))
    if principal is None:
        raise WsRefused(4401, "unauthorized", "a valid token is required (Authorization header or ?token=)")
    if principal.role not in roles and principal.role != "admin":
        raise WsRefused(4403, "forbidden", f"the {principal.role} role may not use this socket")
    return principal
