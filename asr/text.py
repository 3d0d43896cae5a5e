"""Pure text clean-up applied to every Whisper result: Simplified script, spacing, hallucination removal."""

from __future__ import annotations

import re
from functools import lru_cache

_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_SPACE_BETWEEN_CJK = re.compile(rf"(?<=[{_CJK}，。？！、：；])\s+(?=[{_CJK}，。？！、：；])")
_PUNCT_OR_SPACE = re.compile(r"[\s\W_]+", re.UNICODE)
#: A fragment of 1-8 characters repeated four or more times in a row, a classic decoder loop.
_REPEAT = re.compile(r"(.{1,8}?)\1{3,}")
#: Half-width punctuation Whisper sometimes emits in Chinese text, mapped to the full-width forms used here.
_FULL_WIDTH = str.maketrans({",": "，", "?": "？", "!": "！", ":": "：", ";": "；"})
_FULL_WIDTH_CONTEXT = re.compile(rf"(?<=[{_CJK}])[,?!:;]|[,?!:;](?=[{_CJK}])")


@lru_cache(maxsize=1)
def _t2s():  # noqa: ANN202 - opencc ships no type hints
    import opencc

    return opencc.OpenCC("t2s")


def to_simplified(text: str) -> str:
    """Convert Traditional Chinese characters to Simplified (OpenCC t2s); other text passes unchanged."""
    return str(_t2s().convert(text)) if text else text


def tidy(text: str) -> str:
    """Simplified script, no spaces between Chinese characters, full-width punctuation next to Chinese."""
    # A byte-level BPE token cut mid-character decodes to U+FFFD; it is never speech.
    text = to_simplified(text.replace("\ufffd", "").strip())
    text = _FULL_WIDTH_CONTEXT.sub(lambda m: m.group(0).translate(_FULL_WIDTH), text)
    return _SPACE_BETWEEN_CJK.sub("", text)


def collapse_repeats(text: str) -> str:
    """Replace a fragment looping four or more times by two copies (people do say 好的好的, never eight times)."""
    return _REPEAT.sub(lambda m: m.group(1) * 2, text)


def bare(text: str) -> str:
    """Text without punctuation or spaces, for comparisons."""
    return _PUNCT_OR_SPACE.sub("", text)


def remove_hallucinations(text: str, phrases: tuple[str, ...], prompt: str | None = None) -> str:
    """Strip known silence/noise hallucinations from `text`; return "" when nothing real is left.

    `phrases` are compared without punctuation and longest first, so that a short phrase cannot cut a longer
    one apart. An utterance that is only an echo of the decoding prompt is also dropped: Whisper repeats its
    prompt when the audio carries no speech.
    """
    kept = text
    for phrase in sorted(phrases, key=len, reverse=True):
        if phrase and phrase in kept:
            kept = kept.replace(phrase, "")
    core = bare(kept)
    if not core:
        return ""
    if prompt and len(core) >= 4 and core in bare(prompt):
        return ""
    # Removing a phrase can leave a dangling separator ("我记不清了，谢谢观看" -> "我记不清了，").
    return kept.strip(" ，,、") if kept != text else kept
