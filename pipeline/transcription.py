"""A recording transcribed for reading rather than scored: the work behind the OpenAI-compatible endpoint
(`POST /v1/audio/transcriptions`).

The file is cut and decoded for reading (Silero VAD over each whole channel, `HUIFANG_TRANSCRIBE__*` beam and
encoder window; `huifang transcribe` decodes as scoring does instead), channels kept apart, and the text goes
through the same redaction as every call's (`pipeline.call.CallRedaction`) unless the caller asks for raw text.
Synchronous and CPU-bound: callers run it on a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from asr.audio import decode_audio
from asr.transcribe import Transcriber, default_roles
from asr.types import DecodeLimits, Utterance
from pipeline.call import CallRedaction


@dataclass(frozen=True, slots=True)
class Transcript:
    """A transcribed file: its utterances in time order (every channel), how long it is, the language it was
    decoded in, its channel roles, and whether the text is redacted."""

    utterances: tuple[Utterance, ...]
    duration_s: float
    language: str
    channels: tuple[str, ...]
    redacted: bool


def redact_utterances(utterances: Sequence[Utterance], channels: Sequence[str]) -> list[Utterance]:
    """The utterances (in time order) with personal data masked as in a call. Word times are dropped: their
    texts would still carry the digits."""
    redaction = CallRedaction(channels)
    out = []
    for u in utterances:
        text, _ = redaction.final(u.channel, u.text, u.start_s, u.end_s)
        out.append(replace(u, text=text, words=None))
    return out


def transcribe_file(path: Path, transcriber: Transcriber, limits: DecodeLimits, language: str | None = None,
                    prompt: str | None = None, redact: bool = True,
                    on_progress: Callable[[float], None] | None = None) -> Transcript:
    """Transcribe the audio file at `path` in `language` with Whisper's initial `prompt` (None: the configured
    ones). Stereo is read as agent and customer (`asr.transcribe.default_roles`), mono as one channel.
    `on_progress` gets the seconds of channel audio done after each utterance; an exception it raises stops
    the work there and reaches the caller (how a request whose client left stops decoding).

    Raises `UnsupportedLanguageError` for an unknown language (before any audio is decoded), `AudioLimitError`
    past `limits` and `AudioDecodeError` for what is not audio.
    """
    decoder = transcriber.with_decoding(language, prompt)
    audio = decode_audio(path, limits)
    if on_progress is not None:
        on_progress(0.0)
    channels = default_roles(audio.channel_count)
    utterances = decoder.transcribe(audio, channels, on_progress)
    if redact:
        utterances = redact_utterances(utterances, channels)
    return Transcript(tuple(utterances), audio.duration_s, decoder.options.language, channels, redact)
