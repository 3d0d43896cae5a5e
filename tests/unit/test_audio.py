"""Decoding recordings: formats, rates and channels that arrive in practice, and inputs that must be refused."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import pytest

import asr.audio
from asr.audio import decode_audio
from asr.errors import AudioDecodeError, AudioLimitError
from asr.types import DecodeLimits
from tests.support.audiogen import write_audio


def _tone(seconds: float, rate_hz: int, freq_hz: float) -> np.ndarray:
    t = np.arange(int(seconds * rate_hz)) / rate_hz
    return (0.3 * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


@pytest.mark.parametrize(
    ("codec", "suffix", "rate_hz"),
    [
        ("pcm_s16le", "wav", 8000),
        ("pcm_s16le", "wav", 16000),
        ("pcm_s16le", "wav", 48000),
        ("pcm_mulaw", "wav", 8000),
        ("pcm_alaw", "wav", 8000),
        ("flac", "flac", 44100),
        ("libmp3lame", "mp3", 22050),
    ],
)
def test_formats_decode_to_16k_with_channels_kept_apart(tmp_path: Path, codec: str, suffix: str, rate_hz: int) -> None:
    left, right = _tone(2.0, rate_hz, 440.0), np.zeros(int(2.0 * rate_hz), dtype=np.float32)
    path = write_audio(tmp_path / f"x.{suffix}", np.stack([left, right]), rate_hz, codec)
    audio = decode_audio(path)
    assert audio.channel_count == 2
    assert audio.source_sample_rate_hz == rate_hz
    assert abs(audio.duration_s - 2.0) < 0.1
    rms = np.sqrt(np.mean(audio.samples**2, axis=1))
    assert rms[0] > 0.15 and rms[1] < 0.01  # the tone stays on its own channel


def test_mono_and_file_object(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "m.wav", _tone(1.0, 16000, 300.0), 16000, "pcm_s16le")
    audio = decode_audio(io.BytesIO(path.read_bytes()))
    assert audio.channel_count == 1 and abs(audio.duration_s - 1.0) < 0.01


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioDecodeError, match="empty"):
        decode_audio(path)


def test_zero_length_wav(tmp_path: Path) -> None:
    path = tmp_path / "zero.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"")
    with pytest.raises(AudioDecodeError, match="no audio samples"):
        decode_audio(path)


@pytest.mark.parametrize("payload", [b"this is a text file, not audio\n" * 20, bytes(range(256)) * 50,
                                     b"\x89PNG\r\n\x1a\n" + b"\x00" * 500])
def test_non_audio(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "not_audio.wav"
    path.write_bytes(payload)
    with pytest.raises(AudioDecodeError):
        decode_audio(path)


def test_truncated_wav(tmp_path: Path) -> None:
    full = write_audio(tmp_path / "full.wav", _tone(10.0, 8000, 440.0), 8000, "pcm_s16le")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 3])
    with pytest.raises(AudioDecodeError, match="truncated"):
        decode_audio(cut)


def test_truncated_flac(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    full = write_audio(tmp_path / "full.flac", rng.normal(0, 0.1, 80000).astype(np.float32), 8000, "flac")
    cut = tmp_path / "cut.flac"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(AudioDecodeError):
        decode_audio(cut)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AudioDecodeError, match="no such file"):
        decode_audio(tmp_path / "nope.wav")


@pytest.fixture(scope="session")
def six_hour_flac(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six hours of 8 kHz silence: a few MB of FLAC that would be 1.4 GB as 16 kHz float."""
    path = tmp_path_factory.mktemp("long") / "six_hours.flac"
    return write_audio(path, np.zeros(6 * 3600 * 8000, dtype=np.float32), 8000, "flac")


def test_six_hour_file_is_refused_before_decoding(six_hour_flac: Path) -> None:
    with pytest.raises(AudioLimitError, match="360.0 min"):
        decode_audio(six_hour_flac)


def test_duration_bound_holds_while_decoding_when_header_is_silent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A container that declares no duration must still stop at the limit, not decode without bound.
    monkeypatch.setattr(asr.audio, "_declared_duration_s", lambda container, stream: None)
    path = write_audio(tmp_path / "long.wav", _tone(20.0, 8000, 440.0), 8000, "pcm_s16le")
    with pytest.raises(AudioLimitError, match="over"):
        decode_audio(path, DecodeLimits(max_duration_s=5.0))


def test_hundred_channels(tmp_path: Path) -> None:
    path = tmp_path / "hundred.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(100)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 100 * 8000)
    with pytest.raises((AudioLimitError, AudioDecodeError), match="channel"):
        decode_audio(path)


def test_file_size_limit(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "big.wav", _tone(3.0, 16000, 440.0), 16000, "pcm_s16le")
    with pytest.raises(AudioLimitError, match="MiB"):
        decode_audio(path, DecodeLimits(max_file_bytes=1 << 16))
