"""Transcription of recordings: Silero VAD cuts each channel into utterances, Whisper decodes each one.

Decoding utterance by utterance (rather than letting Whisper walk 30-second windows) gives one `Utterance` per
stretch of speech with exact VAD boundaries, keeps the channels strictly apart, and means silence is never
shown to the decoder at all, which is where most Whisper hallucinations come from.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from asr.decoder import WindowDecoder
from asr.errors import AsrError, UnsupportedLanguageError
from asr.lexicon import LexiconCorrector, load_corrector
from asr.models import resolve_model
from asr.text import collapse_repeats, remove_hallucinations, tidy
from asr.types import MODEL_SAMPLE_RATE_HZ, AsrOptions, DecodedAudio, Utterance, Word, vad_threshold_for_rate

log = logging.getLogger(__name__)

#: Channel roles assumed when the caller names none: the usual recording layout of a call-centre switch.
DEFAULT_STEREO_ROLES = ("agent", "customer")


@dataclass(frozen=True, slots=True)
class SpeechSpan:
    """A stretch of speech found by the VAD, in samples at 16 kHz."""

    start: int
    end: int


def default_roles(channel_count: int) -> tuple[str, ...]:
    """Channel roles when the caller gives none: `agent`,`customer` for stereo, `mono` or `ch0..` otherwise."""
    if channel_count == 1:
        return ("mono",)
    if channel_count == 2:
        return DEFAULT_STEREO_ROLES
    return tuple(f"ch{i}" for i in range(channel_count))


def vad_threshold(options: AsrOptions, source_sample_rate_hz: int) -> float:
    """The speech-probability threshold for audio that was recorded at `source_sample_rate_hz`."""
    return vad_threshold_for_rate(source_sample_rate_hz, options.vad_threshold, options.vad_threshold_narrowband)


def speech_spans(samples: np.ndarray, options: AsrOptions, threshold: float | None = None) -> list[SpeechSpan]:
    """Find utterances in one 16 kHz channel with Silero VAD (shipped inside faster-whisper)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    if samples.size == 0:
        return []
    vad = VadOptions(
        threshold=threshold if threshold is not None else options.vad_threshold,
        min_silence_duration_ms=options.min_silence_ms,
        max_speech_duration_s=options.max_utterance_s,
        speech_pad_ms=options.speech_pad_ms,
        min_speech_duration_ms=150,
    )
    return [SpeechSpan(int(s["start"]), int(s["end"])) for s in get_speech_timestamps(samples, vad)]


class Transcriber:
    """Loads one Whisper model and turns decoded audio into utterances.

    Thread-safe: one instance is shared by every caller of a process (CTranslate2 serialises or parallelises
    inside; `cpu_threads` bounds it). The model loads lazily on first use or eagerly with `load()`.
    """

    def __init__(self, options: AsrOptions, model: object | None = None) -> None:
        self.options = options
        self._model = model
        self._lock = threading.Lock()
        self.model_path: str | None = None
        self._corrector: LexiconCorrector | None = None
        self._window_decoder: WindowDecoder | None = None

    def load(self) -> None:
        """Provision (offline) and load the model now; raises `ModelUnavailableError` with install advice."""
        with self._lock:
            if self._window_decoder is not None:
                return
            o = self.options
            if self._model is None:
                from faster_whisper import WhisperModel

                self.model_path = resolve_model(o.model, o.model_cache_dir)
                try:
                    self._model = WhisperModel(self.model_path, device=o.device, compute_type=o.compute_type,
                                               cpu_threads=o.cpu_threads, num_workers=o.num_workers)
                except (RuntimeError, ValueError, OSError) as e:
                    raise AsrError(f"cannot load speech model from {self.model_path}: {e}") from e
                log.info("loaded Whisper model %s (%s)", self.model_path, o.compute_type)
            if o.lexicon:
                self._corrector = load_corrector(o.lexicon)
            self._window_decoder = _window_decoder(self._model, o)

    def with_decoding(self, language: str | None = None, initial_prompt: str | None = None) -> Transcriber:
        """A transcriber that decodes in `language` with `initial_prompt` (None keeps this one's), for one request.

        It shares this transcriber's loaded model and lexicon and changes nothing of it: the other paths that
        decode through this one meanwhile (live calls, scoring) keep their language and prompt. Loads the model
        if needed; raises `UnsupportedLanguageError` for a language the model does not know.
        """
        o = self.options
        options = replace(o, language=language or o.language,
                          initial_prompt=o.initial_prompt if initial_prompt is None else initial_prompt)
        if options == o:
            return self
        model = self.model  # loads on first use
        if options.language not in model.supported_languages:
            raise UnsupportedLanguageError(f"the speech model does not know language {options.language!r} (use an "
                                           "ISO-639-1 code Whisper knows, e.g. zh or en)")
        other = Transcriber(options, model)
        other.model_path = self.model_path
        other._corrector = self._corrector
        # Its own decoder: the language and prompt tokens are cached per decoder, so none is shared or mutated.
        other._window_decoder = _window_decoder(model, options)
        return other

    @property
    def model(self) -> Any:
        if self._window_decoder is None:
            self.load()
        return self._model

    def transcribe(
        self,
        audio: DecodedAudio,
        roles: Sequence[str] | None = None,
        on_progress: Callable[[float], None] | None = None,
    ) -> list[Utterance]:
        """Transcribe every channel of `audio` separately; utterances come back sorted by start time.

        `roles` names the channels in order (default: `default_roles`). `on_progress` receives the seconds of
        channel audio processed so far (the total is `duration_s * channel_count`).
        """
        roles = tuple(roles) if roles else default_roles(audio.channel_count)
        if len(roles) != audio.channel_count:
            raise AsrError(f"{len(roles)} channel roles given for audio with {audio.channel_count} channels")
        utterances: list[Utterance] = []
        done_s = 0.0
        for index, role in enumerate(roles):
            channel = audio.samples[index]
            threshold = vad_threshold(self.options, audio.source_sample_rate_hz)
            for span in speech_spans(channel, self.options, threshold):
                start_s = span.start / MODEL_SAMPLE_RATE_HZ
                utterance = self.transcribe_span(channel[span.start : span.end], role, start_s)
                if utterance is not None:
                    utterances.append(utterance)
                if on_progress is not None:
                    on_progress(done_s + span.end / MODEL_SAMPLE_RATE_HZ)
            done_s += audio.duration_s
            if on_progress is not None:
                on_progress(done_s)
        utterances.sort(key=lambda u: (u.start_s, u.channel))
        return utterances

    def word_times(self, samples: np.ndarray, offset_s: float) -> tuple[Word, ...]:
        """Words with their times (Simplified Chinese) for a stretch of 16 kHz audio, by faster-whisper's
        word alignment: used to find where personal data was said, so that stored audio can be silenced there."""
        segments = list(self.model.transcribe(
            samples, language=self.options.language, beam_size=self.options.beam_size,
            condition_on_previous_text=False, vad_filter=False, word_timestamps=True,
        )[0])
        return tuple(Word(offset_s + w.start, offset_s + w.end, tidy(w.word), w.probability)
                     for s in segments for w in (s.words or []))

    def transcribe_span(
        self, samples: np.ndarray, channel: str, offset_s: float, beam_size: int | None = None,
        min_window_s: float | None = None, provisional: bool = False, abandon: Callable[[], bool] | None = None,
    ) -> Utterance | None:
        """Decode one utterance-sized stretch of 16 kHz audio; None when it holds no real speech.

        `beam_size` and `min_window_s` override the configured ones (live calls decode with shorter encoder
        windows and greedy partials, for latency). `provisional` text (a live partial) is decoded in one pass,
        without Whisper's temperature fallback, and gives up (None) when `abandon()` says so after the encoder.

        Each utterance is decoded on its own (no text carried over from the previous one), so one misheard
        utterance cannot derail the next, and the other channel's words never leak into this one.
        """
        opts = self.options
        beam = beam_size or opts.beam_size
        model = self.model  # loads on first use
        words: tuple[Word, ...] | None = None
        if opts.word_timestamps:
            # Word alignment needs faster-whisper's own 30 s pipeline.
            segments = list(model.transcribe(  # consume the lazy generator here, in the caller's thread
                samples, language=opts.language, beam_size=beam, initial_prompt=opts.initial_prompt,
                condition_on_previous_text=False, vad_filter=False, word_timestamps=True,
                no_speech_threshold=opts.no_speech_threshold, log_prob_threshold=opts.log_prob_threshold,
                compression_ratio_threshold=opts.compression_ratio_threshold,
            )[0])
            if not segments:
                return None
            raw = "".join(s.text for s in segments)
            tokens = [max(len(s.tokens), 1) for s in segments]
            avg_logprob = sum(s.avg_logprob * n for s, n in zip(segments, tokens, strict=True)) / sum(tokens)
            no_speech = min(s.no_speech_prob for s in segments)
            words = tuple(
                Word(offset_s + w.start, offset_s + w.end, tidy(w.word), w.probability)
                for s in segments
                for w in (s.words or [])
            )
        else:
            assert self._window_decoder is not None
            decoded = self._window_decoder.decode(samples, beam, min_window_s, fallback=not provisional,
                                                  abandon=abandon if provisional else None)
            if decoded is None:
                return None
            raw, avg_logprob, no_speech = decoded.text, decoded.avg_logprob, decoded.no_speech_prob
        return self._utterance(raw, avg_logprob, no_speech, words, samples.shape[0], channel, offset_s, beam == 1)

    def transcribe_spans(self, spans: Sequence[tuple[np.ndarray, str, float]], beam_size: int | None = None,
                         min_window_s: float | None = None) -> list[Utterance | None]:
        """`transcribe_span` for several stretches (samples, channel, offset_s) at once, one result each.

        Whisper's text decoder runs once for the whole batch (`WindowDecoder.decode_batch`), which on CPU costs
        much less than decoding them one after the other; all are encoded at the window of the longest.
        """
        opts = self.options
        if self._window_decoder is None:
            self.load()
        if len(spans) <= 1 or opts.word_timestamps:
            return [self.transcribe_span(samples, channel, offset_s, beam_size, min_window_s)
                    for samples, channel, offset_s in spans]
        assert self._window_decoder is not None
        beam = beam_size or opts.beam_size
        decoded = self._window_decoder.decode_batch([samples for samples, _, _ in spans], beam, min_window_s)
        return [
            self._utterance(d.text, d.avg_logprob, d.no_speech_prob, None, samples.shape[0], channel, offset_s,
                            beam == 1)
            for d, (samples, channel, offset_s) in zip(decoded, spans, strict=True)
        ]

    def _utterance(self, raw: str, avg_logprob: float, no_speech: float, words: tuple[Word, ...] | None,
                   n_samples: int, channel: str, offset_s: float, greedy: bool = False) -> Utterance | None:
        """Whisper's raw text to an utterance: no-speech filter, Simplified text, lexicon, hallucinations."""
        opts = self.options
        if no_speech > opts.no_speech_threshold and avg_logprob < opts.log_prob_threshold:
            return None
        text = collapse_repeats(tidy(raw))
        if self._corrector is not None:
            text = self._corrector.correct(text)
        text = remove_hallucinations(text, opts.hallucination_phrases, opts.initial_prompt)
        if not text:
            return None
        duration_s = n_samples / MODEL_SAMPLE_RATE_HZ
        return Utterance(
            channel=channel,
            start_s=offset_s,
            end_s=offset_s + duration_s,
            text=text,
            words=words,
            avg_logprob=float(avg_logprob) if math.isfinite(avg_logprob) else -10.0,
            no_speech_prob=float(no_speech),
            greedy=greedy,
        )


def _window_decoder(model: Any, o: AsrOptions) -> WindowDecoder:
    return WindowDecoder(model, o.language, o.initial_prompt, o.min_window_s, o.compression_ratio_threshold,
                         o.log_prob_threshold, o.no_speech_threshold)


def join_parts(parts: Sequence[Utterance | None], channel: str, start_s: float, end_s: float) -> Utterance | None:
    """One utterance from the decoded pieces of a long one (see `asr.streaming.PieceRequest`), in order.

    Pieces that held no speech (None) are skipped; confidence figures are averaged weighted by text length
    (the no-speech probability is the lowest: one piece of real speech makes the whole real speech).
    """
    real = [p for p in parts if p is not None and p.text]
    if not real:
        return None
    if len(real) == 1:
        only = real[0]
        return Utterance(channel, start_s, end_s, only.text, only.words, only.avg_logprob, only.no_speech_prob,
                         only.greedy)
    weights = [len(p.text) for p in real]
    words = None if any(p.words is None for p in real) else tuple(w for p in real for w in p.words or ())
    return Utterance(
        channel=channel,
        start_s=start_s,
        end_s=end_s,
        text="".join(p.text for p in real),
        words=words,
        avg_logprob=sum(p.avg_logprob * w for p, w in zip(real, weights, strict=True)) / sum(weights),
        no_speech_prob=min(p.no_speech_prob for p in real),
        greedy=any(p.greedy for p in real),
    )
