"""Tables. Change them only together with a migration in `migrations/versions/`."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Date, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text, true
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Recording(Base):
    """An uploaded recording and the job that scores it. Times are naive UTC."""

    __tablename__ = "recordings"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    call_id: Mapped[str] = mapped_column(String(128), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # queued | running | done | failed
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    #: [{"path": relative to the data directory, "channels": [roles]}], one entry per uploaded file.
    files: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    loan_file: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    agent_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: Who is scoring it (a worker of some process) and until when; renewed while it works. A job whose lease
    #: expired is taken over; `lease_version` grows with every claim and fences the outcome (one report per job).
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, index=True)
    lease_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: Where the call's audio came from: `upload` (a recording job), `live` (streamed; the row is the call's lease
    #: while it streams, status `live`) or `demo` (the console's demo replay, a live call kept out of coaching and
    #: the loan book).
    source: Mapped[str] = mapped_column(String(8), default="upload", server_default="upload")
    #: What the job does: `score` a recording, or `redecode` a stored live call's finals that were decoded greedily
    #: under load (its `files` are the call's stored audio).
    kind: Mapped[str] = mapped_column(String(16), default="score", server_default="score")


class LiveFinal(Base):
    """A final of a live call, written as it is sent (redacted text), so that a call whose replica died keeps
    everything said up to its last final. Removed with the call's recording row."""

    __tablename__ = "live_finals"

    recording_id: Mapped[str] = mapped_column(ForeignKey("recordings.id", ondelete="CASCADE"), primary_key=True)
    #: 1, 2, ... in the order the finals were sent (each channel's in its order; channels interleaved by arrival).
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    channel: Mapped[str] = mapped_column(String(16))
    utterance_id: Mapped[str] = mapped_column(String(40))
    start_s: Mapped[float] = mapped_column(Float)
    end_s: Mapped[float] = mapped_column(Float)
    text: Mapped[str] = mapped_column(Text)
    #: Personal data was masked in it (its audio is silenced when the call is stored).
    masked: Mapped[bool] = mapped_column(Boolean)
    #: Decoded greedily under load instead of with the final beam (re-decoded after the call).
    degraded: Mapped[bool] = mapped_column(Boolean)


class Call(Base):
    """A scored call: the report and the columns calls are listed and filtered by."""

    __tablename__ = "calls"

    call_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    recording_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    agent_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    duration_s: Mapped[float] = mapped_column(Float)
    risk_score: Mapped[int] = mapped_column(Integer, index=True)
    tier: Mapped[str] = mapped_column(String(8), index=True)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: Folder of the stored audio, relative to the data directory; None once retention removed it.
    audio_dir: Mapped[str | None] = mapped_column(String(256), nullable=True)
    audio_expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, index=True)
    #: The unredacted utterances, Fernet-encrypted with a key kept outside the database; None unless configured.
    raw_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    #: The customer and loan of the call, from its loan file (None for a call without them).
    customer_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    loan_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: `upload`, `live` or `demo` (as its recording row's `source`).
    source: Mapped[str] = mapped_column(String(8), default="upload", server_default="upload")
    #: False for a live call that did not end cleanly (its replica died, the socket dropped and never came back,
    #: an error ended it): the report holds what was said up to its last final.
    complete: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())

    answers: Mapped[list[Answer]] = relationship(back_populates="call", cascade="all, delete-orphan",
                                                 passive_deletes=True)


class CallVersion(Base):
    """A report an admin's re-upload (`replace=true`) replaced, or one its earlier re-scorings had kept
    (`report_versions`, moved here with their reason when the call row is replaced): kept for admins, deleted
    with the call. Not a foreign key of `calls`: the call's row itself is replaced when a re-scoring is stored."""

    __tablename__ = "call_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(String(128), index=True)
    #: 1 for the first report of the call, counting up.
    version: Mapped[int] = mapped_column(Integer)
    recording_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    agent_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    customer_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    replaced_at: Mapped[datetime] = mapped_column(DateTime)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: Why it stopped being the call's report: replace, or a kept report's own reason (rescore, redecode,
    #: review); None for rows stored before migration 0011 (a replacement or a copy made at one).
    reason: Mapped[str | None] = mapped_column(String(16), nullable=True)


class Answer(Base):
    """One topic's verdict in a call, for filtering calls by label."""

    __tablename__ = "answers"
    __table_args__ = (Index("ix_answers_label_call", "label", "call_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.call_id", ondelete="CASCADE"), index=True)
    topic: Mapped[str] = mapped_column(String(32))
    label: Mapped[str] = mapped_column(String(16))
    confidence: Mapped[float] = mapped_column(Float)
    mismatch: Mapped[bool] = mapped_column(Boolean, default=False)
    start_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    end_s: Mapped[float | None] = mapped_column(Float, nullable=True)

    call: Mapped[Call] = relationship(back_populates="answers")


class AuditEntry(Base):
    """One entry of the hash-chained audit log: `hash` covers this entry and `prev_hash`, the previous entry's
    hash, so an edited, deleted or reordered entry breaks the chain (`huifang audit verify`)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(DateTime)
    call_id: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class CallSummary(Base):
    """What the loan book and coaching need of a call, written with its report (and replaced with it): a few
    columns to select by and `facts` (service.loanbook.policy.call_facts), so that re-planning a customer never reads
    report JSON."""

    __tablename__ = "call_summaries"
    __table_args__ = (Index("ix_call_summaries_customer_at", "customer_id", "at"),
                      Index("ix_call_summaries_agent_at", "agent_id", "at"))

    call_id: Mapped[str] = mapped_column(ForeignKey("calls.call_id", ondelete="CASCADE"), primary_key=True)
    customer_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    loan_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    agent_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    at: Mapped[datetime] = mapped_column(DateTime)
    risk_score: Mapped[int] = mapped_column(Integer)
    tier: Mapped[str] = mapped_column(String(8))
    facts: Mapped[dict[str, Any]] = mapped_column(JSON)


class Customer(Base):
    """A customer of the loan book: the current tier and the encrypted contact details (phone, e-mail, consent
    and opt-out per channel; Fernet with the key outside the database, like the raw transcript)."""

    __tablename__ = "customers"

    customer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tier: Mapped[str | None] = mapped_column(String(8), nullable=True, index=True)
    tier_since: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    contact_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    planned_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class CustomerTier(Base):
    """One change of a customer's tier: when, to what, after which call, and why."""

    __tablename__ = "customer_tiers"
    __table_args__ = (Index("ix_customer_tiers_customer_at", "customer_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.customer_id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(DateTime)
    tier: Mapped[str] = mapped_column(String(8))
    call_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    reasons: Mapped[list[str]] = mapped_column(JSON)


class FollowUp(Base):
    """A follow-up of a customer: due by `due_date` (the bank's calendar), over a channel, for a reason (an
    action of a report, or the tier policy), on some topics. `plan_key` makes planning idempotent: planning the
    same call twice, or on two replicas, yields one row."""

    __tablename__ = "followups"
    __table_args__ = (Index("ix_followups_status_due", "status", "due_date"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.customer_id", ondelete="CASCADE"), index=True)
    loan_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    due_date: Mapped[date] = mapped_column(Date)
    channel: Mapped[str] = mapped_column(String(8))  # call | sms | email | letter
    reason: Mapped[str] = mapped_column(String(64))
    topics: Mapped[list[str]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(12))  # open | assigned | done | unreachable | refused | cancelled
    assignee: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    outcome_note: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: The later call that covered the follow-up's topics (a `call` follow-up closed by it).
    call_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    #: The call whose report the follow-up was planned from.
    source_call_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    plan_key: Mapped[str] = mapped_column(String(256), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class AgentCallStats(Base):
    """Coaching's compact row of a scored call (coaching's `CallStats`): summable figures in typed columns and a
    small `detail` (per topic: asked, standing label, mismatch, prompts, spans; silences after questions).
    Written with the report and replaced with it, so a month of scorecards sums columns instead of reading report
    JSON (docs/coaching.md)."""

    __tablename__ = "agent_call_stats"
    __table_args__ = (Index("ix_agent_call_stats_agent_at", "agent_id", "at"),
                      Index("ix_agent_call_stats_at", "at"))

    call_id: Mapped[str] = mapped_column(ForeignKey("calls.call_id", ondelete="CASCADE"), primary_key=True)
    agent_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    at: Mapped[datetime] = mapped_column(DateTime)
    duration_s: Mapped[float] = mapped_column(Float)
    coverage: Mapped[float] = mapped_column(Float)
    topics_asked: Mapped[int] = mapped_column(Integer)
    topics_total: Mapped[int] = mapped_column(Integer)
    high_skipped: Mapped[int] = mapped_column(Integer)
    prompts_shown: Mapped[int] = mapped_column(Integer)
    prompts_followed: Mapped[int] = mapped_column(Integer)
    prompts_clarified: Mapped[int] = mapped_column(Integer)
    vague_unresolved: Mapped[int] = mapped_column(Integer)
    mismatches_standing: Mapped[int] = mapped_column(Integer)
    agent_talk_s: Mapped[float] = mapped_column(Float)
    customer_talk_s: Mapped[float] = mapped_column(Float)
    questions: Mapped[int] = mapped_column(Integer)
    question_silence_s: Mapped[float] = mapped_column(Float)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)


class OutboxMessage(Base):
    """A message to a customer (service/loanbook/outbox.py): rendered from its template when queued, free of personal
    numbers; the address is kept encrypted (and masked for display). Delivered at least once by a leased worker,
    under an idempotency key receivers dedupe by; erasing the customer removes their messages."""

    __tablename__ = "outbox_messages"
    __table_args__ = (Index("ix_outbox_messages_status_next", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.customer_id", ondelete="CASCADE"), index=True)
    followup_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    action: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(8))  # sms | email | letter
    status: Mapped[str] = mapped_column(String(12))  # queued | sending | sent | failed | dead | suppressed
    #: Why it was suppressed, or why it is dead (a short code, docs/outbox.md).
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    destination_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    destination_masked: Mapped[str | None] = mapped_column(String(128), nullable=True)
    subject: Mapped[str | None] = mapped_column(Text, nullable=True)
    body: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: Not before this (naive UTC): the end of the quiet hours it was queued in.
    not_before: Mapped[datetime] = mapped_column(DateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(200), nullable=True)
    #: The worker sending it and until when; `lease_version` grows with every claim and fences the outcome.
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    lease_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class ReportVersion(Base):
    """An earlier report of a call, kept when a newer one took its place: re-scored with another assessor
    (`reason` rescore, `huifang rescore`) or replaced by a new upload (`replace`). `version` counts a call's
    earlier reports from 1; `assessor_version` is the one that produced this report (its `assessor_version`),
    so a bank can see what a new assessor changed. Removed with the call (ON DELETE CASCADE)."""

    __tablename__ = "report_versions"

    call_id: Mapped[str] = mapped_column(ForeignKey("calls.call_id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    assessor_version: Mapped[str] = mapped_column(String(128))
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: When this report stopped being the current one (naive UTC).
    created_at: Mapped[datetime] = mapped_column(DateTime)
    reason: Mapped[str] = mapped_column(String(16))  # rescore | redecode | review


class CallNote(Base):
    """A supervisor's note to the agent of a live call (issue #31): sent to the agent's console as a
    `supervisor_note` event, kept with the call (its report shows them) and audited. `text` is redacted before it
    is stored. Notes outlive the call's recording row: they are the supervisor's record, not the call's data."""

    __tablename__ = "call_notes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(String(128), index=True)
    #: The call's agent when the note was written: who besides supervisors may read it.
    agent_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    author: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class PromptFeedback(Base):
    """An agent's verdict on one prompt of a call (issue #31): `asked_again` (已追问) or `disputed` (提示有误,
    `reason` clear or wrong_topic, an optional redacted `note`). One per prompt (call, question, topic); a dispute
    waits in the review queue (`review_status` open) until a supervisor upholds it (the assessor was wrong; the
    stored verdict is corrected to `reviewer_label`) or overturns it. `question_text` and `answer_text` are the
    redacted utterances the prompt was about, kept for the review and for `huifang export-feedback`."""

    __tablename__ = "prompt_feedback"
    __table_args__ = (Index("ix_prompt_feedback_prompt", "call_id", "question_utterance_id", "topic", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(String(128), index=True)
    question_utterance_id: Mapped[str] = mapped_column(String(40))
    topic: Mapped[str] = mapped_column(String(32), index=True)
    #: The assessor's label and prompt as shown, and what produced them.
    label: Mapped[str] = mapped_column(String(16))
    prompt_text: Mapped[str] = mapped_column(Text)
    assessor_version: Mapped[str | None] = mapped_column(String(128), nullable=True)
    verdict: Mapped[str] = mapped_column(String(16))  # asked_again | disputed
    reason: Mapped[str | None] = mapped_column(String(16), nullable=True)  # clear | wrong_topic
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    question_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    answer_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    agent_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    author: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    review_status: Mapped[str] = mapped_column(String(16), index=True)  # none | open | upheld | overturned
    reviewer: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, index=True)
    reviewer_label: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reviewer_topic: Mapped[str | None] = mapped_column(String(32), nullable=True)
    review_note: Mapped[str | None] = mapped_column(Text, nullable=True)
