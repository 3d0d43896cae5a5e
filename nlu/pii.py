"""Redaction of Mandarin personal data in ASR text: ID, phone, landline and bank card numbers, and the names and
addresses of the loan file, replaced by typed masks that keep the text readable for the assessment.

Numbers are read digit by digit in Arabic digits, Chinese numerals (一三八, 幺三八, 两) and mixes, with the spaces,
commas and dashes people put between groups; a run is classified by its shape: 18 characters with a valid
birth date or check digit is a resident ID, 11 digits starting 13-19 a mobile, 0 + area code + 7-8 digits a
landline, 16-19 digits passing Luhn a bank card. Digits said right after an identifier word (身份证后四位,
尾号, 卡号) are masked whatever their length. Look-alikes stay: amounts (八十万, 4200元), dates, rates, terms.

`Redactor` is stateful per channel so that a number split across utterances ("一三九零一二" … "三四五六七") is
still caught: a long digit run at the end of an utterance is masked on its own (it may be the start of a
number), and the next utterance's leading digits are judged together with it. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

MASKS = {
    "id": "[身份证号]",
    "mobile": "[手机号]",
    "landline": "[电话号码]",
    "card": "[银行卡号]",
    "number": "[号码]",
    "name": "[姓名]",
    "address": "[地址]",
}

_DIGIT = {"0": "0", "零": "0", "〇": "0", "洞": "0", "1": "1", "一": "1", "幺": "1", "么": "1", "2": "2", "二": "2",
          "两": "2", "3": "3", "三": "3", "4": "4", "四": "4", "5": "5", "五": "5", "6": "6", "六": "6", "7": "7",
          "七": "7", "8": "8", "八": "8", "9": "9", "九": "9", "X": "X", "x": "X"}
_FULLWIDTH = str.maketrans("０１２３４５６７８９Ｘｘ", "0123456789XX")


def normalise_width(text: str) -> str:
    """Full-width digits and X as ASCII: the text the redactor's spans index into."""
    return text.translate(_FULLWIDTH)
#: Characters allowed between the digits of one number (people say numbers in groups).
_SEPARATORS = set(" \u3000-—–_，,、.")
#: After a digit run these make it a quantity, not an identifier (八十万 is not in a run at all; 4200元 is).
_UNITS = ("元", "块", "万", "千", "百", "十", "亿", "年", "月", "日", "号", "岁", "%", "％", "个", "期", "次", "天",
          "点", "分", "平", "米", "倍", "成")
#: Identifier words: digits said right after them are personal data whatever their length.
_IDENTIFIER = re.compile(r"(身份证(?:号码?)?(?:的)?(?:后|最后)?[四六八]?位?(?:数字)?|尾号|卡号|银行卡(?:号)?|"
                         r"手机(?:号码?)?|电话(?:号码?)?|新号码?|号码|联系方式)[是为：:\s]*$")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
#: After the agent asks for an identifier, the customer's digits within this many seconds are that identifier.
IDENTIFIER_ANSWER_S = 15.0
#: A trailing run this long may be the first part of a number that goes on in the next utterance.
HOLD_DIGITS = 6


@dataclass(frozen=True, slots=True)
class Span:
    """A masked stretch of the original text."""

    start: int
    end: int
    kind: str


def id_check_character(body: str) -> str:
    """The GB 11643 check character (0-9 or X) of the first 17 digits of a resident ID number."""
    total = sum(int(d) * w for d, w in zip(body, _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11]


def id_checksum_ok(digits: str) -> bool:
    """Whether an 18-character resident ID number ends with its GB 11643 check character."""
    if len(digits) != 18 or not digits[:17].isdigit():
        return False
    return id_check_character(digits[:17]) == digits[17].upper()


def _plausible_birth(digits: str) -> bool:
    year, month, day = int(digits[6:10]), int(digits[10:12]), int(digits[12:14])
    return 1900 <= year <= 2030 and 1 <= month <= 12 and 1 <= day <= 31


def luhn_ok(digits: str) -> bool:
    """The Luhn check of a bank card number."""
    if not digits.isdigit():
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d)
        if i % 2 == 1:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def classify(digits: str) -> str | None:
    """The kind of personal number a digit string is, or None for a look-alike."""
    n = len(digits)
    if n == 18 and digits[:17].isdigit() and (id_checksum_ok(digits) or _plausible_birth(digits)):
        return "id"
    if "X" in digits:
        return None
    if n == 11 and digits[0] == "1" and digits[1] in "3456789":
        return "mobile"
    if 16 <= n <= 19 and luhn_ok(digits):
        return "card"
    if 10 <= n <= 12 and digits[0] == "0" and digits[1] != "0":
        return "landline"
    if n == 13 and digits.startswith("86") and digits[2] == "1":
        return "mobile"  # +86 mobile
    if 15 <= n <= 19:
        return "card"  # a long account-like number without a valid check is still not something to show
    return None


def _public_number(digits: str) -> bool:
    """Numbers that identify no person: a company hotline (400/800), a compact date (20230515)."""
    if len(digits) == 10 and digits[:3] in ("400", "800"):
        return True
    if len(digits) == 8 and digits[:2] in ("19", "20"):
        month, day = int(digits[4:6]), int(digits[6:8])
        return 1 <= month <= 12 and 1 <= day <= 31
    return False


@dataclass(frozen=True, slots=True)
class _Run:
    start: int
    end: int
    digits: str


def _runs(text: str) -> list[_Run]:
    """Maximal digit runs (Arabic or Chinese digits), allowing single separators between groups."""
    runs: list[_Run] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] not in _DIGIT or (text[i] in "两么" and not _next_is_digit(text, i)):
            i += 1
            continue
        if text[i] in "Xx":
            i += 1
            continue
        start, j = i, i
        digits: list[str] = []
        end = i
        while j < n:
            ch = text[j]
            if ch in _DIGIT and not (ch in "Xx" and len(digits) != 17):
                digits.append(_DIGIT[ch])
                end = j + 1
                j += 1
            elif ch in _SEPARATORS and j + 1 < n and text[j + 1] in _DIGIT and text[j + 1] not in "Xx":
                if ch == "." and len(digits) <= 3:
                    break  # 3.55: a decimal, not a grouped number
                j += 1
            else:
                break
        runs.append(_Run(start, end, "".join(digits)))
        i = max(end, i + 1)
    return runs


def _next_is_digit(text: str, i: int) -> bool:
    """两 and 么 are digits only inside a run of digits (两千 is two thousand, 什么 is not a digit)."""
    prev = text[i - 1] if i > 0 else ""
    nxt = text[i + 1] if i + 1 < len(text) else ""
    return (prev in _DIGIT and prev not in "两么") or (nxt in _DIGIT and nxt not in "两么")


def _quantity_after(text: str, end: int) -> bool:
    rest = text[end:end + 1]
    return bool(rest) and rest in _UNITS


#: A card named after its digits: "……8866的工资卡", "8866那张卡".
_CARD_AFTER = re.compile(r"(的|那张|这张)[^，。,.！？]{0,4}卡")
#: Identifier words by the kind of number that follows them, matched also as ASR homophones (为号 for 尾号).
_IDENTIFIER_WORDS = {"id": ("身份证", "证件号", "后四位", "后六位"), "card": ("尾号", "卡号", "银行卡", "账号"),
                     "mobile": ("手机", "新号", "号码", "电话")}


def _identifier_kind(text: str, start: int) -> str | None:
    """The kind of number announced by an identifier word shortly before `start`, if any."""
    before = text[max(0, start - 16):start]
    if not _IDENTIFIER.search(before):
        heard = _pinyin(before.rstrip("是为：: "))
        for kind, words in _IDENTIFIER_WORDS.items():
            if any(len(heard) >= len(w) and heard[-len(w):] == _pinyin(w) for w in words):
                return kind
        return None
    for kind, words in _IDENTIFIER_WORDS.items():
        if any(w in before for w in words):
            return kind
    return "number"


def find_numbers(text: str) -> list[Span]:
    """Personal numbers in `text` (no state: one utterance on its own)."""
    text = text.translate(_FULLWIDTH)
    spans = []
    for run in _runs(text):
        kind = classify(run.digits)
        if kind is None and len(run.digits) >= 3:
            kind = _identifier_kind(text, run.start)
        if kind is None and len(run.digits) >= 4 and _CARD_AFTER.match(text, run.end):
            kind = "card"  # 8866的工资卡: the digits name a card whatever word (or mishearing) came before
        if kind is None and len(run.digits) >= 7 and not _quantity_after(text, run.end) and not _public_number(
                run.digits):
            kind = "number"  # seven digits or more, not a quantity: an identifier of some kind
        if kind is not None:
            spans.append(Span(run.start, run.end, kind))
    return spans


def _pinyin(text: str) -> list[str]:
    """One toneless reading per character (other characters as themselves)."""
    return [_reading(c) for c in text]


@lru_cache(maxsize=65536)
def _reading(ch: str) -> str:
    from pypinyin import Style, lazy_pinyin

    return lazy_pinyin(ch, style=Style.NORMAL)[0] if "\u4e00" <= ch <= "\u9fff" else ch


def find_names(text: str, names: tuple[str, ...]) -> list[Span]:
    """The loan file's names in `text`, also as ASR homophones (钱雪文 for 钱学文), and surname + title."""
    spans: list[Span] = []
    if not names:
        return spans
    heard = _pinyin(text)
    for name in names:
        if len(name) < 2:
            continue
        target = _pinyin(name)
        for i in range(len(text) - len(name) + 1):
            if text[i:i + len(name)] == name or heard[i:i + len(name)] == target:
                spans.append(Span(i, i + len(name), "name"))
        surname = name[0]
        for m in re.finditer(re.escape(surname) + r"(先生|女士|小姐|老师|总|经理)", text):
            spans.append(Span(m.start(), m.end(), "name"))
    return spans


def find_addresses(text: str, addresses: tuple[str, ...]) -> list[Span]:
    """The loan file's addresses in `text`: the whole address or any of its parts of three characters or more
    (a road, a compound, a building number)."""
    spans = []
    for address in addresses:
        parts = [p for p in re.split(r"(?<=[省市区县镇乡路街道巷弄号栋幢楼室单元村组])", address) if len(p) >= 3]
        for part in {address, *parts}:
            for m in re.finditer(re.escape(part), text):
                spans.append(Span(m.start(), m.end(), "address"))
    return spans


def apply_masks(text: str, spans: list[Span]) -> str:
    """Replace each span (overlaps merged, the first kind wins) by its mask."""
    if not spans:
        return text
    merged: list[Span] = []
    for span in sorted(spans, key=lambda s: (s.start, -(s.end - s.start))):
        if merged and span.start < merged[-1].end:
            last = merged[-1]
            merged[-1] = Span(last.start, max(last.end, span.end), last.kind)
        else:
            merged.append(span)
    out, pos = [], 0
    for span in merged:
        out.append(text[pos:span.start])
        out.append(MASKS[span.kind])
        pos = span.end
    out.append(text[pos:])
    return "".join(out)


@dataclass
class Redactor:
    """Redacts one channel's utterances in order, keeping the end of the last one for numbers split across
    utterances. `names` and `addresses` come from the loan file."""

    names: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()
    #: The other side asked for an identifier (身份证后四位): digits said until `_expect_until_s` are that.
    _expect_kind: str | None = None
    _expect_until_s: float = -1e9
    #: Digits that ended the previous utterance (masked already), and when it ended.
    _tail: str = ""
    _tail_end_s: float = -1e9
    _tail_gap_s: float = field(default=3.0)

    def expect(self, kind: str, until_s: float) -> None:
        """The agent just asked for an identifier: digits this side says until `until_s` are one."""
        self._expect_kind, self._expect_until_s = kind, until_s

    def redact(self, text: str, start_s: float = 0.0, end_s: float = 0.0) -> tuple[str, list[Span]]:
        """The masked text and what was masked. Call with each utterance of the channel in order."""
        text = text.translate(_FULLWIDTH)
        spans = find_numbers(text) + find_names(text, self.names) + find_addresses(text, self.addresses)
        runs = _runs(text)
        if self._expect_kind is not None and start_s <= self._expect_until_s:
            spans += [Span(r.start, r.end, self._expect_kind) for r in runs
                      if len(r.digits) >= 3 and not _quantity_after(text, r.end)]
        # A number the customer started in the previous utterance: judge its two halves together.
        if (self._tail and classify(self._tail) is None and runs and runs[0].start <= 1
                and not _quantity_after(text, runs[0].end) and start_s - self._tail_end_s <= self._tail_gap_s):
            head = runs[0]
            kind = classify(self._tail + head.digits)
            if kind is not None or len(self._tail + head.digits) >= 7:
                spans.append(Span(head.start, head.end, kind or "number"))
        # A long run at the very end may continue in the next utterance: mask it now (it cannot be taken back
        # once sent) and remember it.
        last = runs[-1] if runs else None
        self._tail = ""
        if last is not None and text[last.end:].strip(" 。，,.!！?？") == "":
            if len(last.digits) >= HOLD_DIGITS and not _quantity_after(text, last.end) and not _public_number(
                    last.digits):
                spans.append(Span(last.start, last.end, classify(last.digits) or "number"))
            self._tail = last.digits
            self._tail_end_s = end_s
        return apply_masks(text, spans), spans


def requested_identifier(text: str) -> str | None:
    """The kind of identifier an agent's utterance asks for (请报一下身份证后四位 -> id), if any. Words of three
    syllables or more are also matched by sound: Whisper hears 身份证后四位 as 身份正后思维, and the customer's
    digits must be masked all the same (two-syllable words are not: 号码 sounds like 好吗)."""
    asks = ("报", "说", "告诉", "多少", "几", "请", "？", "?")
    if not any(q in text for q in asks):
        return None
    for kind, words in _IDENTIFIER_WORDS.items():
        if any(w in text for w in words):
            return kind
    heard = _pinyin(text)
    for kind, words in _IDENTIFIER_WORDS.items():
        if any(len(w) >= 3 and _sounds_in(heard, _pinyin(w)) for w in words):
            return kind
    return None


def _sounds_in(heard: list[str], word: list[str]) -> bool:
    """Whether the readings `word` occur, in a row, among the readings `heard`."""
    n = len(word)
    return any(heard[i:i + n] == word for i in range(len(heard) - n + 1))


def preview(redactor: Redactor, text: str) -> str:
    """Masked text of a provisional transcript (a partial): the redactor's rules without touching its state."""
    text = text.translate(_FULLWIDTH)
    spans = find_numbers(text) + find_names(text, redactor.names) + find_addresses(text, redactor.addresses)
    runs = _runs(text)
    if runs and len(runs[-1].digits) >= HOLD_DIGITS and not _quantity_after(text, runs[-1].end) and not (
            _public_number(runs[-1].digits)):
        spans.append(Span(runs[-1].start, runs[-1].end, classify(runs[-1].digits) or "number"))
    if redactor._tail and classify(redactor._tail) is None and runs and runs[0].start <= 1 and not (
            _quantity_after(text, runs[0].end)):
        spans.append(Span(runs[0].start, runs[0].end, "number"))
    if redactor._expect_kind is not None:
        spans += [Span(r.start, r.end, redactor._expect_kind) for r in runs
                  if len(r.digits) >= 3 and not _quantity_after(text, r.end)]
    return apply_masks(text, spans)


def loan_file_identities(loan_file: dict[str, object] | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(names, addresses) named by a loan file, for the redactor."""
    if not loan_file:
        return (), ()
    names = tuple(str(loan_file[k]) for k in ("borrower", "name", "coborrower_name", "guarantor_name")
                  if isinstance(loan_file.get(k), str) and loan_file[k])
    addresses = tuple(str(loan_file[k]) for k in ("address", "property_address")
                      if isinstance(loan_file.get(k), str) and loan_file[k])
    return names, addresses


#: Loan-file fields that identify nobody and may be shown and stored as they are.
PUBLIC_LOAN_FIELDS = ("customer_id", "loan_id", "role", "amount_yuan", "term_years", "repay_day", "monthly_yuan",
                      "rate_pct")


#: Loan-file fields kept while a recording waits to be scored: the figures, and what redaction must recognise.
REDACTION_FIELDS = ("borrower", "name", "coborrower_name", "guarantor_name", "address", "property_address")


def minimal_loan_file(loan_file: dict[str, object] | None) -> dict[str, object] | None:
    """What of a loan file may be stored with a queued recording: no phone, ID or card numbers at all."""
    if not loan_file:
        return None
    return {k: v for k, v in loan_file.items() if k in PUBLIC_LOAN_FIELDS + REDACTION_FIELDS and v is not None}


def public_loan_file(loan_file: dict[str, object] | None) -> dict[str, object] | None:
    """The loan file as events and reports may carry it: the loan's figures and role, the borrower's name
    reduced to the surname (钱**), no numbers that identify a person, no address."""
    if not loan_file:
        return None
    out: dict[str, object] = {k: loan_file[k] for k in PUBLIC_LOAN_FIELDS if loan_file.get(k) is not None}
    name = loan_file.get("borrower")
    if isinstance(name, str) and name:
        out["borrower"] = name[0] + "*" * (len(name) - 1)
    return out


def spoken_spans(spans: list[Span], raw_text: str, words: tuple[tuple[float, float, str], ...], start_s: float,
                 end_s: float, pad_s: float = 0.15) -> list[tuple[float, float]]:
    """Audio time ranges in which the masked data of one utterance was said, from word times `(start, end, text)`
    of the same audio: words with digits for numbers, words sounding like the masked name or address for those.
    When no word can be matched, the whole utterance: silencing too much is the safe side."""
    if not spans:
        return []
    wanted_digits = any(s.kind not in ("name", "address") for s in spans)
    sounds = {r for s in spans if s.kind in ("name", "address") for r in _pinyin(raw_text[s.start:s.end])
              if r.strip()}
    found = []
    for w_start, w_end, text in words:
        if (wanted_digits and any(ch in _DIGIT and ch not in "Xx两" for ch in text)) or (
                sounds and any(r in sounds for r in _pinyin(text))):
            found.append((max(start_s, w_start - pad_s), min(end_s, w_end + pad_s)))
    if not found:
        return [(start_s, end_s)]
    merged: list[tuple[float, float]] = []
    for a, b in sorted(found):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged
