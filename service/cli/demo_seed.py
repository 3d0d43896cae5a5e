"""`huifang demo-seed`: a small, clearly synthetic loan book in an empty database, so that a fresh `make run` shows
customer and follow-up pages with content.

The bundled demo calls (service/demo: synthetic calls, TTS voices) are transcribed once with the real model; each
seeded call then scores that transcript under its own loan file (other customers, roles, figures), is stored the
way the job workers store a report, and plans its customer as of the call's date, so the tier history reads as if
the calls had come in over the past weeks. Every id starts with DEMO- and every name is 演示.
"""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from pipeline.recording import AudioPart, RecordingScorer, Scored, score_transcript
from service.jobs import JobContext, run_job
from service.loanbook import LoanBook, build_loanbook
from service.settings import Settings
from service.store import Store
from service.store.loanbook import Contact, put_contact
from service.store.models import Call, Recording
from service.store.store import utcnow

#: The agent the seeded calls and assigned follow-ups belong to (make an agent token with this id to see them).
DEMO_AGENT = "DEMO-A01"


@dataclass(frozen=True, slots=True)
class SeedCall:
    """One seeded call: which bundled recording, for whom, how many days ago, and the loan file's changes."""

    demo: str
    customer_id: str
    loan_id: str
    days_ago: int
    loan: dict[str, Any]


#: Four customers, two or three calls each. The loan files differ from the recordings' own in customer, role and
#: figures; names are 演示 names.
SEED: tuple[SeedCall, ...] = (
    SeedCall("call_s07", "DEMO-C001", "DEMO-L001", 40, {"borrower": "演示甲", "repay_day": 12}),
    SeedCall("call_s03", "DEMO-C001", "DEMO-L001", 12, {"borrower": "演示甲", "repay_day": 12}),
    SeedCall("call_s07", "DEMO-C001", "DEMO-L001", 2, {"borrower": "演示甲", "repay_day": 12}),
    SeedCall("call_s03", "DEMO-C002", "DEMO-L002", 25, {"borrower": "演示乙", "monthly_yuan": 5200}),
    SeedCall("call_s07", "DEMO-C002", "DEMO-L002", 6, {"borrower": "演示乙", "monthly_yuan": 5200}),
    SeedCall("call_s07", "DEMO-C003", "DEMO-L003", 18, {"borrower": "演示丙", "role": "coborrower",
                                                        "coborrower_name": "演示丙"}),
    SeedCall("call_s03", "DEMO-C003", "DEMO-L003", 3, {"borrower": "演示丙", "role": "coborrower",
                                                       "coborrower_name": "演示丙"}),
    SeedCall("call_s03", "DEMO-C004", "DEMO-L004", 9, {"borrower": "演示丁", "amount_yuan": 420000,
                                                       "monthly_yuan": 2300}),
)
#: Contact details of two customers (example.com, a 1380000 test range): their messages are queued.
CONTACTS = {"DEMO-C001": Contact("13800000001", "demo.c001@example.com", frozenset({"sms", "email"})),
            "DEMO-C004": Contact(None, "demo.c004@example.com", frozenset({"email"}))}


def has_calls(store: Store) -> bool:
    with store.session() as s:
        return bool(s.scalar(select(func.count()).select_from(Call)))


def seed(settings: Settings, store: Store, scorer: RecordingScorer) -> int:
    """Fill the database with the demo loan book; returns how many calls were stored."""
    book = build_loanbook(settings, store, scorer.assessor)
    for customer_id, contact in CONTACTS.items():
        put_contact(store, book.cipher, customer_id, contact)
    transcripts: dict[str, tuple[list[Any], float]] = {}
    now = utcnow()
    for i, call in enumerate(SEED):
        source = settings.nlu.demo_dir / f"{call.demo}.flac"
        meta = json.loads((settings.nlu.demo_dir / f"{call.demo}.json").read_text(encoding="utf-8"))
        if call.demo not in transcripts:  # the model decodes each recording once
            transcripts[call.demo] = scorer.transcript(AudioPart(source, tuple(meta["channels"])))
        utterances, duration = transcripts[call.demo]
        loan = {**meta["loan_file"], **call.loan, "customer_id": call.customer_id, "loan_id": call.loan_id}
        at = now - timedelta(days=call.days_ago, hours=i % 5)
        call_id = f"DEMO-{at:%Y%m%d}-{i + 1:02d}"
        job_id = secrets.token_hex(8)
        folder = settings.data_dir / "audio" / job_id
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, folder / "call.flac")  # the report page plays it
        files = [{"path": str((folder / "call.flac").relative_to(settings.data_dir)), "channels": meta["channels"]}]
        job = store.create_job(call_id, files, loan, DEMO_AGENT, job_id)
        with store.session() as s, s.begin():
            row = s.get(Recording, job.id)
            assert row is not None
            row.created_at = at  # as if the call came in then
        claimed = store.claim(job.id)
        assert claimed is not None

        planner = LoanBook(store, book.cipher, book.policy, book.tz, book.topic_names, book.action_texts,
                           book.outbox, clock=lambda at=at: at)  # type: ignore[misc]
        run_job(JobContext(store, settings.data_dir, _scored(call_id, utterances, duration, loan, scorer),
                           settings.scoring.retention_days,
                           after_report=planner.plan), claimed)
    _work_some(book)
    return len(SEED)


def _scored(call_id: str, utterances: list[Any], duration_s: float, loan: dict[str, Any],
            scorer: RecordingScorer) -> Callable[..., Scored]:
    """A job's scoring function that scores the transcript already made instead of decoding the audio again."""

    def score(*_: Any) -> Scored:
        return score_transcript(call_id, utterances, duration_s, loan, scorer)

    return score


def _work_some(book: LoanBook) -> None:
    """Give the demo agent the oldest open second call, and another that nobody answered (which plans a message),
    so the work queue shows every state."""
    from service.loanbook import FollowUpQuery

    items, _ = book.followups(FollowUpQuery())
    calls = [f for f in items if f["channel"] == "call"]
    if calls:
        book.assign(calls[0]["id"], DEMO_AGENT)
    if len(calls) > 1:
        book.assign(calls[-1]["id"], DEMO_AGENT)
        book.outcome(calls[-1]["id"], "unreachable", "两次致电未接通", DEMO_AGENT)
        book.plan(calls[-1]["customer_id"])  # a message asks the customer to expect the call


def seed_command(settings: Settings, if_empty: bool) -> int:
    """`huifang demo-seed [--if-empty]`."""
    from service.archive import load_scorer, open_store

    store = open_store(settings)
    try:
        if has_calls(store):
            if if_empty:
                print("demo-seed: the database already has calls; nothing seeded")
                return 0
            print("demo-seed: the database already has calls; demo data goes into an empty one only "
                  "(use a fresh HUIFANG_DATA_DIR)")
            return 2
        count = seed(settings, store, load_scorer(settings))
        print(f"demo-seed: {count} calls of {len({c.customer_id for c in SEED})} demo customers stored; open "
              f"/customers/DEMO-C001 and /followups")
        return 0
    finally:
        store.close()

