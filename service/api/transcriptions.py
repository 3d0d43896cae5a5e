"""`/v1/audio/transcriptions`: OpenAI-compatible transcription, so that tools written for OpenAI's Whisper API (the
official `openai` client among them) can use huifang's recogniser by pointing their base URL here.

The request is OpenAI's: multipart `file` and `model`, optional `language`, `prompt` (Whisper's initial prompt),
`response_format` (json, text, verbose_json, srt, vtt), `temperature` (0 only) and `timestamp_granularities[]`
(segment only). The file is cut and decoded as `huifang transcribe` does (pipeline/transcription.py) and its text
is redacted as every text leaving ASR is; `redact=false` returns raw text to an admin, audited. Refusals carry
huifang's `detail` and `code` and OpenAI's `error` object, so the `openai` client raises the status's exception
(400 `BadRequestError`, ...) with the message in its text and `code` set. docs/transcriptions.md has examples.
"""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
import tempfile
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal, cast, get_args

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.datastructures import FormData, UploadFile

from asr.decoder import compression_ratio
from asr.errors import AsrError, AudioLimitError, UnsupportedLanguageError
from asr.formats import joined_text, srt, webvtt
from pipeline.transcription import Transcript, transcribe_file
from service import bootstrap
from service.api.deps import Ingest, SettingsDep, State
from service.api.recordings import read_form, save_upload
from service.auth import Principal
from service.errors import ServiceError, forbidden, unavailable
from service.metrics import ERRORS
from service.settings import Settings
from service.store import audit


class _OpenAIErrors(APIRoute):
    """This route's refusals (its dependencies' 401/403 included) carry, besides huifang's `detail` and `code`,
    OpenAI's `error` object: OpenAI's clients take the text of an error only from `error.message` (the Python
    client shows nothing else in the exception), so with huifang's shape alone they would say just
    "Error code: 400"."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except ServiceError as e:
                ERRORS.labels(e.code).inc()
                return JSONResponse(openai_error_body(e), status_code=e.status, headers=e.headers)

        return handle


def openai_error_body(error: ServiceError) -> dict[str, Any]:
    """huifang's error body (`detail`, `code`) with OpenAI's `error` object (`message`, `type`, `param`, `code`)."""
    kind = "server_error" if error.status >= 500 else "invalid_request_error"
    return {"detail": error.message, "code": error.code,
            "error": {"message": error.message, "type": kind, "param": None, "code": error.code}}


router = APIRouter(tags=["transcriptions"], route_class=_OpenAIErrors)
log = logging.getLogger(__name__)

ResponseFormat = Literal["json", "text", "verbose_json", "srt", "vtt"]
RESPONSE_FORMATS: tuple[ResponseFormat, ...] = get_args(ResponseFormat)
#: The model name OpenAI's clients send for Whisper: here it means the configured model, as that model's name does.
OPENAI_WHISPER = "whisper-1"
_FIELDS = ("model", "language", "prompt", "response_format", "temperature", "timestamp_granularities[]", "stream",
           "redact")
_TRUE, _FALSE = ("true", "1"), ("false", "0")

#: Transcriptions decode one at a time per process, on their own thread: a burst of them then waits its turn
#: here instead of filling the default thread pool that every route's storage calls and the scoring jobs use,
#: and a request whose client went away before its turn is dropped without decoding.
_DECODE = ThreadPoolExecutor(max_workers=1, thread_name_prefix="transcription")


class TranscriptionUsage(BaseModel):
    """Billing-style usage as OpenAI reports it for Whisper: the audio's duration."""

    type: Literal["duration"] = "duration"
    seconds: float


class TranscriptionJson(BaseModel):
    """`response_format=json`."""

    text: str
    usage: TranscriptionUsage


class TranscriptionSegmentOut(BaseModel):
    """One utterance (VAD-cut stretch of speech on one channel). OpenAI's `tokens` and `temperature` are not
    given: token ids would carry the unredacted text, and the decoder does not report its temperature."""

    id: int
    seek: int
    start: float
    end: float
    text: str
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    channel: str


class TranscriptionVerbose(BaseModel):
    """`response_format=verbose_json`."""

    task: Literal["transcribe"] = "transcribe"
    language: str
    duration: float
    text: str
    segments: list[TranscriptionSegmentOut]
    usage: TranscriptionUsage


_FORM_SCHEMA = {
    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file", "model"],
        "properties": {
            "file": {"type": "string", "format": "binary", "description": "the audio (wav, flac, mp3, ogg, ...)"},
            "model": {"type": "string", "description": f"`{OPENAI_WHISPER}` or the configured model's name"},
            "language": {"type": "string", "description": "ISO-639-1 code (default: the configured language)"},
            "prompt": {"type": "string", "description": "Whisper's initial prompt (default: the domain prompt)"},
            "response_format": {"type": "string", "enum": list(RESPONSE_FORMATS), "default": "json"},
            "temperature": {"type": "number", "enum": [0], "description": "0 only (Whisper's fallback decoding)"},
            "timestamp_granularities[]": {"type": "array", "items": {"type": "string", "enum": ["segment"]}},
            "redact": {"type": "boolean", "default": True, "description": "false: unredacted text (admin only, "
                       "audited)"},
        }}}}},
}


@dataclass(frozen=True, slots=True)
class _Wanted:
    """A transcription request's fields, checked."""

    language: str | None
    prompt: str | None
    response_format: ResponseFormat
    redact: bool


def _parse(fields: dict[str, list[str]], settings: Settings, principal: Principal) -> _Wanted:
    """Check the form's text fields as OpenAI's API would, refusing what huifang does not do rather than
    silently ignoring it."""
    unknown = sorted(set(fields) - set(_FIELDS))
    if unknown:
        raise ServiceError("bad_field", f"unknown field(s): {', '.join(unknown)} (accepted: {', '.join(_FIELDS)})")

    def one(name: str) -> str | None:
        values = fields.get(name, [])
        if len(values) > 1:
            raise ServiceError("bad_field", f"`{name}` given {len(values)} times")
        return values[0].strip() if values else None

    model = one("model")
    served = f"`{OPENAI_WHISPER}` or `{settings.asr.model}` (both mean the configured model)"
    if not model:
        raise ServiceError("unknown_model", f"`model` is required: {served}")
    if model not in (OPENAI_WHISPER, settings.asr.model):
        raise ServiceError("unknown_model", f"model {model!r} is not served here: use {served}")
    response_format = one("response_format") or "json"
    if response_format not in RESPONSE_FORMATS:
        raise ServiceError("bad_response_format", f"response_format {response_format!r}: one of "
                           f"{', '.join(RESPONSE_FORMATS)}")
    temperature = one("temperature")
    if temperature is not None:
        try:
            value = float(temperature)
        except ValueError as e:
            raise ServiceError("bad_temperature", f"temperature {temperature!r} is not a number") from e
        if value != 0:
            raise ServiceError("bad_temperature", "only temperature 0 is offered: decoding starts greedy/beam and "
                               "raises the temperature itself when the text loops or the model is unsure")
    granularities = set(fields.get("timestamp_granularities[]", []))
    if granularities - {"segment"}:
        raise ServiceError("bad_timestamp_granularities", "only `segment` timestamps are offered (word times "
                           "would carry the unredacted digits)")
    if (one("stream") or "false").lower() not in _FALSE:
        raise ServiceError("bad_field", "stream: streamed transcription is not offered here (a live call streams "
                           "over /v1/calls/{id}/audio)")
    redact_field = (one("redact") or "true").lower()
    if redact_field not in _TRUE + _FALSE:
        raise ServiceError("bad_field", f"redact {redact_field!r}: true or false")
    redact = redact_field in _TRUE
    if not redact and principal.role != "admin":
        raise forbidden("only an admin token may ask for unredacted text (redact=false)")
    return _Wanted(language=(one("language") or "").lower() or None, prompt=one("prompt") or None,
                   response_format=cast(ResponseFormat, response_format), redact=redact)


def _form_parts(form: FormData) -> tuple[UploadFile, dict[str, list[str]]]:
    uploads = [(k, v) for k, v in form.multi_items() if isinstance(v, UploadFile)]
    fields: dict[str, list[str]] = {}
    for k, v in form.multi_items():
        if isinstance(v, str):
            fields.setdefault(k, []).append(v)
    if [k for k, _ in uploads] != ["file"]:
        raise ServiceError("bad_upload", "send exactly one audio file, in the field `file`")
    return uploads[0][1], fields


def _usage(transcript: Transcript) -> TranscriptionUsage:
    return TranscriptionUsage(seconds=round(transcript.duration_s, 3))


def _verbose(transcript: Transcript) -> TranscriptionVerbose:
    utterances = transcript.utterances
    return TranscriptionVerbose(
        language=transcript.language, duration=round(transcript.duration_s, 3),
        text=joined_text([u.text for u in utterances]), usage=_usage(transcript),
        segments=[TranscriptionSegmentOut(
            # Each utterance is decoded in its own window, which starts where it does (in 10 ms frames).
            id=i, seek=math.floor(u.start_s * 100), start=round(u.start_s, 3), end=round(u.end_s, 3), text=u.text,
            avg_logprob=round(u.avg_logprob, 4), compression_ratio=round(compression_ratio(u.text), 4),
            no_speech_prob=round(u.no_speech_prob, 4), channel=u.channel)
            for i, u in enumerate(utterances)])


def _render(transcript: Transcript, response_format: ResponseFormat) -> Response:
    """The response OpenAI's API gives for `response_format`: JSON for json and verbose_json, text otherwise."""
    text = joined_text([u.text for u in transcript.utterances])
    if response_format == "json":
        return JSONResponse(TranscriptionJson(text=text, usage=_usage(transcript)).model_dump())
    if response_format == "verbose_json":
        return JSONResponse(_verbose(transcript).model_dump())
    if response_format == "srt":
        return PlainTextResponse(srt(transcript.utterances))
    if response_format == "vtt":
        return PlainTextResponse(webvtt(transcript.utterances), media_type="text/vtt")
    return PlainTextResponse(text + "\n")


_SIZE_SETTING = "HUIFANG_TRANSCRIPTIONS__MAX_FILE_MB"
#: How often a transcription in progress looks whether its client is still there.
DISCONNECT_POLL_S = 0.5


class ClientGone(Exception):
    """The client of a transcription went away: its decoding stops at the next utterance."""


def _stop_if(gone: threading.Event, _done_s: float) -> None:
    """The decoder's progress callback: raises `ClientGone` once `gone` is set (on the decoding thread)."""
    if gone.is_set():
        raise ClientGone()


async def _while_connected(request: Request, work: asyncio.Future[Transcript], gone: threading.Event) -> Transcript:
    """The result of `work`; if the client disconnects first, `gone` is set (the decoding stops at its next
    utterance, or before it starts when it was still waiting its turn) and `ClientGone` is raised once the
    worker has let go of the file."""
    while True:
        done, _ = await asyncio.wait({work}, timeout=DISCONNECT_POLL_S)
        if done:
            return work.result()
        if await request.is_disconnected():
            gone.set()
            await asyncio.gather(work, return_exceptions=True)  # the file is removed only once it is let go
            raise ClientGone()


@router.post("/v1/audio/transcriptions", openapi_extra=_FORM_SCHEMA, response_model=None,
             responses={200: {"model": TranscriptionVerbose, "description": "JSON for json (`text`, `usage`) and "
                              "verbose_json; text/plain for text and srt; text/vtt for vtt"},
                        400: {"description": "unknown model or field, bad language, format or temperature"},
                        403: {"description": "agent token, or redact=false without admin"},
                        413: {"description": "too large or too long"}, 415: {"description": "not multipart"},
                        422: {"description": "unreadable audio"}})
async def create_transcription(request: Request, principal: Ingest, state: State,
                               settings: SettingsDep) -> Response:
    """Transcribe an audio file (OpenAI's `POST /v1/audio/transcriptions`); roles ingest, supervisor, admin.

    Bounded as OpenAI's endpoint: 25 MB and 30 minutes of audio by default (`HUIFANG_TRANSCRIPTIONS__*`); longer
    recordings go through `/v1/recordings`. Decoding stops when the client disconnects. Stereo files are read as
    agent and customer, each channel decoded apart (`verbose_json` segments name theirs). The text is redacted
    unless an admin sends `redact=false`, which is audited.
    """
    form = await read_form(request, settings.transcriptions.max_file_mb, "send the audio as multipart/form-data "
                           "(field `file`, and `model`)", max_files=1, max_fields=16, setting=_SIZE_SETTING)
    try:
        upload, fields = _form_parts(form)
        wanted = _parse(fields, settings, principal)
        if state.asr_error:
            raise unavailable("asr_unavailable", "speech recognition is not available on this server (GET /healthz "
                              "says why)")
        store = state.store
        if not wanted.redact and store is None:
            # Raw text leaves only with a record of who took it: no audit log, no raw text.
            raise unavailable("storage_unavailable", "unredacted text needs the audit log, and storage is not "
                              f"available: {state.store_error or 'not set up'}")
        parent = settings.data_dir / "transcriptions"  # inside the data directory: the audio holds personal data
        await asyncio.to_thread(parent.mkdir, parents=True, exist_ok=True)
        folder = Path(await asyncio.to_thread(tempfile.mkdtemp, dir=parent))
        try:
            path = await save_upload(upload, folder, "audio", [settings.transcriptions.max_file_mb << 20],
                                     _SIZE_SETTING)
            gone = threading.Event()
            work = partial(transcribe_file, path, state.transcriber, bootstrap.transcription_limits(settings),
                           wanted.language, wanted.prompt, wanted.redact, partial(_stop_if, gone))
            try:
                transcript = await _while_connected(request, asyncio.get_running_loop().run_in_executor(
                    _DECODE, work), gone)
            except ClientGone as e:
                log.info("transcription: the client went away; decoding stopped")
                raise ServiceError("client_gone", "the client disconnected; decoding stopped", 499) from e
            except UnsupportedLanguageError as e:
                raise ServiceError("bad_language", str(e), 400) from e
            except AudioLimitError as e:
                raise ServiceError("too_long", f"{e} (HUIFANG_TRANSCRIPTIONS__MAX_DURATION_S; longer recordings: "
                                   "POST /v1/recordings)", 413) from e
            except AsrError as e:
                raise ServiceError("unreadable", str(e), 422) from e
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)
    finally:
        await form.close()
    if not transcript.redacted and store is not None:
        # A read of unredacted text like `GET /v1/calls/{id}/raw`, so the same kind, checkpointed as it is logged.
        await asyncio.to_thread(audit.append, store, "raw_read", principal.name, None,
                                {"source": "transcription", "duration_s": round(transcript.duration_s, 1),
                                 "utterances": len(transcript.utterances)})
    return _render(transcript, wanted.response_format)
