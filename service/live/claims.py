"""Who may start a live call: one replica per call id, a token's maximum of live calls, the demo replays' cap.

`CallClaims` is what `LiveCalls` and the demo player ask; `LocalClaims` keeps the counts of this process (the
single-process default), `service.live.redis_bus.RedisClaims` keeps them in Redis for every replica.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from service.errors import ServiceError
from service.protocol import CloseCode


def call_in_progress(call_id: str) -> ServiceError:
    return ServiceError("call_in_progress", f"call {call_id} is already streaming", 409, CloseCode.CALL_IN_PROGRESS)


def too_many_calls() -> ServiceError:
    return ServiceError("too_many_calls", "this token already streams its maximum number of calls", 429,
                        CloseCode.TOO_MANY_CALLS)


def too_many_demos(cap: int) -> ServiceError:
    return ServiceError("too_many_demos", f"{cap} demo call(s) already playing on this service; try again when one "
                        "has ended", 429, CloseCode.TOO_MANY_CALLS)


class CallClaims(Protocol):
    """Claims on live calls. `claim*` raise `ServiceError` when the call may not start; `release*` never fail
    (a claim that cannot be released expires)."""

    async def claim(self, call_id: str, owner: str | None, max_per_owner: int) -> None:
        """Take `call_id` for this replica, counted against `owner`'s `max_per_owner` live calls (None: not
        counted). Raises `call_in_progress` or `too_many_calls`."""

    def release(self, call_id: str, owner: str | None) -> None:
        """The call ended."""

    async def claim_demo(self, call_id: str, cap: int) -> None:
        """Count a demo replay against `cap` demos playing at once. Raises `too_many_demos`."""

    def release_demo(self, call_id: str) -> None:
        """The demo replay ended."""

    async def start(self) -> None:
        """Start keeping claims alive (none for local claims)."""

    async def stop(self) -> None:
        """Release every claim this process holds."""


@dataclass
class LocalClaims:
    """Claims held in this process only: right for one replica, and the fallback while Redis is unreachable."""

    calls: set[str] = field(default_factory=set)
    by_owner: dict[str, set[str]] = field(default_factory=dict)
    demos: set[str] = field(default_factory=set)

    def check(self, call_id: str, owner: str | None, max_per_owner: int) -> None:
        """Raise unless the claim is possible here."""
        if call_id in self.calls:
            raise call_in_progress(call_id)
        if owner is not None and len(self.by_owner.get(owner, ())) >= max_per_owner:
            raise too_many_calls()

    def add(self, call_id: str, owner: str | None) -> None:
        self.calls.add(call_id)
        if owner is not None:
            self.by_owner.setdefault(owner, set()).add(call_id)

    async def claim(self, call_id: str, owner: str | None, max_per_owner: int) -> None:
        self.check(call_id, owner, max_per_owner)
        self.add(call_id, owner)

    def held(self) -> list[tuple[str, str | None]]:
        """(call id, owner) of every call claimed here."""
        owners = {cid: owner for owner, held in self.by_owner.items() for cid in held}
        return [(call_id, owners.get(call_id)) for call_id in self.calls]

    def release(self, call_id: str, owner: str | None) -> None:
        self.calls.discard(call_id)
        if owner is not None:
            held = self.by_owner.get(owner)
            if held is not None:
                held.discard(call_id)
                if not held:
                    del self.by_owner[owner]

    async def claim_demo(self, call_id: str, cap: int) -> None:
        if len(self.demos) >= cap:
            raise too_many_demos(cap)
        self.demos.add(call_id)

    def release_demo(self, call_id: str) -> None:
        self.demos.discard(call_id)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None
