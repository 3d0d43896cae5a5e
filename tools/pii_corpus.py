"""The project's own PII test corpus: synthetic numbers and names said the ways customers say them.

`python -m tools.pii_corpus` writes `corpus/pii.jsonl`: one object per case with `text` (one utterance, or a list
of consecutive utterances for numbers split across them), `pii` (the raw values that must not survive, with
their kind) and `lookalike` (true for strings that must come back unmasked: amounts, dates, rates, terms).
Every number is generated (valid ID check digits, Luhn-valid cards), none belongs to a real person.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path
from typing import Any

from nlu.pii import _DIGIT, id_check_character, luhn_ok

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "corpus" / "pii.jsonl"
_CN = "零一二三四五六七八九"
_AREAS = ("110105", "310104", "440305", "320102", "510107", "330106", "420106", "610113")
_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
_GIVEN = ("伟", "芳", "娜", "秀英", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明",
          "超", "秀兰", "霞", "学文", "建华", "志强")
_ROADS = ("科技园南路", "人民路", "解放大道", "中山北路", "建设路", "长江路", "滨江大道", "文化路")
_SEP = re.compile(r"[\s\-—–_，,、.]")


def digits_view(text: str) -> str:
    """The text with Chinese digits read as Arabic ones and separators dropped (幺三九 1 2 -> 13912)."""
    return "".join(_DIGIT.get(ch, ch) for ch in _SEP.sub("", text))


def leaked(value: str, output: str) -> bool:
    """Whether a raw value of the corpus survives in `output`, as written or said as digits (the check of
    `bench.pii_redaction` and tests/integration/test_pii.py)."""
    return value in output or value in digits_view(output)


def _spoken(digits: str, rng: random.Random, style: str) -> str:
    """Digits as said: arabic, chinese (一 or 幺 for 1), or a mix; grouped with a separator or not."""
    if style == "arabic":
        out = list(digits)
    elif style == "chinese":
        one = rng.choice("一幺")
        out = [one if d == "1" else ("X" if d == "X" else _CN[int(d)]) for d in digits]
    else:
        out = [d if rng.random() < 0.5 or d == "X" else _CN[int(d)] for d in digits]
    return "".join(out)


def _grouped(text: str, sizes: tuple[int, ...], sep: str) -> str:
    parts, pos = [], 0
    for size in sizes:
        parts.append(text[pos: pos + size])
        pos += size
    if pos < len(text):
        parts.append(text[pos:])
    return sep.join(p for p in parts if p)


def make_id(rng: random.Random) -> str:
    body = rng.choice(_AREAS) + f"{rng.randint(1950, 2004)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    body += f"{rng.randint(0, 999):03d}"
    return body + id_check_character(body)


def make_card(rng: random.Random, length: int) -> str:
    prefix = rng.choice(("6222", "6217", "6228", "6214", "6225", "4367", "6259"))
    body = prefix + "".join(str(rng.randint(0, 9)) for _ in range(length - len(prefix) - 1))
    for check in "0123456789":
        if luhn_ok(body + check):
            return body + check
    raise AssertionError("unreachable: one check digit always passes Luhn")


def make_mobile(rng: random.Random) -> str:
    return "1" + rng.choice("3456789") + "".join(str(rng.randint(0, 9)) for _ in range(9))


def make_landline(rng: random.Random) -> tuple[str, str]:
    area = rng.choice(("010", "021", "020", "0755", "0571", "028", "027"))
    local = str(rng.randint(2, 8)) + "".join(str(rng.randint(0, 9)) for _ in range(7 if len(area) == 3 else 6))
    return area + local, f"{area}{rng.choice(('-', '', ' '))}{local}"


_PHONE_FRAMES = ("换了，新号码是{}。", "我手机号{}", "你记一下，{}，这个是我现在用的。", "电话是{}", "打这个{}就行",
                 "新手机号码是{}，原来那个不用了。", "{}，这是我老婆的电话。")
_ID_FRAMES = ("我身份证号是{}", "身份证{}", "证件号码{}，你核对一下。", "{}，这是我的身份证。")
_CARD_FRAMES = ("还款卡是{}", "卡号{}", "从{}这张卡扣", "银行卡号是{}，工行的。")
_LANDLINE_FRAMES = ("单位电话{}", "座机是{}", "家里电话{}，白天没人。")
_LOOKALIKES = (
    "贷了八十万，三十年。", "月供四千二左右。", "每个月4200元。", "一百二十万，贷了二十五年。", "1200000元。",
    "利率是百分之三点九五。", "3.65%吧。", "每月十五号还款。", "每月18号。", "2026年11月29日放的款。",
    "二〇二三年五月签的合同。", "还了三十六期了。", "我今年四十二岁。", "大概七八十万。",
    "首付六十万，贷款一百四十万。",
    "每月还六千五百元。", "3900多一点。", "五千三百块。", "收入一万二一个月。", "二十年，还有十八年。",
    "房子一百二十平米。", "年利率4.1%。", "LPR加五十个基点。", "七点前到家。", "十二月一号开始扣。",
    "上个月15号扣的。", "月供2930元。", "贷款金额是一百零五万元。", "大概四五千吧。", "还款日是每月二十号。",
    "有问题打你们的热线400-820-8820吗？", "我打过95588问过了。", "一九九八年买的房。", "合同是20230515签的。",
    "一千二百三十四万的房子。", "尾款还有二十万。", "第3期开始扣的。", "2025年12月到期。",
)


def build(seed: int = 20261129) -> list[dict[str, Any]]:
    """Deterministic cases: at least 300 with personal data plus the look-alikes (each in several variants)."""
    rng = random.Random(seed)
    cases: list[dict[str, Any]] = []
    styles = ("arabic", "chinese", "mixed")
    for i in range(90):
        value = make_mobile(rng)
        style = styles[i % 3]
        said = _spoken(value, rng, style)
        if i % 4 == 1:
            said = _grouped(said, (3, 4, 4), rng.choice((" ", "，", "-")))
        frame = _PHONE_FRAMES[i % len(_PHONE_FRAMES)]
        if i % 6 == 5:  # said over two utterances
            cut = rng.randint(4, 7)
            cases.append({"text": [frame.split("{}")[0] + said[:cut], said[cut:] + frame.split("{}")[1]],
                          "pii": [{"kind": "mobile", "value": value}], "style": style, "split": True})
        else:
            cases.append({"text": frame.format(said), "pii": [{"kind": "mobile", "value": value}], "style": style})
    for i in range(80):
        value = make_id(rng)
        style = styles[i % 3]
        said = _spoken(value, rng, style)
        if i % 5 == 2:
            said = _grouped(said, (6, 8, 4), " ")
        frame = _ID_FRAMES[i % len(_ID_FRAMES)]
        if i % 8 == 7:
            cut = rng.randint(6, 12)
            cases.append({"text": [frame.split("{}")[0] + said[:cut], said[cut:] + frame.split("{}")[1]],
                          "pii": [{"kind": "id", "value": value}], "style": style, "split": True})
        else:
            cases.append({"text": frame.format(said), "pii": [{"kind": "id", "value": value}], "style": style})
    for i in range(70):
        value = make_card(rng, rng.choice((16, 19)))
        style = styles[i % 3]
        said = _spoken(value, rng, style)
        if i % 2 == 0:
            said = _grouped(said, (4, 4, 4, 4), rng.choice((" ", "，", "-")))
        cases.append({"text": _CARD_FRAMES[i % len(_CARD_FRAMES)].format(said),
                      "pii": [{"kind": "card", "value": value}], "style": style})
    for i in range(30):
        value, said = make_landline(rng)
        style = styles[i % 3] if i % 3 != 0 else "arabic"
        said = _spoken(said.replace("-", "").replace(" ", ""), rng, style) if style != "arabic" else said
        cases.append({"text": _LANDLINE_FRAMES[i % len(_LANDLINE_FRAMES)].format(said),
                      "pii": [{"kind": "landline", "value": value}], "style": style})
    for i in range(30):
        tail = f"{rng.randint(0, 9999):04d}"
        kind, frame = (("id", "身份证后四位{}") if i % 2 else ("card", "尾号{}的那张卡"))
        said = _spoken(tail, rng, styles[i % 3])
        cases.append({"text": frame.format(said), "pii": [{"kind": kind, "value": tail}], "style": styles[i % 3]})
    for i in range(30):
        name = rng.choice(_SURNAMES) + rng.choice(_GIVEN)
        road = rng.choice(_ROADS)
        address = f"{road}{rng.randint(1, 300)}号"
        text = (f"我是{name}，住在{address}。" if i % 2 else f"{name}本人，地址{address}没变。")
        cases.append({"text": text, "pii": [{"kind": "name", "value": name}, {"kind": "address", "value": address}],
                      "loan_file": {"borrower": name, "address": address}})
    for text in _LOOKALIKES:
        cases.append({"text": text, "pii": [], "lookalike": True})
        for variant in (text.replace("。", "，没问题。"), "嗯，" + text):
            cases.append({"text": variant, "pii": [], "lookalike": True})
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.pii_corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    cases = build()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        for case in cases:
            f.write(json.dumps(case, ensure_ascii=False) + "\n")
    pii = sum(1 for c in cases if c["pii"])
    print(f"{len(cases)} cases ({pii} with personal data, {len(cases) - pii} look-alikes) -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
