"""Rows that workers take under a lease: recording jobs (`Store.claim_next`) and outbox messages
(`Outbox.claim`).

A row is claimable while it waits (what waiting means is the table's: a queued job, a message due) or while the
lease of the worker that held it has run out (that worker died or lost the database). Taking a row writes the
taker's name, the lease's expiry and the next `lease_version`, conditional on the version read: two workers can
never both win a row, and an outcome recorded later is fenced by that version. On PostgreSQL the head of the
queue is read FOR UPDATE SKIP LOCKED, so concurrent workers take different rows instead of racing for one.

The leased table needs the columns `id`, `status`, `attempts`, `lease_owner`, `lease_expires_at` and
`lease_version`. Storage code only: features (the outbox) describe their table with a `LeasedRows`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session

T = TypeVar("T")

#: Times a claim reads the head of the queue again when another worker took it first.
CLAIM_TRIES = 5


def _no_values(now: datetime) -> dict[str, Any]:
    return {}


@dataclass(frozen=True, slots=True)
class LeasedRows:
    """A table whose rows workers take under leases, and how: `waiting(now)` is the condition of a row free to
    take, `held` the status of a taken one, `order_by` which claimable row goes first, `taken(now)` any values
    written besides the lease (a job's `started_at`)."""

    model: Any
    held: str
    waiting: Callable[[datetime], ColumnElement[bool]]
    order_by: Sequence[Any]
    taken: Callable[[datetime], dict[str, Any]] = field(default=_no_values)

    def claimable(self, now: datetime) -> ColumnElement[bool]:
        """Rows waiting, and rows whose holder's lease ran out before `now`."""
        m = self.model
        return or_(self.waiting(now), and_(m.status == self.held, m.lease_expires_at < now))

    def take(self, s: Session, row_id: str, version: int, owner: str, lease_s: float, now: datetime) -> bool:
        """Take the row in the caller's transaction if it is still claimable under the `version` read; False when
        another worker took it first."""
        m = self.model
        taken = s.execute(update(m).where(m.id == row_id, m.lease_version == version, self.claimable(now))
                          .values(status=self.held, attempts=m.attempts + 1, lease_owner=owner,
                                  lease_expires_at=now + timedelta(seconds=lease_s), lease_version=version + 1,
                                  **self.taken(now)))
        return bool(taken.rowcount)  # type: ignore[attr-defined]

    def claim_next(self, session: Callable[[], Session], owner: str, lease_s: float, clock: Callable[[], datetime],
                   then: Callable[[Session, str], T], where: Sequence[ColumnElement[bool]] = ()) -> T | None:
        """Take the first claimable row (also matching `where`) for `owner` with a lease of `lease_s`, and return
        `then(session, its id)`, run in the claim's transaction; None when none is claimable, or other workers
        kept taking the head of the queue (try again later)."""
        for _ in range(CLAIM_TRIES):
            now = clock()
            with session() as s, s.begin():
                m = self.model
                query = (select(m.id, m.lease_version).where(self.claimable(now), *where)
                         .order_by(*self.order_by).limit(1))
                if s.get_bind().dialect.name == "postgresql":
                    query = query.with_for_update(skip_locked=True)
                head = s.execute(query).first()
                if head is None:
                    return None
                if self.take(s, head[0], head[1], owner, lease_s, now):
                    return then(s, head[0])
        return None

    def claim(self, session: Callable[[], Session], row_id: str, owner: str, lease_s: float,
              clock: Callable[[], datetime], then: Callable[[Session, str], T]) -> T | None:
        """Take this row if it is claimable and return `then(session, row_id)` in the claim's transaction; None
        when another worker holds it (or it is no longer waiting)."""
        now = clock()
        with session() as s, s.begin():
            m = self.model
            version = s.scalar(select(m.lease_version).where(m.id == row_id, self.claimable(now)))
            if version is None or not self.take(s, row_id, version, owner, lease_s, now):
                return None
            return then(s, row_id)

    def renew(self, session: Callable[[], Session], row_id: str, owner: str, version: int, lease_s: float,
              clock: Callable[[], datetime]) -> bool:
        """Extend `owner`'s lease on a row it holds under the claim `version`; False when the lease is no longer
        its own (taken over after it ran out, or handed back)."""
        m = self.model
        with session() as s, s.begin():
            result = s.execute(update(m).where(m.id == row_id, m.lease_owner == owner, m.lease_version == version,
                                               m.status == self.held)
                               .values(lease_expires_at=clock() + timedelta(seconds=lease_s)))
            return bool(result.rowcount)  # type: ignore[attr-defined]
