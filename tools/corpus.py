"""The project's own labelled corpus of (question, answer, topic, label), rendered from `configs/corpus.yaml`.

    python -m tools.corpus [--out corpus] [--variants 7] [--seed 7]

writes `train.jsonl`, `dev.jsonl` and `test.jsonl`. Splits are by answer template id, so a test answer is never
a re-worded training answer. Each topic gets the same number of renderings per label (30 × variants), shared
out over the templates that fit it; each rendered answer gets a random question of its topic, spoken decoration
and, for about a third, ASR-like substitutions. Every record names its `template` and its `group` (the sentence frame
the template writes: busy, privacy, figure_correction …), so an evaluation can also hold whole frames out of
training. Rendering is deterministic for a seed.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import yaml

from huifang_configs import configs_file
from nlu.script import load_script
from nlu.types import LABELS, Label, SlotKind

DEFAULT_TEMPLATES = configs_file("corpus.yaml")
_SPLIT_PATTERN = ("train", "train", "dev", "train", "test", "train", "train", "test", "train", "dev")
_DIGITS = "零一二三四五六七八九"
#: Slot kinds whose facts `facts()` can state; only their topics can fill {v}, {approx}, {range}, {other}.
FIGURE_SLOTS: frozenset[str] = frozenset({"amount_yuan", "day", "years", "percent"})
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_PLACEHOLDERS = frozenset({"v", "approx", "range", "other"})
#: Renderings of one (topic, label) are `variants` × this; one template never gets more than
#: `_MAX_PER_TEMPLATE` × `variants` of them in a topic (a near copy repeated that often teaches nothing new).
_TEMPLATES_PER_CELL = 30
_MAX_PER_TEMPLATE = 4
_DRAWS_PER_PAIR = 4


class CorpusSpecError(ValueError):
    """`configs/corpus.yaml` does not describe a corpus: a template without id, group or text, a duplicate id, an
    unknown topic, slot or placeholder, or a figure placeholder in a template that also fits non-figure topics."""


def to_chinese(n: int) -> str:
    """An integer below 100 million in spoken Chinese numerals (十五, 八十万, 四千二百)."""
    if n == 0:
        return "零"
    if n >= 10_000:
        high, low = divmod(n, 10_000)
        text = to_chinese(high) + "万"
        if low:
            text += ("零" if low < 1000 else "") + to_chinese(low)
        return text
    parts, zero = [], False
    for value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        digit = n // value % 10
        if digit:
            if zero:
                parts.append("零")
                zero = False
            parts.append(("" if (unit == "十" and digit == 1 and n < 20) else _DIGITS[digit]) + unit)
        elif parts:
            zero = True
    return "".join(parts)


@dataclass(frozen=True)
class Facts:
    """Spoken forms of one fact: exact, vague, a range around it, and a different exact value."""

    exact: str
    approx: str
    range: str
    other: str


@dataclass(frozen=True)
class Template:
    """One answer template of `configs/corpus.yaml`. `topics` or `slots` (slot kinds) limit where it applies;
    with neither it fits every topic. `decorate` is false for written non-speech (……, （沉默）)."""

    id: str
    label: Label
    group: str
    text: str
    topics: tuple[str, ...] | None = None
    slots: tuple[SlotKind, ...] | None = None
    decorate: bool = True

    def applies(self, topic: str, slot: str) -> bool:
        if self.topics is not None:
            return topic in self.topics
        if self.slots is not None:
            return slot in self.slots
        return True


def facts(topic: str, rng: random.Random) -> Facts:
    """Spoken forms of a plausible fact for `topic`; the vague form and the range agree with the exact one."""
    cn = to_chinese
    if topic == "loan_amount":
        wan = rng.choice([30, 45, 50, 60, 72, 80, 88, 90, 100, 120, 150, 180, 200, 260])
        other = wan + rng.choice([-20, -10, 10, 20])
        exact = rng.choice([f"{cn(wan)}万", f"{wan}万", f"{cn(wan)}万块"])
        if wan < 100:
            tens = wan // 10
            approx = rng.choice([f"{cn(tens)}{cn(tens + 1)}十万" if wan % 10 else f"{cn(tens - 1)}{cn(tens)}十万",
                                 "几十万", f"{cn(wan)}万左右", "好几十万"])
            span = f"{cn(tens * 10)}到{cn(tens * 10 + 10)}万"
        else:
            approx = rng.choice([f"{cn(wan // 100)}百多万", f"{cn(wan)}万左右",
                                 *(["一两百万", "百来万"] if wan < 200 else ["两三百万"])])
            low = wan // 50 * 50
            span = f"{cn(low)}到{cn(low + 50)}万"
        return Facts(exact, approx, span, f"{cn(other)}万")
    if topic == "monthly":
        yuan = rng.choice([2600, 2900, 3000, 3500, 3800, 4200, 4600, 5300, 6500, 7900])
        short = cn(yuan).rstrip("百")  # 四千二百 is said 四千二
        exact = rng.choice([short, f"{yuan}", f"{yuan}块", f"{cn(yuan)}元"])
        k = yuan // 1000
        approx = rng.choice([f"{cn(k)}千多", f"{cn(k)}{cn(k + 1)}千", "几千块", f"{cn(k)}千来块"])
        return Facts(exact, approx, f"{cn(k)}千到{cn(k + 1)}千", cn(yuan + rng.choice([-500, 500, 1000])))
    if topic == "repay_date":
        day = rng.randint(1, 28)
        exact = rng.choice([f"{cn(day)}号", f"{day}号", f"每月{cn(day)}号", f"每个月{day}号"])
        if day <= 10:
            approx = rng.choice(["月初", "上旬", "月初那几天", "十号以前"])
        elif day <= 20:
            approx = rng.choice(["十几号", "月中", "中旬", "十五号前后"])
        else:
            approx = rng.choice(["二十几号", "月底", "下旬", "月末那几天"])
        span = f"{cn(max(1, day - 3))}号到{cn(day + 3)}号"
        return Facts(exact, approx, span, f"{cn((day + 9) % 28 + 1)}号")
    if topic == "term":
        years = rng.choice([10, 15, 20, 25, 30])
        exact = rng.choice([f"{cn(years)}年", f"{years}年", f"{cn(years)}年期"])
        approx = rng.choice([f"{cn(years // 10 * 10)}{'几' if years % 10 else '来'}年", f"{cn(years)}年左右"])
        return Facts(exact, approx, f"{cn(years - 5)}到{cn(years + 5)}年", f"{cn(years + 5)}年")
    if topic == "rate":
        whole, frac = rng.choice([3, 4]), rng.choice([1, 2, 5, 6, 55, 65, 85, 95])
        frac_cn = "".join(_DIGITS[int(c)] for c in str(frac))
        spoken = f"{cn(whole)}点{frac_cn}"
        exact = rng.choice([f"百分之{spoken}", f"{whole}.{frac}%", spoken])
        approx = rng.choice([f"{cn(whole)}点几", f"百分之{cn(whole)}多", f"{cn(whole)}左右"])
        return Facts(exact, approx, f"{cn(whole)}到{cn(whole + 1)}个点", f"百分之{cn(whole + 1)}点{frac_cn}")
    return Facts("", "", "", "")


def load_templates(spec: dict[str, Any], slots: Mapping[str, str]) -> list[Template]:
    """The answer templates of a parsed `configs/corpus.yaml`, checked against the topics' slot kinds."""
    templates: list[Template] = []
    seen: set[str] = set()
    figure_topics = {topic for topic, slot in slots.items() if slot in FIGURE_SLOTS}
    answers = spec.get("answers")
    if not isinstance(answers, dict) or set(answers) - set(LABELS):
        raise CorpusSpecError(f"`answers` must map labels ({', '.join(LABELS)}) to lists of templates")
    for label, entries in answers.items():
        for entry in entries:
            where = f"answers.{label}: {entry!r}"
            if not all(isinstance(entry.get(key), str) and entry[key] for key in ("id", "group", "text")):
                raise CorpusSpecError(f"{where}: every template needs an id, a group and a text")
            if entry["id"] in seen:
                raise CorpusSpecError(f"{where}: duplicate id {entry['id']}")
            seen.add(entry["id"])
            topics = tuple(entry["topics"]) if "topics" in entry else None
            kinds = tuple(entry["slots"]) if "slots" in entry else None
            if topics is not None and not set(topics) <= set(slots):
                raise CorpusSpecError(f"{where}: unknown topic in {topics}")
            if kinds is not None and not set(kinds) <= set(get_args(SlotKind)):
                raise CorpusSpecError(f"{where}: unknown slot kind in {kinds}")
            used = set(_PLACEHOLDER.findall(entry["text"]))
            if used - _PLACEHOLDERS:
                raise CorpusSpecError(f"{where}: unknown placeholder {sorted(used - _PLACEHOLDERS)}")
            fits_non_figures = (kinds is None and topics is None) or (kinds is not None and set(kinds) - FIGURE_SLOTS)\
                or (topics is not None and set(topics) - figure_topics)
            if used and fits_non_figures:
                raise CorpusSpecError(f"{where}: a figure placeholder needs figure topics or slots only")
            templates.append(Template(entry["id"], label, entry["group"], entry["text"], topics, kinds,
                                      bool(entry.get("decorate", True))))
    return templates


def _noise(text: str, table: dict[str, list[str]], rng: random.Random) -> str:
    for word, swaps in table.items():
        if word in text and rng.random() < 0.5:
            text = text.replace(word, rng.choice(swaps), 1)
    if rng.random() < 0.5:
        text = text.replace("，", "").replace("。", "")
    return text


def _shares(total: int, fitting: list[Template], slots: Mapping[str, str], cap: int) -> list[int]:
    """`total` renderings of one (topic, label) shared out over the templates that fit it, so every topic gets the
    same number per label however many templates fit it. A template's share is inversely proportional to the
    number of topics it fits, so one written for a single topic weighs about as much in the corpus as a generic
    one; no template gets more than `cap`, what it leaves goes to the others (largest remainder; ties go to the
    earlier template). Fewer than `total` only when every template is at `cap`."""
    weights = [1 / sum(t.applies(topic, slot) for topic, slot in slots.items()) for t in fitting]
    counts = [0] * len(fitting)
    open_ = set(range(len(fitting)))
    left = min(total, cap * len(fitting))
    while left and open_:
        quotas = {i: left * weights[i] / sum(weights[j] for j in open_) for i in open_}
        give = {i: min(math.floor(q), cap - counts[i]) for i, q in quotas.items()}
        if not any(give.values()):  # every open quota is below one: the largest remainders get one each
            for i in sorted(open_, key=lambda i: (-quotas[i], i))[:left]:
                give[i] = 1
        for i, n in give.items():
            counts[i] += n
            left -= n
        open_ = {i for i in open_ if counts[i] < cap}
    return counts


def _render_one(template: Template, topic: str, questions: list[str], spec: dict[str, Any],
                rng: random.Random) -> dict[str, Any]:
    f = facts(topic, rng)
    answer = template.text.format(v=f.exact, approx=f.approx, range=f.range, other=f.other)
    if template.decorate:
        answer = rng.choice(spec["prefixes"]) + answer
        if answer.endswith("。") and rng.random() < 0.4:
            answer = answer[:-1] + rng.choice(spec["suffixes"]) + "。"
    noisy = rng.random() < 0.35
    if noisy:
        answer = _noise(answer, spec["asr_noise"], rng)
    question = rng.choice(questions)
    if noisy:
        question = _noise(question, spec["asr_noise"], rng)
    return {"question": question, "answer": answer, "topic": topic, "label": template.label,
            "template": template.id, "group": template.group, "asr_noise": noisy}


def render(
    templates_path: Path = DEFAULT_TEMPLATES, variants: int = 7, seed: int = 7
) -> dict[str, list[dict[str, Any]]]:
    """All splits of the corpus as lists of records (question, answer, topic, label, template, group, asr_noise)."""
    spec = yaml.safe_load(templates_path.read_text(encoding="utf-8"))
    rng = random.Random(seed)
    slots = {topic_id: topic.slot for topic_id, topic in load_script().topics.items()}
    if set(spec["questions"]) != set(slots):
        raise CorpusSpecError("`questions` must have one list per topic of the call script")
    templates = load_templates(spec, slots)
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "dev": [], "test": []}
    for label in LABELS:
        # Sorted by frame first, so the split pattern spreads each group's templates over the three splits.
        ordered = sorted((t for t in templates if t.label == label), key=lambda t: (t.group, t.id))
        split_of = {t.id: _SPLIT_PATTERN[i % len(_SPLIT_PATTERN)] for i, t in enumerate(ordered)}
        for topic, questions in spec["questions"].items():
            fitting = [t for t in ordered if t.applies(topic, slots[topic])]
            if not fitting:
                raise CorpusSpecError(f"no {label} template fits topic {topic}")
            shares = _shares(variants * _TEMPLATES_PER_CELL, fitting, slots, _MAX_PER_TEMPLATE * variants)
            for template, wanted in zip(fitting, shares, strict=True):
                records, seen = splits[split_of[template.id]], set()
                # A short answer has few decorated forms: draw again on a repeated pair, a bounded number of times.
                for _ in range(_DRAWS_PER_PAIR * wanted):
                    record = _render_one(template, topic, questions, spec, rng)
                    if (record["question"], record["answer"]) not in seen:
                        seen.add((record["question"], record["answer"]))
                        records.append(record)
                        if len(seen) == wanted:
                            break
    for records in splits.values():
        unique = {(r["question"], r["answer"]): r for r in records}
        records[:] = list(unique.values())
        rng.shuffle(records)
    return splits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="corpus", help="output folder (default: corpus)")
    parser.add_argument("--variants", type=int, default=7,
                        help=f"renderings per topic and label, in units of {_TEMPLATES_PER_CELL} (default 7)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for split, records in render(variants=args.variants, seed=args.seed).items():
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        counts = Counter(r["label"] for r in records)
        groups = len({r["group"] for r in records})
        print(f"{split}: {len(records)} pairs {{{', '.join(f'{k}: {counts[k]}' for k in LABELS)}}}, {groups} groups")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
