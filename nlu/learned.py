"""The learned half of answer assessment: a pretrained sentence encoder and a small head over its vectors.

The encoder is Google's multilingual Universal Sentence Encoder (nlu/encoder.py); it was trained by Google on
large multilingual data, so meaning rather than surface strings carries the decision (我在开会 and 现在忙，
回头聊 land near each other though they share no word). The head is a multinomial logistic regression over

    [ e(answer), e(question) * e(answer) ]

(the answer alone, and how it relates to what was asked), standardised, trained by `python -m tools.train` on
the project's own corpus only (`corpus/`, rendered from `configs/corpus.yaml`). It reads the question and the
answer text and nothing else: no rule verdict, no loan record.

A model directory (the packaged default is `nlu/model/`) holds:
- `head.npz`: `weights` (features x labels), `bias`, `mean`, `std`;
- `head.json`: labels, the encoder it was trained on (name and SHA-256), the corpus it was trained on (hash and
  size), training options and its own measurements;
- `examples.npz` + `examples.json`: the training answers' vectors (float16), labels and texts, for the nearest
  examples shown as evidence of a learned decision.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nlu.encoder import SentenceEncoder
from nlu.types import LABELS, Label

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "model"
HEAD_FILE, META_FILE, EXAMPLES_FILE, EXAMPLE_TEXTS_FILE = "head.npz", "head.json", "examples.npz", "examples.json"


def features(question_vecs: np.ndarray, answer_vecs: np.ndarray) -> np.ndarray:
    """The head's input for rows of question and answer vectors (n x dim each): n x 2*dim."""
    return np.concatenate([answer_vecs, question_vecs * answer_vecs], axis=1).astype(np.float32)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class Head:
    """A standardised linear layer over `features`; `probabilities` of each label per row."""

    weights: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        return softmax(((x - self.mean) / self.std) @ self.weights + self.bias)

    def save(self, path: Path) -> None:
        np.savez(path, weights=self.weights.astype(np.float32), bias=self.bias.astype(np.float32),
                 mean=self.mean.astype(np.float32), std=self.std.astype(np.float32))

    @classmethod
    def read(cls, path: Path) -> Head:
        with np.load(path) as data:
            return cls(data["weights"], data["bias"], data["mean"], data["std"])


def train_head(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 600, lr: float = 0.5,
               balanced: bool = True) -> Head:
    """Fit a multinomial logistic regression by full-batch gradient descent with momentum (deterministic).

    `y` holds label indices into LABELS; with `balanced` each label weighs the same in the loss, so a corpus
    with more clear answers does not make the head lean towards clear."""
    mean = x.mean(axis=0)
    std = x.std(axis=0) + 1e-6
    xs = (x - mean) / std
    n, d = xs.shape
    k = len(LABELS)
    onehot = np.eye(k, dtype=np.float32)[y]
    counts = np.bincount(y, minlength=k).astype(np.float32)
    sample_w = (n / (k * np.maximum(counts, 1)))[y] if balanced else np.ones(n, dtype=np.float32)
    w = np.zeros((d, k), dtype=np.float32)
    b = np.zeros(k, dtype=np.float32)
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    for _ in range(steps):
        p = softmax(xs @ w + b)
        g = (p - onehot) * sample_w[:, None] / n
        gw = xs.T @ g + l2 * w
        gb = g.sum(axis=0)
        vw = 0.9 * vw - lr * gw
        vb = 0.9 * vb - lr * gb
        w += vw
        b += vb
    return Head(w, b, mean.astype(np.float32), std.astype(np.float32))


class LearnedUnavailableError(ValueError):
    """A learned model directory is incomplete or was trained on another encoder."""


@dataclass
class EncoderClassifier:
    """P(label | question, answer) from the sentence encoder and the head. Load once; thread-safe."""

    encoder: SentenceEncoder
    head: Head
    meta: dict[str, Any]
    example_vecs: np.ndarray
    example_labels: np.ndarray
    example_texts: list[str]
    version: str

    @classmethod
    def load(cls, path: str | Path = DEFAULT_MODEL_DIR, encoder: SentenceEncoder | None = None,
             encoder_name: str = "default", cache_dir: str | Path | None = None,
             threads: int = 1) -> EncoderClassifier:
        """Read a model directory and load (or take) its encoder. Raises `LearnedUnavailableError` when a file
        is missing or the encoder's weights are not the ones the head was trained on, and
        `nlu.encoder.EncoderUnavailableError` when the encoder cannot be loaded."""
        path = Path(path)
        missing = [f for f in (HEAD_FILE, META_FILE, EXAMPLES_FILE, EXAMPLE_TEXTS_FILE) if not (path / f).is_file()]
        if missing:
            raise LearnedUnavailableError(f"{path} is not a huifang answer model: missing {', '.join(missing)}")
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        if list(meta.get("labels", [])) != list(LABELS):
            raise LearnedUnavailableError(f"{path}: labels {meta.get('labels')}, expected {list(LABELS)}")
        encoder = encoder or SentenceEncoder.load(encoder_name, cache_dir, threads)
        if meta.get("encoder_sha256") and meta["encoder_sha256"] != encoder.sha256:
            raise LearnedUnavailableError(
                f"{path} was trained on encoder {meta['encoder_sha256'][:12]}, but {encoder.path} is "
                f"{encoder.version}: retrain it (python -m tools.train) or configure the encoder it was trained on")
        head = Head.read(path / HEAD_FILE)
        with np.load(path / EXAMPLES_FILE) as data:
            vecs, labels = data["vectors"].astype(np.float32), data["labels"].astype(np.int64)
        texts = json.loads((path / EXAMPLE_TEXTS_FILE).read_text(encoding="utf-8"))
        digest = hashlib.sha256((path / HEAD_FILE).read_bytes()).hexdigest()[:8]
        # The corpus the head was trained on is part of what produced a verdict, as the weights are.
        corpus = str(meta.get("corpus_train_sha256") or "unknown")[:8]
        return cls(encoder, head, meta, vecs, labels, texts,
                   f"use-{encoder.version[:6]}-head-{digest}-corpus-{corpus}")

    def probabilities(self, question: str, answer: str) -> dict[Label, float]:
        """P(label | question, answer), from the texts alone."""
        q, a = self.encoder.embed([question, answer])
        p = self.head.probabilities(features(q[None, :], a[None, :]))[0]
        return {label: float(v) for label, v in zip(LABELS, p, strict=True)}

    def explain(self, question: str, answer: str, label: Label, k: int = 2) -> list[str]:
        """The training answers of `label` nearest in meaning to `answer`: what the decision rests on."""
        a = self.encoder.embed([answer])[0]
        rows = np.flatnonzero(self.example_labels == LABELS.index(label))
        nearest = rows[np.argsort(-(self.example_vecs[rows] @ a))[:k]]
        return [self.example_texts[i] for i in nearest]
