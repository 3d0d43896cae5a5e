"""Wire format of the live call socket (`/v1/calls/{call_id}/audio`), as pydantic models.

`docs/protocol.md` describes the exchange; `python -m service.protocol` prints the JSON schemas. Clients must
ignore event types they do not know: later versions add more on the same socket.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from service.ids import AgentId, CustomerId, LoanId, valid_id

#: Where a call's events go (a socket's outbox, the event hub, a test's list).
Emit = Callable[[BaseModel], Awaitable[None]]

#: Largest binary frame accepted (64 KiB: 2 s of 16 kHz stereo PCM16).
MAX_FRAME_BYTES = 64 * 1024


class CloseCode:
    """WebSocket close codes used by huifang (4xxx are application codes, mirroring HTTP statuses)."""

    NORMAL = 1000  # after `end`: the call was stopped by the client
    GOING_AWAY = 1001  # the server is shutting down
    BAD_REQUEST = 4400  # invalid start message, audio before start, malformed frame
    CALL_IN_PROGRESS = 4409  # another connection is already streaming this call id
    FRAME_TOO_LARGE = 4413  # a binary frame over MAX_FRAME_BYTES
    SLOW_CONSUMER = 4408  # the client stopped reading events; the server will not buffer without bound
    CALL_TOO_LONG = 4414  # the call exceeded the configured maximum duration
    UNAUTHORIZED = 4401  # no token, or an unknown one
    FORBIDDEN = 4403  # a token whose role may not use this socket, or another agent's call
    TOO_MANY_CALLS = 4429  # this token already streams its maximum number of calls
    NOT_STARTED = 4404  # an events subscriber waited longer than allowed for a call that never started
    INTERNAL = 4500  # unexpected server error (details are logged, never sent)
    UNAVAILABLE = 4503  # the speech model could not be loaded (GET /healthz says why)


def valid_call_id(call_id: str) -> bool:
    """Whether `call_id` is a well-formed call id (service/ids.py: the whole string, no personal number)."""
    return valid_id(call_id, "call")


Name = Annotated[str, Field(max_length=40)]
#: Contact fields, checked alike wherever they arrive (a loan file, `PUT /v1/customers/{id}/contact`): one
#: address per field, nothing a mail or SMS header could be split on (no comma, semicolon, angle bracket, quote,
#: space or control character).
PHONE_PATTERN = r"^\+?[0-9][0-9 -]{4,30}$"
EMAIL_PATTERN = r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,63}$"
Phone = Annotated[str, Field(max_length=32, pattern=PHONE_PATTERN)]
Email = Annotated[str, Field(max_length=254, pattern=EMAIL_PATTERN)]
_PHONE, _EMAIL = re.compile(PHONE_PATTERN.rstrip("$")), re.compile(EMAIL_PATTERN.rstrip("$"))


def valid_address(channel: str, address: str) -> bool:
    """Whether `address` is one well-formed phone number (`sms`) or e-mail address (`email`), as `Phone` and
    `Email` check it (what an older version stored unchecked is refused at send time by this)."""
    pattern = {"sms": (_PHONE, 32), "email": (_EMAIL, 254)}.get(channel)
    return pattern is not None and len(address) <= pattern[1] and pattern[0].fullmatch(address) is not None


class LoanFile(BaseModel):
    """The bank's record of the loan: the figures answer assessment checks stated figures against, and the
    names, address and numbers redaction must recognise. Every field is bounded and no other key is accepted:
    the record is read for every utterance of a call."""

    model_config = ConfigDict(extra="forbid")

    borrower: Name | None = None
    name: Name | None = None
    coborrower_name: Name | None = None
    guarantor_name: Name | None = None
    address: Annotated[str, Field(max_length=200)] | None = None
    property_address: Annotated[str, Field(max_length=200)] | None = None
    customer_id: CustomerId | None = None
    loan_id: LoanId | None = None
    phone: Phone | None = None
    mobile: Phone | None = None
    email: Email | None = None
    id_number: Annotated[str, Field(max_length=32)] | None = None
    card_number: Annotated[str, Field(max_length=32)] | None = None
    role: Literal["borrower", "coborrower", "guarantor"] | None = None
    amount_yuan: float | None = Field(None, ge=0)
    term_years: float | None = Field(None, gt=0, le=50)
    repay_day: int | None = Field(None, ge=1, le=31)
    monthly_yuan: float | None = Field(None, ge=0)
    rate_pct: float | None = Field(None, ge=0, le=100)
    #: Channels the customer agreed to be contacted on, and those they opted out of (the loan book's messages).
    consent: list[Literal["call", "sms", "email", "letter"]] | None = Field(None, max_length=4)
    opted_out: list[Literal["call", "sms", "email", "letter"]] | None = Field(None, max_length=4)


class StartMessage(BaseModel):
    """First frame from the client: the audio format and the channel roles, in interleaving order."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["start"]
    sample_rate_hz: Literal[8000, 16000]
    encoding: Literal["pcm16", "mulaw"]
    channels: list[str] = Field(default_factory=lambda: ["agent", "customer"], min_length=1, max_length=2)
    loan_file: LoanFile | None = None
    #: The agent taking the call: only their screens (and supervisors') may watch it.
    agent_id: AgentId | None = None

    @field_validator("channels")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value) or not all(v.strip() for v in value):
            raise ValueError("channel roles must be distinct, non-empty names")
        return value

    @property
    def bytes_per_frame(self) -> int:
        """Bytes of one sample across all channels."""
        return (2 if self.encoding == "pcm16" else 1) * len(self.channels)


class StopMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["stop"]


# -- server -> client ---------------------------------------------------------------------------------------

class ReadyEvent(BaseModel):
    """The call is open. `channels` and `loan_file` repeat the start message for event subscribers."""

    type: Literal["ready"] = "ready"
    call_id: str
    channels: list[str] = Field(default_factory=list)
    loan_file: dict[str, Any] | None = None
    #: What the customer's earlier calls left unresolved (topics never answered clearly, an open second call's
    #: topics), for the top of the checklist: [{topic, name, label, call_id, at}]. Empty without a customer_id.
    carried_over: list[dict[str, Any]] = Field(default_factory=list)


class RecordOnlyEvent(BaseModel):
    """Sent right after `ready` when the call is recorded only: every server was decoding its capacity of live
    calls, so this one gets no live transcript, verdicts or prompts. Its audio is kept, and when it ends it is
    scored as a recording (its report then at `/v1/calls/{call_id}/report`). A reconnect continues it recorded
    only."""

    type: Literal["record_only"] = "record_only"
    call_id: str
    message: str


class PartialEvent(BaseModel):
    """The utterance so far, while the speaker is still talking. Replaced by later partials and the final."""

    type: Literal["partial"] = "partial"
    channel: str
    utterance_id: str
    text: str
    start_s: float


class FinalEvent(BaseModel):
    """A finished utterance: exactly one per utterance. `text` is empty only to withdraw shown partials."""

    type: Literal["final"] = "final"
    channel: str
    utterance_id: str
    text: str
    start_s: float
    end_s: float


class OverloadEvent(BaseModel):
    """Finals are late: one came (or is still due) more than `HUIFANG_LIVE__OVERLOAD_FINAL_DELAY_S` after its
    utterance ended. Sent once when a call's finals fall behind, not per late final; `overload_cleared` follows.
    Skipped partials alone are no overload: partials only ever run on idle capacity."""

    type: Literal["overload"] = "overload"
    #: How long after its utterance ended the late final was (or still is) due, in seconds.
    final_delay_s: float
    #: Partials skipped on this call so far (decoding was busy).
    dropped_partials: int
    message: str


class OverloadClearedEvent(BaseModel):
    """Finals are on time again after an `overload` (a final came within the limit and none is late), or the
    call ended: screens take their "busy" notice down."""

    type: Literal["overload_cleared"] = "overload_cleared"
    message: str


class EvidenceItem(BaseModel):
    """Why a label was given: `kind` is cue, slot, no_evidence (neither rules nor model found a sign either way:
    `unclear`, ask again), missing_slot (in reports stored before no_evidence existed), mismatch, silence,
    counter_question, or for a learned decision `learned` (its probability) and `example` (a nearest training
    answer behind it)."""

    kind: str
    text: str
    label: str | None = None


class SlotValue(BaseModel):
    """A fact stated in the answer, normalised (yuan, day of month, years, percent, yes/no as bool)."""

    kind: str
    value: float | bool | str | None
    approximate: bool
    text: str


class MismatchInfo(BaseModel):
    """A clearly stated figure that contradicts the loan file."""

    field: str
    stated: float
    on_file: float


class AssessmentEvent(BaseModel):
    """The verdict on the customer's answer to one topic of one agent question.

    A later assessment with the same `question_utterance_id` and `topic` (higher `revision`) replaces it: the
    customer went on answering, or answered after the silence timer had fired. A silent non-answer has no
    `answer_utterance_id`. `suggestion` is the agent prompt for this verdict before rate limiting.
    """

    type: Literal["assessment"] = "assessment"
    topic: str
    topic_name: str
    label: Literal["clear", "omission", "unclear", "evasive"]
    confidence: float
    evidence: list[EvidenceItem]
    slots: list[SlotValue]
    mismatch: MismatchInfo | None
    question_utterance_id: str
    answer_utterance_id: str | None
    answer_utterance_ids: list[str]
    answer_end_s: float
    revision: int
    suggestion: str | None = None
    #: What produced the verdict (learned weights, script, lexicons, options, hashed): a score can be traced.
    assessor_version: str = ""


class PromptEvent(BaseModel):
    """What the agent should say or do next, for an answer that was not clear (rate-limited per call)."""

    type: Literal["prompt"] = "prompt"
    text: str
    topic: str
    topic_name: str
    label: Literal["clear", "omission", "unclear", "evasive"]
    mismatch: bool
    question_utterance_id: str
    answer_end_s: float


class ChecklistItemModel(BaseModel):
    """One topic of the call script: `state` is not_asked, asked (waiting for an answer), clear or vague."""

    topic: str
    name: str
    state: Literal["not_asked", "asked", "clear", "vague"]
    label: str | None = None
    mismatch: bool = False
    times_asked: int = 0


class ChecklistEvent(BaseModel):
    """The call script's checklist, sent whenever an item changes."""

    type: Literal["checklist"] = "checklist"
    items: list[ChecklistItemModel]
    coverage: float


class RiskEvent(BaseModel):
    """The call's risk as it stands, sent when it changes: the report's score (0-100) and tier (low, medium,
    high) computed with the report's weights (configs/risk.yaml) from the verdicts so far. While the call goes on,
    topics not yet asked add nothing; the last one, sent as the call ends, counts them as the report does, so it
    equals the stored report's score and tier."""

    type: Literal["risk"] = "risk"
    score: float = Field(..., ge=0, le=100)
    tier: Literal["low", "medium", "high"]
    #: What clear answers have stated so far, by topic (configs/risk.yaml `stated`): a clear answer can be the
    #: risk (guarantor `no`: the guarantor refuses; overdue `yes`: a difficulty is expected).
    stated: dict[str, str] = Field(default_factory=dict)


class PromptSummary(BaseModel):
    topic: str
    label: str
    text: str
    at_s: float
    followed_up: bool
    question_utterance_id: str | None = None


class SummaryEvent(BaseModel):
    """End of call: the checklist, the verdict that stands per topic, the prompts and whether the agent went
    back to each prompted topic."""

    type: Literal["summary"] = "summary"
    call_id: str
    duration_s: float
    checklist: list[ChecklistItemModel]
    coverage: float
    answers: int
    vague_answers: int
    mismatches: int
    assessments: list[AssessmentEvent]
    prompts: list[PromptSummary]


class ErrorEvent(BaseModel):
    type: Literal["error"] = "error"
    code: str
    message: str


class EndEvent(BaseModel):
    """No more events on this connection. `report_url`: the call was stored (its report is there now).
    `resumable`: the call was kept open instead (the server is stopping), and a connection with the same call id,
    to any replica, continues it until its lease runs out (`live.lease_s`)."""

    type: Literal["end"] = "end"
    call_id: str
    report_url: str | None = None
    resumable: bool = False


class SupervisorNoteEvent(BaseModel):
    """A supervisor's note to the call's agent (`POST /v1/calls/{call_id}/notes`), redacted as it was stored; it
    stays in the call's history, so a screen opened later shows it too."""

    type: Literal["supervisor_note"] = "supervisor_note"
    note_id: int
    text: str
    #: The supervisor's name (their token's).
    author: str
    #: When it was written (ISO 8601, UTC).
    at: str


class ListenFormat(BaseModel):
    """First frame of a listening socket (`/v1/calls/{call_id}/listen`, not a call event): the binary frames
    after it are the call's audio as little-endian PCM16 at `sample_rate_hz`, `channels` interleaved in the
    order of `roles`. Sent again if the format changes (a call continued with other parameters)."""

    type: Literal["listen_format"] = "listen_format"
    call_id: str
    sample_rate_hz: int
    channels: int
    roles: list[str]
    encoding: Literal["pcm16"] = "pcm16"


class PromptFeedbackEvent(BaseModel):
    """An agent's verdict on a prompt of the call (`POST /v1/calls/{call_id}/prompts/feedback`, issue #31): the
    call's other screens mark the card of (`question_utterance_id`, `topic`) too. `verdict` asked_again (已追问) or
    disputed (提示有误, `reason` clear or wrong_topic)."""

    type: Literal["prompt_feedback"] = "prompt_feedback"
    question_utterance_id: str
    topic: str
    verdict: Literal["asked_again", "disputed"]
    reason: Literal["clear", "wrong_topic"] | None = None


ServerEvent = Annotated[
    ReadyEvent | RecordOnlyEvent | PartialEvent | FinalEvent | OverloadEvent | OverloadClearedEvent | AssessmentEvent
    | PromptEvent | ChecklistEvent | RiskEvent | SummaryEvent | ErrorEvent | EndEvent | SupervisorNoteEvent
    | PromptFeedbackEvent,
    Field(discriminator="type"),
]


def dump(event: BaseModel) -> str:
    """Serialise an event as the JSON text frame sent to clients (times rounded to milliseconds)."""
    data = event.model_dump()
    for key in ("start_s", "end_s", "answer_end_s", "duration_s", "final_delay_s"):
        if key in data:
            data[key] = round(data[key], 3)
    return json.dumps(data, ensure_ascii=False)


def validation_problems(error: ValidationError) -> str:
    """A pydantic validation error as one line: `field.sub: message; ...` (start messages, loan files,
    settings)."""
    return "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in error.errors())


class LoanFileError(ValueError):
    """A loan file that is not a valid JSON object of the `LoanFile` shape."""


def parse_loan_file(text: str | None) -> dict[str, Any] | None:
    """A loan file given as JSON text (the recordings form field, `huifang score --loan-file`), validated like
    the live protocol's; None for no text. Raises `LoanFileError` saying what is wrong."""
    if text is None or not text.strip():
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise LoanFileError(f"loan_file is not valid JSON ({e.msg} at character {e.pos})") from e
    except RecursionError as e:  # nesting deeper than the parser's recursion limit
        raise LoanFileError("loan_file is nested too deeply") from e
    if not isinstance(data, dict):
        raise LoanFileError("loan_file must be a JSON object")
    try:
        return LoanFile.model_validate(data).model_dump(exclude_none=True)
    except ValidationError as e:
        raise LoanFileError(f"invalid loan_file: {validation_problems(e)}") from e


def schemas() -> dict[str, Any]:
    """JSON schemas of every message, for docs and client generators."""
    from pydantic import TypeAdapter

    return {
        "client": {"start": StartMessage.model_json_schema(), "stop": StopMessage.model_json_schema()},
        "server": TypeAdapter(ServerEvent).json_schema(),
    }


if __name__ == "__main__":
    print(json.dumps(schemas(), ensure_ascii=False, indent=2))
