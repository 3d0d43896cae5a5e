"""A recorded call through the call pipeline: decode the file, cut and decode each channel exactly as a live call
would be, then the same text path (`pipeline.call.CallPipeline`) and the report.

Shared by the recordings API (background jobs), `huifang score`, `huifang score-dir` and `huifang rescore` (the
text half only, `rescore_report`). Synchronous and
CPU-bound: callers run it on a worker thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from asr.audio import decode_audio, write_flac
from asr.decoder import window_for_samples
from asr.errors import AsrError
from asr.streaming import StreamOptions, VadStep, endpoint_offline
from asr.transcribe import Transcriber, join_parts
from asr.types import DecodedAudio, DecodeLimits, Utterance
from nlu.assess import Assessor
from nlu.dialogue import DialogueOptions, Turn
from nlu.pii import normalise_width, public_loan_file, spoken_spans
from nlu.report import Report, RiskConfig, SilencedSpan
from pipeline.call import ROLES, CallPipeline, CallRedaction, Final, roles_problem

#: Utterance parts of one channel decoded together after the call (see `transcribe_like_live`).
_SCORING_BATCH = 8

#: Below this level (dBFS) for every 30 ms frame, a recording holds nothing to score.
SILENCE_DBFS = -50.0


class RecordingError(ValueError):
    """The upload cannot be scored (a 4xx for the client): wrong channels, no speech, bad loan file."""


@dataclass(frozen=True, slots=True)
class AudioPart:
    """One stored audio file and the roles of its channels, in order."""

    path: Path
    channels: tuple[str, ...]
    #: Whether scoring may replace the file by a copy with personal data silenced (`RecordingScorer.silence_pii`):
    #: False for audio read in place, such as a bank's archive, which must never be modified.
    writable: bool = True


def check_roles(channels: tuple[str, ...], channel_count: int, name: str) -> None:
    """The roles must name each channel of the file once; agent and customer must both be present overall."""
    if len(channels) != channel_count:
        if channel_count == 1:
            raise RecordingError(f"{name} is mono: say whose voice it is with channels=agent or channels=customer, "
                                 "or upload the two sides as fields `agent` and `customer`")
        raise RecordingError(f"{name} has {channel_count} channels but channels names {len(channels)} "
                             f"({','.join(channels) or 'none'})")
    problem = roles_problem(channels)
    if problem is not None:
        raise RecordingError(f"channels {problem}")


def is_silent(audio: DecodedAudio) -> bool:
    """Whether no 30 ms frame of any channel rises above SILENCE_DBFS."""
    frame = 480
    for channel in audio.samples:
        n = len(channel) // frame * frame
        if n == 0:
            continue
        rms = np.sqrt(np.mean(channel[:n].reshape(-1, frame) ** 2, axis=1) + 1e-12)
        if float(20 * np.log10(rms.max())) > SILENCE_DBFS:
            return False
    return True


def validate_parts(parts: list[AudioPart], limits: DecodeLimits) -> float:
    """Decode every part once to check it can be scored; returns the call duration. Raises AsrError (unreadable,
    too long) or RecordingError (channels, silence)."""
    roles: list[str] = []
    duration = 0.0
    silent = True
    for part in parts:
        audio = decode_audio(str(part.path), limits)
        check_roles(part.channels, audio.channel_count, part.path.name)
        roles += part.channels
        duration = max(duration, audio.duration_s)
        silent = silent and is_silent(audio)
    if roles_problem(roles, both=True) is not None:
        raise RecordingError("a call needs both sides: an agent and a customer channel")
    if silent:
        raise RecordingError("the recording holds no speech (every channel is silent)")
    return duration


@dataclass(frozen=True, slots=True)
class SegmentOptions:
    """How recordings are cut and decoded: as live calls are (see `asr.streaming.endpoint_offline`)."""

    stream: StreamOptions
    beam_size: int
    min_window_s: float


def transcribe_like_live(audio: DecodedAudio, roles: tuple[str, ...], transcriber: Transcriber, vad: VadStep,
                         seg: SegmentOptions, on_progress: Callable[[float], None] | None = None,
                         before_batch: Callable[[], object] | None = None) -> list[Utterance]:
    """Utterances of each channel, cut by the live endpointer and decoded with the live final settings, so that
    the same call gives the same text, hence the same verdicts, live and after the fact. `before_batch` is
    called before each batch is decoded (the service makes scoring give way to live calls there)."""
    options = seg.stream.for_source_rate(audio.source_sample_rate_hz)
    out: list[Utterance] = []
    for index, role in enumerate(roles):
        finals = endpoint_offline(audio.samples[index], role, options, vad)
        # Long utterances in the pieces a live call decodes them in (asr.streaming.PieceRequest).
        parts = [(n, start_s, samples) for n, request in enumerate(finals) for start_s, samples in request.parts()]
        decoded: dict[tuple[int, float], Utterance | None] = {}
        # Parts with the same encoder window are decoded in batches: the same text as one by one (same window,
        # same beam), for a fraction of the decoder's time on CPU (asr.decoder.WindowDecoder.decode_batch).
        by_window: dict[int, list[tuple[int, float, np.ndarray]]] = {}
        for part in parts:
            by_window.setdefault(window_for_samples(part[2].shape[0], seg.min_window_s), []).append(part)
        batches = [group[i : i + _SCORING_BATCH] for group in by_window.values()
                   for i in range(0, len(group), _SCORING_BATCH)]
        for done, batch in enumerate(batches, 1):
            if before_batch is not None:
                before_batch()
            results = transcriber.transcribe_spans([(samples, role, start_s) for _, start_s, samples in batch],
                                                   seg.beam_size, seg.min_window_s)
            decoded.update({(n, start_s): u for (n, start_s, _), u in zip(batch, results, strict=True)})
            if on_progress is not None:
                on_progress((index + done / len(batches)) * audio.duration_s)
        for n, request in enumerate(finals):
            utterance = join_parts([decoded[(n, start_s)] for start_s, _ in request.parts()], role,
                                   request.start_s, request.end_s)
            if utterance is not None:
                out.append(utterance)
        if on_progress is not None:
            on_progress((index + 1) * audio.duration_s)
    return sorted(out, key=lambda u: (u.start_s, u.channel))


def _store_silenced(path: Path, audio: DecodedAudio, quiet: dict[int, list[tuple[float, float]]]) -> None:
    """Replace a stored recording by a 16 kHz FLAC copy with the given (channel, time) ranges silenced. The
    stored name keeps its stem; the new file is complete before it replaces the old one."""
    samples = audio.samples.copy()
    for index, ranges in quiet.items():
        for a, b in ranges:
            samples[index, int(a * 16000): int(b * 16000)] = 0.0
    target = path.with_suffix(".flac")
    tmp = target.with_suffix(".partial")
    write_flac(tmp, samples)
    os.replace(tmp, target)
    if target != path:
        path.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class Scored:
    """A scored recording: the report (JSON form, redacted) and the unredacted utterances (never stored in the
    clear; kept encrypted only when configured)."""

    report: dict[str, Any]
    raw: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class RecordingScorer:
    """Everything scoring a recording needs, built once per process (service, `huifang score`, `score-dir`)."""

    transcriber: Transcriber
    assessor: Assessor
    vad: VadStep
    limits: DecodeLimits
    dialogue: DialogueOptions
    risk: RiskConfig
    segment: SegmentOptions
    #: Rewrite stored audio with the stretches where personal data was said silenced (found by word times).
    silence_pii: bool = False
    #: Called before each batch of decodes (the service: wait while live calls have finals to decode).
    yield_to: Callable[[], object] | None = None

    def __call__(self, call_id: str, parts: list[AudioPart], loan_file: dict[str, Any] | None,
                 on_progress: Callable[[float], None] | None = None) -> Scored:
        """The report of a call stored as `parts`. `on_progress` gets 0-1."""
        decoded = [(part, decode_audio(str(part.path), self.limits)) for part in parts]
        total = sum(audio.duration_s * audio.channel_count for _, audio in decoded) or 1.0
        done = 0.0
        duration = max(audio.duration_s for _, audio in decoded)
        heard = _Heard(CallPipeline(call_id, ROLES, self.assessor, loan_file, self.dialogue))
        silenced: list[dict[str, Any]] = []
        for part, audio in decoded:
            base = done
            quiet: dict[int, list[tuple[float, float]]] = {}

            def progress(seconds: float, base: float = base) -> None:
                if on_progress is not None:
                    on_progress(min(0.99, (base + seconds) / total))

            utterances = transcribe_like_live(audio, part.channels, self.transcriber, self.vad, self.segment,
                                              progress, self.yield_to)
            done += audio.duration_s * audio.channel_count
            for u in utterances:
                final = heard.final(u)
                if final.turn is None:
                    continue
                if self.silence_pii and part.writable and final.masked:
                    index = part.channels.index(u.channel)
                    ranges = self._spoken(audio, index, u, final)
                    quiet.setdefault(index, []).extend(ranges)
                    silenced += [{"channel": u.channel, "start_s": round(a, 3), "end_s": round(b, 3)}
                                 for a, b in ranges]
            if quiet:
                _store_silenced(part.path, audio, quiet)
        scored = heard.scored(duration, self.risk, loan_file, silenced)
        if on_progress is not None:
            on_progress(1.0)
        return scored

    def transcript(self, part: AudioPart) -> tuple[list[Utterance], float]:
        """The utterances of one stored part as scoring cuts and decodes them, and its duration: for scoring
        the same words again under other loan files (`score_transcript`; the demo loan book)."""
        audio = decode_audio(str(part.path), self.limits)
        return (transcribe_like_live(audio, part.channels, self.transcriber, self.vad, self.segment,
                                     before_batch=self.yield_to), audio.duration_s)

    def _spoken(self, audio: DecodedAudio, index: int, u: Utterance, final: Final) -> list[tuple[float, float]]:
        """Audio time ranges where the masked parts of `u` were said (word times of a second decoding pass)."""
        clip = audio.samples[index][int(u.start_s * 16000): int(u.end_s * 16000)]
        words = tuple((w.start_s, w.end_s, w.text) for w in self.transcriber.word_times(clip, u.start_s))
        return spoken_spans(list(final.masked), normalise_width(u.text), words, u.start_s, u.end_s)


def score_transcript(call_id: str, utterances: Sequence[Utterance], duration_s: float,
                     loan_file: dict[str, Any] | None, scorer: RecordingScorer) -> Scored:
    """The report of a call already transcribed (`RecordingScorer.transcript`), with `loan_file`: the text half
    of scoring, in the utterances' time order. Nothing is silenced (no audio is touched)."""
    heard = _Heard(CallPipeline(call_id, ROLES, scorer.assessor, loan_file, scorer.dialogue))
    for u in sorted(utterances, key=lambda u: (u.start_s, u.channel)):
        heard.final(u)
    return heard.scored(duration_s, scorer.risk, loan_file, [])


@dataclass(slots=True)
class _Heard:
    """A recording's utterances as scoring keeps them, in the order they went through the call's pipeline: the
    dialogue's turns and their unredacted text (`RecordingScorer`, `score_transcript`)."""

    pipeline: CallPipeline
    turns: list[Turn] = field(default_factory=list)
    raw: list[dict[str, Any]] = field(default_factory=list)

    def final(self, u: Utterance) -> Final:
        """`u` through the pipeline; kept when it became a turn (it is on the agent's or the customer's side)."""
        final = self.pipeline.final(u.channel, u.text, u.start_s, u.end_s)
        if final.turn is not None:
            self.turns.append(final.turn)
            self.raw.append({"channel": u.channel, "start_s": u.start_s, "end_s": u.end_s, "text": u.text})
        return final

    def scored(self, duration_s: float, risk: RiskConfig, loan_file: dict[str, Any] | None,
               silenced: list[dict[str, Any]]) -> Scored:
        """The end of scoring what was heard: its report (`finish_report`) and the unredacted text. Raises
        `AsrError` when nothing was (a recording of noise or of other channels only)."""
        if not self.turns:
            raise AsrError("no speech was recognised in the recording")
        return Scored(finish_report(self.pipeline, self.turns, duration_s, risk, loan_file, silenced), self.raw)


def finish_report(pipeline: CallPipeline, turns: list[Turn], duration_s: float, risk: RiskConfig,
                  loan_file: dict[str, Any] | None, silenced: list[dict[str, Any]]) -> dict[str, Any]:
    """The stored report (JSON form) of a call whose turns went through `pipeline`: the dialogue replayed in
    endpoint order, the report, the public part of the loan file and what audio was silenced. The one ending of
    every way a call is scored: a recording, a transcript, a stored call re-scored (`rescore_report`)."""
    pipeline.replay(turns, duration_s)
    report = replace(pipeline.report(duration_s, risk), loan_file=public_loan_file(loan_file),
                     silenced_audio=tuple(SilencedSpan(str(s["channel"]), float(s["start_s"]), float(s["end_s"]))
                                          for s in silenced))
    return report.to_dict()


@dataclass(frozen=True, slots=True)
class Redo:
    """An utterance of a stored live call to decode again at full quality (it was decoded greedily under load)."""

    utterance_id: str
    channel: str
    start_s: float
    end_s: float


def redecode_report(scorer: RecordingScorer, stored: Report, redo: Sequence[Redo], audio: dict[str, np.ndarray],
                    loan_file: dict[str, Any] | None) -> dict[str, Any]:
    """A stored live call's report made again after the call: the utterances in `redo` decoded from the call's
    stored audio (16 kHz, by channel) with the final beam, as a recording's are, their text redacted (`loan_file`
    gives the names to mask), and the dialogue replayed over every turn. The report keeps the live verdicts
    (`live_labels`, as they reached the agent) and says which utterances were re-decoded. Gives way to live calls
    before each decode (`scorer.yield_to`)."""
    # Each text is masked on its own (numbers, the loan file's names and addresses). Utterances that had personal
    # data masked live are not in `redo`: their audio was silenced when stored, and their live text stands.
    redaction = CallRedaction(ROLES, loan_file)
    texts: dict[str, str] = {}
    for item in sorted(redo, key=lambda r: (r.start_s, r.channel)):
        samples = audio.get(item.channel)
        if samples is None:
            continue
        if scorer.yield_to is not None:
            scorer.yield_to()
        clip = samples[int(item.start_s * 16000): int(item.end_s * 16000)]
        if clip.size == 0:
            continue
        u = scorer.transcriber.transcribe_span(clip, item.channel, item.start_s, scorer.segment.beam_size,
                                               scorer.segment.min_window_s)
        text, _ = redaction.final(item.channel, u.text if u else "", item.start_s, item.end_s)
        texts[item.utterance_id] = text
    turns = [replace(t, text=texts.get(t.utterance_id, t.text)) for t in stored.utterances if t.speaker in ROLES]
    turns = [t for t in turns if t.text]
    pipeline = CallPipeline(stored.call_id, ROLES, scorer.assessor, loan_file, scorer.dialogue)
    report = finish_report(pipeline, turns, stored.duration_s, scorer.risk, loan_file,
                           [asdict(s) for s in stored.silenced_audio])
    report["live_labels"] = stored.live_labels or {t.topic: t.label for t in stored.topics if t.label}
    report["redecoded"] = sorted(texts)
    return report


def rescore_report(stored: Report, assessor: Assessor, dialogue: DialogueOptions,
                   risk: RiskConfig) -> dict[str, Any]:
    """A stored report (`nlu.report.read_report`) scored again by `assessor` under `risk` from the utterances it
    keeps: no ASR. Those utterances are already redacted, as the dialogue saw them when the call was scored, so
    they are the turns as they were; the loan file and the silenced audio are the stored ones."""
    turns = [t for t in stored.utterances if t.speaker in ROLES]
    pipeline = CallPipeline(stored.call_id, ROLES, assessor, stored.loan_file, dialogue)  # no redaction used here
    return finish_report(pipeline, turns, stored.duration_s, risk, stored.loan_file,
                         [asdict(s) for s in stored.silenced_audio])
