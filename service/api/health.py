"""`/healthz`: liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

from pathlib import PurePath

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.requests import HTTPConnection

from service.api.deps import State

router = APIRouter(tags=["ops"])


@router.get("/healthz")
async def healthz(state: State, conn: HTTPConnection) -> JSONResponse:
    """200 when the speech model and the database are available, 503 otherwise; `status` is `degraded` (with a
    `warning`) when answers are assessed by the rules alone. Anyone may ask, so the answer names no file or
    database location; an admin token also gets `detail`, the full reasons."""
    healthy = state.asr_error is None and state.store_error is None
    model = PurePath(state.settings.asr.model).name
    problems = ([f"speech model {model} is not available"] if state.asr_error else []) + (
        ["the database is not available"] if state.store_error else [])
    body: dict[str, object] = {
        "status": "ok" if healthy and state.classifier_error is None else "degraded",
        "asr_model": model,
        "database": state.store.engine.dialect.name if state.store is not None else None,
        "assessor_version": state.assessor.version,
        "error": "; ".join(problems) or None,
    }
    if state.classifier_error is not None:
        # Serving: answers are assessed by the rules alone.
        body["warning"] = "the learned answer classifier cannot be loaded: answers are assessed by the rules alone"
    caller = state.tokens.authenticate(conn.headers.get("authorization", "").removeprefix("Bearer ").strip())
    if caller is not None and caller.role == "admin":
        body["detail"] = {"asr": state.asr_error, "database": state.store_error,
                          "classifier": state.classifier_error, "asr_model_path": state.transcriber.model_path,
                          "database_url": state.store.safe_url if state.store is not None else None}
    return JSONResponse(body, status_code=200 if healthy else 503)
