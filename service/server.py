"""`huifang serve`: the app under uvicorn, with what uvicorn can bound and a shutdown that drains live calls.

On SIGTERM (or the first Ctrl-C) the server first stops taking calls and lets every live call end cleanly: the
audio already received is transcribed, its finals and the call's summary and `end` event are sent, and the socket
closes with 1001 so the switch reconnects (to another replica). Only then does uvicorn stop, and recording jobs
being scored go back to the queue. A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import socket
from types import FrameType

import uvicorn
from fastapi import FastAPI

from asr.transcribe import Transcriber
from service.app import create_app, state_of
from service.logs import uvicorn_log_config
from service.metrics import REGISTRY
from service.settings import Settings

log = logging.getLogger(__name__)

#: Largest websocket message uvicorn accepts (the protocol's frames are 64 KiB at most; uvicorn's default is 16 MiB).
WS_MAX_MESSAGE_BYTES = 128 * 1024
#: How long live calls get to end on shutdown before the server stops anyway.
DRAIN_TIMEOUT_S = 30.0


#: glibc malloc arenas `huifang serve` allows itself (MALLOC_ARENA_MAX in the environment takes precedence).
MALLOC_ARENAS = 2
#: mallopt's parameter number for the arena limit (glibc's M_ARENA_MAX).
_M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Limit glibc to `arenas` malloc arenas for the threads started from now on; False where that is not
    possible (not glibc) or the operator chose with MALLOC_ARENA_MAX.

    By default glibc gives threads up to 8 arenas per core, and the decode, VAD, scoring and NLU threads each
    free large numpy and CTranslate2 buffers into their own: in a 30-minute soak the server's memory grew from
    493 to 818 MB, with two arenas it settled at about 690 MB from the tenth minute on (docs/benchmarks.md)."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, arenas))


class DrainingServer(uvicorn.Server):
    """uvicorn's server, draining live calls before it stops."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, drain_timeout_s: float = DRAIN_TIMEOUT_S,
                 settings: Settings | None = None) -> None:
        super().__init__(config)
        self.app = app
        self.drain_timeout_s = drain_timeout_s
        self._draining = False
        self._settings = settings

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._settings is not None:
            # After uvicorn's own start-up lines: the last thing a person sees is what to do next.
            start_page = any(getattr(route, "path", None) == "/" for route in self.app.routes)
            print(welcome(self._settings, state_of(self.app).dev_token, start_page), flush=True)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining:
            super().handle_exit(sig, frame)  # a second signal: stop now
            return
        self._draining = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            super().handle_exit(sig, frame)
            return
        loop.call_soon_threadsafe(lambda: loop.create_task(self._drain_then_exit(sig, frame)))

    async def _drain_then_exit(self, sig: int, frame: FrameType | None) -> None:
        try:
            left = await state_of(self.app).calls.drain(self.drain_timeout_s)
            if left:
                log.warning("stopping with %d live call(s) still open after %.0f s", left, self.drain_timeout_s)
        except Exception:  # noqa: BLE001 - never let a failed drain keep the process alive
            log.exception("draining live calls failed")
        super().handle_exit(sig, frame)


def welcome(settings: Settings, dev_token: str | None, start_page: bool = True) -> str:
    """What `huifang serve` prints once it listens: the token, the pages and a first command, in a box.
    `start_page`: whether the app serves a page at `/` (linking the others)."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    base = f"http://{host}:{settings.port}"
    fragment = f"#token={dev_token}" if dev_token else "#token=YOUR_TOKEN"
    lines = [f"huifang is listening on {base}"]
    if dev_token:
        lines += ["", "development token (admin; a new one at every start, as no tokens file is set):",
                  f"  export HUIFANG_TOKEN={dev_token}"]
    else:
        lines += ["", "tokens come from HUIFANG_AUTH__TOKENS_FILE (`huifang token` makes one):",
                  "  export HUIFANG_TOKEN=YOUR_TOKEN"]
    lines.append("")
    if start_page:
        lines += [f"start page:   {base}/{fragment}", "              (console, calls, customers, follow-ups, agents)"]
    lines += [f"sample call:  {base}/console?demo=1{fragment}",
              "", "then, in another terminal (after the export above):",
              f'  curl -s -H "Authorization: Bearer $HUIFANG_TOKEN" {base}/v1/calls',
              "open a live call's console, then stream a recording into it as a switch would:",
              f"  {base}/console?call=live-01{fragment}",
              "  .venv/bin/huifang replay service/demo/call_s03.flac --call-id live-01 --realtime"]
    width = max(len(line) for line in lines)
    return "\n".join(["┌" + "─" * (width + 2) + "┐", *(f"│ {line.ljust(width)} │" for line in lines),
                      "└" + "─" * (width + 2) + "┘"])


def serve(settings: Settings, transcriber: Transcriber | None = None) -> None:
    """Run the service until a signal stops it (after draining its live calls)."""
    limit_malloc_arenas()  # before any worker thread exists
    app = create_app(settings, transcriber, announce=False)  # the token and URLs: `welcome`, once listening
    # What uvicorn itself can bound: connections at once (beyond: 503), websocket message size, idle keep-alive.
    # Header-read timeouts and per-address limits need the front proxy (deploy/nginx.conf).
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                            log_config=uvicorn_log_config(settings.log_level),
                            limit_concurrency=settings.max_connections, ws_max_size=WS_MAX_MESSAGE_BYTES,
                            timeout_keep_alive=5)
    if settings.metrics.port:
        from prometheus_client import start_http_server

        # Its own port and thread: scrapes never queue behind API requests, and it can stay off the network.
        try:
            start_http_server(settings.metrics.port, settings.metrics.host, registry=REGISTRY)
        except OSError as e:  # the service itself must not die for its metrics
            log.error("no metrics: cannot listen on %s:%d (%s); set HUIFANG_METRICS__PORT", settings.metrics.host,
                      settings.metrics.port, e)
    DrainingServer(config, app, settings=settings).run()
