"""The board: every live call of the service as this replica knows it, its open alerts, and the wallboards
(`/v1/live/events`) reading it.

A board is fed floor messages (`call_started`, `tile`, `alert`, `alert_ack`, `call_ended`; docs/floor.md), its
own replica's at once and the others' as they come through Redis, and keeps the last tile of each call and every
alert. Each message it takes is handed on to the wallboards, each through a bounded queue: one that stops
reading is dropped, never slowing the calls or the other wallboards (like the hub's subscribers). Used from the
event loop only.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from service.floor.alerts import Alert
from service.live.hub import Feed

#: Messages queued per wallboard before it counts as not reading (a few minutes of a busy floor).
SUBSCRIBER_QUEUE = 2000


@dataclass(eq=False)
class FloorSubscription(Feed):
    """One wallboard's feed of serialised messages; `None` ends its stream (the server is stopping). An
    overflowed one is closed by its socket's loop with 4408."""

    queue: asyncio.Queue[str | None] = field(default_factory=lambda: asyncio.Queue(maxsize=SUBSCRIBER_QUEUE))


@dataclass
class BoardTile:
    """The last tile of a call (its JSON form), which replica streams it, and when it started and ended (wall
    clock seconds; `ended_s` None while the call is live)."""

    data: dict[str, Any]
    owner: str
    started_s: float
    ended_s: float | None = None

    def shown(self, now_s: float) -> dict[str, Any]:
        """The tile as served now: a live call's duration counted to `now_s`."""
        if self.ended_s is not None or self.data.get("state") == "ended":
            return self.data
        return {**self.data, "duration_s": round(max(0.0, now_s - self.started_s), 1)}


def _seconds(iso_time: Any, default: float) -> float:
    try:
        return datetime.fromisoformat(str(iso_time)).timestamp()
    except ValueError:
        return default


class Board:
    """The calls and alerts of the whole floor, and the wallboards watching it."""

    def __init__(self, keep_ended_s: float = 300.0) -> None:
        self.keep_ended_s = keep_ended_s
        self.tiles: dict[str, BoardTile] = {}
        self.alerts: dict[str, Alert] = {}
        self._subscribers: set[FloorSubscription] = set()

    # -- reading ----------------------------------------------------------------------------------------------

    def calls(self, now_s: float) -> list[dict[str, Any]]:
        """Every call's tile, the riskiest first (then the longest running)."""
        tiles = [t.shown(now_s) for t in self.tiles.values()]
        return sorted(tiles, key=lambda t: (-(t["risk"]["score"] if t.get("risk") else -1.0),
                                            str(t.get("started_at", ""))))

    def open_alerts(self) -> list[dict[str, Any]]:
        """The alerts not yet acknowledged, oldest first."""
        return [a.to_json() for a in sorted(self.alerts.values(), key=lambda a: a.at) if a.open]

    def snapshot(self, now_s: float) -> dict[str, Any]:
        """What a wallboard gets first: `{calls, alerts}` as `GET /v1/live/calls` answers."""
        return {"calls": self.calls(now_s), "alerts": self.open_alerts()}

    def subscribe(self) -> FloorSubscription:
        """A wallboard: the caller sends `snapshot` first, then every message the board takes from now on."""
        sub = FloorSubscription()
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: FloorSubscription) -> None:
        self._subscribers.discard(sub)

    def close_all(self) -> None:
        """End every wallboard's stream (the server is stopping)."""
        for sub in self._subscribers:
            sub.put(None)
        self._subscribers.clear()

    # -- writing ----------------------------------------------------------------------------------------------

    def apply(self, message: dict[str, Any], owner: str, now_s: float) -> None:
        """Take one floor message from replica `owner` and hand it on to the wallboards (with the call's tile
        `seq`, the time a page measures its lag by being its own `sent_at`)."""
        kind, call_id = message.get("type"), str(message.get("call_id", ""))
        if kind in ("call_started", "tile", "call_ended"):
            data = dict(message["tile"])
            # An acknowledgement may overtake the owner's tile on the way here: it stays acknowledged.
            data["alerts"] = [a for a in data.get("alerts", ()) if a not in self.alerts or self.alerts[a].open]
            started = _seconds(data.get("started_at"), now_s)
            ended = _seconds(data.get("updated_at"), now_s) if data.get("state") == "ended" else None
            self.tiles[call_id] = BoardTile(data, owner, started, ended)
            message = {**message, "tile": data}
        elif kind in ("alert", "alert_ack"):
            alert = Alert.from_json(message["alert"])
            known = self.alerts.get(alert.alert_id)
            if kind == "alert" and known is not None and not known.open:
                return  # read again after its acknowledgement (a replica rebuilding from the history)
            self.alerts[alert.alert_id] = alert
            tile = self.tiles.get(call_id)
            if kind == "alert_ack" and tile is not None and alert.alert_id in tile.data.get("alerts", ()):
                tile.data = {**tile.data, "alerts": [a for a in tile.data["alerts"] if a != alert.alert_id]}
        else:
            return
        tile = self.tiles.get(call_id)
        self._fan_out({**message, "seq": tile.data.get("seq", 0) if tile else 0})

    def remove(self, call_id: str, now_s: float) -> None:
        """A call whose replica died without ending it: its tile and alerts go, wallboards are told
        (`call_ended` with `lost`)."""
        tile = self.tiles.pop(call_id, None)
        for alert_id in [a for a, alert in self.alerts.items() if alert.call_id == call_id]:
            del self.alerts[alert_id]
        if tile is not None:
            data = {**tile.data, "state": "ended"}
            self._fan_out({"type": "call_ended", "call_id": call_id, "tile": data, "lost": True,
                           "seq": data.get("seq", 0)})

    def sweep(self, now_s: float) -> list[str]:
        """Forget calls ended more than `keep_ended_s` ago, and their alerts; returns their ids."""
        gone = [cid for cid, t in self.tiles.items()
                if t.ended_s is not None and now_s - t.ended_s >= self.keep_ended_s]
        for call_id in gone:
            del self.tiles[call_id]
        for alert_id in [a for a, alert in self.alerts.items() if alert.call_id not in self.tiles]:
            del self.alerts[alert_id]
        return gone

    def _fan_out(self, message: dict[str, Any]) -> None:
        if not self._subscribers:
            return
        text = json.dumps(message, ensure_ascii=False)
        for sub in list(self._subscribers):
            sub.put(text)
