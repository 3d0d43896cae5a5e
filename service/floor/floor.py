"""The floor of one replica: the tiles of the calls it streams (folded from their events, raising alerts) and
the board of every call on every replica.

The live path feeds it (service/live/session.py): `open` when a call is registered, `observe` with each event
the call publishes, `close` when the call's connection is done. All three run on the event loop and never wait:
folding is a few comparisons, and what changes goes out as floor messages to this replica's board at once and to
the others through the bus (fire and forget, like the events hub). Tile snapshots are coalesced per call: at
most one per `tile_interval_s`, and never later than that after the change (a call's burst of assessment,
prompt, checklist and risk is one message). Alerts, starts and ends go at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from service.floor.alerts import Alert, AlertRule, raised
from service.floor.board import Board
from service.floor.bus import FloorBus, LocalFloorBus
from service.floor.tile import Tile, ended, fold, new_tile, with_alerts
from service.metrics import FLOOR_ALERTS, FLOOR_ALERTS_OPEN

log = logging.getLogger(__name__)

#: Seconds between checks that other replicas' calls are still held, and how many checks in a row must find a
#: call's claim gone (its replica died) before its tile is taken off the board.
LOST_CHECK_S = 5.0
LOST_AFTER = 3


@dataclass(eq=False)
class _Owned:
    """A call this replica streams: its tile, what was last sent of it, and the alerts it raised."""

    tile: Tile
    sent_seq: int = -1
    sent_at: float = float("-inf")  # loop time
    timer: asyncio.TimerHandle | None = None
    raised: set[str] = field(default_factory=set)


class Floor:
    """Every live call as a supervisor sees it. Used from the event loop only."""

    def __init__(self, rules: tuple[AlertRule, ...] = (), bus: FloorBus | None = None, replica: str = "local", *,
                 tile_interval_s: float = 0.2, keep_ended_s: float = 300.0, refresh_s: float = 30.0) -> None:
        self.rules = rules
        self.bus: FloorBus = bus or LocalFloorBus()
        self.replica = replica
        self.tile_interval_s = tile_interval_s
        self.refresh_s = refresh_s
        self.board = Board(keep_ended_s)
        self._owned: dict[str, _Owned] = {}
        self._missing: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # -- the calls of this replica (the live path) ------------------------------------------------------------

    def open(self, call_id: str, agent_id: str | None) -> None:
        """A call starts streaming here (a continued call id starts a fresh tile)."""
        previous = self._owned.pop(call_id, None)
        if previous is not None:
            self._forget(previous)
        owned = self._owned[call_id] = _Owned(new_tile(call_id, agent_id, time.time()))
        self._send(owned, "call_started")

    def observe(self, call_id: str, event: BaseModel) -> None:
        """An event of a call streaming here: fold it into the call's tile, raise the alerts it calls for."""
        owned = self._owned.get(call_id)
        if owned is None:
            return
        now = time.time()
        tile = fold(owned.tile, event, now)
        fresh = [a for a in raised(call_id, event, self.rules, now) if a.alert_id not in owned.raised]
        if fresh:
            owned.raised.update(a.alert_id for a in fresh)
            tile = with_alerts(tile, (*tile.alerts, *(a.alert_id for a in fresh)), now)
        if tile is owned.tile:
            return
        owned.tile = tile
        if fresh:
            for alert in fresh:
                FLOOR_ALERTS.labels(alert.rule).inc()
                FLOOR_ALERTS_OPEN.labels(alert.rule).inc()
                self._publish({"type": "alert", "call_id": call_id, "alert": alert.to_json()})
            self._send(owned, "tile")  # the tile listing the alerts goes with them, not an interval later
        elif tile.state == "ended":
            self._send(owned, "tile")
        else:
            self._soon(owned)

    def close(self, call_id: str) -> None:
        """The call's connection is done (ended, failed or dropped): its last tile goes out as `call_ended`."""
        owned = self._owned.pop(call_id, None)
        if owned is None:
            return
        owned.tile = ended(owned.tile, time.time())
        self._send(owned, "call_ended")
        self._forget(owned)

    def _forget(self, owned: _Owned) -> None:
        if owned.timer is not None:
            owned.timer.cancel()
        for alert_id in owned.tile.alerts:  # open alerts of calls streaming here: these no longer are
            alert = self.board.alerts.get(alert_id)
            if alert is not None:
                FLOOR_ALERTS_OPEN.labels(alert.rule).dec()

    def _soon(self, owned: _Owned) -> None:
        """Send the tile now if none went out in the last `tile_interval_s`, else once that has passed."""
        if owned.timer is not None:
            return
        loop = asyncio.get_running_loop()
        wait = owned.sent_at + self.tile_interval_s - loop.time()
        if wait <= 0:
            self._send(owned, "tile")
        else:
            owned.timer = loop.call_later(wait, self._flush, owned)

    def _flush(self, owned: _Owned) -> None:
        owned.timer = None
        if self._owned.get(owned.tile.call_id) is owned and owned.sent_seq != owned.tile.seq:
            self._send(owned, "tile")

    def _send(self, owned: _Owned, kind: str) -> None:
        if owned.timer is not None:
            owned.timer.cancel()
            owned.timer = None
        owned.sent_seq = owned.tile.seq
        owned.sent_at = asyncio.get_running_loop().time()
        tile = owned.tile
        self._publish({"type": kind, "call_id": tile.call_id, "tile": tile.to_json(time.time())})

    def _publish(self, message: dict[str, Any]) -> None:
        self.board.apply(message, self.replica, time.time())
        self.bus.publish(message)

    # -- acknowledgements (any replica) ----------------------------------------------------------------------

    def acknowledge(self, alert_id: str, by: str) -> tuple[Alert, bool] | None:
        """Acknowledge an alert of any call on the floor: (the alert, whether this acknowledged it); None when no
        alert has that id. An alert acknowledged already stays as it was."""
        alert = self.board.alerts.get(alert_id)
        if alert is None:
            return None
        if not alert.open:
            return alert, False
        acked = alert.acknowledged(by, time.time())
        message = {"type": "alert_ack", "call_id": acked.call_id, "alert": acked.to_json()}
        self._publish(message)
        self._acked_here(acked)
        return acked, True

    def _acked_here(self, alert: Alert) -> None:
        """An acknowledgement reached the replica streaming the call: its tile lists the alert no more."""
        owned = self._owned.get(alert.call_id)
        if owned is None or alert.alert_id not in owned.tile.alerts:
            return
        FLOOR_ALERTS_OPEN.labels(alert.rule).dec()
        owned.tile = with_alerts(owned.tile, tuple(a for a in owned.tile.alerts if a != alert.alert_id), time.time())
        self._send(owned, "tile")

    def receive(self, message: dict[str, Any], replica: str) -> None:
        """A message of another replica (through the bus)."""
        try:
            self.board.apply(message, replica, time.time())
            if message.get("type") == "alert_ack":
                self._acked_here(Alert.from_json(message["alert"]))
        except (KeyError, TypeError, ValueError):
            log.warning("floor: a malformed message from replica %s; skipped", replica, exc_info=True)

    # -- lifecycle -----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.bus.start(self.receive)
        self._tasks = [asyncio.create_task(self._keep())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.board.close_all()
        await self.bus.stop()

    async def _keep(self) -> None:
        """Every few seconds: forget calls ended a while ago, take off the board the calls of replicas that
        died, and (now and then) republish this replica's tiles and open alerts for replicas starting up."""
        refreshed = time.monotonic()
        while True:
            await asyncio.sleep(min(LOST_CHECK_S, self.refresh_s))
            self.board.sweep(time.time())
            if self.bus.shared:
                with suppress(Exception):
                    await self._check_lost()
                if time.monotonic() - refreshed >= self.refresh_s:
                    refreshed = time.monotonic()
                    self._refresh()

    def _refresh(self) -> None:
        for owned in list(self._owned.values()):
            tile = owned.tile
            self.bus.publish({"type": "tile", "call_id": tile.call_id, "tile": tile.to_json(time.time())})
            for alert_id in tile.alerts:
                if (alert := self.board.alerts.get(alert_id)) is not None:
                    self.bus.publish({"type": "alert", "call_id": tile.call_id, "alert": alert.to_json()})

    async def _check_lost(self) -> None:
        others = [cid for cid, t in self.board.tiles.items()
                  if t.owner != self.replica and t.ended_s is None and cid not in self._owned]
        self._missing = {cid: n for cid, n in self._missing.items() if cid in others}
        if not others:
            return
        for call_id, held in zip(others, await self.bus.held(others), strict=True):
            self._missing[call_id] = 0 if held else self._missing.get(call_id, 0) + 1
            if self._missing[call_id] >= LOST_AFTER:
                log.warning("floor: call %s is held by no replica any more and never ended; off the board", call_id)
                self._missing.pop(call_id, None)
                self.board.remove(call_id, time.time())
