"""Fan-out of a call's events to read-only subscribers (`/v1/calls/{call_id}/events`: agent screens).

`EventBus` is what the live calls and the events socket need of it; `CallHub` is the in-process bus of a single
replica (the default), `service.live.redis_bus.RedisHub` the one shared by replicas through Redis
(`HUIFANG_REDIS_URL`). Both behave the same to a subscriber.

Every event a live call emits is published here. A subscriber gets the call's history first (everything but
partials, so a console opened mid-call shows the transcript and prompts so far), then live events, and the
stream ends after `end`. A subscriber may connect before the call starts and waits for it. Each subscriber has a
bounded queue: one that stops reading is dropped, never slowing the call or other subscribers. Ended calls keep
their history for a while (`keep_ended`) so a screen opened just after the call still shows it.

Events from outside the call (a supervisor's note) are `post`ed: from any replica, into the call's feed on the
replica that streams it, so they sit in its history in order like the call's own events.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol

#: Events per subscriber queued before it counts as not reading.
SUBSCRIBER_QUEUE = 1000


@dataclass(eq=False)
class Feed:
    """One reader's bounded queue of serialised messages; `None` ends its stream. A reader that falls
    `SUBSCRIBER_QUEUE` behind is marked `overflowed` and gets nothing more: the publisher never waits for it."""

    queue: asyncio.Queue[str | None] = field(default_factory=lambda: asyncio.Queue(maxsize=SUBSCRIBER_QUEUE))
    overflowed: bool = False

    def put(self, text: str | None) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.overflowed = True  # the queue is full, so the sender is not waiting: it sees this next


@dataclass(eq=False, kw_only=True)
class Subscription(Feed):
    """One subscriber's feed of a call's serialised events; `None` marks the end of the stream."""

    call_id: str
    #: An agent's screen may watch only the calls assigned to that agent; None may watch any call.
    agent_id: str | None = None
    #: Set when the call turned out to be someone else's: the stream ends without its events.
    forbidden: bool = False
    #: Set once the call is known to have started (it may have ended since).
    started: bool = False
    #: Set while the subscriber has been told its events are interrupted (a shared bus unreachable).
    interrupted: bool = False


@dataclass(frozen=True, slots=True)
class Streaming:
    """A call that a replica sharing the bus streams now, and its agent (None: the call named none)."""

    call_id: str
    agent_id: str | None


class BusUnavailable(Exception):
    """The bus cannot answer now (its Redis is unreachable)."""


class EventBus(Protocol):
    """Where a live call's events go and where its screens read them. `open`, `publish` and `close` are called
    from the event loop by the call and never wait; `subscribe` returns at once and fills the subscription's
    queue as events come."""

    def open(self, call_id: str, agent_id: str | None = None) -> None:
        """A call starts streaming (a restarted call id starts a fresh history); `agent_id` is its agent."""

    def publish(self, call_id: str, text: str, kind: str) -> None:
        """An event of the call, already serialised; `kind` is its type (partials are not kept as history)."""

    def close(self, call_id: str) -> None:
        """The call is over: end every subscriber's stream; its history stays a while for late screens."""

    def subscribe(self, call_id: str, agent_id: str | None = None) -> Subscription:
        """Watch a call: history, then live events, then the end of the stream (`None`). With `agent_id`, only a
        call assigned to that agent (otherwise the subscription comes back `forbidden`)."""

    async def streaming(self, call_id: str) -> Streaming | None:
        """The call if some replica streams it now, else None. Raises `BusUnavailable`."""

    async def post(self, call_id: str, text: str, kind: str) -> bool:
        """An event from outside the call (a supervisor's note), posted on any replica: it joins the call's feed
        (live and history) on the replica that streams the call. False when no replica streams it. Raises
        `BusUnavailable`."""

    def unsubscribe(self, sub: Subscription) -> None:
        """The subscriber went away."""

    async def start(self) -> None:
        """Start the bus's background work (none for the in-process hub)."""

    async def stop(self) -> None:
        """Stop it, after delivering what the calls published."""

    async def check(self) -> str | None:
        """Why the bus cannot carry events now (readiness), or None when it can."""


@dataclass(eq=False)
class _Feed:
    history: list[str] = field(default_factory=list)
    subscribers: set[Subscription] = field(default_factory=set)
    live: bool = False
    ended: bool = False
    agent_id: str | None = None


class CallHub:
    """The in-process `EventBus`: call event feeds of this process only. Used from the event loop only."""

    def __init__(self, history_limit: int = 5000, keep_ended: int = 50) -> None:
        self.history_limit = history_limit
        self.keep_ended = keep_ended
        self._feeds: OrderedDict[str, _Feed] = OrderedDict()

    def open(self, call_id: str, agent_id: str | None = None) -> None:
        """A call starts streaming (a restarted call id starts a fresh history); `agent_id` is its agent."""
        feed = self._feeds.get(call_id)
        if feed is None or feed.ended:
            waiting = feed.subscribers if feed is not None and not feed.ended else set()
            feed = _Feed(subscribers=waiting)
            self._feeds[call_id] = feed
        feed.live = True
        feed.agent_id = agent_id
        for sub in list(feed.subscribers):
            sub.started = True
            if sub.agent_id is not None and sub.agent_id != agent_id:
                sub.forbidden = True  # an agent waited for a call that is not theirs
                sub.put(None)
                feed.subscribers.discard(sub)
        self._feeds.move_to_end(call_id)

    def publish(self, call_id: str, text: str, kind: str) -> None:
        """An event of the call, already serialised; `kind` is its type."""
        feed = self._feeds.get(call_id)
        if feed is None:
            return
        if kind != "partial" and len(feed.history) < self.history_limit:
            feed.history.append(text)
        for sub in list(feed.subscribers):
            sub.put(text)

    def close(self, call_id: str) -> None:
        """The call is over: end every subscriber's stream and keep the history for late viewers."""
        feed = self._feeds.get(call_id)
        if feed is None:
            return
        feed.live, feed.ended = False, True
        for sub in feed.subscribers:
            sub.put(None)
        feed.subscribers.clear()
        ended = [cid for cid, f in self._feeds.items() if f.ended]
        for cid in ended[: max(0, len(ended) - self.keep_ended)]:
            del self._feeds[cid]

    def subscribe(self, call_id: str, agent_id: str | None = None) -> Subscription:
        """Watch a call: its history now, live events after, end of stream when it ends. With `agent_id`, only
        a call assigned to that agent (otherwise the subscription comes back `forbidden`)."""
        sub = Subscription(call_id=call_id, agent_id=agent_id)
        feed = self._feeds.get(call_id)
        if feed is None:
            feed = _Feed()  # the call has not started yet: wait for it
            self._feeds[call_id] = feed
        sub.started = feed.live or feed.ended
        if agent_id is not None and sub.started and feed.agent_id != agent_id:
            sub.forbidden = True
            return sub
        for text in feed.history[-SUBSCRIBER_QUEUE + 1:]:
            sub.put(text)
        if feed.ended:
            sub.put(None)
        else:
            feed.subscribers.add(sub)
        return sub

    async def streaming(self, call_id: str) -> Streaming | None:
        feed = self._feeds.get(call_id)
        return Streaming(call_id, feed.agent_id) if feed is not None and feed.live else None

    async def post(self, call_id: str, text: str, kind: str) -> bool:
        feed = self._feeds.get(call_id)
        if feed is None or not feed.live:
            return False
        self.publish(call_id, text, kind)
        return True

    def unsubscribe(self, sub: Subscription) -> None:
        feed = self._feeds.get(sub.call_id)
        if feed is None:
            return
        feed.subscribers.discard(sub)
        if not feed.live and not feed.ended and not feed.subscribers:
            del self._feeds[sub.call_id]  # nobody waits for a call that never came

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def check(self) -> str | None:
        return None

