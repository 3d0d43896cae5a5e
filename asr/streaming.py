"""Streaming recognition of one live channel: Silero VAD endpointing, partial and final decode requests.

The interface is tiny and synchronous, after whisper_streaming's `insert_audio_chunk / process_iter / finish`:

    stream = ChannelStream("customer", options, vad_model)
    for request in stream.feed(samples_16k):   # any number of samples
        ...                                    # PartialRequest / FinalRequest, each with its audio
    for request in stream.finish():            # end of call: closes an open utterance
        ...

`ChannelStream` does no decoding itself. Its requests carry the audio to decode; the caller decides where and
when (the service runs finals first in a bounded worker pool and drops partials when it is saturated). That
keeps this module pure apart from the VAD network, and testable with a fake one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from asr.types import MODEL_SAMPLE_RATE_HZ, vad_threshold_for_rate

#: Silero VAD v6 looks at 512-sample windows (32 ms at 16 kHz) with 64 samples of left context.
VAD_WINDOW = 512
VAD_CONTEXT = 64
#: A partial needs this much undecoded audio (right after a piece Whisper would only guess).
_MIN_PARTIAL_S = 0.5


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """Endpointing and partial cadence of a live channel."""

    #: Silence that ends an utterance. Shorter answers the agent sooner; longer splits fewer sentences: on the
    #: shared calls 500 ms cut 9 of 108 turns in two at sentence pauses, 700 ms none.
    min_silence_ms: int = 700
    #: An utterance is forced to end at this length, even without a pause.
    max_utterance_s: float = 15.0
    #: Seconds of new speech between two partial requests while someone speaks; 0 disables partials.
    partial_interval_s: float = 1.0
    vad_threshold: float = 0.5
    #: Threshold for telephone (8 kHz) audio, which Silero scores lower (see `for_source_rate`).
    vad_threshold_narrowband: float = 0.35
    #: Audio kept before the first speech window and after the last, so onsets and tails are not clipped.
    speech_pad_ms: int = 200
    #: Speech shorter than this (a cough, a click) is not an utterance.
    min_speech_ms: int = 200
    #: Silence after which the utterance so far is offered for decoding ahead of its final (0: never). If the
    #: pause reaches `min_silence_ms` without new speech, the final's audio is exactly this audio, so its text
    #: can be ready when the endpoint fires instead of only starting then.
    prefetch_silence_ms: int = 300
    #: Long utterances are decoded in pieces: once the part not yet decoded holds this much audio, a pause of
    #: `piece_silence_ms` closes a piece, decoded at once, so that the final only decodes what follows (0: off).
    #: Decoding costs about 13-19 ms per token here, so a turn of 11 s (~58 tokens) took 1.4 s after its end;
    #: cut at a sentence pause it leaves a tail of ~5 s. Pieces of 4 s raised the CER of the shared calls from
    #: 0.105 to 0.115; from 5 s on it stayed at 0.100 (context enough for Whisper). Pieces are cut the same way
    #: after the call (see `endpoint_offline`), so live and post-call text stay alike.
    piece_min_s: float = 6.0
    piece_silence_ms: int = 300

    def for_source_rate(self, sample_rate_hz: int) -> StreamOptions:
        """These options for audio recorded at `sample_rate_hz` (the VAD threshold depends on it)."""
        threshold = vad_threshold_for_rate(sample_rate_hz, self.vad_threshold, self.vad_threshold_narrowband)
        return replace(self, vad_threshold=threshold, vad_threshold_narrowband=threshold)


@dataclass(frozen=True, slots=True)
class PartialRequest:
    """Decode the utterance so far and show it as a partial. `audio` (from `start_s`) is the part no piece
    covers; the utterance itself began at `utterance_start_s`."""

    channel: str
    utterance_id: str
    start_s: float
    end_s: float
    audio: np.ndarray
    utterance_start_s: float


@dataclass(frozen=True, slots=True)
class PieceRequest:
    """A stretch of an utterance still in progress that ends at a pause: decode it now; its final will only
    decode what follows. `index` counts the pieces of the utterance from 0."""

    channel: str
    utterance_id: str
    index: int
    start_s: float
    end_s: float
    audio: np.ndarray


@dataclass(frozen=True, slots=True)
class FinalRequest:
    """Decode a finished utterance; exactly one per utterance.

    `audio` is the whole utterance. `cuts` are the sample offsets (within `audio`) where earlier
    `PieceRequest`s of this utterance ended: the final's text is the pieces' texts followed by the text of
    `tail()`, the audio after the last cut.
    """

    channel: str
    utterance_id: str
    start_s: float
    end_s: float
    audio: np.ndarray
    forced: bool = False
    cuts: tuple[int, ...] = ()

    @property
    def tail_start_s(self) -> float:
        """Where the audio that no piece covers begins."""
        return self.start_s + (self.cuts[-1] if self.cuts else 0) / MODEL_SAMPLE_RATE_HZ

    def tail(self) -> np.ndarray:
        """The audio after the last piece (the whole utterance when there are none)."""
        return self.audio[self.cuts[-1]:] if self.cuts else self.audio

    def parts(self) -> list[tuple[float, np.ndarray]]:
        """(start_s, audio) of every piece and then the tail: the whole utterance, in order."""
        bounds = [0, *self.cuts, len(self.audio)]
        return [(self.start_s + a / MODEL_SAMPLE_RATE_HZ, self.audio[a:b])
                for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


@dataclass(frozen=True, slots=True)
class PrefetchRequest:
    """The undecoded rest of the utterance as it will be if the current pause turns out to end it: decode
    early if there is time. A later `FinalRequest` with the same `utterance_id`, `tail_start_s` and `end_s` has
    exactly this audio as its `tail()`.
    """

    channel: str
    utterance_id: str
    start_s: float
    end_s: float
    audio: np.ndarray


StreamRequest = PartialRequest | PieceRequest | FinalRequest | PrefetchRequest
#: (windows of 512 samples, state) -> (speech probability per window, new state)
VadStep = Callable[[np.ndarray, "VadState"], tuple[np.ndarray, "VadState"]]


@dataclass(slots=True)
class VadState:
    """Recurrent state of Silero VAD between calls (one per channel)."""

    h: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, 128), dtype=np.float32))
    c: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, 128), dtype=np.float32))
    context: np.ndarray = field(default_factory=lambda: np.zeros(VAD_CONTEXT, dtype=np.float32))


class SileroStep:
    """Stateful Silero VAD over whole 512-sample windows, sharing one ONNX session between all channels.

    The session is stateless (state travels in `VadState`) and onnxruntime sessions are thread-safe, so one
    instance serves every call of the process.
    """

    def __init__(self) -> None:
        from faster_whisper.vad import get_vad_model

        self._session = get_vad_model().session

    def __call__(self, windows: np.ndarray, state: VadState) -> tuple[np.ndarray, VadState]:
        if windows.size == 0:
            return np.zeros(0, dtype=np.float32), state
        rows = windows.reshape(-1, VAD_WINDOW)
        contexts = np.concatenate([state.context[np.newaxis, :], rows[:-1, -VAD_CONTEXT:]], axis=0)
        batch = np.concatenate([contexts, rows], axis=1).astype(np.float32)
        out, h, c = self._session.run(None, {"input": batch, "h": state.h, "c": state.c})
        return np.asarray(out, dtype=np.float32).reshape(-1), VadState(h, c, rows[-1, -VAD_CONTEXT:].copy())


class ChannelStream:
    """Endpointing state of one channel of one call. Feed 16 kHz float32 samples, get decode requests."""

    def __init__(self, channel: str, options: StreamOptions, vad: VadStep) -> None:
        self.channel = channel
        self.options = options
        self._vad = vad
        self._vad_state = VadState()
        self._pending = np.zeros(0, dtype=np.float32)  # samples not yet in a full VAD window
        self._samples_seen = 0  # samples that went through the VAD
        self._audio = np.zeros(0, dtype=np.float32)  # recent audio, starting at self._audio_start
        self._audio_start = 0
        self._in_speech = False
        self._speech_start = 0
        self._first_speech = 0
        self._last_speech_end = 0
        self._silence_windows = 0
        self._last_partial_at = 0
        self._count = 0
        self._piece_start = 0  # where the part of the open utterance that no piece covers begins
        self._cuts: list[int] = []  # ends of the open utterance's pieces (absolute samples)

    @property
    def position_s(self) -> float:
        """Seconds of this channel's audio processed so far."""
        return self._samples_seen / MODEL_SAMPLE_RATE_HZ

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    def feed(self, samples: np.ndarray) -> list[StreamRequest]:
        """Add audio (16 kHz float32, any length) and return the requests it completes."""
        pending = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        usable = (len(pending) // VAD_WINDOW) * VAD_WINDOW
        windows, self._pending = pending[:usable], pending[usable:]
        if usable == 0:
            return []
        self._audio = np.concatenate([self._audio, windows])
        probs, self._vad_state = self._vad(windows, self._vad_state)
        requests: list[StreamRequest] = []
        for prob in probs:
            window_start = self._samples_seen
            self._samples_seen += VAD_WINDOW
            requests.extend(self._step(float(prob), window_start))
        self._trim()
        return requests

    def finish(self) -> list[StreamRequest]:
        """End of the call: the open utterance, if any, becomes final."""
        if not self._in_speech:
            return []
        return self._close(self._samples_seen, forced=False)

    # -- endpointing ---------------------------------------------------------------------------------------

    def _step(self, prob: float, window_start: int) -> list[StreamRequest]:
        o = self.options
        threshold = o.vad_threshold
        silence_threshold = max(threshold - 0.15, 0.01)
        window_end = window_start + VAD_WINDOW
        if not self._in_speech:
            if prob >= threshold:
                pad = int(o.speech_pad_ms * MODEL_SAMPLE_RATE_HZ / 1000)
                self._in_speech = True
                self._speech_start = max(window_start - pad, self._audio_start, 0)
                self._first_speech = window_start
                self._last_speech_end = window_end
                self._last_partial_at = window_start
                self._silence_windows = 0
                self._piece_start = self._speech_start
                self._cuts = []
            return []
        if prob >= threshold:
            self._last_speech_end = window_end
            self._silence_windows = 0
        elif prob < silence_threshold:
            self._silence_windows += 1
            silence_ms = self._silence_windows * VAD_WINDOW * 1000 / MODEL_SAMPLE_RATE_HZ
            before_ms = (self._silence_windows - 1) * VAD_WINDOW * 1000 / MODEL_SAMPLE_RATE_HZ

            def reached(ms: int) -> bool:  # this window is the one that makes the pause `ms` long
                return 0 < ms < o.min_silence_ms and before_ms < ms <= silence_ms

            end = self._utterance_end(window_end)
            if (
                o.piece_min_s > 0
                and reached(o.piece_silence_ms)
                and end - self._piece_start >= o.piece_min_s * MODEL_SAMPLE_RATE_HZ
            ):
                piece = PieceRequest(self.channel, self._next_id(peek=True), len(self._cuts),
                                     self._piece_start / MODEL_SAMPLE_RATE_HZ, end / MODEL_SAMPLE_RATE_HZ,
                                     self._slice(self._piece_start, end))
                self._cuts.append(end)
                self._piece_start = end
                return [piece]
            if (
                reached(o.prefetch_silence_ms)
                and end > self._piece_start
                and self._last_speech_end - self._first_speech >= o.min_speech_ms * MODEL_SAMPLE_RATE_HZ / 1000
            ):
                return [PrefetchRequest(self.channel, self._next_id(peek=True),
                                        self._piece_start / MODEL_SAMPLE_RATE_HZ, end / MODEL_SAMPLE_RATE_HZ,
                                        self._slice(self._piece_start, end))]
        if self._silence_windows * VAD_WINDOW >= o.min_silence_ms * MODEL_SAMPLE_RATE_HZ / 1000:
            return self._close(self._utterance_end(window_end), forced=False)
        if (window_end - self._speech_start) >= o.max_utterance_s * MODEL_SAMPLE_RATE_HZ:
            requests = self._close(window_end, forced=True)
            # Still speaking: the next utterance starts right here.
            self._in_speech = True
            self._speech_start = window_end
            self._first_speech = window_end
            self._last_speech_end = window_end
            self._last_partial_at = window_end
            self._piece_start = window_end
            self._cuts = []
            return requests
        if (
            o.partial_interval_s > 0
            and prob >= threshold  # in a pause the final may be due any moment: do not compete with it
            and window_end - self._last_partial_at >= o.partial_interval_s * MODEL_SAMPLE_RATE_HZ
            and window_end - self._piece_start >= _MIN_PARTIAL_S * MODEL_SAMPLE_RATE_HZ
        ):
            self._last_partial_at = window_end
            # Only the part no piece covers: the pieces' texts are known (or on their way) already.
            return [PartialRequest(self.channel, self._next_id(peek=True), self._piece_start / MODEL_SAMPLE_RATE_HZ,
                                   window_end / MODEL_SAMPLE_RATE_HZ, self._slice(self._piece_start, window_end),
                                   self._speech_start / MODEL_SAMPLE_RATE_HZ)]
        return []

    def _utterance_end(self, window_end: int) -> int:
        pad = int(self.options.speech_pad_ms * MODEL_SAMPLE_RATE_HZ / 1000)
        return min(self._last_speech_end + pad, window_end)

    def _close(self, end: int, forced: bool) -> list[StreamRequest]:
        start = self._speech_start
        self._in_speech = False
        self._silence_windows = 0
        speech = self._last_speech_end - self._first_speech
        if not forced and speech < self.options.min_speech_ms * MODEL_SAMPLE_RATE_HZ / 1000:
            return []
        cuts = tuple(c - start for c in self._cuts if start < c <= end)
        request = FinalRequest(self.channel, self._next_id(peek=False), start / MODEL_SAMPLE_RATE_HZ,
                               end / MODEL_SAMPLE_RATE_HZ, self._slice(start, end), forced, cuts)
        self._cuts = []
        return [request]

    def _next_id(self, peek: bool) -> str:
        utterance_id = f"{self.channel}-{self._count + 1}"
        if not peek:
            self._count += 1
        return utterance_id

    def _slice(self, start: int, end: int) -> np.ndarray:
        lo, hi = start - self._audio_start, end - self._audio_start
        return self._audio[max(lo, 0) : max(hi, 0)].copy()

    def _trim(self) -> None:
        """Keep only the audio an open or future utterance may need (bounded memory on long calls)."""
        pad = int(self.options.speech_pad_ms * MODEL_SAMPLE_RATE_HZ / 1000)
        keep_from = self._speech_start if self._in_speech else max(self._samples_seen - pad - VAD_WINDOW, 0)
        drop = keep_from - self._audio_start
        if drop > 0:
            self._audio = self._audio[drop:]
            self._audio_start = keep_from


# -- input conversion -------------------------------------------------------------------------------------

def _mulaw_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.int32)
    u = ~codes & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -magnitude, magnitude).astype(np.float32) / 32768.0


#: G.711 u-law byte -> float sample.
MULAW_TO_FLOAT = _mulaw_table()


def decode_pcm16(data: bytes, channels: int) -> np.ndarray:
    """Interleaved little-endian 16-bit PCM -> float32 array of shape (channels, n)."""
    samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    return samples.reshape(-1, channels).T


def decode_mulaw(data: bytes, channels: int) -> np.ndarray:
    """Interleaved G.711 u-law bytes -> float32 array of shape (channels, n)."""
    samples = MULAW_TO_FLOAT[np.frombuffer(data, dtype=np.uint8)]
    return samples.reshape(-1, channels).T


class Upsampler:
    """Stateful 8 kHz -> 16 kHz conversion for one channel (PyAV/FFmpeg's resampler keeps its filter state)."""

    def __init__(self, from_rate_hz: int) -> None:
        import av

        self._rate = from_rate_hz
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=MODEL_SAMPLE_RATE_HZ)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        import av

        if self._rate == MODEL_SAMPLE_RATE_HZ:
            return samples.astype(np.float32, copy=False)
        if samples.size == 0:  # FFmpeg fails on an empty frame (a Twilio media message may carry no audio)
            return np.zeros(0, dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(samples.astype(np.float32)[np.newaxis, :], format="flt", layout="mono")
        frame.sample_rate = self._rate
        outs = [o.to_ndarray().reshape(-1) for o in self._resampler.resample(frame)]
        return np.concatenate(outs) if outs else np.zeros(0, dtype=np.float32)


def endpoint_offline(samples: np.ndarray, channel: str, options: StreamOptions, vad: VadStep,
                     block_s: float = 0.1) -> list[FinalRequest]:
    """The utterances a live channel would have finalised for this 16 kHz audio: the same VAD, endpointing and
    audio spans as streaming, run over a recording. Post-call scoring uses it so that a call is cut, decoded and
    therefore assessed the same way live and after the fact."""
    stream = ChannelStream(channel, replace(options, partial_interval_s=0.0, prefetch_silence_ms=0), vad)
    block = int(MODEL_SAMPLE_RATE_HZ * block_s)
    finals: list[FinalRequest] = []
    for offset in range(0, len(samples), block):
        finals += [r for r in stream.feed(samples[offset: offset + block]) if isinstance(r, FinalRequest)]
    finals += [r for r in stream.finish() if isinstance(r, FinalRequest)]
    return finals
