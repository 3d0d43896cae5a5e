"""Homophone correction towards the domain lexicon: fixes what Whisper mishears, leaves ordinary words alone."""

import pytest

from asr.domain import load_domain
from asr.lexicon import LexiconCorrector, load_corrector


@pytest.fixture(scope="module")
def corrector() -> LexiconCorrector:
    return load_corrector(load_domain().lexicon)


@pytest.mark.parametrize(
    ("heard", "meant"),
    [
        ("我没有于期", "我没有逾期"),
        ("阳老年金保险", "养老年金保险"),
        ("零取养老金", "领取养老金"),
        ("保险和同", "保险合同"),
        ("支出费勇", "支出费用"),
        ("没有门电", "没有门店"),
        ("您的还款帐户", "您的还款账户"),
    ],
)
def test_homophones_of_domain_terms_are_corrected(corrector: LexiconCorrector, heard: str, meant: str) -> None:
    assert corrector.correct(heard) == meant


@pytest.mark.parametrize(
    "text",
    [
        "收益超出预期",  # 预期 is a common word: never rewritten to 逾期
        "所以它会贵一些",  # rare readings of polyphones must not match (台 read as yí)
        "一个人大概也就是几十块钱",
        "每个月十五号还款",
        "好的，没问题。",
    ],
)
def test_ordinary_speech_is_left_alone(corrector: LexiconCorrector, text: str) -> None:
    assert corrector.correct(text) == text


def test_ambiguous_homophones_are_left_as_heard() -> None:
    # Two terms that sound the same: the corrector cannot know which was meant.
    c = LexiconCorrector(terms=("交费", "缴费"), common_words=frozenset())
    assert c.correct("浇费") == "浇费"
    assert c.correct("缴费") == "缴费"


def test_longest_term_wins() -> None:
    c = LexiconCorrector(terms=("养老", "养老金"), common_words=frozenset())
    assert c.correct("阳老金") == "养老金"


def test_a_match_never_starts_inside_a_word() -> None:
    c = LexiconCorrector(terms=("逾期", "犹豫期"), common_words=frozenset({"没有"}))
    assert c.correct("我没有于期") == "我没有逾期"
