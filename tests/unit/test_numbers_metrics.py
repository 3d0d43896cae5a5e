"""Numeral parsing and CER normalisation: pure functions, milliseconds."""

from decimal import Decimal

import pytest

from nlu.numbers import canonical_numbers, parse_number
from tools.cer import cer, corpus_cer, edit_distance, normalise_for_cer


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("八十万", "800000"),
        ("4千2", "4200"),
        ("三点六五", "3.65"),
        ("十五", "15"),
        ("二十", "20"),
        ("两万五", "25000"),
        ("三百五", "350"),
        ("一千零五", "1005"),
        ("十万八千", "108000"),
        ("一亿两千万", "120000000"),
        ("5万", "50000"),
        ("1,200", "1200"),
        ("3.6", "3.6"),
        ("二十三", "23"),
        ("一三八", "138"),
    ],
)
def test_parse_number(text: str, value: str) -> None:
    assert parse_number(text) == Decimal(value)


def test_not_a_number() -> None:
    assert parse_number("点") is None
    assert parse_number("三点") is None


def test_equal_values_compare_equal() -> None:
    assert {canonical_numbers(s) for s in ("五万", "5万", "50000")} == {"50000"}
    assert canonical_numbers("每个月十五号还四千二") == "每个月15号还4200"
    # A phone number keeps its leading zero.
    assert canonical_numbers("零二一五五五") == "021555"


def test_normalise_for_cer() -> None:
    assert normalise_for_cer("A：保护我方花木兰。呃，那个… B：“叫了个鸭子”？") == "保护我方花木兰呃那个叫了个鸭子"
    assert normalise_for_cer("還款日 是 每月二十號, P2P") == "还款日是每月20号p2p"


def test_edit_distance_and_cer() -> None:
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3
    assert cer("贷款五万元", "貸款5萬元。") == 0.0
    assert cer("我想问一下", "我想问") == pytest.approx(2 / 5)
    pooled = corpus_cer([("甲乙", "甲"), ("丙丁戊己", "丙丁戊己")])
    assert (pooled.edits, pooled.ref_chars) == (1, 6)
