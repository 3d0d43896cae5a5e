"""Decoding one utterance with a right-sized Whisper encoder window.

Stock Whisper pads every input to 30 s, and on two CPU cores the encoder pass over those 30 s costs about a
second whatever the utterance length: most of a live final's latency. CTranslate2 accepts shorter encoder
inputs, so an utterance is padded only to the next multiple of 5 s, at least `min_window_s` (10 s by default;
a 5 s window made Whisper base repeat itself in measurement). The rest follows Whisper's own decoding: the
same prompt tokens and suppression, and its temperature fallback when the text loops or the model is unsure.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from asr import cpu

#: Whisper's mel frames per second (10 ms hop) and the largest window its positional embedding covers.
FRAMES_PER_S = 100
MAX_FRAMES = 3000
_WINDOW_STEP_FRAMES = 500
#: Whisper's fallback schedule: greedy/beam first, then sampling at rising temperatures.
TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
_MAX_LENGTH = 448
#: Most tokens a second of speech yields. Mandarin speech on the shared calls gives 3-7 tokens/s (p99 6.6); a
#: decoder that loops ("三分钟中三分钟中...") instead runs to the 448-token limit, and on two cores a looping
#: 10 s window took 23 s with the temperature fallback, blocking every call's finals behind it. Capping the
#: length by the audio's duration bounds that cost and leaves real speech untouched.
MAX_TOKENS_PER_S = 12
_TOKEN_SLACK = 10


@dataclass(frozen=True, slots=True)
class Decoded:
    """Whisper's text for one window, with the figures its own filters use."""

    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float


def window_frames(n_frames: int, min_window_s: float) -> int:
    """Encoder input length for `n_frames` of audio: next multiple of 5 s, at least `min_window_s`, at most 30 s."""
    minimum = int(min_window_s * FRAMES_PER_S)
    frames = max(n_frames, minimum, 1)
    return min(MAX_FRAMES, math.ceil(frames / _WINDOW_STEP_FRAMES) * _WINDOW_STEP_FRAMES)


def window_for_samples(n_samples: int, min_window_s: float, sample_rate_hz: int = 16_000) -> int:
    """`window_frames` for `n_samples` of audio: utterances with equal windows decode in a batch exactly as alone."""
    return window_frames(n_samples * FRAMES_PER_S // sample_rate_hz, min_window_s)


def token_budget(n_samples: int, sample_rate_hz: int = 16_000) -> int:
    """Largest number of text tokens worth generating for `n_samples` of audio (see MAX_TOKENS_PER_S)."""
    return math.ceil(n_samples / sample_rate_hz * MAX_TOKENS_PER_S) + _TOKEN_SLACK


def compression_ratio(text: str) -> float:
    """How well the text compresses; Whisper treats > 2.4 as a decoding loop."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


class WindowDecoder:
    """Decodes utterances (at most 30 s of 16 kHz audio) with a faster-whisper `WhisperModel`."""

    def __init__(self, model: Any, language: str, initial_prompt: str | None, min_window_s: float,
                 compression_ratio_threshold: float, log_prob_threshold: float, no_speech_threshold: float) -> None:
        self.model = model
        self.language = language
        self.initial_prompt = initial_prompt
        self.min_window_s = min_window_s
        self.compression_ratio_threshold = compression_ratio_threshold
        self.log_prob_threshold = log_prob_threshold
        self.no_speech_threshold = no_speech_threshold

    @cached_property
    def _tokenizer(self) -> Any:
        from faster_whisper.tokenizer import Tokenizer

        return Tokenizer(self.model.hf_tokenizer, self.model.model.is_multilingual, task="transcribe",
                         language=self.language)

    @cached_property
    def _prompt(self) -> list[int]:
        tok = self._tokenizer
        prompt: list[int] = []
        if self.initial_prompt:
            prompt = [tok.sot_prev, *tok.encode(" " + self.initial_prompt.strip())[-(_MAX_LENGTH // 2 - 1) :]]
        return [*prompt, *tok.sot_sequence, tok.no_timestamps]

    def decode(self, samples: np.ndarray, beam_size: int, min_window_s: float | None = None,
               fallback: bool = True, abandon: Callable[[], bool] | None = None) -> Decoded | None:
        """Decode one utterance; the caller applies its own no-speech and hallucination filters.

        `fallback=False` makes one pass only (no retries at higher temperatures when the text loops or the
        model is unsure): for provisional text such as live partials, where a retry would cost more time than
        the text is worth. `abandon` is asked once the encoder has run; if it says so, the text is not decoded
        and None comes back (a partial gives way to a final that arrived meanwhile).
        """
        features = self._features(samples)
        frames = window_frames(features.shape[-1], self.min_window_s if min_window_s is None else min_window_s)
        encoded = self._encode(features, frames)
        if abandon is not None and abandon():
            return None
        first = self._generate(encoded, 1, self._max_length(samples.shape[0]), 0.0, beam_size)[0]
        return self._settle(encoded, samples.shape[0], first, fallback)

    def decode_batch(self, batch: Sequence[np.ndarray], beam_size: int,
                     min_window_s: float | None = None) -> list[Decoded]:
        """Decode several utterances (of different calls, say) with one pass of the text decoder.

        On two CPU cores the encoder is compute-bound (a batch is no faster than its items one by one) but the
        autoregressive decoder is not: one batched search over four utterances cost 1.28 s against 2.9 s one
        after the other. So each utterance is encoded on its own, at the window of the longest, and their
        encoder outputs are stacked for one `generate` call. Utterances that need Whisper's temperature
        fallback (loops, low confidence) then retry one by one, as in `decode`.
        """
        import ctranslate2

        if len(batch) == 1:
            decoded = self.decode(batch[0], beam_size, min_window_s)
            assert decoded is not None  # no abandon: always decoded
            return [decoded]
        window_s = self.min_window_s if min_window_s is None else min_window_s
        features = [self._features(samples) for samples in batch]
        frames = max(window_frames(f.shape[-1], window_s) for f in features)
        encoded = [np.asarray(self._encode(f, frames, to_cpu=True)) for f in features]
        stacked = ctranslate2.StorageView.from_array(np.ascontiguousarray(np.concatenate(encoded)))
        max_length = max(self._max_length(samples.shape[0]) for samples in batch)
        firsts = self._generate(stacked, len(batch), max_length, 0.0, beam_size)
        return [
            self._settle(ctranslate2.StorageView.from_array(np.ascontiguousarray(one)), samples.shape[0], first,
                         fallback=True)
            for one, samples, first in zip(encoded, batch, firsts, strict=True)
        ]

    def _features(self, samples: np.ndarray) -> np.ndarray:
        # The last frame only covers the STFT padding; faster-whisper drops it too, and keeping it changed results.
        with cpu.phase("features"):
            features: np.ndarray = self.model.feature_extractor(samples)[:, :-1][:, :MAX_FRAMES]
        return features

    def _encode(self, features: np.ndarray, frames: int, to_cpu: bool = False) -> Any:
        import ctranslate2

        padded = np.pad(features, ((0, 0), (0, frames - features.shape[-1])))
        model = self.model.model
        with cpu.phase("encoder"):
            return model.encode(
                ctranslate2.StorageView.from_array(np.ascontiguousarray(padded[np.newaxis], dtype=np.float32)),
                to_cpu=to_cpu or (model.device == "cuda" and len(model.device_index) > 1),
            )

    def _max_length(self, n_samples: int) -> int:
        return min(_MAX_LENGTH, len(self._prompt) + token_budget(n_samples))

    def _generate(self, encoded: Any, batch: int, max_length: int, temperature: float,
                  beam_size: int) -> list[Decoded]:
        if temperature > 0:
            kwargs: dict[str, Any] = {"beam_size": 1, "num_hypotheses": 5, "sampling_topk": 0,
                                      "sampling_temperature": temperature}
        else:
            kwargs = {"beam_size": beam_size}
        # The first pass and Whisper's retries at higher temperatures are counted apart: retries are the price of
        # loops and low confidence, not of the utterance's length.
        with cpu.phase("decoder" if temperature == 0 else "fallback"):
            results = self.model.model.generate(
                encoded, [self._prompt] * batch, max_length=max_length, return_scores=True,
                return_no_speech_prob=True, suppress_blank=True, suppress_tokens=[-1], **kwargs,
            )
        decoded = []
        for result in results:
            tokens = [t for t in result.sequences_ids[0] if t < self._tokenizer.eot]
            avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
            text = self._tokenizer.decode(tokens).strip()
            decoded.append(Decoded(text, float(avg_logprob), float(result.no_speech_prob), compression_ratio(text)))
        return decoded

    def _acceptable(self, decoded: Decoded) -> bool:
        if decoded.no_speech_prob > self.no_speech_threshold and decoded.avg_logprob < self.log_prob_threshold:
            return True  # silence: retrying at higher temperature only invents words
        return (decoded.compression_ratio <= self.compression_ratio_threshold
                and decoded.avg_logprob >= self.log_prob_threshold)

    def _settle(self, encoded: Any, n_samples: int, first: Decoded, fallback: bool) -> Decoded:
        """Whisper's temperature fallback after the first (temperature 0) result."""
        if self._acceptable(first) or not fallback:
            return first
        candidates = [first]
        for temperature in TEMPERATURES[1:]:
            decoded = self._generate(encoded, 1, self._max_length(n_samples), temperature, 1)[0]
            candidates.append(decoded)
            if self._acceptable(decoded):
                return decoded
        usable = [c for c in candidates if c.compression_ratio <= self.compression_ratio_threshold] or candidates
        return max(usable, key=lambda c: c.avg_logprob)
