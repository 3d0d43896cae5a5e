"""Homophone correction towards a domain lexicon (contextual biasing after decoding).

Whisper base often hears a finance word right and writes a homophone: 理贼 for 理财, 阳老 for 养老, 于期 for
逾期. Given the lexicon of the call domain (`configs/asr.yaml`), a stretch of the transcript whose pinyin, tones
ignored, equals a lexicon term's is rewritten as that term, unless the stretch is itself a common word of the
language (预期 is not rewritten to 逾期), nor a stretch that starts inside one: a corrector must not invent
errors in ordinary speech.

Each transcript character is read with its most common reading only, and each term with its reading in context
(phrase-aware); matching rare readings of polyphones (台 as yí) rewrote ordinary phrases in measurement.

The algorithm is pure: the pinyin functions and the common-word list are passed in by `load_corrector`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]+")

CharReading = Callable[[str], str | None]
TermReading = Callable[[str], tuple[str, ...] | None]


@lru_cache(maxsize=65536)
def char_reading(ch: str) -> str | None:
    """Most common toneless pinyin of one Chinese character; None for anything else."""
    if not _CJK.fullmatch(ch):
        return None
    from pypinyin import Style, lazy_pinyin

    reading = lazy_pinyin(ch, style=Style.NORMAL, errors="ignore")
    return reading[0] if reading and reading[0].isascii() else None


def term_reading(term: str) -> tuple[str, ...] | None:
    """Toneless pinyin of a term read as a phrase (so 还款 reads as the phrase dictionary has it)."""
    if not _CJK.fullmatch(term):
        return None
    from pypinyin import Style, lazy_pinyin

    reading = lazy_pinyin(term, style=Style.NORMAL, errors="ignore")
    return tuple(reading) if len(reading) == len(term) and all(r.isascii() for r in reading) else None


@dataclass(frozen=True)
class LexiconCorrector:
    """Rewrites homophones of lexicon terms; see the module docstring for the rules."""

    terms: tuple[str, ...]
    common_words: frozenset[str]
    read_char: CharReading = char_reading
    read_term: TermReading = term_reading
    _index: dict[int, dict[tuple[str, ...], set[str]]] = field(default_factory=dict, init=False, repr=False,
                                                                compare=False)

    def __post_init__(self) -> None:
        index: dict[int, dict[tuple[str, ...], set[str]]] = {}
        for term in set(self.terms):
            if len(term) < 2:
                continue
            for key in {self.read_term(term), self._key(term)}:
                if key is not None:
                    index.setdefault(len(term), {}).setdefault(key, set()).add(term)
        object.__setattr__(self, "_index", index)

    def _key(self, stretch: str) -> tuple[str, ...] | None:
        readings = tuple(self.read_char(c) for c in stretch)
        return None if any(r is None for r in readings) else readings  # type: ignore[return-value]

    def correct(self, text: str) -> str:
        """`text` with homophones of lexicon terms replaced by the terms (longest match first)."""
        out: list[str] = []
        i = 0
        while i < len(text):
            replacement = self._match_at(text, i)
            out.append(replacement or text[i])
            i += len(replacement) if replacement else 1
        return "".join(out)

    def _match_at(self, text: str, i: int) -> str | None:
        for length in sorted(self._index, reverse=True):
            stretch = text[i : i + length]
            if len(stretch) < length:
                continue
            key = self._key(stretch)
            terms = self._index[length].get(key) if key is not None else None
            if not terms:
                continue
            if stretch in terms:
                return stretch  # already right: keep it, and do not let a shorter term cut into it
            if stretch in self.common_words or len(terms) > 1:
                continue  # an ordinary word, or ambiguous between two terms: leave it as heard
            if i > 0 and text[i - 1 : i + 1] in self.common_words:
                continue  # it would split a word: 没有于期 is 没有 + 逾期, not 没 + 犹豫期
            return next(iter(terms))
        return None


def load_common_words(min_frequency: int = 100) -> frozenset[str]:
    """Multi-character words of general Mandarin frequent enough that they are probably what was said.

    Taken from jieba's word list (MIT), which ships with its frequencies.
    """
    import jieba

    path = os.path.join(os.path.dirname(jieba.__file__), "dict.txt")
    words: set[str] = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split(" ")
            if len(parts) >= 2 and len(parts[0]) >= 2 and int(parts[1]) >= min_frequency:
                words.add(parts[0])
    return frozenset(words)


def load_corrector(terms: Iterable[str], common_words: Iterable[str] | None = None) -> LexiconCorrector:
    """A corrector for `terms`, guarding jieba's common words (or the given ones) against rewriting."""
    terms = tuple(terms)
    guard = frozenset(common_words) if common_words is not None else load_common_words()
    # A lexicon term is never guarded against itself.
    return LexiconCorrector(terms=terms, common_words=guard - set(terms))
