"""`/healthz`: liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import State

router = APIRouter(tags=["ops"])


@router.get("/healthz")
async def healthz(state: State) -> JSONResponse:
    """200 when the speech model and the database are available, 503 with the reason otherwise; `status` is
    `degraded` (with a `warning`) when answers are assessed by the rules alone."""
    healthy = state.asr_error is None and state.store_error is None
    body = {
        "status": "ok" if healthy and state.classifier_error is None else "degraded",
        "asr_model": state.transcriber.model_path,
        "database": state.store.safe_url if state.store is not None else None,
        "assessor_version": state.assessor.version,
        "error": state.asr_error or state.store_error,
    }
    if state.classifier_error is not None:
        body["warning"] = state.classifier_error  # serving: answers are assessed by the rules alone
    return JSONResponse(body, status_code=200 if healthy else 503)
