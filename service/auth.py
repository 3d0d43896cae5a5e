"""Access control: bearer tokens with roles, stored only as SHA-256 hashes.

Roles: `ingest` (a phone switch: streams audio, uploads recordings), `agent` (watches and reads the calls assigned
to their `agent_id`), `supervisor` (every call and report), `admin` (everything, plus tokens, deletion and raw
text). Tokens come from a YAML file (`HUIFANG_AUTH__TOKENS_FILE`, entries made by `huifang token`); without
one, `huifang serve` makes a development admin token and prints it once.

HTTP clients send `Authorization: Bearer TOKEN`; browsers may use `?token=` where they cannot set headers
(websockets, `<audio src>`). A missing or unknown token is 401 (websocket close 4401), a known token of the
wrong role or another agent's call is 403 (close 4403). The routes' dependencies are in service/api/deps.py.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import yaml

from service.errors import forbidden, unauthorized

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


def bearer_token(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The token of a request: `Authorization: Bearer TOKEN`, else `?token=`."""
    value = headers.get("authorization")
    if isinstance(value, str) and value.lower().startswith("bearer "):
        return value[7:].strip()
    token = query.get("token")
    return token if isinstance(token, str) else None


def authenticate(registry: TokenRegistry, headers: Mapping[str, str], query: Mapping[str, str],
                 roles: tuple[Role, ...], token: str | None = None) -> Principal:
    """The caller's principal, which must hold one of `roles` (admin always may). `token`, when given, is one
    the protocol carried (Twilio's custom parameters). Raises `ServiceError` (401 / 4401, 403 / 4403)."""
    principal = registry.authenticate(token or bearer_token(headers, query))
    if principal is None:
        raise unauthorized()
    if principal.role not in roles and principal.role != "admin":
        raise forbidden(f"the {principal.role} role may not do this")
    return principal
