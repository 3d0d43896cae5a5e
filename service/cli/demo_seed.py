"""`huifang demo-seed`: a small, clearly synthetic loan book in an empty database, so that a fresh `make run` shows
customer and follow-up pages with content.

The bundled demo calls (service/demo: synthetic calls, TTS voices) are transcribed once with the real model; each
seeded call then scores that transcript under its own loan file (other customers, roles, figures), is stored the
way the job workers store a report, and plans its customer as of the call's date, so the tier history reads as if
the calls had come in over the past weeks. A customer's later call is the second call their earlier one asked for:
its agent records that follow-up as done first, as a real agent would, so only the newest plan stays open. Three
agents with different habits take the calls (their scorecards differ from the team's median), and the whole book
is planned as of today at the end, so the service has nothing left to plan when it starts. Every id starts with
DEMO- and every name is 演示; ids carry no long digit runs (they could read as phone or card numbers).
"""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pipeline.recording import AudioPart, RecordingScorer, Scored, score_transcript
from service import bootstrap
from service.loanbook.book import FollowUpQuery, LoanBook
from service.loanbook.repository import Contact, put_contact
from service.settings import Settings
from service.store import CallFilter, Store
from service.store.store import utcnow
from service.workers.jobs import JobContext, run_job

#: The agent whose work queue shows assigned and unreachable follow-ups (make an agent token with this id to see
#: them).
DEMO_AGENT = "DEMO-A01"


@dataclass(frozen=True, slots=True)
class SeedCall:
    """One seeded call: which bundled recording, for whom, how many days ago, by which agent, and the loan file's
    changes."""

    demo: str
    customer_id: str
    loan_id: str
    days_ago: int
    agent_id: str
    loan: dict[str, Any]


_JIA = {"borrower": "演示甲", "repay_day": 12}
_YI = {"borrower": "演示乙", "monthly_yuan": 5200}
_BING = {"borrower": "演示丙", "role": "coborrower", "coborrower_name": "演示丙"}
_DING = {"borrower": "演示丁", "amount_yuan": 420000, "monthly_yuan": 2300}
_WU = {"borrower": "演示戊", "repay_day": 25, "monthly_yuan": 6100}

#: Five customers, one to three calls each, by three agents whose scorecards differ: DEMO-A01 takes the calls of
#: call_s07 (hedged income, a topic change), DEMO-A02 those of call_s03 (evasion, a question left unanswered),
#: DEMO-A03 both, among them a co-borrower's. Each agent's newest call is today's, so the coaching pages'
#: current day, week and month compare all three (with one agent, every figure was compared with itself). The
#: loan files differ from the recordings' own in customer, role and figures.
SEED: tuple[SeedCall, ...] = (
    SeedCall("call_s07", "DEMO-C001", "DEMO-L001", 40, "DEMO-A01", _JIA),
    SeedCall("call_s07", "DEMO-C001", "DEMO-L001", 12, "DEMO-A01", _JIA),
    SeedCall("call_s07", "DEMO-C001", "DEMO-L001", 0, "DEMO-A01", _JIA),
    SeedCall("call_s03", "DEMO-C002", "DEMO-L002", 25, "DEMO-A02", _YI),
    SeedCall("call_s03", "DEMO-C002", "DEMO-L002", 0, "DEMO-A02", _YI),
    SeedCall("call_s03", "DEMO-C005", "DEMO-L005", 15, "DEMO-A02", _WU),
    SeedCall("call_s07", "DEMO-C003", "DEMO-L003", 18, "DEMO-A03", _BING),
    SeedCall("call_s03", "DEMO-C003", "DEMO-L003", 0, "DEMO-A03", _BING),
    SeedCall("call_s07", "DEMO-C004", "DEMO-L004", 1, "DEMO-A03", _DING),
)
#: Contact details of two customers (example.com, a 1380000 test range): their messages are queued.
CONTACTS = {"DEMO-C001": Contact("13800000001", "demo.c001@example.com", frozenset({"sms", "email"})),
            "DEMO-C004": Contact(None, "demo.c004@example.com", frozenset({"email"}))}


def has_calls(store: Store) -> bool:
    """Whether the database holds any call (the demo goes into an empty one only)."""
    _, total = store.list_calls(CallFilter(limit=0))
    return total > 0


@dataclass(frozen=True, slots=True)
class Seeded:
    """What `seed` stored: the counts `huifang demo-seed` reports."""

    calls: int
    customers: int
    agents: int


def call_id_of(call: SeedCall) -> str:
    """`DEMO-C001-2`: the customer's second seeded call (no dates in ids: digit runs read as personal numbers)."""
    same = [c for c in SEED if c.customer_id == call.customer_id]
    return f"{call.customer_id}-{sorted(same, key=lambda c: -c.days_ago).index(call) + 1}"


def seed(settings: Settings, store: Store, scorer: RecordingScorer) -> Seeded:
    """Fill the database with the demo loan book."""
    book = bootstrap.build_loanbook(settings, store, scorer.assessor)
    for customer_id, contact in CONTACTS.items():
        put_contact(store, book.cipher, customer_id, contact)
    transcripts: dict[str, tuple[list[Any], float]] = {}
    now = utcnow()
    for i, call in enumerate(sorted(SEED, key=lambda c: -c.days_ago)):  # oldest first, as they came in
        source = settings.nlu.demo_dir / f"{call.demo}.flac"
        meta = json.loads((settings.nlu.demo_dir / f"{call.demo}.json").read_text(encoding="utf-8"))
        if call.demo not in transcripts:  # the model decodes each recording once
            transcripts[call.demo] = scorer.transcript(AudioPart(source, tuple(meta["channels"])))
        utterances, duration = transcripts[call.demo]
        loan = {**meta["loan_file"], **call.loan, "customer_id": call.customer_id, "loan_id": call.loan_id}
        # Earlier days at varied hours; today's calls a few minutes ago (today, in the current coaching period).
        at = now - (timedelta(days=call.days_ago, hours=i % 5) if call.days_ago else timedelta(minutes=len(SEED) - i))
        call_id = call_id_of(call)
        job_id = secrets.token_hex(8)
        folder = settings.data_dir / "audio" / job_id
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, folder / "call.flac")  # the report page plays it
        files = [{"path": str((folder / "call.flac").relative_to(settings.data_dir)), "channels": meta["channels"]}]
        job = store.create_job(call_id, files, loan, call.agent_id, job_id, created_at=at)  # as if it came in then
        claimed = store.claim(job.id)
        assert claimed is not None

        planner = LoanBook(store, book.cipher, book.policy, book.tz, book.topic_names, book.action_texts,
                           book.outbox, clock=lambda at=at: at)  # type: ignore[misc]
        _second_call_made(planner, call.customer_id, call.agent_id)
        run_job(JobContext(store, settings.data_dir, _scored(call_id, utterances, duration, loan, scorer),
                           settings.scoring.retention_days,
                           after_report=planner.plan), claimed)
    # Those not called today are planned as of today, as the daily run would (overdue second calls raise tiers):
    # the service finds nobody left to plan when it starts.
    book.plan_due()
    _work_some(book)
    return Seeded(len(SEED), len({c.customer_id for c in SEED}), len({c.agent_id for c in SEED}))


def _second_call_made(planner: LoanBook, customer_id: str, agent_id: str) -> None:
    """This call is the second call an earlier one planned: the agent takes it and records it done (what was
    still vague is planned again from this call's report)."""
    items, _ = planner.followups(FollowUpQuery(customer_id=customer_id))
    for f in items:
        if f["channel"] == "call":
            planner.assign(f["id"], agent_id)
            planner.outcome(f["id"], "done", "已完成二次回访（演示数据）", agent_id)


def _scored(call_id: str, utterances: list[Any], duration_s: float, loan: dict[str, Any],
            scorer: RecordingScorer) -> Callable[..., Scored]:
    """A job's scoring function that scores the transcript already made instead of decoding the audio again."""

    def score(*_: Any) -> Scored:
        return score_transcript(call_id, utterances, duration_s, loan, scorer)

    return score


def _work_some(book: LoanBook) -> None:
    """Give the demo agent the oldest open second call, and another that nobody answered (which plans a message),
    so the work queue shows every state."""
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
    store = bootstrap.open_store(settings)
    try:
        if has_calls(store):
            if if_empty:
                print("demo-seed: the database already has calls; nothing seeded")
                return 0
            print("demo-seed: the database already has calls; demo data goes into an empty one only "
                  "(use a fresh HUIFANG_DATA_DIR)")
            return 2
        done = seed(settings, store, bootstrap.load_scorer(settings))
        print(f"demo-seed: {done.calls} calls of {done.customers} demo customers by {done.agents} agents stored and "
              "planned as of today; open /customers/DEMO-C001, /followups and /agents")
        return 0
    finally:
        store.close()

