"""The FastAPI application: model loading in the lifespan, health, and the routers of each resource."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from asr.errors import AsrError
from asr.streaming import SileroStep, VadStep
from asr.transcribe import Transcriber
from nlu.assess import Assessor
from nlu.classifier import ClassifierUnavailableError
from nlu.report import load_risk
from service.auth import Principal, TokenRegistry, hash_token, load_tokens_file, new_token
from service.decoding import DecodeScheduler
from service.hub import CallHub
from service.jobs import JobContext, JobRunner
from service.live import LiveEngine
from service.privacy import RawTextCipher
from service.routes import assess, console, events, live, recordings
from service.scoring import AudioPart, Scored, score_parts
from service.settings import Settings, get_settings
from service.store import Store, StoreError

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, transcriber: Transcriber | None = None) -> FastAPI:
    """Build the app. Tests pass their own settings or a prepared transcriber; `huifang serve` passes neither."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        app.state.tokens, app.state.dev_token = _tokens(settings)
        app.state.calls_by_token = {}
        asr = transcriber or Transcriber(settings.asr_options())
        app.state.transcriber = asr
        app.state.asr_error = None
        try:
            # Joining the packaged model and loading it takes seconds: off the event loop.
            await asyncio.to_thread(asr.load)
        except AsrError as e:
            # Serve anyway so /healthz can say what is wrong instead of the process dying in a restart loop.
            app.state.asr_error = str(e)
            log.error("speech model unavailable: %s", e)
        scheduler = DecodeScheduler(settings.live.decode_workers, settings.live.decode_batch)
        await scheduler.start()
        vad_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="vad")
        app.state.live_engine = LiveEngine(
            transcriber=asr,
            vad=await asyncio.to_thread(SileroStep),
            scheduler=scheduler,
            vad_executor=vad_executor,
            stream_options=settings.stream_options(),
            narrowband_vad_threshold=settings.asr.vad_threshold_narrowband,
            partial_beam_size=settings.live.partial_beam_size,
            final_beam_size=settings.live.final_beam_size,
            min_window_s=settings.live.min_window_s,
        )
        app.state.active_calls = set()
        app.state.classifier_error = None
        try:
            app.state.assessor = await asyncio.to_thread(settings.assessor)
        except ClassifierUnavailableError as e:
            # Misconfigured, not broken: answers are still assessed by the rules; /healthz says so.
            log.error("assessing answers with the rules alone: %s", e)
            app.state.classifier_error = str(e)
            app.state.assessor = await asyncio.to_thread(settings.assessor, False)
        app.state.nlu_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="nlu")
        app.state.hub = CallHub()
        app.state.demo_tasks = set()
        app.state.store, app.state.store_error, app.state.jobs = None, None, None
        try:
            store = Store(settings.db_url)
            await asyncio.to_thread(store.migrate)
        except StoreError as e:
            # Live calls work without a database; recordings answer 503 and /healthz says why.
            app.state.store_error = str(e)
            log.error("storage unavailable: %s", e)
        else:
            app.state.store = store
            app.state.jobs = JobRunner(_job_context(settings, store, asr, app.state.assessor,
                                                    app.state.live_engine.vad), settings.recordings.workers)
            await app.state.jobs.start()
        try:
            yield
        finally:
            if app.state.jobs is not None:
                await app.state.jobs.close()
            if app.state.store is not None:
                app.state.store.close()
            for task in list(app.state.demo_tasks):
                task.cancel()
            await scheduler.close()
            vad_executor.shutdown(wait=False, cancel_futures=True)
            app.state.nlu_executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="huifang", version="0.1.0", lifespan=lifespan,
                  description="Speech-to-risk service for post-loan follow-up calls")
    app.state.settings = settings
    _harden(app, settings)
    app.include_router(live.router)
    app.include_router(events.router)
    app.include_router(assess.router)
    app.include_router(console.router)
    app.include_router(recordings.router)
    app.mount("/static", StaticFiles(directory=console.STATIC_DIR), name="static")

    @app.get("/healthz", tags=["ops"])
    async def healthz(request: Request) -> JSONResponse:
        """Liveness and readiness: 200 when the speech model is loaded, 503 with the reason otherwise."""
        error = getattr(request.app.state, "asr_error", None)
        store_error = getattr(request.app.state, "store_error", None)
        asr: Transcriber | None = getattr(request.app.state, "transcriber", None)
        store: Store | None = getattr(request.app.state, "store", None)
        healthy = error is None and store_error is None
        classifier_error = getattr(request.app.state, "classifier_error", None)
        body = {
            "status": "ok" if healthy and classifier_error is None else "degraded",
            "asr_model": asr.model_path if asr is not None else None,
            "database": store.safe_url if store is not None else None,
            "assessor_version": assessor.version if (assessor := getattr(request.app.state, "assessor", None))
            else None,
            "error": error or store_error,
        }
        if classifier_error is not None:
            body["warning"] = classifier_error  # serving: answers are assessed by the rules alone
        return JSONResponse(body, status_code=200 if healthy else 503)

    return app


#: Sent with every HTTP response: the pages load only their own scripts, styles and media, in no frame.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self'; "
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

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; it was logged"}, status_code=500)


def _tokens(settings: Settings) -> tuple[TokenRegistry, str | None]:
    """The token registry; with no tokens configured, a development admin token, printed once."""
    registry = TokenRegistry()
    if settings.auth.tokens_file is not None:
        registry.replace(load_tokens_file(settings.auth.tokens_file))  # a bad file stops start-up, loudly
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    if len(registry):
        print(f"console: http://{host}:{settings.port}/console (open it with ?token=YOUR_TOKEN once)", flush=True)
        return registry, None
    token = new_token()
    registry.add(hash_token(token), Principal("development", "admin", "dev"))
    # Shown once, like a notebook server's: nothing else can call the service until tokens are configured.
    print(f"token: {token}\nconsole: http://{host}:{settings.port}/console?token={token}  "
          f"(sample call: http://{host}:{settings.port}/console?demo=1&token={token})", flush=True)
    log.warning("no tokens configured (HUIFANG_AUTH__TOKENS_FILE): made a development admin token")
    return registry, token


def _job_context(settings: Settings, store: Store, transcriber: Transcriber, assessor: Assessor,
                 vad: VadStep) -> JobContext:
    risk = load_risk(settings.recordings.risk_file)
    limits, options, seg = settings.decode_limits(), settings.dialogue_options(), settings.segment_options()

    def score(call_id: str, parts: list[AudioPart], loan_file: dict[str, Any] | None,
              progress: Callable[[float], None]) -> Scored:
        return score_parts(call_id, parts, loan_file, transcriber, assessor, limits, options, risk, vad, seg,
                           progress, settings.privacy.silence_audio)

    cipher = RawTextCipher(settings.raw_key_file) if settings.privacy.keep_raw else None
    return JobContext(store, settings.data_dir, score, settings.recordings.retention_days, cipher)


def get_transcriber(request: Request) -> Transcriber:
    """Dependency: the process-wide recogniser (tests override it with `app.dependency_overrides`)."""
    transcriber: Transcriber = request.app.state.transcriber
    return transcriber


TranscriberDep = Annotated[Transcriber, Depends(get_transcriber)]
