"""`/v1/calls` over HTTP: a scored call's report, its stored audio, the list of calls, the unredacted transcript
(admin) and deletion. The live calls' websockets under the same prefix are in `calls_ws`."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from nlu.report import Action, AgentReview, AnswerRecord, Contribution, SilencedSpan, Tier, TopicResult, read_report
from service.api.deps import MAX_OFFSET, Admin, CallIdPath, SettingsDep, StoreDep, Viewer, checked_id
from service.api.notes import NoteOut, report_notes
from service.bankdays import bank_zone, day_start_utc
from service.errors import ServiceError, forbidden
from service.feedback.feedback_api import FeedbackItem
from service.feedback.feedback_api import item as feedback_item
from service.feedback.repository import call_feedback
from service.ids import MAX_LENGTH
from service.privacy import RawTextCipher
from service.store import CallFilter, Store, StoreError, audit
from service.store.store import utcnow
from service.workers.jobs import remove_audio

router = APIRouter(tags=["calls"])


class CallSummaryRow(BaseModel):
    call_id: str
    created_at: datetime
    agent_id: str | None
    duration_s: float
    risk_score: int
    tier: str
    labels: dict[str, int]
    report_url: str
    #: `upload` (a scored recording), `live` (streamed) or `demo` (the console's demo replay).
    source: str
    #: False for a live call that did not end cleanly (what was said up to its last final).
    complete: bool


class CallPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[CallSummaryRow]


class ReportUtterance(BaseModel):
    """One redacted utterance of the report: who spoke (`channel`), when (seconds of the call) and what."""

    utterance_id: str
    channel: Literal["agent", "customer"]
    start_s: float
    end_s: float
    text: str


class ReportBody(BaseModel):
    """A call's report on the wire: the stored report (`nlu.report.Report`, read by `read_report` whatever its
    format version) without the version itself, which is storage's business."""

    call_id: str
    duration_s: float
    utterances: list[ReportUtterance]
    topics: list[TopicResult]
    risk_score: int
    tier: Tier
    contributions: list[Contribution]
    agent: AgentReview
    actions: list[Action]
    answers: list[AnswerRecord]
    labels: dict[str, int]
    assessor_version: str
    risk_version: str
    loan_file: dict[str, Any] | None
    silenced_audio: list[SilencedSpan]
    live_labels: dict[str, str]
    redecoded: list[str]


def report_body(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored report as `ReportBody` sends it: read (and upgraded) by the one reader, written in today's form."""
    return read_report(stored).to_dict()


class AudioLink(BaseModel):
    url: str
    channels: list[str]


class CallReport(ReportBody):
    """The report with what the call row adds: its stored audio, when it was stored and its agent."""

    audio: list[AudioLink]
    created_at: str
    agent_id: str | None
    source: str
    complete: bool
    #: A job of the call is queued or running: its live finals being re-decoded, or a replacing upload being
    #: scored (the report may still change).
    reprocessing: bool
    #: Supervisors' notes to the agent during the call (主管提示), oldest first.
    notes: list[NoteOut] = []
    #: Agents' verdicts on the call's prompts (issue #31), each with its review: shown beside the prompt.
    prompt_feedback: list[FeedbackItem] = []


class RawUtterance(BaseModel):
    channel: str
    start_s: float
    end_s: float
    text: str


class RawTranscript(BaseModel):
    call_id: str
    utterances: list[RawUtterance]


class ReportVersion(BaseModel):
    """An earlier report of the call and what replaced it."""

    version: int = Field(description="1 for the call's first report, counting up")
    reason: str = Field(description="replace: an admin's new upload; rescore: `huifang rescore` with another "
                                    "assessor; redecode: a live call's utterances decoded again after the call; "
                                    "review: a supervisor upheld an agent's dispute of a prompt")
    assessor_version: str = Field(description="what produced this report (empty for reports of before it was kept)")
    recording_id: str | None
    agent_id: str | None
    created_at: str = Field(description="when the call came in (UTC)")
    replaced_at: str = Field(description="when this report stopped being the call's report (UTC)")
    report: ReportBody


class CallVersions(BaseModel):
    call_id: str
    versions: list[ReportVersion]


def _not_found(message: str) -> ServiceError:
    return ServiceError("not_found", message, 404)


@router.get("/v1/calls/{call_id}/report", response_model=CallReport)
async def call_report(call_id: CallIdPath, principal: Viewer, store: StoreDep) -> CallReport:
    """The call's report: utterances, per-topic verdicts, `risk_score`, `tier`, contributions, the agent's side
    and recommended actions."""
    call = await asyncio.to_thread(store.get_call, call_id)
    if call is not None and not principal.may_see(call.agent_id):
        raise forbidden(f"call {call_id} is not assigned to you")
    if call is None:
        job = await asyncio.to_thread(store.active_job_for, call_id)
        detail = f"call {call_id} is still being scored ({job.status})" if job else f"no report for call {call_id}"
        raise _not_found(detail)
    await asyncio.to_thread(audit.append, store, "report_read", principal.name, call_id, {"role": principal.role})
    files = await asyncio.to_thread(_audio_files, store, call.recording_id, call.audio_dir)
    pending = await asyncio.to_thread(store.active_job_for, call_id)
    notes = await asyncio.to_thread(report_notes, store, call_id)
    verdicts = await asyncio.to_thread(call_feedback, store, call_id)
    return CallReport(**report_body(call.report), created_at=call.created_at.isoformat(), agent_id=call.agent_id,
                      source=call.source, complete=call.complete, reprocessing=pending is not None, notes=notes,
                      prompt_feedback=[feedback_item(v) for v in verdicts],
                      audio=[AudioLink(url=f"/v1/calls/{call_id}/audio/{i}", channels=f["channels"])
                             for i, f in enumerate(files)])


def _audio_files(store: Store, recording_id: str | None, audio_dir: str | None) -> list[dict[str, Any]]:
    if audio_dir is None or recording_id is None:
        return []
    job = store.get_job(recording_id)
    return job.files if job else []


@router.get("/v1/calls/{call_id}/audio/{index}", response_class=FileResponse,
            responses={200: {"content": {"audio/*": {}}, "description": "the audio file as stored"}})
async def call_audio_file(call_id: CallIdPath, index: int, principal: Viewer, store: StoreDep,
                          settings: SettingsDep) -> FileResponse:
    """A stored audio file of the call (while retention keeps it), for playing spans in the report page."""
    call = await asyncio.to_thread(store.get_call, call_id)
    if call is None:
        raise _not_found(f"no call {call_id}")
    if not principal.may_see(call.agent_id):
        raise forbidden(f"call {call_id} is not assigned to you")
    files = await asyncio.to_thread(_audio_files, store, call.recording_id, call.audio_dir)
    if not 0 <= index < len(files):
        raise _not_found("no such audio (deleted by retention, or never stored)")
    path = settings.data_dir / files[index]["path"]
    if not path.exists():
        raise _not_found("the audio file is gone")
    await asyncio.to_thread(audit.append, store, "audio_read", principal.name, call_id, {"file": index})
    return FileResponse(path)


def _day_bounds(first: date | None, last: date | None, zone: str) -> tuple[datetime | None, datetime | None]:
    """Stored-time bounds [start of `first`, start of the day after `last`) of days of the bank's calendar
    (None: unbounded); a day whose start is out of range is refused (422)."""
    if first is None and last is None:
        return None, None
    tz = bank_zone(zone)
    try:
        return (day_start_utc(first, tz) if first else None,
                day_start_utc(last + timedelta(days=1), tz) if last else None)
    except OverflowError as e:  # 0001-01-01 in a zone east of UTC, 9999-12-31 and the day after
        raise ServiceError("bad_date", "date_from and date_to must be days from 0001-01-02 to 9999-12-30",
                           422) from e


@router.get("/v1/calls", response_model=CallPage)
async def list_calls(
    principal: Viewer,
    store: StoreDep,
    settings: SettingsDep,
    date_from: Annotated[date | None, Query(description="calls on or after this day of the bank's calendar "
                                                         "(HUIFANG_LOANBOOK__TIMEZONE)")] = None,
    date_to: Annotated[date | None, Query(description="calls on or before this day of the bank's calendar")] = None,
    tier: Annotated[Literal["low", "medium", "high"] | None, Query()] = None,
    label: Annotated[Literal["clear", "omission", "unclear", "evasive"] | None,
                     Query(description="calls with at least one answer of this label")] = None,
    agent: Annotated[str | None, Query(max_length=MAX_LENGTH["agent"], description="agent id")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> CallPage:
    """Scored calls, newest first, filtered and paged. An agent sees only the calls assigned to them."""
    agent = checked_id(agent, "agent")
    if principal.role == "agent":
        if agent is not None and agent != principal.agent_id:
            raise forbidden("agents may list only their own calls")
        agent = principal.agent_id
    since, until = _day_bounds(date_from, date_to, settings.loanbook.timezone)
    f = CallFilter(date_from=since, date_to=until, tier=tier, label=label, agent_id=agent, limit=limit, offset=offset)
    rows, total = await asyncio.to_thread(store.list_calls, f)
    return CallPage(total=total, limit=limit, offset=offset, items=[
        CallSummaryRow(call_id=c.call_id, created_at=c.created_at, agent_id=c.agent_id, duration_s=c.duration_s,
                       risk_score=c.risk_score, tier=c.tier, labels=read_report(c.report).labels,
                       report_url=f"/v1/calls/{c.call_id}/report", source=c.source, complete=c.complete)
        for c in rows])


@router.get("/v1/calls/{call_id}/raw", response_model=RawTranscript, responses={404: {"description": "not kept"}})
async def call_raw_transcript(call_id: CallIdPath, principal: Admin, store: StoreDep,
                              settings: SettingsDep) -> dict[str, Any]:
    """The unredacted transcript (admin only), when `HUIFANG_PRIVACY__KEEP_RAW` kept it. Every read is audited."""
    call = await asyncio.to_thread(store.get_call, call_id)
    if call is None or call.raw_encrypted is None:
        raise _not_found(f"no unredacted transcript is kept for call {call_id}")
    await asyncio.to_thread(audit.append, store, "raw_read", principal.name, call_id, {})
    try:
        utterances = RawTextCipher(settings.raw_key_file).decrypt(call.raw_encrypted)
    except ValueError as e:
        raise ServiceError("key_mismatch", str(e), 409) from e
    return {"call_id": call_id, "utterances": utterances}


@router.get("/v1/calls/{call_id}/versions", response_model=CallVersions)
async def call_versions(call_id: CallIdPath, principal: Admin, store: StoreDep) -> dict[str, Any]:
    """Every report the call had before its current one, oldest first, each with what replaced it: an admin's new
    upload (`replace=true` on `POST /v1/recordings`), `huifang rescore`, a live call's re-decoding or a review
    that upheld an agent's dispute (admins; audited). Deleted with the call."""
    versions = await asyncio.to_thread(store.earlier_reports, call_id)
    await asyncio.to_thread(audit.append, store, "version_read", principal.name, call_id,
                            {"versions": len(versions)})
    out = []
    for v in versions:
        report = read_report(v.report)  # the one reader (format 1 upgraded)
        out.append({"version": v.version, "reason": v.reason, "assessor_version": report.assessor_version,
                    "recording_id": v.recording_id, "agent_id": v.agent_id, "created_at": v.created_at.isoformat(),
                    "replaced_at": v.replaced_at.isoformat(), "report": report.to_dict()})
    return {"call_id": call_id, "versions": out}


@router.delete("/v1/calls/{call_id}", status_code=204, responses={409: {"description": "under retention"}})
async def delete_call(call_id: Annotated[str, Path(max_length=1024)], principal: Admin, store: StoreDep,
                      settings: SettingsDep) -> Response:
    """Delete everything stored under a call id: its report, answers, stored audio and every job (also a failed
    or queued one). Refused (409) while a job of the call is running, or while the call is younger than the
    minimum retention (`HUIFANG_SCORING__MIN_RETENTION_DAYS`), which a bank may set for legal hold. The id is
    not held to today's pattern (service/ids.py): what an older version stored can still be deleted."""
    found = await asyncio.to_thread(store.call_footprint, call_id)
    if found is None:
        raise _not_found(f"no call {call_id}")
    keep_until = found.created_at + timedelta(days=settings.scoring.min_retention_days)
    if utcnow() < keep_until:
        raise ServiceError("retention", f"call {call_id} must be kept until {keep_until:%Y-%m-%d %H:%M} UTC "
                           "(minimum retention)", 409)
    try:
        folders = await asyncio.to_thread(store.delete_call, call_id)
    except StoreError as e:
        raise ServiceError("being_scored", str(e), 409) from e
    await asyncio.to_thread(store.flush_deleted)
    await asyncio.to_thread(audit.append, store, "call_deleted", principal.name, call_id,
                            {"report": found.has_report, "audio_folders": len(folders)})
    for folder in folders:
        await asyncio.to_thread(remove_audio, settings.data_dir, folder)
    return Response(status_code=204)
