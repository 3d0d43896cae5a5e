"""`/v1/recordings`: upload a finished call for scoring and follow its job (reports are under `/v1/calls`)."""

from __future__ import annotations

import asyncio
import secrets
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.datastructures import FormData, UploadFile
from starlette.types import Message

from asr.errors import AsrError, AudioLimitError
from nlu.pii import minimal_loan_file
from pipeline.call import ROLES, roles_problem, split_roles
from pipeline.recording import AudioPart, RecordingError, validate_parts
from service import bootstrap
from service.api.deps import Ingest, SettingsDep, State, StoreDep, checked_id
from service.auth import Principal
from service.errors import ServiceError
from service.loanbook.book import update_contact_from_loan_file
from service.protocol import LoanFileError, parse_loan_file
from service.settings import Settings
from service.store import JobRecord, Store, audit
from service.store.store import utcnow

router = APIRouter(tags=["recordings"])

#: Multipart overhead allowed on top of the audio size limit (boundaries, headers, the loan file).
_FORM_OVERHEAD = 1 << 20
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


def _status(job: JobRecord) -> JobStatus:
    return JobStatus(id=job.id, call_id=job.call_id, status=job.status,
                     progress=job.progress, error=job.error, created_at=job.created_at, started_at=job.started_at,
                     finished_at=job.finished_at,
                     report_url=f"/v1/calls/{job.call_id}/report" if job.status == "done" else None)


def _too_large(setting: str = "HUIFANG_AUDIO__MAX_FILE_MB") -> ServiceError:
    return ServiceError("too_large", f"the upload exceeds the size limit ({setting})", 413)


def _bounded(request: Request, limit: int, setting: str = "HUIFANG_AUDIO__MAX_FILE_MB") -> Request:
    """The request with its body counted as it streams in: past `limit` bytes reading stops with 413, so a
    body larger than allowed is never spooled to disk in full (a declared Content-Length is checked first)."""
    seen = 0

    async def receive() -> Message:
        nonlocal seen
        message = await request.receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _too_large(setting)
        return message

    return Request(request.scope, receive)


async def read_form(request: Request, max_mb: int, hint: str, max_files: int, max_fields: int,
                    setting: str = "HUIFANG_AUDIO__MAX_FILE_MB") -> FormData:
    """The multipart form of an audio upload, read within the size limit (`max_mb`, the route's `setting`, plus
    the form's overhead): 415 when the body is not multipart (`hint` says what to send), 413 past the limit, 400
    when it cannot be parsed. Shared by every route that takes audio files."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ServiceError("not_multipart", hint, 415)
    limit = (max_mb << 20) + _FORM_OVERHEAD
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(setting)
    try:
        return await _bounded(request, limit, setting).form(max_files=max_files, max_fields=max_fields)
    except ServiceError:
        raise
    except Exception as e:  # noqa: BLE001 - malformed multipart bodies raise several types
        raise ServiceError("bad_multipart", f"unreadable multipart body: {e}", 400) from e


async def save_upload(upload: UploadFile, folder: Path, name: str, budget: list[int],
                      setting: str = "HUIFANG_AUDIO__MAX_FILE_MB") -> Path:
    """Stream an uploaded file to `folder/name` plus its audio suffix, counting against the upload limit
    (`budget[0]` bytes left; 413 naming `setting` past it)."""
    suffix = Path(upload.filename or "").suffix.lower()
    path = folder / f"{name}{suffix if suffix in _SUFFIXES else '.audio'}"
    with open(path, "wb") as out:
        while chunk := await upload.read(_CHUNK):
            budget[0] -= len(chunk)
            if budget[0] < 0:
                raise _too_large(setting)
            await asyncio.to_thread(out.write, chunk)
    return path


@router.post("/v1/recordings", status_code=202, response_model=JobStatus,
             responses={413: {"description": "too large or too long"}, 415: {"description": "not multipart"},
                        422: {"description": "unreadable audio, wrong channels, silence, bad loan_file"}})
async def upload_recording(request: Request, principal: Ingest, state: State, settings: SettingsDep,
                           store: StoreDep) -> JSONResponse:
    """Upload a finished call for scoring (multipart/form-data).

    Either `file` (a stereo recording: channel 0 agent, 1 customer unless `channels` says otherwise, e.g.
    `customer,agent`; a mono file needs `channels=agent` or `customer` and the other side in a second upload
    is not supported) or `agent` and `customer` (one mono file per side). Optional: `loan_file` (JSON text),
    `call_id` (default: generated), `agent_id`, `replace`. Returns the job; follow it at `GET /v1/recordings/{id}`.

    A call id that already has a report is refused (409 `call_exists`) unless an admin sends `replace=true`; the
    replaced report is then kept as an earlier version (`GET /v1/calls/{id}/versions`, admins). A call under
    the minimum retention (`HUIFANG_SCORING__MIN_RETENTION_DAYS`, legal hold) is refused to everyone (409
    `retention`). Refusals and replacements are audited.
    """
    form = await read_form(request, settings.audio.max_file_mb, "send the recording as multipart/form-data (field "
                           "`file`, or `agent` and `customer`)", max_files=4, max_fields=16)
    uploads = {k: v for k, v in form.multi_items() if isinstance(v, UploadFile)}
    fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
    unknown = set(uploads) - {"file", "agent", "customer"}
    if unknown:
        raise ServiceError("bad_upload", f"unknown file field(s): {', '.join(sorted(unknown))}", 422)
    if "file" in uploads and ({"agent", "customer"} & uploads.keys()):
        raise ServiceError("bad_upload", "send either `file` or `agent` and `customer`, not both", 422)
    if "file" not in uploads and not {"agent", "customer"} <= uploads.keys():
        raise ServiceError("bad_upload", "no recording: send `file` (stereo) or both `agent` and `customer`", 422)
    call_id = fields.get("call_id") or f"call-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
    checked_id(call_id, "call")
    try:
        given = parse_loan_file(fields.get("loan_file"))
    except LoanFileError as e:
        raise ServiceError("bad_loan_file", str(e), 422) from e
    # Only what scoring needs is stored with the queued job: no phone, ID or card numbers. The customer's phone
    # and e-mail go to their contact details, encrypted (the loan book's messages).
    loan_file = minimal_loan_file(given)
    agent_id = checked_id(fields.get("agent_id") or None, "agent")
    roles: tuple[str, ...] = ()
    if "file" in uploads:
        roles = split_roles(fields.get("channels") or ",".join(ROLES))
        problem = roles_problem(roles)
        if problem is not None:
            raise ServiceError("bad_channels", f"channels {problem}", 422)
    if await asyncio.to_thread(store.active_job_for, call_id):
        raise ServiceError("being_scored", f"call {call_id} is already being scored", 409)
    await _may_replace(store, settings, principal, call_id, fields.get("replace"))
    if state.loanbook is not None:
        await asyncio.to_thread(update_contact_from_loan_file, state.loanbook, given)

    job_id = secrets.token_hex(8)
    folder = settings.data_dir / "audio" / job_id
    folder.mkdir(parents=True, exist_ok=True)
    try:
        budget = [settings.audio.max_file_mb << 20]
        if "file" in uploads:
            parts = [AudioPart(await save_upload(uploads["file"], folder, "call", budget), roles)]
        else:
            parts = [AudioPart(await save_upload(uploads[role], folder, role, budget), (role,))
                     for role in ("agent", "customer")]
        try:
            await asyncio.to_thread(validate_parts, parts, bootstrap.decode_limits(settings))
        except AudioLimitError as e:
            raise ServiceError("too_long", str(e), 413) from e
        except (AsrError, RecordingError) as e:
            raise ServiceError("unscorable", str(e), 422) from e
        files = [{"path": str(p.path.relative_to(settings.data_dir)), "channels": list(p.channels)} for p in parts]
        job = await asyncio.to_thread(store.create_job, call_id, files, loan_file, agent_id, job_id)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # nothing half-written: no row, no files
        raise
    if state.jobs is not None:
        state.jobs.notify()
    return JSONResponse(_status(job).model_dump(mode="json"), status_code=202,
                        headers={"Location": f"/v1/recordings/{job.id}"})


async def _may_replace(store: Store, settings: Settings, principal: Principal, call_id: str,
                       replace_field: str | None) -> None:
    """Whether an upload may store `call_id`: a call with a report is replaced only on an admin's `replace=true`
    and never under the minimum retention (legal hold); each refusal and each replacement is audited."""
    if (replace_field or "false").lower() not in ("true", "1", "false", "0"):
        raise ServiceError("bad_field", f"replace {replace_field!r}: true or false", 422)
    found = await asyncio.to_thread(store.call_footprint, call_id)
    if found is not None and "live" in found.pending:
        raise ServiceError("call_live", f"call {call_id} is streaming live: its report is stored when it ends", 409)
    if found is None or not found.has_report:
        return  # new, or only failed attempts: nothing stored to lose
    keep_until = found.created_at + timedelta(days=settings.scoring.min_retention_days)
    refusal = None
    if utcnow() < keep_until:
        refusal = ServiceError("retention", f"call {call_id} is under the minimum retention until "
                               f"{keep_until:%Y-%m-%d %H:%M} UTC (legal hold): it cannot be replaced", 409)
    elif principal.role != "admin" or (replace_field or "").lower() not in ("true", "1"):
        refusal = ServiceError("call_exists", f"call {call_id} already has a report; an admin may replace it with "
                               "replace=true (the report is kept as an earlier version)", 409)
    kind = "call_replaced" if refusal is None else "upload_refused"
    await asyncio.to_thread(audit.append, store, kind, principal.name, call_id,
                            {"role": principal.role, **({"reason": refusal.code} if refusal else {})})
    if refusal is not None:
        raise refusal


@router.get("/v1/recordings/{job_id}", response_model=JobStatus)
async def recording_status(job_id: str, _: Ingest, store: StoreDep) -> JobStatus:
    """Status (`queued`, `running`, `done`, `failed`) and progress (0-1) of a scoring job."""
    job = await asyncio.to_thread(store.get_job, job_id)
    if job is None:
        raise ServiceError("not_found", f"no recording job {job_id}", 404)
    return _status(job)


