"""Replicas' live-call loads in Redis (issue #30 point 3, service/live/capacity.py): a replica learns whether
another has room from what the others publish (at once on each admission and end); a replica that stops or dies
drops out; with Redis away the answer is unknown (the call is then kept, never sent on blindly). A real
redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from service.live.capacity import LOAD_TTL_S, LiveLoad, RedisLoadBoard
from service.live.redis_bus import connect
from tests.support.redis_server import RedisServer


async def _until(board: RedisLoadBoard, room: bool, timeout_s: float = 5.0) -> None:
    """Wait until `board` reads that another replica has `room`."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while await board.others_have_room() is not room:
        assert asyncio.get_running_loop().time() < deadline, f"never read room={room}"
        await asyncio.sleep(0.02)


@pytest.mark.asyncio
async def test_a_replica_knows_whether_another_has_room(redis_server: RedisServer) -> None:
    clients = [connect(redis_server.url) for _ in range(3)]
    loads = [LiveLoad(1), LiveLoad(1), LiveLoad(None)]
    a, b, unlimited = boards = [RedisLoadBoard(c, name, load, prefix="t")
                                for c, name, load in zip(clients, "abc", loads, strict=True)]
    for load, board in zip(loads, boards, strict=True):
        load.board = board
    stop: list[Callable[[], Awaitable[None]]] = []
    try:
        assert await a.others_have_room() is False  # Redis answers, and no other replica published
        for board in (a, b):
            await board.start()
            stop.append(board.stop)
        await _until(a, True)  # B is empty
        seat = loads[1].take("decoded")  # B is full: published at once, not at the next beat
        await _until(a, False)
        assert await b.others_have_room() is True  # A is empty
        # A replica without a limit always has room; one that stops withdraws its load at once.
        await unlimited.start()
        await _until(a, True)
        await unlimited.stop()
        await _until(a, False, timeout_s=1.0)
        seat.release()  # B's call ended: published at once
        await _until(a, True)
        # B dies just after a beat that said it had room (nothing withdrawn): its load expires and A stops
        # counting on it.
        await stop.pop()()
        await clients[1].set("t:load:b", '{"calls": 0, "record_only": 0, "capacity": 1}', px=int(LOAD_TTL_S * 1000))
        assert await a.others_have_room() is True
        await _until(a, False, timeout_s=LOAD_TTL_S + 2)
        # Redis away: nobody knows.
        redis_server.stop()
        assert await a.others_have_room() is None
    finally:
        for close in stop:
            await close()
        for client in clients:
            await client.aclose()
