"""A transcript written out for people and players: one joined text, SubRip (`.srt`) and WebVTT (`.vtt`).

Pure functions over utterances in time order; the caller decides what text they carry (redacted or not).
"""

from __future__ import annotations

from collections.abc import Sequence

from asr.types import Utterance

#: Full-width sentence punctuation: Chinese puts no space after it.
_WIDE_PUNCTUATION = frozenset("，。？！、：；…")


def timestamp(seconds: float, decimal_marker: str = ",") -> str:
    """`HH:MM:SS,mmm` (SubRip) or, with `decimal_marker="."`, `HH:MM:SS.mmm` (WebVTT); negative times are 0."""
    total_ms = max(0, round(seconds * 1000))
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, ms = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_marker}{ms:03d}"


def joined_text(texts: Sequence[str]) -> str:
    """One text from utterance texts in order: a space between two, except after full-width punctuation, so the
    pause between utterances stays visible without inventing punctuation the recogniser did not write."""
    out = ""
    for text in texts:
        text = text.strip()
        if not text:
            continue
        if out and out[-1] not in _WIDE_PUNCTUATION:
            out += " "
        out += text
    return out


def _cue_text(text: str) -> str:
    # A blank line ends a cue and "-->" starts a timing line in both formats: neither may appear in cue text.
    return " ".join(text.split()).replace("-->", "->")


def srt(utterances: Sequence[Utterance]) -> str:
    """SubRip: numbered cues from 1, `start --> end`, the text, a blank line after each."""
    return "".join(
        f"{n}\n{timestamp(u.start_s)} --> {timestamp(u.end_s)}\n{_cue_text(u.text)}\n\n"
        for n, u in enumerate((u for u in utterances if u.text.strip()), 1)
    )


def webvtt(utterances: Sequence[Utterance]) -> str:
    """WebVTT: the `WEBVTT` header, then one cue per utterance; `&`, `<` and `>` escaped as the format requires."""
    cues = "".join(
        f"{timestamp(u.start_s, '.')} --> {timestamp(u.end_s, '.')}\n{_escape_vtt(_cue_text(u.text))}\n\n"
        for u in utterances if u.text.strip()
    )
    return f"WEBVTT\n\n{cues}"


def _escape_vtt(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
