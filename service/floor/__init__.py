"""The supervisors' live floor: every call streaming on any replica as a tile, and alerts when an answer is worth
a supervisor's eye (docs/floor.md).

- `tile`: the `Tile` record of one call and the pure fold of its protocol events into it;
- `alerts`: the rules of configs/alerts.yaml and the pure check of an event against them;
- `board`: the tiles and alerts of the whole floor as one replica knows them, and the wallboards reading it;
- `bus`: how replicas tell each other (one Redis Stream, or nobody when alone);
- `floor`: `Floor`, fed by the live path (service/live/session.py), which ties the four together.

The routes are service/api/floor.py.
"""

from service.floor.alerts import Alert, AlertRule, AlertsError, load_alert_rules
from service.floor.board import Board, FloorSubscription
from service.floor.bus import FloorBus, LocalFloorBus, RedisFloorBus
from service.floor.floor import Floor
from service.floor.tile import Tile, fold

#: What a ticket for the floor's websocket names instead of a call (`POST /v1/tickets {"scope": "live"}`): not a
#: valid call id, so such a ticket never opens a call's socket, nor a call's ticket the floor's.
LIVE_TICKET_SCOPE = "*live"

__all__ = ["LIVE_TICKET_SCOPE", "Alert", "AlertRule", "AlertsError", "Board", "Floor", "FloorBus",
           "FloorSubscription", "LocalFloorBus", "RedisFloorBus", "Tile", "fold", "load_alert_rules"]
