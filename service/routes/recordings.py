"""Recordings API: upload a finished call, follow its scoring job, read, list and delete reports."""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel
from starlette.datastructures import UploadFile

from asr.errors import AsrError, AudioLimitError
from nlu.pii import minimal_loan_file
from service.auth import Admin, Ingest, Viewer
from service.jobs import JobRunner, remove_audio
from service.privacy import RawTextCipher
from service.scoring import ROLES, AudioPart, RecordingError, parse_loan_file, validate_parts
from service.settings import Settings
from service.store import CallFilter, JobRecord, Store, audit
from service.store.store import utcnow

router = APIRouter(tags=["recordings"])

_CALL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_CHUNK = 1 << 20
_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".amr", ".webm"}


class JobStatus(BaseModel):
    """A recording's scoring job."""

    id: str
    call_id: str
    status: Literal["queued", "running", "done", "failed"]
    progress: float
    error: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    report_url: str | None = None


class CallSummaryRow(BaseModel):
    call_id: str
    created_at: datetime
    agent_id: str | None
    duration_s: float
    risk_score: int
    tier: str
    labels: dict[str, int]
    report_url: str


class CallPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[CallSummaryRow]


def _status(job: JobRecord) -> JobStatus:
    return JobStatus(id=job.id, call_id=job.call_id, status=job.status,
                     progress=job.progress, error=job.error, created_at=job.created_at, started_at=job.started_at,
                     finished_at=job.finished_at,
                     report_url=f"/v1/calls/{job.call_id}/report" if job.status == "done" else None)


def _store(request: Request) -> Store:
    store: Store | None = getattr(request.app.state, "store", None)
    if store is None:
        raise HTTPException(503, f"storage is not available: {getattr(request.app.state, 'store_error', '')}")
    return store


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _save(upload: UploadFile, folder: Path, name: str, budget: list[int]) -> Path:
    """Stream an uploaded file to disk, counting against the upload limit (`budget[0]` bytes left)."""
    suffix = Path(upload.filename or "").suffix.lower()
    path = folder / f"{name}{suffix if suffix in _SUFFIXES else '.audio'}"
    with open(path, "wb") as out:
        while chunk := await upload.read(_CHUNK):
            budget[0] -= len(chunk)
            if budget[0] < 0:
                raise HTTPException(413, "the upload exceeds the size limit (HUIFANG_AUDIO__MAX_FILE_MB)")
            await asyncio.to_thread(out.write, chunk)
    return path


@router.post("/v1/recordings", status_code=202, response_model=JobStatus,
             responses={413: {"description": "too large or too long"}, 415: {"description": "not multipart"},
                        422: {"description": "unreadable audio, wrong channels, silence, bad loan_file"}})
async def upload_recording(request: Request, _: Ingest) -> JSONResponse:
    """Upload a finished call for scoring (multipart/form-data).

    Either `file` (a stereo recording: channel 0 agent, 1 customer unless `channels` says otherwise, e.g.
    `customer,agent`; a mono file needs `channels=agent` or `customer` and the other side in a second upload
    is not supported) or `agent` and `customer` (one mono file per side). Optional: `loan_file` (JSON text),
    `call_id` (default: generated; re-scoring an id replaces its report), `agent_id`. Returns the job; follow it
    at `GET /v1/recordings/{id}`.
    """
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise HTTPException(415, "send the recording as multipart/form-data (field `file`, or `agent` and "
                                 "`customer`)")
    settings = _settings(request)
    store = _store(request)
    try:
        form = await request.form(max_files=4, max_fields=16)
    except Exception as e:  # noqa: BLE001 - malformed multipart bodies raise several types
        raise HTTPException(400, f"unreadable multipart body: {e}") from e
    uploads = {k: v for k, v in form.multi_items() if isinstance(v, UploadFile)}
    fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
    unknown = set(uploads) - {"file", "agent", "customer"}
    if unknown:
        raise HTTPException(422, f"unknown file field(s): {', '.join(sorted(unknown))}")
    if "file" in uploads and ({"agent", "customer"} & uploads.keys()):
        raise HTTPException(422, "send either `file` or `agent` and `customer`, not both")
    if "file" not in uploads and not {"agent", "customer"} <= uploads.keys():
        raise HTTPException(422, "no recording: send `file` (stereo) or both `agent` and `customer`")
    call_id = fields.get("call_id") or f"call-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
    if not _CALL_ID.match(call_id):
        raise HTTPException(422, "call_id: 1-128 letters, digits, '.', '_', ':' or '-', starting with a letter "
                                 "or digit")
    try:
        # Only what scoring needs is stored with the queued job: no phone, ID or card numbers.
        loan_file = minimal_loan_file(parse_loan_file(fields.get("loan_file")))
    except RecordingError as e:
        raise HTTPException(422, str(e)) from e
    agent_id = (fields.get("agent_id") or "").strip() or None
    roles: tuple[str, ...] = ()
    if "file" in uploads:
        roles = tuple(r.strip() for r in (fields.get("channels") or "agent,customer").split(",") if r.strip())
        if not roles or len(set(roles)) != len(roles) or not set(roles) <= set(ROLES):
            raise HTTPException(422, f"channels must be a comma-separated list of {' and '.join(ROLES)}, each once "
                                     f"(got {fields.get('channels')!r})")
    if await asyncio.to_thread(store.active_job_for, call_id):
        raise HTTPException(409, f"call {call_id} is already being scored")

    job_id = secrets.token_hex(8)
    folder = settings.data_dir / "audio" / job_id
    folder.mkdir(parents=True, exist_ok=True)
    try:
        budget = [settings.audio.max_file_mb << 20]
        if "file" in uploads:
            parts = [AudioPart(await _save(uploads["file"], folder, "call", budget), roles)]
        else:
            parts = [AudioPart(await _save(uploads[role], folder, role, budget), (role,))
                     for role in ("agent", "customer")]
        try:
            await asyncio.to_thread(validate_parts, parts, settings.decode_limits())
        except AudioLimitError as e:
            raise HTTPException(413, str(e)) from e
        except (AsrError, RecordingError) as e:
            raise HTTPException(422, str(e)) from e
        files = [{"path": str(p.path.relative_to(settings.data_dir)), "channels": list(p.channels)} for p in parts]
        job = await asyncio.to_thread(store.create_job, call_id, files, loan_file, agent_id, job_id)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # nothing half-written: no row, no files
        raise
    runner: JobRunner | None = getattr(request.app.state, "jobs", None)
    if runner is not None:
        runner.notify()
    return JSONResponse(_status(job).model_dump(mode="json"), status_code=202,
                        headers={"Location": f"/v1/recordings/{job.id}"})


@router.get("/v1/recordings/{job_id}", response_model=JobStatus)
async def recording_status(request: Request, job_id: str, _: Ingest) -> JobStatus:
    """Status (`queued`, `running`, `done`, `failed`) and progress (0-1) of a scoring job."""
    job = await asyncio.to_thread(_store(request).get_job, job_id)
    if job is None:
        raise HTTPException(404, f"no recording job {job_id}")
    return _status(job)


@router.get("/v1/calls/{call_id}/report")
async def call_report(request: Request, call_id: str, principal: Viewer) -> dict[str, Any]:
    """The call's report: utterances, per-topic verdicts, `risk_score`, `tier`, contributions, the agent's side
    and recommended actions."""
    store = _store(request)
    call = await asyncio.to_thread(store.get_call, call_id)
    if call is not None and not principal.may_see(call.agent_id):
        raise HTTPException(403, f"call {call_id} is not assigned to you")
    if call is None:
        job = await asyncio.to_thread(store.active_job_for, call_id)
        detail = f"call {call_id} is still being scored ({job.status})" if job else f"no report for call {call_id}"
        raise HTTPException(404, detail)
    await asyncio.to_thread(audit.append, store, "report_read", principal.name, call_id, {"role": principal.role})
    report = dict(call.report)
    files = await asyncio.to_thread(_audio_files, request, call.recording_id, call.audio_dir)
    report["audio"] = [{"url": f"/v1/calls/{call_id}/audio/{i}", "channels": f["channels"]}
                       for i, f in enumerate(files)]
    report["created_at"] = call.created_at.isoformat()
    report["agent_id"] = call.agent_id
    return report


def _audio_files(request: Request, recording_id: str | None, audio_dir: str | None) -> list[dict[str, Any]]:
    if audio_dir is None or recording_id is None:
        return []
    job = _store(request).get_job(recording_id)
    return job.files if job else []


@router.get("/v1/calls/{call_id}/audio/{index}", include_in_schema=True)
async def call_audio_file(request: Request, call_id: str, index: int, principal: Viewer) -> FileResponse:
    """A stored audio file of the call (while retention keeps it), for playing spans in the report page."""
    store = _store(request)
    call = await asyncio.to_thread(store.get_call, call_id)
    if call is None:
        raise HTTPException(404, f"no call {call_id}")
    if not principal.may_see(call.agent_id):
        raise HTTPException(403, f"call {call_id} is not assigned to you")
    files = await asyncio.to_thread(_audio_files, request, call.recording_id, call.audio_dir)
    if not 0 <= index < len(files):
        raise HTTPException(404, "no such audio (deleted by retention, or never stored)")
    path = _settings(request).data_dir / files[index]["path"]
    if not path.exists():
        raise HTTPException(404, "the audio file is gone")
    await asyncio.to_thread(audit.append, store, "audio_read", principal.name, call_id, {"file": index})
    return FileResponse(path)


@router.get("/v1/calls", response_model=CallPage)
async def list_calls(
    request: Request,
    principal: Viewer,
    date_from: Annotated[date | None, Query(description="calls on or after this day (UTC)")] = None,
    date_to: Annotated[date | None, Query(description="calls on or before this day (UTC)")] = None,
    tier: Annotated[Literal["low", "medium", "high"] | None, Query()] = None,
    label: Annotated[Literal["clear", "omission", "unclear", "evasive"] | None,
                     Query(description="calls with at least one answer of this label")] = None,
    agent: Annotated[str | None, Query(max_length=64, description="agent id")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> CallPage:
    """Scored calls, newest first, filtered and paged. An agent sees only the calls assigned to them."""
    if principal.role == "agent":
        if agent is not None and agent != principal.agent_id:
            raise HTTPException(403, "agents may list only their own calls")
        agent = principal.agent_id
    f = CallFilter(
        date_from=datetime.combine(date_from, datetime.min.time()) if date_from else None,
        date_to=datetime.combine(date_to + timedelta(days=1), datetime.min.time()) if date_to else None,
        tier=tier, label=label, agent_id=agent, limit=limit, offset=offset)
    rows, total = await asyncio.to_thread(_store(request).list_calls, f)
    return CallPage(total=total, limit=limit, offset=offset, items=[
        CallSummaryRow(call_id=c.call_id, created_at=c.created_at, agent_id=c.agent_id, duration_s=c.duration_s,
                       risk_score=c.risk_score, tier=c.tier, labels=dict(c.report.get("labels") or {}),
                       report_url=f"/v1/calls/{c.call_id}/report") for c in rows])


@router.get("/v1/calls/{call_id}/raw", responses={404: {"description": "not kept"}})
async def call_raw_transcript(request: Request, call_id: str, principal: Admin) -> dict[str, Any]:
    """The unredacted transcript (admin only), when `HUIFANG_PRIVACY__KEEP_RAW` kept it. Every read is audited."""
    settings = _settings(request)
    store = _store(request)
    call = await asyncio.to_thread(store.get_call, call_id)
    if call is None or call.raw_encrypted is None:
        raise HTTPException(404, f"no unredacted transcript is kept for call {call_id}")
    await asyncio.to_thread(audit.append, store, "raw_read", principal.name, call_id, {})
    try:
        utterances = RawTextCipher(settings.raw_key_file).decrypt(call.raw_encrypted)
    except ValueError as e:
        raise HTTPException(409, str(e)) from e
    return {"call_id": call_id, "utterances": utterances}


@router.delete("/v1/calls/{call_id}", status_code=204, responses={409: {"description": "under retention"}})
async def delete_call(request: Request, call_id: str, principal: Admin) -> Response:
    """Delete a call's report, answers and stored audio. Refused (409) while the call is younger than the
    minimum retention (`HUIFANG_RECORDINGS__MIN_RETENTION_DAYS`), which a bank may set for legal hold."""
    settings = _settings(request)
    store = _store(request)
    call = await asyncio.to_thread(store.get_call, call_id)
    if call is None:
        raise HTTPException(404, f"no call {call_id}")
    keep_until = call.created_at + timedelta(days=settings.recordings.min_retention_days)
    if utcnow() < keep_until:
        raise HTTPException(409, f"call {call_id} must be kept until {keep_until:%Y-%m-%d %H:%M} UTC "
                                 "(minimum retention)")
    removed = await asyncio.to_thread(store.delete_call, call_id)
    await asyncio.to_thread(audit.append, store, "call_deleted", principal.name, call_id, {})
    if removed is not None:
        await asyncio.to_thread(remove_audio, settings.data_dir, removed.audio_dir)
    return Response(status_code=204)
