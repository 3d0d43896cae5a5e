"""Polar questions answered the way Mandarin answers them: by taking up the question's predicate.

Mandarin has no all-purpose "yes": a yes/no question is answered by echoing its verb, with or without negation
and aspect. 还了吗？ is answered 还了 / 没还 / 早还上了; 有没有逾期？ is answered 没逾期过; 您知道吗？ 晓得. A verb
of the same act answers as well (扣了, 转进去了 for a repayment). This module is that one piece of grammar, over
the question's own words:

- `polar_question` reads the predicates a polar question asks about: A-not-A (有没有逾期, 还没还, 同不同意),
  V了没有 / V了吗 / V过吗, a 吗-question's verbs, a tag question (…，对吧？) — and nothing for a question that
  asks for a figure or a choice (多少, 几号, 哪, 还是), whose answer a yes/no does not give;
- `echo` finds one of those predicates (or a verb of the same act, `acts` in configs/cues.yaml) taken up by the
  answer as a predicate of its own: a verb of two or more characters as a whole word, a one-character verb only
  with an aspect or a complement after it (还了, 扣走了, 转进去) or closing its clause, so the adverb 还 (还是,
  还好) or a verb inside another word is no echo. A negation before it (没, 不, 未, with 还/也/都/从来 between)
  makes it a no. An echo in a clause asked back (还了吗？) is none.

A hedge (应该还了吧) is not this module's business: the assessment's cue lexicons see it and the echo then gives
no clear yes/no. Pure functions; jieba's segmentation and part-of-speech tags are the only resource.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import lru_cache

from nlu.slots import A_NOT_A, word_boundaries

#: Question words that make a question ask for a figure, a place, a choice: no yes/no answers it.
_WH = re.compile(r"多少|几|哪|什么|啥|怎么|怎样|谁|为何|为什么|还是|多久|多长|多大|多高|好多")
#: V了没有 / V了吗 / V过吗 / V了没 / V没有？ : the verb before the aspect marker.
_ASPECT_QUESTION = re.compile(r"([\u4e00-\u9fff]{1,2}?)(?:[了过](?:没有|没|吗|么|嘛|不)|没有?[？?]?$)")
#: Tag questions: the clause before asks.
_TAG = re.compile(r"[，,]\s*(?:对吧|是吧|对不对|是不是|对吗|是吗|没错吧|没错吗|好吗|行吗|可以吗)[？?。]?$")
#: 吗, 没有 and a presumptive 吧 (都没变吧？: asks for confirmation) end a yes/no question.
_POLAR_END = re.compile(r"(?:吗|么|嘛|没有|没|吧)[？?。]?$|[？?]$")
#: Assent particles: on their own they answer a yes/no question yes (对对对, 嗯嗯, 嗯呐, 是嘞).
_ASSENT = re.compile(r"^(?:[嗯对是好行中]|嗯呐|是嘞|对头|对滴|是滴|没错|可不|可不是)+(?:[的啊呀嘛哈呢嘞滴]*)$")
_CLAUSE_BREAK = "，。！？；,.!?;…~ "
#: What may stand between a negation and the verb it negates (还没还, 从来没逾期过, 也没扣, 都没变).
_NEGATION = re.compile(r"(?:没有|没|不|未|别)(?:[还也都再]|从来|一直|根本|并|曾)?(?:[会能要]|可能)?$")
#: After a one-character verb: aspect, result and direction complements, or the end of its clause.
_COMPLEMENT = re.compile(r"^(?:了|过|上|完|好|掉|走|清|到|进|出|回|下|起|的|着|去|来)")
#: Modal and copular verbs: they carry the question's polarity, not its content (the yes/no lexicon answers
#: them: 能 / 不能, 是 / 不是); the content verb after them is the predicate.
_MODALS = frozenset(("是", "有", "能", "会", "要", "可", "肯", "敢", "想", "该", "得", "用", "在", "可能", "可以",
                     "应该", "需要", "能够", "会不会", "是否", "能否", "有没有"))
#: Part-of-speech tags (jieba) of words that can predicate: verbs, adjectives, their noun-like forms.
#: Nominal uses (vn 工作, an 困难) are left out: 工作还行 takes up a noun, not the predicate.
_PREDICATE_TAGS = ("v", "a", "vd", "ad", "vi")


@dataclass(frozen=True, slots=True)
class PolarQuestion:
    """The predicates a yes/no question asks about (还, 逾期, 知道), as its own words give them."""

    predicates: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Echo:
    """An answer's taking up of the question's predicate: what it said and whether it says yes."""

    text: str
    value: bool


def _tagged(text: str) -> list[tuple[str, str]]:
    import jieba
    import jieba.posseg

    jieba.setLogLevel(logging.WARNING)  # its dictionary load otherwise prints to stderr
    return [(p.word, p.flag) for p in jieba.posseg.lcut(text)]


@lru_cache(maxsize=4096)
def polar_question(question: str) -> PolarQuestion | None:
    """The predicates of a yes/no question, or None when the question asks for something a yes/no cannot give
    (a figure, a day, a choice) or is no polar question at all."""
    text = question.strip()
    clauses = [c for c in re.split(r"(?<=[，。？！；,.!?;])", text) if c.strip()]
    if not clauses:
        return None
    # The asking clause: the last one with a question mark or particle (您好，…，您知道这笔贷款吗？).
    asking = next((c for c in reversed(clauses) if _POLAR_END.search(c.strip()) or A_NOT_A.search(c)), None)
    if asking is None:
        return None
    tag = _TAG.search(asking)
    if tag is not None:
        index = clauses.index(asking)
        head = asking[: tag.start()].strip()
        asking = head or (clauses[index - 1] if index > 0 else "")
    # A figure or a choice asked anywhere in the question (金额是多少，您清楚吗？) is what a yes/no cannot give.
    if not asking or _WH.search(text):
        return None
    predicates: list[str] = []
    for m in A_NOT_A.finditer(asking):
        verb, second = m.group(1), m.group(3)
        if verb in _MODALS:  # 有没有逾期, 会不会出现困难: the first content word after the modal asks
            predicates += _first_content(asking[m.end() - len(second):])
        else:
            predicates.append(verb + second if second and _is_word(verb + second) else verb)
    if (aspect := _ASPECT_QUESTION.search(asking.rstrip("？?。 "))) is not None:
        # The verb right before the aspect marker: two characters where they are one word (处理了吗), else one
        # (月供扣了没有: 扣).
        before = asking[max(0, aspect.end(1) - 2):aspect.end(1)]
        predicates.append(before if len(before) == 2 and _is_word(before) else before[-1])
    if not predicates and (tag is not None or _POLAR_END.search(asking.strip())):
        # A 吗-question or a tag question: its verbs. Only where A-not-A and V了没有 named none: 有没有可能出现
        # 还款困难 asks whether difficulty comes, and 会按时还的 takes up no part of that.
        predicates += _content_verbs(asking)
    unique = tuple(dict.fromkeys(p for p in predicates if p and p not in _MODALS))
    return PolarQuestion(unique) if unique or tag is not None or A_NOT_A.search(asking) else None


@lru_cache(maxsize=8192)
def _is_word(text: str) -> bool:
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return jieba.lcut(text, HMM=False) == [text]  # a dictionary word, not a guess


#: Part-of-speech tags of words that carry no content of their own (particles, pronouns, prepositions, ...).
_FUNCTION_TAGS = ("x", "u", "r", "p", "c", "y", "e", "o", "m", "q", "d")


def _first_content(clause: str) -> list[str]:
    """The first content word of a clause, modals skipped (有没有逾期过: 逾期; 有没有可能出现困难: 出现)."""
    for word, flag in _tagged(clause):
        if word not in _MODALS and not flag.startswith(_FUNCTION_TAGS) and re.match(r"[\u4e00-\u9fff]", word):
            return [word]
    return []


def _content_verbs(clause: str) -> list[str]:
    """The verbs and adjectives of a clause that carry content (not modals, not the copula)."""
    return [w for w, flag in _tagged(clause) if flag in _PREDICATE_TAGS and w not in _MODALS
            and not w.startswith(("请问", "麻烦"))]


def echo(answer: str, question: PolarQuestion, acts: tuple[tuple[str, ...], ...] = ()) -> Echo | None:
    """The first place where the answer takes up the question's predicate (or a verb of the same act) as a
    predicate of its own, with its polarity; None when it does not."""
    if not question.predicates:
        return None
    # What takes the predicate up: the predicate, the head of a two-character one (变 for 变化, 还 for 还款),
    # and every verb of an act it belongs to.
    vocabulary = set(question.predicates)
    for group in acts:
        if any(p in group or p[0] in group for p in question.predicates):
            vocabulary.update(group)
    vocabulary |= {p[0] for p in question.predicates if len(p) >= 2}
    bounds = word_boundaries(answer)
    # 存没存进去我不知道, 有没有钱不清楚: a question embedded in the answer settles nothing.
    # 还没还呢 closing its clause is "not yet", a statement.
    embedded = {i for m in A_NOT_A.finditer(answer) if not _closes_clause(answer, m.end())
                for i in range(m.start(), m.end())}
    found: list[Echo] = []
    for start in range(len(answer)):
        if start not in bounds or start in embedded:
            continue
        for word in sorted((w for w in vocabulary if answer.startswith(w, start)), key=len, reverse=True):
            end = start + len(word)
            rest = answer[end:]
            if len(word) == 1 and not (_COMPLEMENT.match(rest) or not rest or rest[0] in _CLAUSE_BREAK
                                       or rest[0] in "吗呢吧啊呀嘛"):
                continue  # 还是, 还好, 扣钱: an adverb, or a verb inside another phrase
            if len(word) >= 2 and end not in bounds and not _COMPLEMENT.match(rest):
                continue
            clause_end = min([i for c in "，。！？；,.!?;…~" if (i := answer.find(c, end)) >= 0] or [len(answer)])
            clause = answer[end:clause_end + 1]
            if re.search(r"[？?]|[吗嘛][。，]?$", clause):
                continue  # 还了吗？: asked back, no answer
            lead = _NEGATION.search(answer[max(0, start - 6):start])
            negated = lead is not None
            complement = _COMPLEMENT.match(rest)
            found.append(Echo((lead.group(0) if lead else "") + word + (complement.group(0) if complement else ""),
                              not negated))
            break
    # 有时候住，有时候不住: taken up both ways, the answer settles nothing.
    if not found or len({e.value for e in found}) > 1:
        return None
    return found[0]


def _closes_clause(text: str, end: int) -> bool:
    return bool(re.match(r"^[呢啊呀嘛]?(?:[，。！,.!;；…~]|$)", text[end:]))


def assent(answer: str) -> Echo | None:
    """An answer made only of assent particles (对对对, 嗯嗯, 嗯呐, 是嘞): yes, to a question that asks for one."""
    bare = re.sub(r"[\s，。！,.!~…]+", "", answer)
    return Echo(bare, True) if bare and _ASSENT.match(bare) else None
