"""Character error rate as the benchmarks and the tests score it: one measure, kept here so that neither the
benchmarks nor the tests import the other.

Both sides are normalised the same way before comparison: Traditional to Simplified (OpenCC t2s), punctuation,
spaces and speaker tags removed, Latin letters lower-cased, and numbers compared as values (五万, 5万 and 50000
are all "50000"), so the score measures recognition, not formatting.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from asr.text import bare, to_simplified
from nlu.numbers import canonical_numbers

#: "A：" / "B:" speaker tags in conversational references are annotation, not speech.
_SPEAKER_TAG = re.compile(r"(?:^|(?<=\s))[A-Z][：:]")
_FILLER_MARKS = re.compile(r"[…\u2026]+")
#: "P to P" is how P2P is said; the letter-"to"-letter form and the digit form are the same word.
_LETTER_TO_LETTER = re.compile(r"(?<=[a-z])\s*to\s*(?=[a-z])")


def normalise_for_cer(text: str) -> str:
    """The text as scored: Simplified, no punctuation/space/speaker tags, lower-case, numbers as values."""
    text = _SPEAKER_TAG.sub(" ", text)
    text = _FILLER_MARKS.sub(" ", text)
    text = to_simplified(text).lower()
    text = _LETTER_TO_LETTER.sub("2", text)
    text = canonical_numbers(text)
    return bare(text)


def edit_distance(ref: str, hyp: str) -> int:
    """Levenshtein distance between two strings (unit costs)."""
    if len(ref) < len(hyp):
        ref, hyp = hyp, ref
    previous = list(range(len(hyp) + 1))
    for i, rc in enumerate(ref, 1):
        current = [i]
        for j, hc in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (rc != hc)))
        previous = current
    return previous[-1]


@dataclass(frozen=True, slots=True)
class CerScore:
    """Corpus-level CER: total character edits over total reference characters."""

    edits: int
    ref_chars: int

    @property
    def cer(self) -> float:
        return self.edits / self.ref_chars if self.ref_chars else 0.0


def cer(reference: str, hypothesis: str) -> float:
    """CER of one hypothesis against one reference, both normalised with `normalise_for_cer`."""
    return corpus_cer([(reference, hypothesis)]).cer


def corpus_cer(pairs: Iterable[tuple[str, str]]) -> CerScore:
    """Pooled CER over (reference, hypothesis) pairs."""
    edits = chars = 0
    for reference, hypothesis in pairs:
        ref = normalise_for_cer(reference)
        edits += edit_distance(ref, normalise_for_cer(hypothesis))
        chars += len(ref)
    return CerScore(edits, chars)
