"""One place builds everything: the option records of `asr`, `nlu` and `pipeline` from the settings, the models,
the store with the features' rows registered on it, the loan book, the scorer of recordings and what job workers
need. The web app (service/app.py), the commands (service/cli/) and Ray actors (service/workers/ray_pool.py)
all build through here, so a setting means the same thing wherever it is read.

Building is synchronous (models load for seconds, the database migrates): the app calls these from worker
threads, never on the event loop.
"""

from __future__ import annotations

from functools import partial
from zoneinfo import ZoneInfo

from asr.domain import load_domain
from asr.streaming import SileroStep, StreamOptions, VadStep
from asr.transcribe import Transcriber
from asr.types import AsrOptions, DecodeLimits
from nlu.assess import AssessOptions, Assessor
from nlu.classifier import load_classifier
from nlu.dialogue import DialogueOptions
from nlu.report import load_risk
from nlu.script import CallScript, load_cues, load_script
from pipeline.recording import RecordingScorer, SegmentOptions, redecode_report
from service.coaching.repository import CoachingRows
from service.loanbook.book import LoanBook
from service.loanbook.outbox_queue import MessageOutbox
from service.loanbook.policy import load_policy
from service.loanbook.repository import LoanBookRows
from service.privacy import RawTextCipher
from service.settings import Settings
from service.store import Store
from service.store.anchor import Anchor, load_or_create_key
from service.store.rows import ReportRows
from service.workers.jobs import JobContext

# -- option records -------------------------------------------------------------------------------------------


def asr_options(settings: Settings) -> AsrOptions:
    """The recogniser's options: the settings plus the domain file's prompt and lexicons."""
    domain = load_domain(settings.asr.domain_file)
    a, t = settings.asr, settings.transcribe
    return AsrOptions(
        model=a.model,
        model_cache_dir=str(settings.model_cache_dir),
        device=a.device,
        compute_type=a.compute_type,
        cpu_threads=a.cpu_threads,
        # A decode at once for each live decode worker and each scoring worker: with fewer, a live final waits
        # inside CTranslate2 for a recording's whole batch (seconds) instead of sharing the cores with it.
        num_workers=settings.live.decode_workers + settings.scoring.workers,
        language=a.language,
        beam_size=t.beam_size,
        min_silence_ms=t.min_silence_ms,
        max_utterance_s=t.max_utterance_s,
        vad_threshold=a.vad_threshold,
        vad_threshold_narrowband=a.vad_threshold_narrowband,
        word_timestamps=t.word_timestamps,
        min_window_s=t.min_window_s,
        initial_prompt=domain.initial_prompt,
        hallucination_phrases=domain.hallucination_phrases,
        lexicon=domain.lexicon,
    )


def stream_options(settings: Settings) -> StreamOptions:
    """Endpointing of live channels."""
    live, a = settings.live, settings.asr
    return StreamOptions(min_silence_ms=live.min_silence_ms, max_utterance_s=live.max_utterance_s,
                         partial_interval_s=live.partial_interval_s, vad_threshold=a.vad_threshold,
                         vad_threshold_narrowband=a.vad_threshold_narrowband, piece_min_s=live.piece_min_s,
                         prefetch_silence_ms=live.prefetch_silence_ms)


def segment_options(settings: Settings) -> SegmentOptions:
    """How recordings are cut and decoded for scoring: exactly as live calls (same verdicts both ways)."""
    return SegmentOptions(stream_options(settings), settings.live.final_beam_size, settings.live.min_window_s)


def dialogue_options(settings: Settings) -> DialogueOptions:
    """Timing of live turn pairing and prompts."""
    return DialogueOptions(silence_timeout_s=settings.nlu.silence_timeout_s,
                           prompt_interval_s=settings.nlu.prompt_interval_s)


def decode_limits(settings: Settings) -> DecodeLimits:
    """Bounds of an uploaded or scored recording (`HUIFANG_AUDIO__*`)."""
    a = settings.audio
    return DecodeLimits(max_duration_s=a.max_duration_s, max_channels=a.max_channels,
                        max_file_bytes=a.max_file_mb << 20)


def transcription_limits(settings: Settings) -> DecodeLimits:
    """Bounds of one synchronous transcription (`HUIFANG_TRANSCRIPTIONS__*`)."""
    t = settings.transcriptions
    return DecodeLimits(max_duration_s=t.max_duration_s, max_channels=t.max_channels,
                        max_file_bytes=t.max_file_mb << 20)


# -- models ---------------------------------------------------------------------------------------------------


def load_assessor(settings: Settings, with_classifier: bool = True) -> Assessor:
    """The answer assessor (call script and cue lexicons read from configs/, the learned classifier loaded unless
    `with_classifier` is false). Raises `ClassifierUnavailableError` for a classifier that cannot load."""
    n = settings.nlu
    return Assessor(script=load_script(n.script_file), cues=load_cues(n.cues_file),
                    options=AssessOptions(silence_timeout_s=n.silence_timeout_s,
                                          classifier_weight=n.classifier_weight,
                                          classifier_below=n.classifier_below),
                    classifier=load_classifier(n.classifier, encoder=n.encoder, cache_dir=settings.model_cache_dir)
                    if with_classifier and n.classifier_weight else None)


def transcriber(settings: Settings) -> Transcriber:
    """The recogniser of these settings, not yet loaded (`Transcriber.load` joins and reads the model)."""
    return Transcriber(asr_options(settings))


# -- storage and features -------------------------------------------------------------------------------------


def sensitivities(script: CallScript) -> dict[str, str]:
    """Topic -> sensitivity of a call script: what coaching weighs a topic's skipped question by."""
    return {t.id: t.sensitivity for t in script.topics.values()}


def report_rows(settings: Settings) -> list[ReportRows]:
    """What the features store with each report: coaching's figures (weighed with the call script these settings
    score with) and the loan book's call summary."""
    return [CoachingRows(sensitivities(load_script(settings.nlu.script_file))), LoanBookRows()]


def open_store(settings: Settings, anchored: bool = True) -> Store:
    """The database of these settings, migrated, with the features' rows registered; `anchored`: the audit
    chain is checkpointed to its file as entries are added (every process that writes; `huifang audit` only
    reads). Raises `StoreError` when the database cannot be used."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # the embedded database's file lives there
    store = Store(settings.db_url, report_rows(settings))
    try:
        store.migrate()
    except BaseException:
        store.close()
        raise
    if anchored:
        store.anchor = Anchor(settings.audit_checkpoints_file, load_or_create_key(settings.audit_key_path))
    return store


def build_loanbook(settings: Settings, store: Store, assessor: Assessor) -> LoanBook:
    """The loan book for this configuration: policy file, the bank's time zone, the topic names of the call script
    and the texts of the risk configuration's actions; messages go through the outbox."""
    names = {t.id: t.name for t in assessor.script.topics.values()}
    actions = {str(a["id"]): str(a["text"]) for a in load_risk(settings.scoring.risk_file).actions}
    tz, cipher = ZoneInfo(settings.loanbook.timezone), RawTextCipher(settings.raw_key_file)
    return LoanBook(store, cipher, load_policy(settings.loanbook.policy_file), tz, names, actions,
                    MessageOutbox(settings.outbox, tz, cipher))


# -- scoring recordings ---------------------------------------------------------------------------------------


def recording_scorer(settings: Settings, transcriber: Transcriber, assessor: Assessor, vad: VadStep,
                     store_audio: bool = True) -> RecordingScorer:
    """The scorer of recordings for this configuration (the service's jobs, `huifang score`, `score-dir`).
    Without `store_audio` (a user's own file, scored in place) the audio is never rewritten."""
    return RecordingScorer(transcriber, assessor, vad, decode_limits(settings), dialogue_options(settings),
                           load_risk(settings.scoring.risk_file), segment_options(settings),
                           settings.privacy.silence_audio and store_audio)


def load_scorer(settings: Settings, store_audio: bool = True) -> RecordingScorer:
    """The scorer with its models loaded in this process (once: every job of the process shares it), for
    processes that score outside the service (`score`, `score-dir`, `score-archive`, Ray actors)."""
    asr = transcriber(settings)
    asr.load()
    return recording_scorer(settings, asr, load_assessor(settings), SileroStep(), store_audio)


def job_context(settings: Settings, store: Store, scorer: RecordingScorer,
                loanbook: LoanBook | None = None) -> JobContext:
    """What the job workers (the service's, `huifang score-dir`, archive workers) need, from the settings: each
    stored report re-plans its customer in the loan book."""
    cipher = RawTextCipher(settings.raw_key_file) if settings.privacy.keep_raw else None
    book = loanbook or build_loanbook(settings, store, scorer.assessor)
    return JobContext(store, settings.data_dir, scorer, settings.scoring.retention_days, cipher, book.plan,
                      redecode=partial(redecode_report, scorer))


def worker_context(settings: Settings) -> JobContext:
    """Everything a worker outside the service needs to score queued jobs: the store and the loaded scorer."""
    return job_context(settings, open_store(settings), load_scorer(settings))
