"""The project's own corpus and the learned classifier shipped with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nlu.classifier import DEFAULT_MODEL_DIR, AnswerClassifier
from nlu.corpus import render, to_chinese
from nlu.types import LABELS

CORPUS = Path(__file__).resolve().parent.parent / "corpus"


@pytest.fixture(scope="module")
def splits() -> dict[str, list[dict[str, object]]]:
    return render()


def test_size_and_coverage(splits: dict[str, list[dict[str, object]]]) -> None:
    records = [r for rows in splits.values() for r in rows]
    assert len(records) >= 2000
    assert {(r["topic"], r["label"]) for r in records} >= {(t, label) for t in {r["topic"] for r in records}
                                                            for label in LABELS}
    assert len({r["topic"] for r in records}) == 12
    assert any(r["asr_noise"] for r in records)


def test_no_template_or_pair_crosses_splits(splits: dict[str, list[dict[str, object]]]) -> None:
    templates = {name: {r["template"] for r in rows} for name, rows in splits.items()}
    pairs = {name: {(r["question"], r["answer"]) for r in rows} for name, rows in splits.items()}
    for a, b in (("train", "dev"), ("train", "test"), ("dev", "test")):
        assert not templates[a] & templates[b]
        assert not pairs[a] & pairs[b]


def test_committed_corpus_is_what_the_command_writes(splits: dict[str, list[dict[str, object]]]) -> None:
    for name, rows in splits.items():
        with open(CORPUS / f"{name}.jsonl", encoding="utf-8") as f:
            assert [json.loads(line) for line in f] == rows, f"corpus/{name}.jsonl is stale: python -m nlu.corpus"


@pytest.mark.parametrize(("n", "text"), [(15, "十五"), (20, "二十"), (105, "一百零五"), (4200, "四千二百"),
                                         (800_000, "八十万"), (1_200_000, "一百二十万")])
def test_to_chinese(n: int, text: str) -> None:
    assert to_chinese(n) == text


def test_packaged_classifier_loads_offline() -> None:
    assert (DEFAULT_MODEL_DIR / "model.safetensors").stat().st_size < 5 * 2**20
    classifier = AnswerClassifier.load()
    probs = classifier.probabilities("您每月的还款日是哪一天？", "这个我记不清了。")
    assert list(probs) == list(LABELS) and sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
