"""Answer assessment quality and speed.

- `corpus_dev` / `corpus_test`: the project's own corpus (python -m nlu.corpus), split by template, with the rules
  alone, the learned classifier alone (nlu/model) and the two fused where the rules are unsure.
- `calls_script_text`: the labelled customer answers of ../shared/data/calls with the scripted (perfect) text.
- `calls_asr`: the same answers, but question and answer are what huifang's ASR heard: each call is transcribed
  from its stereo recording and the utterances overlapping each scripted turn are taken as that turn's text.
For each: accuracy, macro-F1 and per-label F1 over the four labels, vague-vs-clear F1 (vague = omission,
unclear or evasive), topic accuracy on the agent questions before labelled answers; then p50/p95 latency of
one assessment. One JSON line per result.

Note: the assessment rules were developed with these calls in view; their numbers are not held-out scores.

    python -m bench.nlu_eval [--no-asr] [--classifier PATH]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import emit, require_shared
from nlu.assess import Assessor
from nlu.types import LABELS, LoanRecord


def f1_scores(gold: Sequence[str], pred: Sequence[str]) -> dict[str, float]:
    scores: dict[str, float] = {}
    for label in LABELS:
        tp = sum(g == label and p == label for g, p in zip(gold, pred, strict=True))
        fp = sum(g != label and p == label for g, p in zip(gold, pred, strict=True))
        fn = sum(g == label and p != label for g, p in zip(gold, pred, strict=True))
        scores[label] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return scores


def binary_f1(gold: Sequence[str], pred: Sequence[str]) -> float:
    g = [x != "clear" for x in gold]
    p = [x != "clear" for x in pred]
    tp = sum(a and b for a, b in zip(g, p, strict=True))
    fp = sum(b and not a for a, b in zip(g, p, strict=True))
    fn = sum(a and not b for a, b in zip(g, p, strict=True))
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0


def overlapping_text(utterances: list[Any], channel: str, start_s: float, end_s: float) -> str:
    return "".join(u.text for u in utterances if u.channel == channel and u.start_s < end_s + 0.3
                   and u.end_s > start_s - 0.3)


def pairs_for(call: dict[str, Any], utterances: list[Any] | None) -> list[dict[str, Any]]:
    pairs, question_turn = [], None
    for turn in call["turns"]:
        if turn["speaker"] == "agent":
            question_turn = turn
        elif "label" in turn and question_turn is not None:
            if utterances is None:
                question, answer = question_turn["text"], turn["text"]
            else:
                question = overlapping_text(utterances, "agent", question_turn["start_s"], question_turn["end_s"])
                answer = overlapping_text(utterances, "customer", turn["start_s"], turn["end_s"]) if turn[
                    "text"] else ""
            silence = None if answer else 7.0
            pairs.append({"question": question, "answer": answer, "silence_s": silence, "gold": turn["label"],
                          "topic": turn["topic"], "loan": call["loan_file"]})
    return pairs


def evaluate(name: str, pairs: list[dict[str, Any]], assessor: Assessor, system: str) -> None:
    gold, pred, topics_right = [], [], 0
    for p in pairs:
        result = assessor.assess(p["question"], p["answer"], LoanRecord.from_mapping(p["loan"]), p["silence_s"])
        gold.append(p["gold"])
        pred.append(result.label)
        topics_right += result.topic == p["topic"]
    per_label = f1_scores(gold, pred)
    emit({"set": name, "system": system, "answers": len(pairs), "accuracy": round(float(np.mean([g == q for g, q in
                                                                                zip(gold, pred, strict=True)])), 3),
          "macro_f1": round(float(np.mean(list(per_label.values()))), 3),
          "f1": {k: round(v, 3) for k, v in per_label.items()},
          "vague_vs_clear_f1": round(binary_f1(gold, pred), 3),
          "topic_accuracy": round(topics_right / len(pairs), 3)})


def evaluate_corpus(corpus_dir: Path, classifier_path: str | None, rules: Assessor, fused: Assessor) -> None:
    classifier = fused.classifier
    for split in ("dev", "test"):
        with open(corpus_dir / f"{split}.jsonl", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        gold = [r["label"] for r in rows]
        predictions = {
            "rules": [rules.assess(r["question"], r["answer"]).label for r in rows],
            "classifier": [max((p := classifier.probabilities(*rules.classifier_input(r["question"], r["answer"]))),
                               key=lambda k: p[k]) for r in rows],
            "fused": [fused.assess(r["question"], r["answer"]).label for r in rows],
        }
        for system, pred in predictions.items():
            per_label = f1_scores(gold, pred)
            emit({"set": f"corpus_{split}", "system": system, "classifier": classifier_path or "nlu/model",
                  "answers": len(rows),
                  "macro_f1": round(float(np.mean(list(per_label.values()))), 3),
                  "f1": {k: round(v, 3) for k, v in per_label.items()},
                  "vague_vs_clear_f1": round(binary_f1(gold, pred), 3)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-asr", action="store_true", help="skip transcribing the calls")
    parser.add_argument("--classifier", default=None,
                        help="classifier to measure instead of nlu/model (e.g. one fine-tuned with nlu.train --base)")
    args = parser.parse_args()
    calls_dir = require_shared("calls")
    calls = [json.loads(p.read_text(encoding="utf-8")) | {"_path": p} for p in sorted(calls_dir.glob("call_s*.json"))]
    from nlu.classifier import DEFAULT_MODEL_DIR, AnswerClassifier

    # "rules": the lexicons and slots alone; "fused": the service's default, the classifier consulted where the
    # rules are unsure (AssessOptions).
    systems = {"rules": Assessor(),
               "fused": Assessor(classifier=AnswerClassifier.load(args.classifier or DEFAULT_MODEL_DIR))}

    corpus_dir = Path(__file__).resolve().parent.parent / "corpus"
    if (corpus_dir / "test.jsonl").exists():
        evaluate_corpus(corpus_dir, args.classifier, systems["rules"], systems["fused"])

    text_pairs = [p for call in calls for p in pairs_for(call, None)]
    for system, assessor in systems.items():
        evaluate("calls_script_text", text_pairs, assessor, system)

    if not args.no_asr:
        from asr.audio import decode_audio
        from asr.transcribe import Transcriber
        from service.settings import Settings

        transcriber = Transcriber(Settings().asr_options())
        transcriber.load()
        asr_pairs = []
        for call in calls:
            utterances = transcriber.transcribe(decode_audio(Path(call["_path"]).with_suffix(".flac")))
            asr_pairs += pairs_for(call, utterances)
        for system, assessor in systems.items():
            evaluate("calls_asr", asr_pairs, assessor, system)

    corpus_pairs = []
    if (corpus_dir / "test.jsonl").exists():
        with open(corpus_dir / "test.jsonl", encoding="utf-8") as f:
            corpus_pairs = [{"question": r["question"], "answer": r["answer"], "loan": None, "silence_s": None}
                            for r in map(json.loads, f)]
    for system, assessor in systems.items():
        timings = []
        for _ in range(5):
            for p in text_pairs + corpus_pairs:
                started = time.perf_counter()
                assessor.assess(p["question"], p["answer"], LoanRecord.from_mapping(p["loan"]), p["silence_s"])
                timings.append((time.perf_counter() - started) * 1000)
        emit({"set": "latency", "system": system, "assessments": len(timings),
              "p50_ms": round(float(np.percentile(timings, 50)), 3),
              "p95_ms": round(float(np.percentile(timings, 95)), 3)})


if __name__ == "__main__":
    main()
