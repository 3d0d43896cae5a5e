"""Extracting the requested fact from an answer, normalised, with approximate forms marked.

Pure functions over ASR text. Numbers come in Chinese and Arabic numerals and mixes (八十万, 80万, 4千2,
三点六五, 百分之三点九五, 十五号, 二十年); approximate forms (七八十万, 十几号, 一百多万, 四千左右) are marked
`approximate` so the assessment can call them unclear rather than clear.
"""

from __future__ import annotations

import logging
import re
from decimal import Decimal
from functools import lru_cache

from nlu.numbers import parse_number
from nlu.script import Cues
from nlu.types import Slot, SlotKind

_D = "0-9零〇一二两三四五六七八九"
_NUM = rf"[{_D}十百千万亿点.,]+"
#: A numeral run with an optional scale word after it, e.g. 八十万, 80万, 4千2, 五千三百, 1,200, 一百多万.
_AMOUNT = re.compile(rf"(?P<num>[{_D}十][{_D}十百千万亿点.,]*?)(?P<more>多|来|余)?(?P<unit>万元|万块|万|千|元|块钱|块)?"
                     rf"(?![{_D}十百千万亿])")
_TWO_DIGITS = re.compile(r"^(?P<a>[一二三四五六七八九])(?P<b>[一二三四五六七八九])(?P<rest>[十百千万].*)$")
#: Two adjacent different digits before a unit: 七八十万, 三四千 — a range, not a figure.
_RANGE = re.compile(rf"[一二三四五六七八九]{{2}}(?=[十百千万])|[{_D}十百千万]+[号日年万元块%]?[到至\-~][{_D}十百千万]+")
_VAGUE_NUMBER = re.compile(
    r"几[十百千万]|[十百千万]几|[十百千万]多|多[万块]|[十百千万]来|[十百千万]余|来万|余万|好几[十百千万]")
#: 好/浩 after a day number: Whisper's homophones of 号 (每个月十五好).
_DAY = re.compile(rf"(?P<num>[{_D}十]+)\s*(?:号|日|好|浩)")
_YEARS = re.compile(rf"(?P<num>[{_D}十]+)\s*年")
_PERCENT = re.compile(rf"百分之(?P<a>[{_D}十点.]+)|(?P<b>[0-9.]+)\s*(?:[%％]|个点)|(?P<c>[{_D}]点[{_D}]+)")
_APPROX_WORDS = ("左右", "上下", "大概", "大约", "差不多", "估计", "好像", "应该", "可能", "多一点", "出头", "的样子",
                 # a bound instead of the figure: 不到两百万, 起码三十年
                 "不到", "不超过", "以上", "以内", "以下", "起码", "至少", "最多", "顶多", "将近", "接近", "快到",
                 "不晚于", "晚于", "不早于", "早于", "不低于", "低于", "不高于", "高于", "过万", "之间", "不等",
                 "不少于", "少于", "不多于", "多于", "之前")
_VAGUE_DAY = re.compile(r"十几号|二十几号|几号吧|月初|月中|月底|月末")


def _value(text: str) -> float | None:
    value = parse_number(text)
    return float(value) if value is not None else None


#: Another figure offered in the same breath: 二十年还是三十年, 十五号或者二十号.
_EITHER_OR = re.compile(rf"^[^，。]{{0,3}}?(还是|或者|或)(?:[{_D}十]|百分之)")
_NOT_X_BUT_Y = re.compile(rf"^[^，。]{{0,3}}?就是[{_D}十]")
_CLAUSE_BREAK = re.compile(r"[，。！？；,!?;…]")


def _approx(answer: str, span: tuple[int, int]) -> bool:
    """Whether the figure at `span` is stated approximately: a hedge, range, bound or either-or next to it, in
    its own clause (六千出头，六千零八十七 states 6,087 exactly)."""
    before = _CLAUSE_BREAK.split(answer[max(0, span[0] - 4) : span[0]])[-1]
    after = _CLAUSE_BREAK.split(answer[span[1] : span[1] + 4])[0]
    window = before + answer[span[0] : span[1]] + after
    return any(w in window for w in _APPROX_WORDS) or bool(_RANGE.search(window)) or bool(
        _VAGUE_NUMBER.search(window)) or bool(_EITHER_OR.search(answer[span[1]:])) or (
        answer[max(0, span[0] - 2) : span[0]] == "不是" and bool(_NOT_X_BUT_Y.search(answer[span[1]:])))


def _identifier_before(answer: str, index: int, markers: tuple[str, ...]) -> bool:
    """Whether the digits at `index` follow an identifier word (尾号, 卡号; or its homophone), allowing 是/为/：."""
    if not markers:
        return False
    before = answer[max(0, index - 6): index].rstrip("是为：: ")
    heard = _pinyin(before)
    return any(before.endswith(m) or heard[-len(m):] == _pinyin(m) for m in markers if len(before) >= len(m))


def _pinyin(text: str) -> tuple[str, ...]:
    from pypinyin import Style, lazy_pinyin

    return tuple(lazy_pinyin(text, style=Style.NORMAL))


def extract_amount(answer: str, identifiers: tuple[str, ...] = ()) -> Slot | None:
    """An amount in yuan: 八十万 -> 800000, 4千2 -> 4200, 80万 -> 800000, 五千三百元 -> 5300. Digits after one of
    `identifiers` (尾号8866) are not an amount."""
    best: Slot | None = None
    for m in _AMOUNT.finditer(answer):
        num, unit = m.group("num").strip(".,"), m.group("unit") or ""
        if not num or num in ("点", "."):
            continue
        if _identifier_before(answer, m.start(), identifiers):
            continue
        if m.start() > 0 and answer[m.start() - 1] == "几":
            return Slot("amount_yuan", None, True, answer[m.start() - 1 : m.end()])  # 几十万: no figure at all
        pair = _TWO_DIGITS.match(num)
        if pair:  # 七八十万: the middle of the range, marked approximate below
            low, high = _value(pair["a"] + pair["rest"]), _value(pair["b"] + pair["rest"])
            value = (low + high) / 2 if low is not None and high is not None else None
        else:
            value = _value(num)
        if value is None:
            continue
        if unit.startswith("万") and "万" not in num:
            value *= 10_000
        elif unit == "千" and "千" not in num:
            value *= 1_000
        if value < 100 and not unit:
            continue  # a bare small number is not an amount of money (一个, 两次)
        approximate = _approx(answer, m.span()) or bool(m.group("more")) or bool(pair)
        slot = Slot("amount_yuan", value, approximate, m.group(0))
        if best is None or (slot.value or 0) > (best.value or 0):  # type: ignore[operator]
            best = slot
    if best is None and _VAGUE_NUMBER.search(answer):
        m2 = _VAGUE_NUMBER.search(answer)
        assert m2 is not None
        return Slot("amount_yuan", None, True, m2.group(0))
    return best


def extract_day(answer: str) -> Slot | None:
    """A day of the month: 十五号 -> 15, 每月20日 -> 20; 十几号, 月中 are approximate with no value."""
    vague = _VAGUE_DAY.search(answer)
    for m in _DAY.finditer(answer):
        if "几" in answer[max(0, m.start() - 1) : m.end()]:
            continue
        value = _value(m.group("num"))
        if value is not None and 1 <= value <= 31:
            # 二十八号，快月底那会儿: the day is exact; 月底 only describes it (in its own clause).
            near = vague is not None and _clause_holding(answer, m.start()) == _clause_holding(answer, vague.start())
            return Slot("day", int(value), _approx(answer, m.span()) or near, m.group(0))
    if vague:
        return Slot("day", None, True, vague.group(0))
    return None


def _clause_holding(text: str, index: int) -> int:
    """Which clause (counted by breaks before it) position `index` of `text` is in."""
    return len(_CLAUSE_BREAK.findall(text[:index]))


def extract_years(answer: str) -> Slot | None:
    """A loan term: 三十年 -> 30, 贷了20年 -> 20."""
    for m in _YEARS.finditer(answer):
        value = _value(m.group("num"))
        if value is not None and 1 <= value <= 50:
            return Slot("years", value, _approx(answer, m.span()), m.group(0))
    return None


_BARE_RATE = re.compile(r"(?<![0-9.])[1-9]\.[0-9]{1,2}(?![0-9.])")
_VAGUE_PERCENT = re.compile(rf"[{_D}]点几|百分之[{_D}]多|百分之几|[{_D}]个点多|几个点")


def extract_percent(answer: str) -> Slot | None:
    """A rate: 百分之三点九五 -> 3.95, 3.6% -> 3.6, 三点六五 -> 3.65 (a bare decimal read as a percent); 三点几,
    百分之四多 are approximate with no value."""
    for m in _PERCENT.finditer(answer):
        raw = m.group("a") or m.group("b") or m.group("c")
        value = _value(raw.replace(".", "点")) if raw else None
        if value is not None and 0 < value < 30:
            return Slot("percent", value, _approx(answer, m.span()), m.group(0))
    vague = _VAGUE_PERCENT.search(answer)
    if vague:
        return Slot("percent", None, True, vague.group(0))
    # A bare decimal asked for a rate (3.85，去年调下来的) is the rate.
    bare = _BARE_RATE.search(answer)
    if bare:
        return Slot("percent", float(bare.group(0)), _approx(answer, bare.span()), bare.group(0))
    return None


def _negated_before(answer: str, index: int) -> bool:
    return index > 0 and (answer[index - 1] in "不没别未" or answer[max(0, index - 2) : index] in ("不太", "没太",
                                                                                                "不大", "不怎"))


#: What may come before a one-character yes/no word that still answers (嗯，能 / 那肯定能 / 我会): fillers,
#: pronouns and a few adverbs. 是 in 都是我爱人安排的 is a copula, not a yes.
_LEAD = re.compile(r"^(?:[嗯啊哦呃哎唉喔噢那个我们他她你都也就还]|就是|肯定|当然|应该|一定|绝对|对对|是的)*$")


def _clause_final(answer: str, end: int) -> bool:
    """钱是够的 / 卡里有的: a one-character word that closes its clause, perhaps with 的/了, predicates it."""
    rest = answer[end:]
    return bool(re.match(r"^[的了啊呀呢哈]*(?:[，。！？；,.!?;…~ ]|$)", rest))


def _clause_initial(answer: str, index: int) -> bool:
    start = max((answer.rfind(p, 0, index) for p in "，。！？；,.!?;…~ "), default=-1) + 1
    return bool(_LEAD.match(answer[start:index]))


def _rhetorical(answer: str, index: int) -> bool:
    """谁能保证, 哪能: a yes-word inside a rhetorical question settles nothing."""
    return index > 0 and answer[index - 1] in "谁哪"


@lru_cache(maxsize=4096)
def word_boundaries(text: str) -> frozenset[int]:
    """Offsets where jieba's segmentation of `text` puts a word boundary (0 and len(text) included)."""
    import jieba

    jieba.setLogLevel(logging.WARNING)  # its dictionary load otherwise prints to stderr
    bounds = {0, len(text)}
    for _, start, end in jieba.tokenize(text):
        bounds.update((start, end))
    return frozenset(bounds)


#: A-not-A (能不能, 同不同意, 有没有): a yes/no question, wherever it is said. Groups: the verb, the negation,
#: the second syllable of a two-syllable verb (同不同意).
A_NOT_A = re.compile(r"([\u4e00-\u9fff])([不没])\1([\u4e00-\u9fff]?)")


def extract_yes_no(answer: str, cues: Cues, kind: SlotKind = "yes_no") -> Slot | None:
    """A yes/no (or consent) answer: the first settling word wins; a negation right before a yes-word flips it.

    Whole-word lists come from `configs/cues.yaml`. 不会 answers "could repayment become difficult" with no.
    A settling word must be whole words of the answer: the 有 of 有事 or the 没 of 没空 settles nothing.
    """
    bounds = word_boundaries(answer)
    # 能不能还上说不准, 担保不担保的: the question taken up as a question (A-not-A) says neither yes nor no.
    embedded = [m.span() for m in A_NOT_A.finditer(answer)]
    found = [(m.start(), m.end(), word, settles)
             for words, settles in ((cues.no_words, False), (cues.yes_words, True)) for word in words
             for m in re.finditer(re.escape(word), answer) if m.start() in bounds and m.end() in bounds
             and (len(word) > 1 or _clause_initial(answer, m.start()) or _clause_final(answer, m.end()))
             and not any(a <= m.start() < b for a, b in embedded)]
    # Longest word first at each place (没问题 over 没, 不知道 over 知道), then left to right, no overlaps.
    found.sort(key=lambda f: (f[0], -(f[1] - f[0])))
    hits: list[tuple[int, bool, str]] = []
    taken: list[tuple[int, int]] = []
    for start_at, end_at, word, settles in found:
        if any(a < end_at and start_at < b for a, b in taken):
            continue
        taken.append((start_at, end_at))
        if settles and _rhetorical(answer, start_at):
            continue
        hits.append((start_at, settles and not _negated_before(answer, start_at), word))
    if not hits:
        return None
    index, value, word = min(hits, key=lambda h: h[0])
    return Slot(kind, value, _approx(answer, (index, index + len(word))), word)


#: 八十五个W: W (or w) after a numeral is 万 in chat and speech.
_W = re.compile(r"(?<=[0-9零一二两三四五六七八九十])个?[Ww](?![A-Za-z])")
#: 是 between a digit and a unit is Whisper's homophone of 十 (八是万, 二是年).
_SHI = re.compile(r"(?<=[一二三四五六七八九])是(?=[万千百年号日块元几多来])")


def extract_slot(kind: SlotKind, answer: str, cues: Cues) -> Slot | None:
    """The slot a topic expects, from the answer, or None when the answer does not state it."""
    if kind in ("amount_yuan", "day", "years", "percent"):
        answer = _W.sub("万", _SHI.sub("十", answer))
    if kind == "amount_yuan":
        return extract_amount(answer, cues.identifier_markers)
    if kind == "day":
        return extract_day(answer)
    if kind == "years":
        return extract_years(answer)
    if kind == "percent":
        return extract_percent(answer)
    if kind in ("yes_no", "consent"):
        return extract_yes_no(answer, cues, kind)
    text = answer.strip(" ，。？！,.?!")
    return Slot("text", text, False, text) if len(text) >= 2 else None


def decimal_equal(a: float, b: float, rel: float) -> bool:
    """Equal within a relative tolerance (money and rates are stated rounded)."""
    return abs(Decimal(str(a)) - Decimal(str(b))) <= Decimal(str(rel)) * max(Decimal(str(abs(b))), Decimal(1))
