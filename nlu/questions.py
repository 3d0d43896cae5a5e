"""Which script question(s) an agent utterance asks, by what is asked, robust to ASR homophones.

A topic is recognised by the content words of its question (利率/利息, 还款日/几号扣款, 自住/出租, 收入/工作 …,
`keywords` in `configs/call_script.yaml`), not by a template's frame; each agent's own wording works as long as
it names what it asks for. Frames that say little on their own (您了解这笔贷款吗, 是否同意) are `frames`: they
decide only when no topic's content word is there, so "您知道这笔贷款的利率吗" asks about the rate.

Matching works on toneless pinyin with a few confusions merged (zh/z, ch/c, sh/s, -ng/-n, yue/ye), so 于期 still
reads as 逾期 and 夜公 as 月供. A keyword may have gaps written `…` (每月…几号: the parts in order, a few syllables
apart). Only the clauses of the utterance that are questions (and the statement right before one, which often
carries its subject: "贷款金额是一百万……您清楚了吗？") are searched, so an agent telling the customer the repayment
day is not taken for asking it. A question naming two topics opens both; a figure the agent states in the
question itself ("每月七千九的月供您能按时还上吗") is context, not a second question.

An agent question that asks something outside the script is `OTHER_TOPIC` (see `ask`): its answer is still
assessed for non-answers (silence, refusal, counter-question).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from nlu.script import CallScript, Topic

#: The topic of an agent question that names none of the script's topics.
OTHER_TOPIC = "other"

_CLAUSE = re.compile(r"[^，。？！；?!;]+[，。？！；?!;]?")
#: Words that make a clause ask something in an agent's mouth; 清楚/了解/知道 and requests (麻烦您报一下…) only
#: together with a script topic ("您清楚还款日" without 吗 is still a question), never on their own (an agent's
#: "好的，我知道了").
_QUESTION_WORDS = ("吗", "么", "呢", "多少", "几", "哪", "什么", "是否", "能否", "可否", "有无", "请问",
                    "是不是", "有没有", "能不能", "会不会",
                   "怎么样", "怎样", "还是", "对吗", "对不对", "可以吗", "啥", "谁", "怎么", "为什么", "要不要",
                   "愿不愿意", "同不同意", "知不知道", "清不清楚", "够不够", "行不行", "好不好")
_TOPIC_QUESTION_WORDS = ("清楚", "了解", "知道", "确认", "核实", "核对", "说一下", "报一下", "讲一下", "告诉我",
                         "麻烦", "请您说", "告知", "说下", "核一下", "吧", "想问", "问一下", "问下", "想了解",
                         "了解一下")
_MERGE = (("zh", "z"), ("ch", "c"), ("sh", "s"), ("yue", "ye"), ("ng", "n"))
_INITIAL = re.compile(r"^[bpmfdtnlgkhjqxrzcsyw]")
_GAP = "…"
#: Syllables allowed between the parts of a gapped keyword.
_MAX_GAP = 6
#: A figure stated in the question: digits, a Chinese numeral run with a scale word (五千二), or a percentage.
_STATED_FIGURE = re.compile(
    r"[0-9]+|(?=[零一二两三四五六七八九点]*[十百千万])[零一二两三四五六七八九十百千万点]{2,}|百分之")


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


def _contains(haystack: tuple[str, ...], needle: tuple[frozenset[str], ...], start: int = 0,
              end: int | None = None) -> int:
    """Where `needle` occurs in `haystack[start:end]`, or -1. A keyword of four or more syllables may differ in
    one inner syllable that keeps its initial consonant (几后还款 for 几号还款): Whisper's typical slip on a
    short function word."""
    n = len(needle)
    slack = 1 if n >= 4 else 0
    stop = len(haystack) if end is None else min(end, len(haystack))
    for i in range(start, stop - n + 1):
        misses = 0
        for j, (h, options) in enumerate(zip(haystack[i : i + n], needle, strict=True)):
            if h in options:
                continue
            misses += 1
            # Never the first or last syllable: they carry the word (贷款的情 is not 贷款的钱).
            if misses > slack or j in (0, n - 1) or not any(
                    _initial(o) and _initial(o) == _initial(h) for o in options):
                break
        else:
            return i
    return -1


def _match(haystack: tuple[str, ...], keyword: str, chars: str | None = None) -> tuple[int, int, int] | None:
    """(position, syllables matched, end) of a keyword, gapped (每月…几号) or plain, or None. With `chars` (the
    text the haystack was read from, spaces removed), a two-character part must also share a character with
    the text where it matches: a pure homophone of a short word is too often another word (还好吗 / 号码)."""
    parts = [p for p in keyword.split(_GAP) if p]
    position, cursor, matched = -1, 0, 0
    for k, part in enumerate(parts):
        needle = _keyword_key(part)
        limit = None if k == 0 else cursor + _MAX_GAP + len(needle)
        found = _contains(haystack, needle, cursor, limit)
        while found >= 0 and chars is not None and len(part) <= 2 and not any(
                a == b for a, b in zip(part, chars[found : found + len(part)], strict=False)):
            found = _contains(haystack, needle, found + 1, limit)
        if found < 0:
            return None
        if k == 0:
            position = found
        cursor = found + len(needle)
        matched += len(needle)
    return (position, matched, cursor) if parts else None


def pinyin_key(text: str) -> tuple[str, ...]:
    """The text as merged toneless syllables, for `contains_keyword`."""
    return _key(text)


def contains_keyword(heard: tuple[str, ...], keyword: str) -> bool:
    """Whether `keyword` (plain or gapped) occurs in `heard` (a `pinyin_key`), homophones included."""
    return _match(heard, keyword) is not None


def is_question(clause: str) -> bool:
    """A clause that asks something: a question mark, a question particle or an interrogative word."""
    return "？" in clause or "?" in clause or any(w in clause for w in _QUESTION_WORDS)


def _maybe_question(clause: str) -> bool:
    return is_question(clause) or any(w in clause for w in _TOPIC_QUESTION_WORDS)


def _ascii_breaks(text: str) -> str:
    """ASCII , and . break clauses, except inside a number (3.85%, 1,200)."""
    return re.sub(r"(?<![0-9])[.,]|[.,](?![0-9])", "，", text)


def question_parts(utterance: str) -> tuple[str, str]:
    """(the clauses that ask, the statement clauses right before them) of an agent utterance."""
    clauses = [c.strip() for c in _CLAUSE.findall(_ascii_breaks(utterance)) if c.strip()]
    asking: list[str] = []
    context: list[str] = []
    for i, clause in enumerate(clauses):
        if _maybe_question(clause):
            asking.append(clause)
            if i > 0 and not _maybe_question(clauses[i - 1]):
                context.append(clauses[i - 1])
    return "".join(asking), "".join(context)


def _topics_for(script: CallScript, role: str | None) -> list[Topic]:
    return [t for t in script.topics.values() if not (t.roles and role is not None and role not in t.roles)]


def _find(text: str, topics: list[Topic], frames: bool = False) -> list[tuple[int, int, str]]:
    """(-syllables matched, position, topic id) of each topic named in `text` by its keywords (or frames).

    Where two topics' matches overlap, the one reaching further right wins if it is as long: Chinese puts what
    is asked last (贷了多少年 asks the term, not the amount; 利率是多少年 — 年 misheard — still the rate)."""
    haystack = _key(text)
    chars = "".join(c for c in text if not c.isspace())
    best: list[tuple[int, int, int, str]] = []
    for topic in topics:
        words = topic.frames if frames else topic.keywords
        matches = [m for k in words if (m := _match(haystack, k, chars)) is not None]
        if matches:
            position, length, end = max(matches, key=lambda m: (m[1], -m[0]))
            best.append((position, end, length, topic.id))
    kept = [b for b in best if not any(o is not b and o[0] < b[1] and b[0] < o[1] and o[1] > b[1] and o[2] >= b[2]
                                       for o in best)]
    return [(-length, position, topic_id) for position, _, length, topic_id in kept]


def _states_figure(text: str, topic: Topic) -> bool:
    return topic.slot in ("amount_yuan", "years", "day", "percent") and bool(_STATED_FIGURE.search(text))


def _ranked(text: str, topics: list[Topic], frames: bool = False) -> list[str]:
    found = _find(text, topics, frames)
    if len(found) > 1:
        # Several topics named: those whose figure the agent states are context ("每月七千九的月供，能按时还上
        # 吗" asks about repayment, not the monthly payment) when another topic is what is asked.
        by_id = {t.id: t for t in topics}
        asked = [f for f in found if not _states_figure(text, by_id[f[2]])]
        found = asked or sorted(found)[:1]
    # The most specific match first (还款有没有压力 over 月还款), then the order asked.
    return [topic_id for _, _, topic_id in sorted(found)]


def detect_topics(utterance: str, script: CallScript, role: str | None = None) -> list[str]:
    """Script topic ids asked by an agent utterance, most specific first; [] for a non-question or a question
    about something outside the script.

    The question clauses decide; the statement before a question counts only when the question itself names
    no topic ("贷款金额是一百万……您清楚了吗？"). `role` (borrower, coborrower, guarantor) limits role topics.
    """
    asking, context = question_parts(utterance)
    if not asking:
        return []
    topics = _topics_for(script, role)
    # Content words first, in the question and then in the statement before it (您作为担保人，清楚并同意承担
    # 连带责任吗？); generic frames only when neither names a topic.
    return (_ranked(asking, topics) or _ranked(context, topics) or _ranked(asking, topics, frames=True)
            or _ranked(context, topics, frames=True))


@dataclass(frozen=True, slots=True)
class Asked:
    """What an agent utterance asks: the script topics, or `OTHER_TOPIC` for a question outside the script;
    empty for a statement."""

    topics: tuple[str, ...]
    #: The agent asks whether the customer can talk, or is the right person (`CallScript.opening`): a question
    #: with no topic, not assessed.
    opening: bool = False

    @property
    def is_question(self) -> bool:
        return bool(self.topics)


def ask(utterance: str, script: CallScript, role: str | None = None) -> Asked:
    """The topics an agent utterance asks, `(OTHER_TOPIC,)` for a real question that names no script topic
    (您最近身体还好吗？), `()` for a statement. Statements with 知道/清楚 alone ("好的，我知道了") are not
    questions."""
    topics = detect_topics(utterance, script, role)
    if topics:
        return Asked(tuple(topics))
    clauses = [c for c in _CLAUSE.findall(_ascii_breaks(utterance)) if c.strip()]
    asking = [c for c in clauses if is_question(c)]
    if asking and script.opening and all(_names_any(c, script.opening) for c in asking):
        return Asked((), opening=True)  # 您好，…方便吗？ / 请问是张先生吗？: before the script, nothing to assess
    return Asked((OTHER_TOPIC,) if asking else ())


def _names_any(clause: str, phrases: tuple[str, ...]) -> bool:
    haystack = _key(clause)
    chars = "".join(c for c in clause if not c.isspace())
    return any(_match(haystack, p, chars) is not None for p in phrases)
