"""Answer assessment quality and cost, each set reported on its own. One JSON line per result.

Sets, from memory to generalisation:
- `corpus_test`: the project's own corpus, test split (unseen templates of the same authors): memory.
- `corpus_groups`: the own corpus with whole template groups (sentence frames, `group` in configs/corpus.yaml)
  held out of the head's training, five folds: what the learned part does on frames it never saw.
- `nlu_dev`: ../shared/data/nlu_dev/answers_dev.jsonl, written independently of the project (a validation set:
  never trained on; its errors were read to fix classes of error, so it is not blind any more), with bootstrap
  95% intervals.
- `val`, `val2`: bench/heldout/answers_val.jsonl and answers_val2.jsonl, 240 pairs each written the same way by
  other sessions; their errors were read to fix classes of error (validation sets, not blind).
- `blind`: bench/heldout/answers_blind.jsonl, 180 pairs written by a session that saw neither the rules, the
  lexicons, the corpus nor nlu_dev; nobody has read its errors (see bench/heldout/README.md). Intervals too.
- `colloquial`: ../shared/data/nlu_dev/answers_colloquial_dev.jsonl, 118 pairs written independently in the way
  customers really talk (verb echoes, facts that settle the question, particles, dialect, fillers): validation.
- `settling_replies`: a set built by intent, never by item: every distinct real reply of the collection intents
  that settle a question (thano `already_repay`, `cant_repay`, `will_repay_date`; rasa `repayment_today`,
  `shortofmoney` less its three lines that state no answer but a pending event) after every wording of its topic
  in the call script's `examples`, expected clear: the share kept clear. Some replies of these intents do not
  settle the question (不想处理, 过几天处理); they are not relabelled, and no rule is written for them.
- `real_busy_complain`: real customer replies from collection calls (thano `busy`, `busy_break`, `complain`,
  `complain_break`; the rasa bot's `inform_busy`), each put after every script question: share flagged vague.
  They are kept out of every training set (tests/unit/test_corpus.py checks it).
- `calls_script_text` / `calls_asr`: the labelled answers of the shared synthetic calls, as scripted and as
  huifang's ASR heard them (the rules were developed with these calls in view).
Systems: `rules` (HUIFANG_NLU__CLASSIFIER=none), `learned` (the head alone, argmax), `default` (what
`python -m nlu.assess` and the service load). For every labelled set: macro-F1, per-label F1, vague-vs-clear
F1, topic accuracy (question detection, no topic given), share of clear answers flagged. Then latency per
assessment (p50/p95, one core) and resident memory before/after loading the learned model.

- `extra:NAME` (`--extra FILE`, repeatable): a file of the same format, e.g. a bank's reviewed disputes of prompts
  (`huifang export-feedback --out FILE`): the assessor measured on the bank's own customers. With `--extra` only
  those files are scored (a bank's machine has no ../shared/data): each system's line, as for the sets above.

    python -m bench.nlu_eval [--no-asr] [--no-groups] [--classifier PATH] [--bootstrap 2000] [--extra FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import SHARED_DATA, emit, require_shared
from nlu.assess import Assessor
from nlu.types import LABELS, LoanRecord
from service.bootstrap import asr_options

ROOT = Path(__file__).resolve().parent.parent
BLIND = ROOT / "bench" / "heldout" / "answers_blind.jsonl"
VAL = ROOT / "bench" / "heldout" / "answers_val.jsonl"
VAL2 = ROOT / "bench" / "heldout" / "answers_val2.jsonl"
REAL_INTENTS = ("busy", "busy_break", "complain", "complain_break")
COLLOQUIAL = "answers_colloquial_dev.jsonl"
#: Collection intents whose replies settle a call-script question, and the topic whose question they answer.
SETTLING_THANO = {"already_repay": "paid", "cant_repay": "overdue", "will_repay_date": "repay_plan"}
SETTLING_RASA = {"repayment_today": "repay_plan", "shortofmoney": "overdue"}
#: shortofmoney lines that state a pending event, not whether repayment is hard (the issue's three "no reply"
#: lines; the same rule as 等发了工资再说, which stays unclear).
RASA_NO_REPLY = frozenset({"没发工资", "钱没有到账", "还在想办法"})


def f1_scores(gold: Sequence[str], pred: Sequence[str]) -> dict[str, float]:
    scores: dict[str, float] = {}
    for label in LABELS:
        tp = sum(g == label and p == label for g, p in zip(gold, pred, strict=True))
        fp = sum(g != label and p == label for g, p in zip(gold, pred, strict=True))
        fn = sum(g == label and p != label for g, p in zip(gold, pred, strict=True))
        scores[label] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return scores


def macro_f1(gold: Sequence[str], pred: Sequence[str]) -> float:
    return float(np.mean(list(f1_scores(gold, pred).values())))


def binary_f1(gold: Sequence[str], pred: Sequence[str]) -> float:
    g = [x != "clear" for x in gold]
    p = [x != "clear" for x in pred]
    tp = sum(a and b for a, b in zip(g, p, strict=True))
    fp = sum(b and not a for a, b in zip(g, p, strict=True))
    fn = sum(a and not b for a, b in zip(g, p, strict=True))
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0


def clear_flagged(gold: Sequence[str], pred: Sequence[str]) -> float:
    clear = [p for g, p in zip(gold, pred, strict=True) if g == "clear"]
    return sum(p != "clear" for p in clear) / len(clear) if clear else 0.0


def bootstrap(gold: list[str], pred: list[str], topics_right: list[bool], rounds: int,
              seed: int = 7) -> dict[str, list[float]]:
    """95% percentile intervals of the headline figures, resampling pairs with replacement."""
    rng = np.random.default_rng(seed)
    n = len(gold)
    draws: dict[str, list[float]] = {"macro_f1": [], "vague_vs_clear_f1": [], "topic_accuracy": [],
                                     "clear_flagged": []}
    for _ in range(rounds):
        idx = rng.integers(0, n, n)
        g, p = [gold[i] for i in idx], [pred[i] for i in idx]
        draws["macro_f1"].append(macro_f1(g, p))
        draws["vague_vs_clear_f1"].append(binary_f1(g, p))
        draws["topic_accuracy"].append(float(np.mean([topics_right[i] for i in idx])))
        draws["clear_flagged"].append(clear_flagged(g, p))
    return {k: [round(float(np.percentile(v, 2.5)), 3), round(float(np.percentile(v, 97.5)), 3)]
            for k, v in draws.items()}


def score(name: str, system: str, rows: list[dict[str, Any]], pred: list[str], topics: list[str | None] | None,
          rounds: int = 0, **extra: Any) -> None:
    gold = [r["label"] for r in rows]
    per_label = f1_scores(gold, pred)
    topics_right = [t == r["topic"] for t, r in zip(topics, rows, strict=True)] if topics else []
    result: dict[str, Any] = {
        "set": name, "system": system, "answers": len(rows),
        "macro_f1": round(float(np.mean(list(per_label.values()))), 3),
        "f1": {k: round(v, 3) for k, v in per_label.items()},
        "vague_vs_clear_f1": round(binary_f1(gold, pred), 3),
        "clear_flagged": round(clear_flagged(gold, pred), 3),
        **extra,
    }
    if topics_right:
        result["topic_accuracy"] = round(float(np.mean(topics_right)), 3)
    if rounds:
        result["ci95"] = bootstrap(gold, pred, topics_right or [True] * len(rows), rounds)
    emit(result)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def assess_rows(assessor: Assessor, rows: list[dict[str, Any]], with_topic: bool = False) -> tuple[
        list[str], list[str | None]]:
    labels, topics, _ = assess_rows_evidence(assessor, rows, with_topic)
    return labels, topics


def assess_rows_evidence(assessor: Assessor, rows: list[dict[str, Any]], with_topic: bool = False) -> tuple[
        list[str], list[str | None], float]:
    """Labels, topics and the share of answers labelled with no evidence either way (`no_evidence`)."""
    labels, topics, unsure = [], [], 0
    for r in rows:
        result = assessor.assess(r["question"], r["answer"], LoanRecord.from_mapping(r.get("loan")),
                                 r.get("silence_s"), r["topic"] if with_topic else None)
        labels.append(result.label)
        topics.append(result.topic)
        unsure += any(e.kind == "no_evidence" for e in result.evidence)
    return labels, topics, round(unsure / len(rows), 3) if rows else 0.0


def learned_labels(assessor: Assessor, rows: list[dict[str, Any]]) -> list[str]:
    model = assessor.classifier
    assert model is not None
    out = []
    for r in rows:
        p = model.probabilities(r["question"], r["answer"])
        out.append(max(p, key=lambda k: p[k]))
    return out


def real_replies() -> list[str]:
    """The real busy/complain replies (distinct lines), the real-text test of point (c)."""
    text = SHARED_DATA / "text"
    lines: list[str] = []
    with open(text / "bank_collection_intents_thano" / "utterances_long.csv", encoding="utf-8") as f:
        lines += [row["text"].strip() for row in csv.DictReader(f) if row["intent"] in REAL_INTENTS]
    for md in sorted((text / "debt_collection_rasa_zh").glob("nlu_*.md")):
        block = re.search(r"## intent:inform_busy\n((?:- .*\n?)+)", md.read_text(encoding="utf-8"))
        if block:
            lines += [re.sub(r"^- ", "", x).strip().strip('"') for x in block.group(1).splitlines()]
    return sorted({x for x in lines if x})


def settling_replies() -> dict[str, list[str]]:
    """Topic -> the distinct real replies of the intents that settle its question (see the module docstring)."""
    text = SHARED_DATA / "text"
    by_topic: dict[str, set[str]] = {}
    with open(text / "bank_collection_intents_thano" / "utterances_long.csv", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if (topic := SETTLING_THANO.get(row["intent"])) is not None and row["text"].strip():
                by_topic.setdefault(topic, set()).add(" ".join(row["text"].split()))
    for md in sorted((text / "debt_collection_rasa_zh").glob("nlu_*.md")):
        body = md.read_text(encoding="utf-8")
        for intent, topic in SETTLING_RASA.items():
            block = re.search(rf"## intent:{intent}\n((?:- .*\n?)+)", body)
            if block:
                lines = (re.sub(r"^- ", "", x).strip().strip('"') for x in block.group(1).splitlines())
                by_topic.setdefault(topic, set()).update(x for x in lines if x and x not in RASA_NO_REPLY)
    return {topic: sorted(replies) for topic, replies in by_topic.items()}


def overlapping_text(utterances: list[Any], channel: str, start_s: float, end_s: float) -> str:
    return "".join(u.text for u in utterances if u.channel == channel and u.start_s < end_s + 0.3
                   and u.end_s > start_s - 0.3)


def call_pairs(call: dict[str, Any], utterances: list[Any] | None) -> list[dict[str, Any]]:
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
            pairs.append({"question": question, "answer": answer, "silence_s": None if answer else 7.0,
                          "label": turn["label"], "topic": turn["topic"], "loan": call["loan_file"]})
    return pairs


def grouped_holdout(corpus_dir: Path, assessor: Assessor, folds: int = 5) -> None:
    """Train the head five times, each time without a fifth of the template groups, and score the default
    assessor (rules + that head) and the head alone on the held-out groups' pairs."""
    from nlu.learned import EncoderClassifier
    from tools.train import fit

    base = assessor.classifier
    if not isinstance(base, EncoderClassifier):
        return
    rows = [r for split in ("train", "dev", "test") for r in read_jsonl(corpus_dir / f"{split}.jsonl")]
    groups = sorted({r.get("group", r["template"]) for r in rows})
    random.Random(7).shuffle(groups)
    gold: list[str] = []
    fused: list[str] = []
    alone: list[str] = []
    held_rows: list[dict[str, Any]] = []
    for k in range(folds):
        held = set(groups[k::folds])
        train = [r for r in rows if r.get("group", r["template"]) not in held]
        test = [r for r in rows if r.get("group", r["template"]) in held]
        head = fit(base.encoder, train, float(base.meta.get("l2", 1e-2)))
        model = EncoderClassifier(base.encoder, head, base.meta, base.example_vecs, base.example_labels,
                                  base.example_texts, f"fold{k}")
        fold_assessor = Assessor(assessor.script, assessor.cues, assessor.options, model)
        fused += assess_rows(fold_assessor, test, with_topic=True)[0]
        alone += learned_labels(fold_assessor, test)
        gold += [r["label"] for r in test]
        held_rows += test
    for system, pred in (("default", fused), ("learned", alone)):
        score("corpus_groups", system, held_rows, pred, None, groups=len(groups), folds=folds)


def rss_mb() -> float:
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-asr", action="store_true", help="skip transcribing the calls")
    parser.add_argument("--no-groups", action="store_true", help="skip the grouped hold-out (five trainings)")
    parser.add_argument("--classifier", default="default", help="learned model to measure (as the setting)")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap rounds for the intervals")
    parser.add_argument("--latency-only", action="store_true", help="only the cost: memory and latency")
    parser.add_argument("--extra", action="append", default=[], metavar="FILE", type=Path,
                        help="score only this JSON-lines file of nlu_dev's format (huifang export-feedback); "
                        "repeatable")
    args = parser.parse_args()
    from nlu.classifier import load_classifier

    cores = os.cpu_count()
    before = rss_mb()
    started = time.perf_counter()
    learned = load_classifier(args.classifier)
    emit({"set": "memory", "rss_before_mb": round(before, 1), "rss_after_mb": round(rss_mb(), 1),
          "load_s": round(time.perf_counter() - started, 2), "classifier": args.classifier, "cores": cores})
    systems = {"rules": Assessor(), "default": Assessor(classifier=learned)}
    default = systems["default"]

    if args.extra:
        for path in args.extra:
            score_file(f"extra:{path.name}", read_jsonl(path), systems, args.bootstrap)
        return
    corpus_dir = ROOT / "corpus"
    test = read_jsonl(corpus_dir / "test.jsonl")
    if args.latency_only:
        latency(systems, test, cores)
        return
    for system, assessor in systems.items():
        score("corpus_test", system, test, assess_rows(assessor, test, with_topic=True)[0], None)
    score("corpus_test", "learned", test, learned_labels(default, test), None)
    if not args.no_groups:
        grouped_holdout(corpus_dir, default)

    sets = [("val", VAL), ("val2", VAL2), ("blind", BLIND)]
    for name, file in (("colloquial", COLLOQUIAL), ("nlu_dev", "answers_dev.jsonl")):
        if (SHARED_DATA / "nlu_dev" / file).exists():
            sets.insert(0, (name, SHARED_DATA / "nlu_dev" / file))
    for name, path in sets:
        rows = read_jsonl(path)
        for system, assessor in systems.items():
            labels, topics, unsure = assess_rows_evidence(assessor, rows)
            score(name, system, rows, labels, topics, rounds=args.bootstrap, no_evidence=unsure)
        score(name, "learned", rows, learned_labels(default, rows), None)

    if (SHARED_DATA / "text").exists():
        replies = real_replies()
        for system, assessor in systems.items():
            flagged, per_topic = 0, {}
            for topic in assessor.script.topics.values():
                question = topic.examples[0] if topic.examples else topic.name
                hits = sum(assessor.assess(question, reply).label != "clear" for reply in replies)
                per_topic[topic.id] = round(hits / len(replies), 3)
                flagged += hits
            emit({"set": "real_busy_complain", "system": system, "replies": len(replies),
                  "pairs": len(replies) * len(per_topic), "flagged_vague": round(flagged / (len(replies) * len(
                      per_topic)), 3), "per_topic": per_topic})
        settling = settling_replies()
        for system, assessor in systems.items():
            kept, pairs, unsure_n, per_topic = 0, 0, 0, {}
            for topic_id, topic_replies in settling.items():
                questions = assessor.script.topics[topic_id].examples
                results = [assessor.assess(q, reply) for q in questions for reply in topic_replies]
                clear_n = sum(r.label == "clear" for r in results)
                per_topic[topic_id] = {"replies": len(topic_replies), "kept_clear": round(clear_n / len(results), 3)}
                kept, pairs = kept + clear_n, pairs + len(results)
                unsure_n += sum(any(e.kind == "no_evidence" for e in r.evidence) for r in results)
            emit({"set": "settling_replies", "system": system, "pairs": pairs, "kept_clear": round(kept / pairs, 3),
                  "no_evidence": round(unsure_n / pairs, 3), "per_topic": per_topic})

    calls_dir = require_shared("calls")
    calls = [json.loads(p.read_text(encoding="utf-8")) | {"_path": p} for p in sorted(calls_dir.glob("call_s*.json"))]
    text_pairs = [p for call in calls for p in call_pairs(call, None)]
    for system, assessor in systems.items():
        labels, topics = assess_rows(assessor, text_pairs)
        score("calls_script_text", system, text_pairs, labels, topics)
    if not args.no_asr:
        from asr.audio import decode_audio
        from asr.transcribe import Transcriber
        from service.settings import Settings

        transcriber = Transcriber(asr_options(Settings()))
        transcriber.load()
        asr_pairs = []
        for call in calls:
            utterances = transcriber.transcribe(decode_audio(Path(call["_path"]).with_suffix(".flac")))
            asr_pairs += call_pairs(call, utterances)
        for system, assessor in systems.items():
            labels, topics = assess_rows(assessor, asr_pairs)
            missed = sum(1 for r, p in zip(asr_pairs, labels, strict=True) if r["label"] != "clear" and p == "clear")
            score("calls_asr", system, asr_pairs, labels, topics,
                  vague_answers=sum(r["label"] != "clear" for r in asr_pairs), vague_missed=missed)

    latency(systems, test, cores)


def score_file(name: str, rows: list[dict[str, Any]], systems: dict[str, Assessor], rounds: int) -> None:
    """A labelled set of nlu_dev's format scored by each system, as the named sets are (an empty set: one line
    saying so)."""
    if not rows:
        emit({"set": name, "answers": 0})
        return
    for system, assessor in systems.items():
        labels, topics, unsure = assess_rows_evidence(assessor, rows)
        score(name, system, rows, labels, topics, rounds=rounds, no_evidence=unsure)
    if systems["default"].classifier is not None:
        score(name, "learned", rows, learned_labels(systems["default"], rows), None)


def latency(systems: dict[str, Assessor], test: list[dict[str, Any]], cores: int | None) -> None:
    """p50/p95 of one assessment per system: fresh texts each time (the encoder caches repeated ones)."""
    pairs = [(r["question"], r["answer"]) for r in test[:400]]
    for system, assessor in systems.items():
        timings = []
        for question, answer in pairs:
            t0 = time.perf_counter()
            assessor.assess(question, answer)
            timings.append((time.perf_counter() - t0) * 1000)
        emit({"set": "latency", "system": system, "assessments": len(timings), "cores": cores,
              "p50_ms": round(float(np.percentile(timings, 50)), 3),
              "p95_ms": round(float(np.percentile(timings, 95)), 3)})


if __name__ == "__main__":
    main()
