"""Plain records exchanged by `asr` and its callers. Units are in the field names."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Whisper and Silero VAD both work on 16 kHz mono float32.
MODEL_SAMPLE_RATE_HZ = 16_000
#: Sources sampled at or below this rate carry telephone bandwidth only (G.711 is 8 kHz).
NARROWBAND_MAX_RATE_HZ = 8_000


def vad_threshold_for_rate(source_sample_rate_hz: int, wideband: float, narrowband: float) -> float:
    """The speech-probability threshold for audio recorded at `source_sample_rate_hz`: telephone audio (8 kHz)
    scores lower under Silero VAD, so it gets its own threshold. The one place live, post-call and
    `huifang transcribe` make this choice."""
    return narrowband if source_sample_rate_hz <= NARROWBAND_MAX_RATE_HZ else wideband


@dataclass(frozen=True, slots=True)
class Word:
    """One recognised word (for Mandarin usually one or two characters) with its audio time span.

    Word texts are Whisper's own (Simplified); the lexicon correction applies to the utterance text only.
    """

    start_s: float
    end_s: float
    text: str
    probability: float


@dataclass(frozen=True, slots=True)
class Utterance:
    """One stretch of speech on one channel, between two pauses.

    Times are seconds from the first sample of the recording. `avg_logprob` and `no_speech_prob` are Whisper's
    own confidence figures for the decoded text (higher logprob and lower no-speech probability are better).
    """

    channel: str
    start_s: float
    end_s: float
    text: str
    words: tuple[Word, ...] | None
    avg_logprob: float
    no_speech_prob: float
    #: Decoded with beam width 1 (a live final decoded greedily while other finals waited is re-decoded after
    #: the call when the configured beam is wider).
    greedy: bool = False

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (rounded to milliseconds)."""
        out: dict[str, object] = {
            "channel": self.channel,
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
            "text": self.text,
            "avg_logprob": round(self.avg_logprob, 4),
            "no_speech_prob": round(self.no_speech_prob, 4),
        }
        if self.words is not None:
            out["words"] = [
                {"start_s": round(w.start_s, 3), "end_s": round(w.end_s, 3), "text": w.text,
                 "probability": round(w.probability, 4)}
                for w in self.words
            ]
        return out


@dataclass(frozen=True, slots=True)
class DecodedAudio:
    """A recording decoded to 16 kHz float32, one row per channel (shape `(channels, samples)`)."""

    samples: np.ndarray
    source_sample_rate_hz: int
    source_codec: str

    @property
    def channel_count(self) -> int:
        return int(self.samples.shape[0])

    @property
    def duration_s(self) -> float:
        return float(self.samples.shape[1]) / MODEL_SAMPLE_RATE_HZ


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Bounds that keep a hostile or mistaken upload from taking unbounded memory or time."""

    max_duration_s: float = 2 * 3600.0
    max_channels: int = 8
    max_file_bytes: int = 1 << 30


@dataclass(frozen=True, slots=True)
class AsrOptions:
    """How to recognise speech. Built by the service from its settings; usable from a plain script too."""

    model: str = "base"
    model_cache_dir: str | None = None
    device: str = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = 0
    #: Decodes the model runs at once, each with `cpu_threads` threads (CTranslate2 replicas sharing the weights).
    #: Callers in more threads than this wait for a free one.
    num_workers: int = 1
    language: str = "zh"
    #: Beam width for recordings. 10 rather than Whisper's 5: on the shared sets (bench/asr_accuracy.py) it cut
    #: CER from 0.077 to 0.073 on read customer-service speech and from 0.175 to 0.160 on telephone audio, and
    #: changed nothing elsewhere, for about 15% more decoding time. Live finals keep their own (faster) width.
    beam_size: int = 10
    #: Silence (ms) that ends an utterance when cutting a recording into utterances with Silero VAD.
    min_silence_ms: int = 800
    #: Utterances longer than this are split by the VAD at the longest pause it can find (Whisper sees 30 s).
    max_utterance_s: float = 25.0
    vad_threshold: float = 0.5
    #: Silero gives lower speech probabilities on telephone audio (8 kHz, 300-3400 Hz): at 0.5 it missed the
    #: first seconds of speech on G.711 clips that it found at 16 kHz, so narrowband input gets its own threshold.
    vad_threshold_narrowband: float = 0.35
    #: Audio kept on each side of a VAD speech chunk, so that word onsets and tails are not clipped.
    speech_pad_ms: int = 200
    #: Shortest Whisper encoder window (s). Below 30 (stock Whisper), utterances are padded only to the next 5 s
    #: from here, which cuts the encoder cost up to threefold (asr/decoder.py) for some loss of accuracy:
    #: recordings keep 30, live calls trade some accuracy for latency (see README).
    min_window_s: float = 30.0
    #: Word-level timestamps cost an extra alignment pass; off unless a caller needs them (e.g. PII silencing).
    word_timestamps: bool = False
    #: Optional decoding prompt and the hallucination phrases; see `configs/asr.yaml`.
    initial_prompt: str | None = None
    hallucination_phrases: tuple[str, ...] = field(default_factory=tuple)
    #: Domain terms that homophones in the transcript are corrected to (asr/lexicon.py); empty disables it.
    lexicon: tuple[str, ...] = field(default_factory=tuple)
    #: Utterances Whisper itself thinks are probably not speech are dropped (its own defaults).
    no_speech_threshold: float = 0.6
    log_prob_threshold: float = -1.0
    compression_ratio_threshold: float = 2.4
