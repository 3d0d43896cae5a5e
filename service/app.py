"""The FastAPI application: everything the routes share is built in the lifespan into one `AppState`; the
routes of each resource are in service/api/."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from functools import partial

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from asr.cpu import LEDGER
from asr.errors import AsrError
from asr.streaming import SileroStep
from asr.transcribe import Transcriber
from nlu.assess import Assessor
from nlu.classifier import ClassifierUnavailableError
from nlu.report import RiskConfig, load_risk
from service import bootstrap
from service.api import (
    assess,
    calls,
    calls_ws,
    demo,
    floor,
    health,
    listen,
    notes,
    pages,
    recordings,
    tickets,
    transcriptions,
)
from service.api.bodies import JsonBodyGuard
from service.auth import (
    AuthError,
    Principal,
    TicketBook,
    TokenRegistry,
    hash_token,
    load_or_create_secret,
    load_tokens_file,
    new_token,
)
from service.coaching import agents_api as agents
from service.errors import ServiceError
from service.feedback import feedback_api as feedback
from service.floor import Floor, FloorBus, LocalFloorBus, RedisFloorBus, load_alert_rules
from service.ids import process_name
from service.live.books import BooksOptions, LiveBooks
from service.live.capacity import LiveLoad, LoadBoard, LocalBoard, RedisLoadBoard, live_capacity, process_cores
from service.live.claims import CallClaims, LocalClaims
from service.live.engine import LiveEngine
from service.live.hub import CallHub, EventBus
from service.live.listen import RedisAudioRelay
from service.live.redis_bus import RedisClaims, RedisHub, connect, live_key
from service.live.scheduler import DecodeScheduler
from service.live.session import LiveCalls, LiveOptions
from service.live.sockets import Watchers
from service.live.sources.demo import DemoPlayer
from service.loanbook import customers_api as customers
from service.loanbook import followups_api as followups
from service.loanbook.book import LoanBook
from service.loanbook.outbox import Outbox, OutboxWorker, configured_channels
from service.metrics import ERRORS, REGISTRY, CpuCollector, StateCollector
from service.privacy import make_private
from service.settings import Settings, get_settings
from service.state import AppState
from service.store import Store, StoreError, audit
from service.workers.jobs import JobRunner

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, transcriber: Transcriber | None = None,
               announce: bool = True) -> FastAPI:
    """Build the app. Tests pass their own settings or a prepared transcriber; `huifang serve` passes neither,
    and `announce=False`: it prints the token and URLs itself, once the server listens."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            app.state.huifang = await _start(settings, transcriber, stack, announce)
            yield

    # /docs is pages.py's, with Swagger UI served from this process; ReDoc would need a CDN.
    app = FastAPI(title="huifang", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Speech-to-risk service for post-loan follow-up calls")
    app.add_middleware(JsonBodyGuard)  # inside the security headers (_harden), which its refusals carry too
    _harden(app, settings)
    for module in (health, calls_ws, assess, pages, demo, recordings, calls, tickets, transcriptions, agents,
                   customers, followups, floor, notes, listen, feedback):
        app.include_router(module.router)
    app.mount(pages.SWAGGER_URL, StaticFiles(directory=pages.SWAGGER_DIR), name="swagger-ui")  # before /static
    app.mount("/static", StaticFiles(directory=pages.STATIC_DIR), name="static")
    return app


def state_of(app: FastAPI) -> AppState:
    """The state of a started app (tests and tools; routes use the dependencies of service/api/deps.py)."""
    state: AppState = app.state.huifang
    return state


async def _start(settings: Settings, transcriber: Transcriber | None, stack: AsyncExitStack,
                 announce: bool = True) -> AppState:
    """Load the models, open the database and start the workers; `stack` stops them again, in reverse."""
    tokens, dev_token = _tokens(settings, announce)
    if settings.privacy.private_files:
        await asyncio.to_thread(make_private, settings.data_dir, settings.db_url)
    else:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    ticket_book = TicketBook(await asyncio.to_thread(load_or_create_secret, settings.ticket_key_path))
    asr = transcriber or bootstrap.transcriber(settings)
    asr_error = None
    try:
        # Joining the packaged model and loading it takes seconds: off the event loop.
        await asyncio.to_thread(asr.load)
    except AsrError as e:
        # Serve anyway so /healthz can say what is wrong instead of the process dying in a restart loop.
        asr_error = str(e)
        log.error("speech model unavailable: %s", e)
    scheduler = DecodeScheduler(settings.live.decode_workers, settings.live.decode_batch)
    await scheduler.start()
    stack.push_async_callback(scheduler.close)
    vad_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="vad")
    stack.callback(vad_executor.shutdown, wait=False, cancel_futures=True)
    nlu_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="nlu")
    stack.callback(nlu_executor.shutdown, wait=False, cancel_futures=True)
    engine = LiveEngine(transcriber=asr, vad=await asyncio.to_thread(SileroStep), scheduler=scheduler,
                        vad_executor=vad_executor, stream_options=bootstrap.stream_options(settings),
                        partial_beam_size=settings.live.partial_beam_size,
                        final_beam_size=settings.live.final_beam_size, min_window_s=settings.live.min_window_s,
                        partial_window_s=settings.live.partial_window_s,
                        overload_final_delay_s=settings.live.overload_final_delay_s)
    assessor, classifier_error = await _assessor(settings)
    hub, claims, board, floor_bus = await _bus(settings, stack)
    load = _load(settings, board)
    risk = await asyncio.to_thread(load_risk, settings.scoring.risk_file)
    live_floor = await _floor(settings, assessor, risk, floor_bus, stack)
    live_calls = LiveCalls(engine, hub, assessor, nlu_executor, LiveOptions(
        assist=settings.nlu.assist, dialogue=bootstrap.dialogue_options(settings),
        max_calls_per_token=settings.auth.max_calls_per_token, max_call_s=settings.live.max_call_s, risk=risk),
        asr_error=asr_error, claims=claims, load=load, board=board, floor=live_floor)
    if isinstance(hub, RedisHub):
        # Listening in on a call streamed by another replica: its audio through Redis while someone listens.
        relay = RedisAudioRelay(hub.redis, live_calls.taps, prefix=settings.redis_prefix,
                                live_key=partial(live_key, settings.redis_prefix))
        await relay.start()
        stack.push_async_callback(relay.stop)
    demos = DemoPlayer(live_calls, settings.live.max_demo_calls)
    stack.callback(demos.close)
    watchers = Watchers(settings.auth.max_watchers_per_token, settings.live.events_wait_s)
    state = AppState(settings=settings, tokens=tokens, dev_token=dev_token, tickets=ticket_book, transcriber=asr,
                     assessor=assessor, calls=live_calls, hub=hub, floor=live_floor, demos=demos, watchers=watchers,
                     nlu_executor=nlu_executor, store=None, jobs=None, asr_error=asr_error,
                     classifier_error=classifier_error, store_error="not connected yet")
    collector = StateCollector(lambda: _gauges(state))
    REGISTRY.register(collector)
    stack.callback(REGISTRY.unregister, collector)
    cpu = CpuCollector(LEDGER, threading.get_native_id())  # started on the event loop's thread
    REGISTRY.register(cpu)
    stack.callback(REGISTRY.unregister, cpu)
    try:
        await _attach_storage(state, stack)
    except StoreError as e:
        # Live calls work without a database; recordings answer 503, /readyz says why, and the database is
        # tried again (it may still be starting, or another replica may hold the migration lock).
        state.store_error = str(e)
        log.error("storage unavailable (trying again): %s", e)
        retry = asyncio.create_task(_storage_until_ready(state, stack))
        stack.push_async_callback(_cancel, retry)
    return state


def _load(settings: Settings, board: LoadBoard) -> LiveLoad:
    """This process's live-call capacity (`live.capacity`), told to the other replicas through `board`."""
    cores = process_cores()
    capacity = live_capacity(settings.live.capacity, settings.live.calls_per_core, cores)
    log.info("live calls: capacity %s (%s; %.2g cores, %.2g calls per core)",
             "unlimited" if capacity is None else capacity, settings.live.capacity, cores,
             settings.live.calls_per_core)
    load = LiveLoad(capacity, board=board)
    if isinstance(board, RedisLoadBoard):
        board.load = load
        board.changed()
    return load


async def _floor(settings: Settings, assessor: Assessor, risk: RiskConfig, bus: FloorBus,
                 stack: AsyncExitStack) -> Floor:
    """The supervisors' floor, its alert rules checked against the call script and the risk file's stated values
    (a bad file stops start-up)."""
    script = assessor.script
    topics = set(script.topics) | ({script.other.id} if script.other is not None else set())
    rules = await asyncio.to_thread(load_alert_rules, settings.floor.alerts_file, topics, risk.stated)
    replica = bus.replica if isinstance(bus, RedisFloorBus) else process_name()
    live_floor = Floor(rules, bus, replica, tile_interval_s=settings.floor.tile_interval_s,
                       keep_ended_s=settings.floor.keep_ended_s, refresh_s=settings.floor.refresh_s)
    await live_floor.start()
    stack.push_async_callback(live_floor.stop)
    return live_floor


async def _bus(settings: Settings, stack: AsyncExitStack) -> tuple[EventBus, CallClaims, LoadBoard, FloorBus]:
    """The events bus, call claims, live loads and the floor's messages: in this process, or shared by replicas
    through Redis (`HUIFANG_REDIS_URL`). Redis need not be up yet: the bus connects when it can and `/readyz`
    says until then."""
    if not settings.redis_url:
        return CallHub(), LocalClaims(), LocalBoard(), LocalFloorBus()
    redis = connect(settings.redis_url)
    stack.push_async_callback(redis.aclose)
    replica = process_name()
    hub = RedisHub(redis, replica, prefix=settings.redis_prefix, live_ttl_s=settings.live.max_call_s,
                   keep_s=settings.live.events_keep_s)
    claims = RedisClaims(redis, replica, prefix=settings.redis_prefix)
    board = RedisLoadBoard(redis, replica, prefix=settings.redis_prefix)
    for part in (hub, claims, board):
        await part.start()
        stack.push_async_callback(part.stop)
    log.info("live calls' events, claims and loads shared through Redis as replica %s", replica)
    # Started and stopped with the floor that reads it (`_floor`).
    floor_bus = RedisFloorBus(redis, replica, prefix=settings.redis_prefix, history=settings.floor.history)
    return hub, claims, board, floor_bus


def _gauges(state: AppState) -> dict[str, float]:
    """What the metrics read from the running process at scrape time (on the metrics server's thread)."""
    scheduler = state.calls.engine.scheduler
    load = state.calls.load
    values = {"huifang_live_calls:decoded": float(load.decoded),
              "huifang_live_calls:record_only": float(load.record_only),
              "huifang_decode_queue_depth": float(scheduler.backlog),
              "huifang_dropped_partials_total": float(scheduler.dropped_partials),
              "huifang_draining": float(state.calls.stopping.is_set())}
    if load.capacity is not None:
        values["huifang_live_capacity"] = float(load.capacity)
    if state.store is not None:
        try:
            values["huifang_jobs_queued"] = float(state.store.queued_jobs())
            values["huifang_redecode_queued"] = float(state.store.queued_jobs("redecode"))
        except Exception:  # noqa: BLE001 - a scrape must not fail with the database
            log.debug("metrics: could not count queued jobs", exc_info=True)
    return values


async def _attach_storage(state: AppState, stack: AsyncExitStack) -> None:
    """Open and migrate the database, then start the audit checkpoints and the job workers on it. Raises
    `StoreError` when the database cannot be used."""
    settings = state.settings
    store = await asyncio.to_thread(bootstrap.open_store, settings)
    stack.callback(store.close)
    await asyncio.to_thread(audit.checkpoint, store)  # the first checkpoint seals what exists
    checkpoints = asyncio.create_task(_checkpoint_every(store, settings.privacy.audit_checkpoint_s))
    stack.push_async_callback(_stop_checkpoints, store, checkpoints)
    book = await asyncio.to_thread(bootstrap.build_loanbook, settings, store, state.assessor)
    scorer = bootstrap.recording_scorer(settings, state.transcriber, state.assessor, state.calls.engine.vad)
    if settings.scoring.yield_to_live_s:
        # Uploads are scored on the cores live calls decode on: their decodes give way to live finals.
        scheduler = state.calls.engine.scheduler
        scorer = replace(scorer, yield_to=partial(scheduler.yield_to_live, settings.scoring.yield_to_live_s))
    job_context = bootstrap.job_context(settings, store, scorer, book)
    jobs = JobRunner(job_context, settings.scoring.workers, settings.scoring.lease_s)
    await jobs.start()
    stack.push_async_callback(jobs.close)
    # Live calls are stored as they end, by the same code as a scored recording; the sweep stores those whose
    # replica died (at start-up first: a single box's own last run).
    books = LiveBooks(job_context, BooksOptions(keep_audio=settings.live.keep_audio, lease_s=settings.live.lease_s,
                                                audio_flush_s=settings.live.audio_flush_s, risk=scorer.risk,
                                                sweep_s=min(10.0, settings.live.lease_s / 2),
                                                redecode_backlog=settings.live.redecode_backlog),
                      state.assessor, bootstrap.dialogue_options(settings))
    books.on_queued = jobs.notify
    await books.start()
    stack.push_async_callback(books.close)
    if configured_channels(settings.outbox):  # else messages are queued and wait for a transport
        outbox = await asyncio.to_thread(Outbox.from_settings, store, settings)
        state.outbox = OutboxWorker(outbox, settings.outbox.concurrency, settings.outbox.poll_s)
        await state.outbox.start()
        stack.push_async_callback(state.outbox.close)
        log.info("outbox: sending %s", ", ".join(outbox.channels))
    if settings.loanbook.plan_interval_s:
        planning = asyncio.create_task(_plan_every(book, settings.loanbook.plan_interval_s))
        stack.push_async_callback(_cancel, planning)
    state.store, state.jobs, state.store_error, state.loanbook = store, jobs, None, book
    state.calls.store, state.calls.loanbook, state.calls.books = store, book, books


#: Seconds between attempts to reach the database, doubling up to the last.
_STORAGE_RETRY_S = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


async def _storage_until_ready(state: AppState, stack: AsyncExitStack) -> None:
    for attempt in range(1_000_000):
        await asyncio.sleep(_STORAGE_RETRY_S[min(attempt, len(_STORAGE_RETRY_S) - 1)])
        try:
            await _attach_storage(state, stack)
        except StoreError as e:
            state.store_error = str(e)
            continue
        log.info("storage available after %d attempt(s)", attempt + 2)
        return


async def _plan_every(book: LoanBook, interval_s: float) -> None:
    """The daily planning, run by whichever replica gets to each customer first (`LoanBook.plan_due`): tiers
    age out of the policy's window and overdue second calls raise tiers without any new call."""
    while True:
        try:
            planned = await asyncio.to_thread(book.plan_due)
            if planned:
                log.info("loan book: %d customer(s) planned", planned)
        except Exception:  # noqa: BLE001 - keep trying; `huifang plan` does the same by hand
            log.exception("loan book: planning failed")
        await asyncio.sleep(interval_s)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _checkpoint_every(store: Store, interval_s: float) -> None:
    """The chain's head, checkpointed at least every `interval_s` while it grows (live verdicts)."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await asyncio.to_thread(audit.checkpoint, store)
        except Exception:  # noqa: BLE001 - keep trying; a gap shows as a longer window, and in the log
            log.exception("could not write an audit checkpoint")


async def _stop_checkpoints(store: Store, task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.to_thread(audit.checkpoint, store)  # the last entries of this process


async def _assessor(settings: Settings) -> tuple[Assessor, str | None]:
    """The answer assessor, and why its learned part is missing when it is."""
    try:
        return await asyncio.to_thread(bootstrap.load_assessor, settings), None
    except ClassifierUnavailableError as e:
        # Misconfigured, not broken: answers are still assessed by the rules; /healthz says so.
        log.error("assessing answers with the rules alone: %s", e)
        return await asyncio.to_thread(bootstrap.load_assessor, settings, False), str(e)


#: Sent with every HTTP response: the pages load only their own scripts, styles and media, in no frame.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob:; "
                               "img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
                               "frame-ancestors 'none'",
}
#: /docs loads its viewer from a CDN that is not reachable here anyway; it gets a looser policy.
_DOCS = ("/docs", "/redoc")


def _harden(app: FastAPI, settings: Settings) -> None:
    """Security headers, CORS only when configured, and no stack trace or exception text to any client."""

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            if name == "Content-Security-Policy" and request.url.path.startswith(_DOCS):
                continue
            response.headers.setdefault(name, value)
        return response

    if settings.auth.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.auth.cors_origins, allow_credentials=False,
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=["Authorization", "Content-Type"])

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        ERRORS.labels(exc.code).inc()
        return JSONResponse({"detail": exc.message, "code": exc.code}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        ERRORS.labels("internal").inc()
        # Answered by the outermost middleware, past the one that adds the headers: add them here.
        return JSONResponse({"detail": "internal error; it was logged", "code": "internal"}, status_code=500,
                            headers=SECURITY_HEADERS)


def _loopback(host: str) -> bool:
    """Whether `host` is a loopback address or localhost (the only places a development token may serve)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _tokens(settings: Settings, announce: bool = True) -> tuple[TokenRegistry, str | None]:
    """The token registry; with no tokens configured, a development admin token, printed once (by the caller
    when not `announce`)."""
    registry = TokenRegistry()
    if settings.auth.tokens_file is not None:
        registry.replace(load_tokens_file(settings.auth.tokens_file))  # a bad file stops start-up, loudly
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    if len(registry):
        if announce:
            print(f"pages: http://{host}:{settings.port}/ (open it with #token=YOUR_TOKEN once)\n"
                  f"console: http://{host}:{settings.port}/console", flush=True)
        return registry, None
    if not _loopback(settings.host):
        # The development token is an admin's, printed to whoever reads the console output: for localhost only.
        raise AuthError(f"refusing to listen on {settings.host} without a tokens file: set "
                        "HUIFANG_AUTH__TOKENS_FILE (entries made by `huifang token`), or listen on 127.0.0.1")
    token = new_token()
    registry.add(hash_token(token), Principal("development", "admin", "dev"))
    # Shown once, like a notebook server's: nothing else can call the service until tokens are configured.
    # The token rides in the URL fragment, which browsers never send to the server (nor into its logs).
    if announce:
        print(f"token: {token}\npages: http://{host}:{settings.port}/#token={token}\n"
              f"console: http://{host}:{settings.port}/console#token={token}  "
              f"(sample call: http://{host}:{settings.port}/console?demo=1#token={token})", flush=True)
    log.warning("no tokens configured (HUIFANG_AUTH__TOKENS_FILE): made a development admin token")
    return registry, token
