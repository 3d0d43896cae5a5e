"""The application's state: one typed record built by the app's lifespan, read by routes through the
dependencies of service/api/deps.py (and replaced there by tests, with `app.dependency_overrides`)."""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass

from asr.transcribe import Transcriber
from nlu.assess import Assessor
from service.auth import TicketBook, TokenRegistry
from service.floor import Floor
from service.live.hub import EventBus
from service.live.session import LiveCalls
from service.live.sockets import Watchers
from service.live.sources.demo import DemoPlayer
from service.loanbook.book import LoanBook
from service.loanbook.outbox import OutboxWorker
from service.settings import Settings
from service.store import Store
from service.workers.jobs import JobRunner


@dataclass
class AppState:
    """Everything the routes share, for the life of the process."""

    settings: Settings
    tokens: TokenRegistry
    #: The development admin token printed at start-up when no tokens file is configured, else None.
    dev_token: str | None
    #: Short-lived credentials for websocket URLs (browsers cannot set headers there).
    tickets: TicketBook
    transcriber: Transcriber
    assessor: Assessor
    calls: LiveCalls
    #: Live calls' events: in this process, or through Redis for every replica.
    hub: EventBus
    #: Every live call of every replica as supervisors see it (service/floor/).
    floor: Floor
    demos: DemoPlayer
    #: Event streams open per token.
    watchers: Watchers
    nlu_executor: Executor
    #: None when the database is unavailable (`store_error` says why): recordings answer 503.
    store: Store | None
    jobs: JobRunner | None
    asr_error: str | None = None
    classifier_error: str | None = None
    store_error: str | None = None
    #: Delivers queued messages; None without a store or without any SMTP server or webhook configured.
    outbox: OutboxWorker | None = None
    #: Customers, tiers and follow-ups; None without a store.
    loanbook: LoanBook | None = None
