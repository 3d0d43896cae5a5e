"""Chinese and Arabic numerals to values: 八十万, 4千2, 三点六五, 5万 and 50000 all read as numbers.

Pure functions used wherever text is compared or figures are extracted (CER scoring, slot extraction).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_DIGITS = {"零": 0, "〇": 0, "○": 0, "一": 1, "幺": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6,
           "七": 7, "八": 8, "九": 9}
_DIGITS.update({str(i): i for i in range(10)})
_SMALL_UNITS = {"十": 10, "拾": 10, "百": 100, "佰": 100, "千": 1000, "仟": 1000}
_BIG_UNITS = {"万": 10_000, "萬": 10_000, "亿": 100_000_000, "億": 100_000_000}
_NUMERAL_CHARS = "".join(_DIGITS) + "".join(_SMALL_UNITS) + "".join(_BIG_UNITS) + "点.,"
#: A run of numeral characters that starts with a digit or 十 (so 万一, 千万 as adverbs are left alone).
NUMBER_RUN = re.compile(rf"[0-9零〇○一幺二两三四五六七八九十拾][{re.escape(_NUMERAL_CHARS)}]*")


def parse_number(run: str) -> Decimal | None:
    """Value of a numeral string such as 八十万, 4千2, 三点六五, 1,200, 两万五; None if it is not one.

    Follows spoken conventions: a trailing digit after a unit is that unit's next order (4千2 = 4200,
    两万五 = 25000, 三百五 = 350). A bare run of digits (一三八, 2024) reads positionally.
    """
    run = run.replace(",", "")
    if not run:
        return None
    if "点" in run or "." in run:
        whole, _, frac = run.replace("点", ".").partition(".")
        int_part = parse_number(whole) if whole else Decimal(0)
        if int_part is None or not frac or any(c not in _DIGITS for c in frac):
            return None
        try:
            return int_part + Decimal("0." + "".join(str(_DIGITS[c]) for c in frac))
        except InvalidOperation:
            return None
    if all(c in _DIGITS for c in run):
        return Decimal("".join(str(_DIGITS[c]) for c in run))
    return _parse_with_units(run)


def _parse_with_units(run: str) -> Decimal | None:
    total = Decimal(0)  # completed 万/亿 groups
    section = Decimal(0)  # below the current big unit
    digit: Decimal | None = None
    pending_digits = ""
    last_unit = 0
    for ch in run:
        if ch in _DIGITS:
            pending_digits += str(_DIGITS[ch])
            continue
        if pending_digits:
            digit = Decimal(pending_digits)
            pending_digits = ""
        if ch in _SMALL_UNITS:
            unit = _SMALL_UNITS[ch]
            section += (digit if digit is not None else Decimal(1)) * unit
            digit, last_unit = None, unit
        elif ch in _BIG_UNITS:
            unit = _BIG_UNITS[ch]
            section += digit or 0
            if section == 0:
                section = Decimal(1)
            total = (total + section) * unit if unit > 10_000 else total + section * unit
            section, digit, last_unit = Decimal(0), None, unit
        else:
            return None
    if pending_digits:
        trailing = Decimal(pending_digits)
        if len(pending_digits) == 1 and last_unit >= 10 and digit is None:
            # 4千2 -> 4200, 两万五 -> 25000, 三百五 -> 350: the digit is one order below the last unit.
            # After 十 it is a plain unit digit (十五 = 15, 二十三 = 23).
            scale = 1 if last_unit == 10 else last_unit // 10
            trailing *= scale
        section += trailing
    elif digit is not None:
        section += digit
    return total + section


def canonical_numbers(text: str) -> str:
    """Rewrite every numeral run in `text` as its Arabic value, so 五万, 5万 and 50000 compare equal.

    Digit strings keep their digits (a phone number stays a digit string); runs that are not numbers, such as
    the 一 of 一起, are left alone only when they cannot be read as a value.
    """

    def repl(m: re.Match[str]) -> str:
        value = parse_number(m.group(0))
        if value is None:
            return m.group(0)
        text_value = format(value.normalize(), "f") if value != value.to_integral() else str(int(value))
        # Positional digit runs keep leading zeros (a phone number or card number starting with 0).
        raw = m.group(0)
        if all(c in _DIGITS for c in raw) and raw[0] in "0零〇○":
            return "".join(str(_DIGITS[c]) for c in raw)
        return text_value

    return NUMBER_RUN.sub(repl, text)
