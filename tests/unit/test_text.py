"""Clean-up of Whisper text: Simplified script, spacing, loops and hallucinations."""

from asr.domain import load_domain
from asr.text import collapse_repeats, remove_hallucinations, tidy, to_simplified


def test_tidy_makes_simplified_and_removes_cjk_spaces() -> None:
    assert tidy("還款日 是 每月 二十號, 對吧?") == "还款日是每月二十号，对吧？"
    assert tidy("  我们 是 P2P 平台 ") == "我们是 P2P 平台"


def test_to_simplified_leaves_simplified_alone() -> None:
    text = "贷款金额八十万，月供四千二。"
    assert to_simplified(text) == text


def test_collapse_repeats() -> None:
    assert collapse_repeats("好的好的好的好的好的好的") == "好的好的"
    assert collapse_repeats("嗯嗯嗯嗯嗯嗯嗯") == "嗯嗯"
    assert collapse_repeats("好的好的") == "好的好的"


def test_known_hallucinations_are_removed() -> None:
    phrases = load_domain().hallucination_phrases
    assert remove_hallucinations("请不吝点赞订阅转发打赏支持明镜与点点栏目", phrases) == ""
    assert remove_hallucinations("字幕由Amara.org社区提供", phrases) == ""
    assert remove_hallucinations("我记不清了，谢谢观看", phrases) == "我记不清了"
    assert remove_hallucinations("每个月十五号", phrases) == "每个月十五号"


def test_prompt_echo_is_dropped() -> None:
    prompt = "您好，这里是银行贷后回访。请问您的贷款金额是多少？"
    assert remove_hallucinations("这里是银行贷后回访", (), prompt) == ""
    assert remove_hallucinations("八十万", (), prompt) == "八十万"
