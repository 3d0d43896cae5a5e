"""Decode any recording PyAV can read into 16 kHz float32 channels, within explicit bounds.

Bounds are checked before decoding where the container declares them (channel count, duration, file size) and
again while decoding, so a file whose header lies still cannot take more memory than `DecodeLimits` allows.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

from asr.errors import AudioDecodeError, AudioLimitError
from asr.types import MODEL_SAMPLE_RATE_HZ, DecodedAudio, DecodeLimits

#: A decoded stream shorter than this share of what its header declares is reported as truncated.
_TRUNCATION_TOLERANCE = 0.98
#: ...unless the gap is under this many seconds (encoders' priming/padding makes small gaps normal).
_TRUNCATION_SLACK_S = 0.5

AudioSource = str | os.PathLike[str] | BinaryIO


def decode_audio(
    source: AudioSource,
    limits: DecodeLimits | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> DecodedAudio:
    """Decode `source` (a path or a binary file object) to 16 kHz float32, keeping channels apart.

    Raises `AudioDecodeError` for anything that is not readable audio (empty, non-audio, truncated, corrupt,
    no samples) and `AudioLimitError` when the audio exceeds `limits`. `on_progress` receives decoded seconds.
    """
    limits = limits or DecodeLimits()
    if isinstance(source, str | os.PathLike):
        _check_file(Path(source), limits)
        _check_riff_complete(Path(source))
    try:
        container = av.open(source, mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as e:
        raise AudioDecodeError(f"not a readable audio file ({_ffmpeg_reason(e)})") from e
    except (OSError, ValueError) as e:
        raise AudioDecodeError(f"cannot open audio: {e}") from e
    try:
        return _decode_container(container, limits, on_progress)
    finally:
        container.close()


def _check_file(path: Path, limits: DecodeLimits) -> None:
    if not path.exists():
        raise AudioDecodeError(f"no such file: {path}")
    if not path.is_file():
        raise AudioDecodeError(f"not a regular file: {path}")
    size = path.stat().st_size
    if size == 0:
        raise AudioDecodeError(f"file is empty: {path}")
    if size > limits.max_file_bytes:
        raise AudioLimitError(
            f"file is {size / 2**20:.0f} MiB, over the limit of {limits.max_file_bytes / 2**20:.0f} MiB"
        )


def _check_riff_complete(path: Path) -> None:
    """Refuse a RIFF/WAVE file whose data chunk is shorter than its header says.

    FFmpeg silently derives a WAV's duration from the file size when the data chunk runs past the end, so a cut
    upload would otherwise pass as a shorter, complete call.
    """
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        size = path.stat().st_size
        offset = 12
        while offset + 8 <= size:
            f.seek(offset)
            chunk = f.read(8)
            chunk_id, chunk_len = chunk[:4], int.from_bytes(chunk[4:8], "little")
            if chunk_id == b"data":
                # 0 and 0xFFFFFFFF mark a stream written without knowing its length: nothing to check.
                if chunk_len not in (0, 0xFFFFFFFF) and offset + 8 + chunk_len > size:
                    present = size - offset - 8
                    raise AudioDecodeError(
                        f"the file is truncated: its header declares {chunk_len} bytes of audio but only "
                        f"{present} are present"
                    )
                return
            offset += 8 + chunk_len + (chunk_len & 1)


def _ffmpeg_reason(e: av.error.FFmpegError) -> str:
    # FFmpeg's messages carry the file name; keep only the reason so paths do not leak into client errors.
    return str(getattr(e, "strerror", None) or type(e).__name__)


def _decode_container(
    container: av.container.InputContainer,
    limits: DecodeLimits,
    on_progress: Callable[[float], None] | None,
) -> DecodedAudio:
    if not container.streams.audio:
        raise AudioDecodeError("the file contains no audio stream")
    stream = container.streams.audio[0]
    ctx = stream.codec_context
    channels = int(ctx.channels or 0)
    if channels <= 0:
        raise AudioDecodeError("the audio stream declares no channels")
    if channels > limits.max_channels:
        raise AudioLimitError(f"the audio has {channels} channels; at most {limits.max_channels} are accepted")
    source_rate = int(ctx.sample_rate or 0)
    if source_rate <= 0:
        raise AudioDecodeError("the audio stream declares no sample rate")

    declared_s = _declared_duration_s(container, stream)
    if declared_s is not None and declared_s > limits.max_duration_s:
        raise AudioLimitError(
            f"the audio lasts {declared_s / 60:.1f} min; at most {limits.max_duration_s / 60:.1f} min are accepted"
        )

    # Planar float at 16 kHz keeps each channel in its own row; the layout is the input's own.
    resampler = av.AudioResampler(format="fltp", rate=MODEL_SAMPLE_RATE_HZ)
    max_samples = int(limits.max_duration_s * MODEL_SAMPLE_RATE_HZ)
    chunks: list[np.ndarray] = []
    total = 0
    try:
        for frame in container.decode(stream):
            frame.pts = None  # let the resampler count samples itself; broken pts must not stall it
            for out in resampler.resample(frame):
                total = _append(chunks, out.to_ndarray(), total, max_samples, limits)
            if on_progress is not None:
                on_progress(total / MODEL_SAMPLE_RATE_HZ)
        for out in resampler.resample(None):
            total = _append(chunks, out.to_ndarray(), total, max_samples, limits)
    except av.error.FFmpegError as e:
        raise AudioDecodeError(f"the audio is corrupt or truncated ({_ffmpeg_reason(e)})") from e

    if total == 0:
        raise AudioDecodeError("the file contains no audio samples")
    decoded_s = total / MODEL_SAMPLE_RATE_HZ
    if (
        declared_s is not None
        and decoded_s < declared_s * _TRUNCATION_TOLERANCE
        and declared_s - decoded_s > _TRUNCATION_SLACK_S
    ):
        raise AudioDecodeError(
            f"the file is truncated: its header declares {declared_s:.1f} s but only {decoded_s:.1f} s of audio "
            "are present"
        )
    samples = np.concatenate(chunks, axis=1) if len(chunks) > 1 else chunks[0]
    return DecodedAudio(
        samples=np.ascontiguousarray(samples, dtype=np.float32),
        source_sample_rate_hz=source_rate,
        source_codec=str(ctx.name),
    )


def _append(chunks: list[np.ndarray], block: np.ndarray, total: int, max_samples: int, limits: DecodeLimits) -> int:
    if block.ndim == 1:
        block = block[np.newaxis, :]
    total += block.shape[1]
    if total > max_samples:
        raise AudioLimitError(f"the audio lasts over {limits.max_duration_s / 60:.1f} min, the accepted maximum")
    chunks.append(block.astype(np.float32, copy=False))
    return total


def _declared_duration_s(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration) / av.time_base
    return None


def write_flac(path: str | os.PathLike[str], samples: np.ndarray, rate_hz: int = MODEL_SAMPLE_RATE_HZ) -> None:
    """Write float32 audio (channels, n) as 16-bit FLAC (used to store a recording with spans silenced)."""
    layout = "mono" if samples.shape[0] == 1 else "stereo" if samples.shape[0] == 2 else None
    if layout is None:
        raise AudioDecodeError("only mono and stereo audio can be written")
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16)
    with av.open(str(path), mode="w", format="flac") as container:
        stream = container.add_stream("flac", rate=rate_hz, layout=layout)
        frame = av.AudioFrame.from_ndarray(pcm.T.reshape(1, -1).copy(), format="s16", layout=layout)
        frame.sample_rate = rate_hz
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def load_call_audio(path: str, rate_hz: int) -> np.ndarray:
    """A recording as float32 (channels, n) at `rate_hz` (8000 or 16000)."""
    audio = decode_audio(path, DecodeLimits())
    samples = audio.samples
    if rate_hz == 16000:
        return samples
    # Down to 8 kHz for a telephone-rate stream: PyAV's resampler per channel.
    out = []
    for channel in samples:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate_hz)
        frame = av.AudioFrame.from_ndarray(channel[np.newaxis, :].astype(np.float32), format="flt", layout="mono")
        frame.sample_rate = 16000
        parts = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
        out.append(np.concatenate(parts))
    n = min(len(c) for c in out)
    return np.stack([c[:n] for c in out])
