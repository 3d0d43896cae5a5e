"""Write test audio in the formats a phone switch or recorder produces, with PyAV (no external tools)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

_LAYOUTS = {1: "mono", 2: "stereo"}


def write_audio(path: Path, samples: np.ndarray, rate_hz: int, codec: str, fmt: str | None = None) -> Path:
    """Encode float samples in [-1, 1], shape (channels, n) or (n,), with `codec` (pcm_s16le, pcm_mulaw,
    pcm_alaw, flac, libmp3lame) into `path` (container from the suffix unless `fmt` is given)."""
    if samples.ndim == 1:
        samples = samples[np.newaxis, :]
    channels = samples.shape[0]
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16)
    with av.open(str(path), mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate_hz, layout=_LAYOUTS[channels])
        frame_len = 1152 if codec == "libmp3lame" else 4096
        for start in range(0, pcm.shape[1], frame_len):
            block = np.ascontiguousarray(pcm[:, start : start + frame_len].T.reshape(1, -1))
            frame = av.AudioFrame.from_ndarray(block, format="s16", layout=_LAYOUTS[channels])
            frame.sample_rate = rate_hz
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def resample(samples: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    """Linear-interpolation resampling, good enough to make test inputs at other rates."""
    n_out = int(round(samples.shape[-1] * to_hz / from_hz))
    x_old = np.linspace(0.0, 1.0, samples.shape[-1], endpoint=False)
    x_new = np.linspace(0.0, 1.0, n_out, endpoint=False)
    if samples.ndim == 1:
        return np.interp(x_new, x_old, samples).astype(np.float32)
    return np.stack([np.interp(x_new, x_old, ch) for ch in samples]).astype(np.float32)


def line_noise(seconds: float, rate_hz: int = 16_000, seed: int = 7) -> np.ndarray:
    """Telephone line noise: white hiss at about -36 dBFS plus 50 Hz mains hum and its harmonics."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate_hz)) / rate_hz
    hum = sum(0.02 / k * np.sin(2 * np.pi * 50 * k * t) for k in (1, 2, 3))
    return (rng.normal(0.0, 0.016, t.shape) + hum).astype(np.float32)
