"""Which script question(s) an agent utterance asks, robust to ASR homophones.

Matching works on toneless pinyin with a few confusions merged (zh/z, ch/c, sh/s, -ng/-n, yue/ye), so 于期 still
reads as 逾期 and 夜公 as 月供. Only the clauses of the utterance that are questions (and the statement right
before one, which often carries its subject: "贷款金额是一百万……您清楚了吗？") are searched, so an agent
telling the customer the repayment day is not taken for asking it.
"""

from __future__ import annotations

import re
from functools import lru_cache

from nlu.script import CallScript

_CLAUSE = re.compile(r"[^，。？！；,.?!;]+[，。？！；,.?!;]?")
_QUESTION_WORDS = ("吗", "么", "呢", "多少", "几", "哪", "什么", "是否", "是不是", "有没有", "能不能", "会不会",
                   "怎么样", "怎样", "还是", "清楚", "了解", "知道", "对吗", "对不对", "可以吗")
_MERGE = (("zh", "z"), ("ch", "c"), ("sh", "s"), ("yue", "ye"), ("ng", "n"))
_INITIAL = re.compile(r"^[bpmfdtnlgkhjqxrzcsyw]")


@lru_cache(maxsize=65536)
def _syllable(ch: str) -> str:
    from pypinyin import Style, lazy_pinyin

    if not ("\u4e00" <= ch <= "\u9fff"):
        return ch
    return _merge(lazy_pinyin(ch, style=Style.NORMAL)[0])


def _merge(reading: str) -> str:
    for a, b in _MERGE:
        reading = reading.replace(a, b)
    return reading


def _key(text: str) -> tuple[str, ...]:
    return tuple(_syllable(c) for c in text if not c.isspace())


@lru_cache(maxsize=4096)
def _keyword_key(keyword: str) -> tuple[frozenset[str], ...]:
    """Readings of each keyword character: as read in the keyword (还款 is huan kuan) and on its own (还 is
    hai), so both the word and a homophone-level ASR slip match. Not every dictionary reading: rare ones make
    false matches (年 has a rare reading ning, which would make 您现 match 年限)."""
    from pypinyin import Style, lazy_pinyin

    chars = [c for c in keyword if not c.isspace()]
    in_word = lazy_pinyin("".join(chars), style=Style.NORMAL)
    if len(in_word) != len(chars):  # a non-Chinese run came back as one item: fall back to characters
        in_word = [_syllable(c) for c in chars]
    return tuple(frozenset({_merge(w) if "\u4e00" <= c <= "\u9fff" else c, _syllable(c)})
                 for c, w in zip(chars, in_word, strict=True))


def _initial(syllable: str) -> str:
    m = _INITIAL.match(syllable)
    return m.group(0) if m else ""


def _contains(haystack: tuple[str, ...], needle: tuple[frozenset[str], ...]) -> int:
    """Where `needle` occurs in `haystack`, or -1. A keyword of four or more syllables may differ in one syllable
    that keeps its initial consonant (几后还款 for 几号还款): Whisper's typical slip on a short function word."""
    n = len(needle)
    slack = 1 if n >= 4 else 0
    for i in range(len(haystack) - n + 1):
        misses = 0
        for h, options in zip(haystack[i : i + n], needle, strict=True):
            if h in options:
                continue
            misses += 1
            if misses > slack or not any(_initial(o) and _initial(o) == _initial(h) for o in options):
                break
        else:
            return i
    return -1


def is_question(clause: str) -> bool:
    """A clause that asks something: a question mark, a question particle or an interrogative word."""
    return "？" in clause or "?" in clause or any(w in clause for w in _QUESTION_WORDS)


def question_parts(utterance: str) -> tuple[str, str]:
    """(the clauses that ask, the statement clauses right before them) of an agent utterance."""
    clauses = [c.strip() for c in _CLAUSE.findall(utterance) if c.strip()]
    asking: list[str] = []
    context: list[str] = []
    for i, clause in enumerate(clauses):
        if is_question(clause):
            asking.append(clause)
            if i > 0 and not is_question(clauses[i - 1]):
                context.append(clauses[i - 1])
    return "".join(asking), "".join(context)


def _find(text: str, script: CallScript, role: str | None) -> list[str]:
    haystack = _key(text)
    found: list[tuple[int, int, str]] = []
    for topic in script.topics.values():
        if topic.roles and role is not None and role not in topic.roles:
            continue
        matches = [(len(k), p) for k in topic.keywords if (p := _contains(haystack, _keyword_key(k))) >= 0]
        if matches:
            length, position = max(matches, key=lambda m: (m[0], -m[1]))
            found.append((-length, position, topic.id))
    # The most specific match first (还款有没有压力 over 月还款), then the order asked.
    return [topic_id for _, _, topic_id in sorted(found)]


def detect_topics(utterance: str, script: CallScript, role: str | None = None) -> list[str]:
    """Topic ids asked by an agent utterance, in the order asked; [] for a non-question.

    The question clauses decide; the statement before a question counts only when the question itself names
    no topic ("贷款金额是一百万……您清楚了吗？"). `role` (borrower, coborrower, guarantor) limits role topics.
    """
    asking, context = question_parts(utterance)
    if not asking:
        return []
    return _find(asking, script, role) or _find(context, script, role)
