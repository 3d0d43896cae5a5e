"""`huifang transcribe` as a person runs it: output formats, and one clear line with exit code 2 on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.cli import main
from tests.support.audiogen import write_audio


@pytest.fixture()
def cli_env(model_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Point the CLI's data directory at the session's model cache so the model is joined only once."""
    data_dir = model_cache.parent / "cli-data"
    (data_dir).mkdir(exist_ok=True)
    models = data_dir / "models"
    if not models.exists():
        models.symlink_to(model_cache)
    monkeypatch.setenv("HUIFANG_DATA_DIR", str(data_dir))
    from service.settings import get_settings

    get_settings.cache_clear()
    yield {**os.environ, "HUIFANG_DATA_DIR": str(data_dir)}  # type: ignore[misc]
    get_settings.cache_clear()


@pytest.mark.model
def test_transcribe_json_lines(cli_env: dict[str, str], shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = shared_data / "asr" / "clips" / "funasr_asr_example_zh.wav"
    assert main(["transcribe", str(clip), "--channels", "customer", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines and all(set(line) >= {"channel", "start_s", "end_s", "text", "avg_logprob", "no_speech_prob"}
                         for line in lines)
    assert {line["channel"] for line in lines} == {"customer"}
    # Decoded as calls are scored (10 s window, beam 5), this clip's 语音识别 comes out as 与您识别: the words around
    # it are the check here; reading-quality text is POST /v1/audio/transcriptions' job (tests of its own).
    assert "达摩院" in "".join(line["text"] for line in lines) and "识别模型" in "".join(line["text"] for line in lines)


@pytest.mark.model
def test_transcribe_plain_text_for_a_stereo_call(cli_env: dict[str, str], shared_data: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["transcribe", str(shared_data / "calls" / "call_s02.8k.wav")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert any("] agent: " in line for line in out) and any("] customer: " in line for line in out)
    assert out[0].startswith("[00:")


def _bad_inputs(tmp_path: Path) -> dict[str, Path]:
    import numpy as np

    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("这不是音频文件\n" * 100, encoding="utf-8")
    full = write_audio(tmp_path / "full.wav", np.full(80000, 0.1, dtype=np.float32), 8000, "pcm_s16le")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[:20000])
    return {"empty": empty, "non-audio": text, "truncated": cut, "missing": tmp_path / "nope.flac"}


def test_bad_inputs_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, path in _bad_inputs(tmp_path).items():
        assert main(["transcribe", str(path)]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("huifang: error: ") and "Traceback" not in err, (name, err)


def test_channel_roles_must_match_the_recording(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    mono = write_audio(tmp_path / "mono.wav", np.zeros(16000, dtype=np.float32), 16000, "pcm_s16le")
    assert main(["transcribe", str(mono), "--channels", "agent,customer"]) == 2
    assert "recording has 1" in capsys.readouterr().err
    assert main(["transcribe", str(mono), "--channels", "agent,agent"]) == 2


def test_the_installed_command_reports_errors_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "x.mp3"
    bad.write_bytes(b"ID3" + b"\x00" * 64)
    result = subprocess.run([sys.executable, "-m", "service.cli", "transcribe", str(bad)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("huifang: error:") and "Traceback" not in result.stderr


def test_invalid_settings_are_a_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "HUIFANG_ASR__BEAM_SIZE": "0"}
    result = subprocess.run([sys.executable, "-m", "service.cli", "transcribe", str(tmp_path / "a.wav")],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2
    assert "beam_size" in result.stderr and "Traceback" not in result.stderr


def test_replay_to_a_closed_port_is_a_clear_error(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = shared_data / "calls" / "call_s01.8k.wav"
    assert main(["replay", str(clip), "--call-id", "x", "--url", "ws://127.0.0.1:9"]) == 2
    assert "cannot reach ws://127.0.0.1:9" in capsys.readouterr().err
