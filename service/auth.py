"""Access control: bearer tokens with roles, stored only as SHA-256 hashes.

Roles: `ingest` (a phone switch: streams audio, uploads recordings), `agent` (watches and reads the calls assigned
to their `agent_id`), `supervisor` (every call and report), `admin` (everything, plus tokens, deletion and raw
text). Tokens come from a YAML file (`HUIFANG_AUTH__TOKENS_FILE`, entries made by `huifang token`); without
one, `huifang serve` makes a development admin token and prints it once.

Clients send `Authorization: Bearer TOKEN`; a token is never read from a URL (URLs end up in access logs and
browser history). Where a browser cannot set a header (a websocket), it sends a ticket instead: `?ticket=`, minted
by `POST /v1/tickets` with the token in the header, valid for one socket of one call within 60 s, carrying the
token's role. A
missing or unknown token is 401 (websocket close 4401), a known token of the wrong role or another agent's call is
403 (close 4403). The routes' dependencies are in service/api/deps.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import yaml

from service.errors import forbidden, unauthorized
from service.ids import id_problem
from service.privacy import private_file

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
        if entry.get("agent_id") and (problem := id_problem(str(entry["agent_id"]), "agent")) is not None:
            raise AuthError(f"{path}: token {entry['name']}: {problem}")
        out[digest] = Principal(str(entry["name"]), cast(Role, entry["role"]),
                                str(entry["agent_id"]) if entry.get("agent_id") else None)
    return out


def write_tokens_file(path: Path, tokens: dict[str, tuple[Role, str | None]]) -> None:
    """A tokens file for `{token: (role, agent_id)}` (tests, benchmarks, `huifang token`)."""
    entries = [{"name": f"{role}-{i}", "role": role, "sha256": hash_token(token),
                **({"agent_id": agent_id} if agent_id else {})}
               for i, (token, (role, agent_id)) in enumerate(tokens.items())]
    path.write_text(yaml.safe_dump({"tokens": entries}, allow_unicode=True), encoding="utf-8")


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of a request: `Authorization: Bearer TOKEN`."""
    value = headers.get("authorization")
    if isinstance(value, str) and value.lower().startswith("bearer "):
        return value[7:].strip()
    return None


#: Seconds a ticket is valid after it is minted.
TICKET_TTL_S = 60.0


class TicketBook:
    """Short-lived credentials for URLs: a ticket names one call and the principal that minted it, expires after
    TICKET_TTL_S, and is an HMAC over both with a key every replica shares (so any replica accepts it). A ticket
    opens one socket: once redeemed it is refused until it expires (a URL copied from a log or a browser's
    history opens nothing). The redeemed ones are remembered per process, so behind several replicas a ticket
    opens at most one socket on each, for at most its 60 s."""

    def __init__(self, key: bytes, ttl_s: float = TICKET_TTL_S) -> None:
        self._key = key
        self.ttl_s = ttl_s
        #: Signatures of redeemed tickets and when each expires (forgotten once it has).
        self._redeemed: dict[bytes, float] = {}

    def mint(self, principal: Principal, call_id: str, now: float | None = None) -> str:
        expires = (time.time() if now is None else now) + self.ttl_s
        body = json.dumps({"n": principal.name, "r": principal.role, "a": principal.agent_id, "c": call_id,
                           "e": round(expires, 3), "i": secrets.token_hex(8)}, separators=(",", ":")).encode()
        return f"{_b64(body)}.{_b64(hmac.new(self._key, body, hashlib.sha256).digest())}"

    def redeem(self, ticket: str, call_id: str, now: float | None = None) -> Principal | None:
        """The principal of a valid, unexpired ticket for `call_id`; None otherwise."""
        try:
            body_text, sig_text = ticket.split(".", 1)
            body = base64.urlsafe_b64decode(body_text + "=" * (-len(body_text) % 4))
            sig = base64.urlsafe_b64decode(sig_text + "=" * (-len(sig_text) % 4))
        except (ValueError, TypeError):
            return None
        if not hmac.compare_digest(sig, hmac.new(self._key, body, hashlib.sha256).digest()):
            return None
        data = json.loads(body)
        at = time.time() if now is None else now
        expires = float(data.get("e", 0))
        if data.get("c") != call_id or expires < at or data.get("r") not in ROLES:
            return None
        self._redeemed = {k: v for k, v in self._redeemed.items() if v >= at}  # a minute's worth at most
        if sig in self._redeemed:
            return None
        self._redeemed[sig] = expires
        return Principal(str(data["n"]), cast(Role, data["r"]), data.get("a"))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def load_or_create_secret(path: Path) -> bytes:
    """32 random bytes kept at `path` (0600), made on first use: the ticket key replicas share."""
    key = private_file(path, lambda: secrets.token_bytes(32))
    if len(key) < 32:
        raise AuthError(f"{path}: a ticket key needs at least 32 bytes")
    return key


def authenticate(registry: TokenRegistry, headers: Mapping[str, str], query: Mapping[str, str],
                 roles: tuple[Role, ...], token: str | None = None, tickets: TicketBook | None = None,
                 call_id: str | None = None) -> Principal:
    """The caller's principal, which must hold one of `roles` (admin always may): from the `Authorization`
    header, from `token` (one the protocol carried: Twilio's custom parameters), or, with `tickets` and
    `call_id`, from a `?ticket=` minted for that call. Raises `ServiceError` (401 / 4401, 403 / 4403)."""
    principal = registry.authenticate(bearer_token(headers) or token)
    ticket = query.get("ticket")
    if principal is None and tickets is not None and call_id is not None and isinstance(ticket, str):
        principal = tickets.redeem(ticket, call_id)
    if principal is None:
        raise unauthorized()
    if principal.role not in roles and principal.role != "admin":
        raise forbidden(f"the {principal.role} role may not do this")
    return principal
