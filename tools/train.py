"""Train the default learned answer model: the sentence-encoder head of nlu/learned.py, on the own corpus only.

    python -m tools.train [--corpus corpus] [--out nlu/model] [--l2 0.01] [--encoder default]

Reads `train.jsonl` (and `dev.jsonl` to report on) of the project's own corpus (`python -m tools.corpus`), embeds
every question and answer with the sentence encoder, fits the head, and writes the model directory (head, meta
data with the encoder's SHA-256 and the corpus hash, the training answers' vectors for nearest-example
evidence). Deterministic for a corpus and an encoder; about a minute on one core, most of it embedding.

Only the project's own corpus goes in: never ../shared/data (its texts state no licence or are evaluation sets).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from nlu.types import LABELS


def read_split(folder: Path, split: str) -> list[dict[str, Any]]:
    with open(folder / f"{split}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def macro_f1(gold: list[int], pred: list[int]) -> float:
    scores = []
    for k in range(len(LABELS)):
        tp = sum(g == k and p == k for g, p in zip(gold, pred, strict=True))
        fp = sum(g != k and p == k for g, p in zip(gold, pred, strict=True))
        fn = sum(g == k and p != k for g, p in zip(gold, pred, strict=True))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0)
    return sum(scores) / len(scores)


def embed_records(encoder: Any, records: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(question vectors, answer vectors) of corpus records."""
    return encoder.embed([r["question"] for r in records]), encoder.embed([r["answer"] for r in records])


def fit(encoder: Any, records: list[dict[str, Any]], l2: float) -> Any:
    """The head trained on `records` (a corpus split or any list of labelled pairs)."""
    from nlu.learned import features, train_head

    q, a = embed_records(encoder, records)
    y = np.array([LABELS.index(r["label"]) for r in records])
    return train_head(features(q, a), y, l2=l2)


def predict(encoder: Any, head: Any, records: list[dict[str, Any]]) -> list[int]:
    from nlu.learned import features

    q, a = embed_records(encoder, records)
    return head.probabilities(features(q, a)).argmax(axis=1).tolist()


def main(argv: list[str] | None = None) -> int:
    from nlu.encoder import SentenceEncoder
    from nlu.learned import DEFAULT_MODEL_DIR, EXAMPLE_TEXTS_FILE, EXAMPLES_FILE, HEAD_FILE, META_FILE

    parser = argparse.ArgumentParser(prog="python -m tools.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="corpus")
    parser.add_argument("--out", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--l2", type=float, default=0.1, help="weight decay of the head")
    parser.add_argument("--encoder", default="default", help="sentence encoder: 'default' or an ONNX path")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    corpus = Path(args.corpus)
    train, dev = read_split(corpus, "train"), read_split(corpus, "dev")
    encoder = SentenceEncoder.load(args.encoder)
    head = fit(encoder, train, args.l2)
    dev_f1 = macro_f1([LABELS.index(r["label"]) for r in dev], predict(encoder, head, dev))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    head.save(out / HEAD_FILE)
    # Nearest-example evidence: each distinct training answer once, with its label; the ASR-noised renderings are
    # left out (evidence shown to an agent should read cleanly, and they would take the model past its size budget).
    seen: dict[str, int] = {}
    for r in train:
        if not r.get("asr_noise"):
            seen.setdefault(r["answer"], LABELS.index(r["label"]))
    texts = sorted(seen)
    np.savez_compressed(out / EXAMPLES_FILE, vectors=encoder.embed(texts).astype(np.float16),
                        labels=np.array([seen[t] for t in texts], dtype=np.int8))
    (out / EXAMPLE_TEXTS_FILE).write_text(json.dumps(texts, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    corpus_hash = hashlib.sha256((corpus / "train.jsonl").read_bytes()).hexdigest()
    meta = {
        "labels": list(LABELS),
        "features": "[e(answer), e(question) * e(answer)], standardised; multinomial logistic regression",
        "encoder": args.encoder, "encoder_sha256": encoder.sha256,
        "corpus_train_sha256": corpus_hash, "train_pairs": len(train), "l2": args.l2,
        "dev_macro_f1": round(dev_f1, 4),
    }
    (out / META_FILE).write_text(json.dumps(meta, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"{len(train)} training pairs, dev macro-F1 {dev_f1:.3f}, {time.perf_counter() - started:.0f} s; "
          f"model in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
