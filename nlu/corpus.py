"""The project's own labelled corpus of (question, answer, topic, label), rendered from `configs/corpus.yaml`.

    python -m nlu.corpus [--out corpus] [--variants 4] [--seed 7]

writes `train.jsonl`, `dev.jsonl` and `test.jsonl`. Splits are by answer template id, so a test answer is never
a re-worded training answer; each rendered answer gets a random question of its topic, spoken decoration and,
for about a third, ASR-like substitutions. Rendering is deterministic for a seed.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nlu.script import CONFIGS, load_script

DEFAULT_TEMPLATES = CONFIGS / "corpus.yaml"
_SPLIT_PATTERN = ("train", "train", "dev", "train", "test", "train", "train", "test", "train", "dev")
_DIGITS = "零一二三四五六七八九"


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
    exact: str
    approx: str
    other: str


def facts(topic: str, rng: random.Random) -> Facts:
    """Spoken forms of a plausible fact for `topic` (exact, vague, and a different exact value)."""
    if topic == "loan_amount":
        wan = rng.choice([30, 45, 50, 60, 72, 80, 88, 90, 100, 120, 150, 180, 200, 260])
        other = wan + rng.choice([-20, -10, 10, 20])
        exact = rng.choice([f"{to_chinese(wan)}万", f"{wan}万", f"{to_chinese(wan)}万块"])
        approx = rng.choice([f"{to_chinese(wan // 10 - 1)}{to_chinese(wan // 10)}十万" if wan >= 20 and wan < 100
                             else "一百多万", "几十万", f"{to_chinese(wan)}万左右", "好几十万"])
        return Facts(exact, approx, f"{to_chinese(other)}万")
    if topic == "monthly":
        yuan = rng.choice([2600, 2900, 3000, 3500, 3800, 4200, 4600, 5300, 6500, 7900])
        short = to_chinese(yuan).rstrip("百")  # 四千二百 is said 四千二
        exact = rng.choice([short, f"{yuan}", f"{yuan}块", f"{to_chinese(yuan)}元"])
        k = yuan // 1000
        approx = rng.choice([f"{to_chinese(k)}千多", f"{to_chinese(k)}{to_chinese(k + 1)}千", "几千块",
                             f"{to_chinese(k)}千来块"])
        return Facts(exact, approx, to_chinese(yuan + rng.choice([-500, 500, 1000])))
    if topic == "repay_date":
        day = rng.randint(1, 28)
        exact = rng.choice([f"{to_chinese(day)}号", f"{day}号", f"每月{to_chinese(day)}号", f"每个月{day}号"])
        approx = rng.choice(["十几号", "月中", "月初", "月底", "二十几号", "十号前后"])
        return Facts(exact, approx, f"{to_chinese((day + 9) % 28 + 1)}号")
    if topic == "term":
        years = rng.choice([10, 15, 20, 25, 30])
        exact = rng.choice([f"{to_chinese(years)}年", f"{years}年", f"贷了{to_chinese(years)}年"])
        approx = rng.choice(["二三十年", "二十多年", "二十年还是三十年", "十几年"])
        return Facts(exact, approx, f"{to_chinese(years + 5)}年")
    if topic == "rate":
        whole, frac = rng.choice([3, 4]), rng.choice([1, 2, 5, 6, 55, 65, 85, 95])
        frac_cn = "".join(_DIGITS[int(c)] for c in str(frac))
        spoken = f"{to_chinese(whole)}点{frac_cn}"
        exact = rng.choice([f"百分之{spoken}", f"{whole}.{frac}%", spoken])
        approx = rng.choice([f"{to_chinese(whole)}点几", f"百分之{to_chinese(whole)}多", f"{to_chinese(whole)}左右"])
        return Facts(exact, approx, f"百分之{to_chinese(whole + 1)}点{frac_cn}")
    return Facts("", "", "")


def _applies(template: dict[str, Any], topic: str, slot: str) -> bool:
    if "topics" in template:
        return topic in template["topics"]
    if "slots" in template:
        return slot in template["slots"]
    return True


def _noise(text: str, table: dict[str, list[str]], rng: random.Random) -> str:
    for word, swaps in table.items():
        if word in text and rng.random() < 0.5:
            text = text.replace(word, rng.choice(swaps), 1)
    if rng.random() < 0.5:
        text = text.replace("，", "").replace("。", "")
    return text


def render(
    templates_path: Path = DEFAULT_TEMPLATES, variants: int = 7, seed: int = 7
) -> dict[str, list[dict[str, Any]]]:
    """All splits of the corpus as lists of records."""
    spec = yaml.safe_load(templates_path.read_text(encoding="utf-8"))
    rng = random.Random(seed)
    slots = {topic_id: topic.slot for topic_id, topic in load_script().topics.items()}
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "dev": [], "test": []}
    for label, templates in spec["answers"].items():
        for index, template in enumerate(sorted(templates, key=lambda t: t["id"])):
            split = _SPLIT_PATTERN[index % len(_SPLIT_PATTERN)]
            for topic, questions in spec["questions"].items():
                if not _applies(template, topic, slots[topic]):
                    continue
                # A template that fits every topic already yields twelve pairs: fewer renderings keep labels balanced.
                generic = "topics" not in template and "slots" not in template
                for _ in range(max(1, variants // 2) if generic else variants):
                    f = facts(topic, rng)
                    answer = template["text"].format(v=f.exact, approx=f.approx, other=f.other)
                    answer = rng.choice(spec["prefixes"]) + answer
                    if answer.endswith("。") and rng.random() < 0.4:
                        answer = answer[:-1] + rng.choice(spec["suffixes"]) + "。"
                    noisy = rng.random() < 0.35
                    if noisy:
                        answer = _noise(answer, spec["asr_noise"], rng)
                    question = rng.choice(questions)
                    if noisy:
                        question = _noise(question, spec["asr_noise"], rng)
                    splits[split].append({"question": question, "answer": answer, "topic": topic, "label": label,
                                          "template": template["id"], "asr_noise": noisy})
    for records in splits.values():
        unique = {(r["question"], r["answer"]): r for r in records}
        records[:] = list(unique.values())
        rng.shuffle(records)
    return splits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nlu.corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="corpus", help="output folder (default: corpus)")
    parser.add_argument("--variants", type=int, default=7, help="renderings per template and topic")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for split, records in render(variants=args.variants, seed=args.seed).items():
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        counts = {label: sum(r["label"] == label for r in records) for label in ("clear", "omission", "unclear",
                                                                                 "evasive")}
        print(f"{split}: {len(records)} pairs {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
