"""Answerhood first: `clear` only on evidence that the answer gives what was asked; otherwise the kind of
non-answer. Examples written for these tests (not taken from the validation sets), one or more per kind of
non-answer named in the assessment's contract, for the rules alone and for the shipped default."""

from __future__ import annotations

import pytest

from nlu.assess import Assessor
from nlu.dialogue import CallDialogue, Turn
from nlu.questions import OTHER_TOPIC, ask, detect_topics
from nlu.report import load_risk, score_call
from nlu.script import load_script
from nlu.types import LoanRecord

LOAN = LoanRecord(amount_yuan=900_000, term_years=20, repay_day=12, monthly_yuan=5200, rate_pct=3.7, role="borrower")
GUARANTOR = LoanRecord(amount_yuan=900_000, role="guarantor")


@pytest.fixture(scope="module")
def rules() -> Assessor:
    return Assessor()


@pytest.fixture(scope="module")
def default() -> Assessor:
    from nlu.classifier import load_classifier

    return Assessor(classifier=load_classifier("default"))


@pytest.fixture(scope="module", params=["rules", "default"])
def assessor(request: pytest.FixtureRequest, rules: Assessor, default: Assessor) -> Assessor:
    return rules if request.param == "rules" else default


CASES = [
    # -- clear: the figure, an explicit yes/no or consent, a concrete statement ----------------------------
    ("月供现在每个月是多少？", "五千二，每个月工资一到就扣了。", "clear"),
    ("这笔贷款期限是几年？", "嗯……我想想，二十年。", "clear"),
    ("月供现在每个月是多少？", "大概五千多吧……不对，我看了一下，准确说是五千二百块。", "clear"),  # corrected hedge
    ("月供现在每个月是多少？", "估计您要核对，我提前翻了账单，五千二。", "clear"),  # hedge word, not on the figure
    ("最近一年会不会出现还不上贷款的情况？", "不会的，我跟我爱人两份工资。", "clear"),
    ("这套房子您家自己住着吗？", "租出去了，租给一对小夫妻。", "clear"),
    ("您现在在哪儿上班？", "在一家汽修厂，干了八年了。", "clear"),
    ("担保这件事您是同意的吧？", "同意，字是我自己签的。", "clear"),
    # -- omission: does not have it --------------------------------------------------------------------
    ("这笔贷款期限是几年？", "这个我真没印象了。", "omission"),  # does not remember
    ("月供现在每个月是多少？", "钱都是我老公在管，我不清楚。", "omission"),  # someone else handles it
    ("利率是多少您了解吗？", "银行当时没人跟我讲过利率。", "omission"),  # never told
    # -- unclear: hedged, approximate, relative, conditional ---------------------------------------------
    ("月供现在每个月是多少？", "五千来块吧。", "unclear"),  # approximate
    ("这笔贷款期限是几年？", "二十年还是二十五年，记混了。", "unclear"),  # either-or
    ("您现在收入情况怎么样？", "跟去年差不多吧，老样子。", "unclear"),  # relative to something unstated
    ("最近一年会不会出现还不上贷款的情况？", "只要厂里不裁人，应该问题不大。", "unclear"),  # conditional
    ("担保这件事您是同意的吧？", "算是同意吧。", "unclear"),  # weak consent
    # -- evasive: refusal, privacy, counter-question, stalling, hostility, busy -------------------------
    ("您现在收入情况怎么样？", "收入是我的隐私，不方便告诉你们。", "evasive"),  # privacy
    ("贷款金额是多少您还记得吗？", "你们银行自己系统里查不到吗？", "evasive"),  # counter-question
    ("您现在收入情况怎么样？", "这个问题我拒绝回答。", "evasive"),  # refusal
    ("这套房子您家自己住着吗？", "回头再说吧，我这边忙着呢。", "evasive"),  # stalling, busy
    ("最近一年会不会出现还不上贷款的情况？", "你们再这样天天打电话我就投诉了。", "evasive"),  # hostility
]


@pytest.mark.parametrize(("question", "answer", "label"), CASES)
def test_every_kind_of_answer(assessor: Assessor, question: str, answer: str, label: str) -> None:
    result = assessor.assess(question, answer, GUARANTOR if "担保" in question else LOAN)
    assert result.label == label, (answer, result.label, result.evidence)


#: Non-answers with none of the cue words: a topic change, laughing it off, chatter, a written silence marker.
NO_CUE = [
    ("月供现在每个月是多少？", "哎对了，你们银行理财最近收益怎么样？"),
    ("这笔贷款期限是几年？", "嘿嘿，这个嘛……"),
    ("这套房子您家自己住着吗？", "今天天气真热，我刚从外面回来。"),
    ("担保这件事您是同意的吧？", "……"),
    ("您现在收入情况怎么样？", "（沉默）"),
]


@pytest.mark.parametrize(("question", "answer"), NO_CUE)
def test_a_non_answer_without_cue_words_is_never_clear(assessor: Assessor, question: str, answer: str) -> None:
    assert assessor.assess(question, answer, LOAN).label != "clear"


def test_silence_markers_count_as_silence(rules: Assessor) -> None:
    for marker in ("……", "（沉默）", "[无回答]", "..."):
        result = rules.assess("这笔贷款期限是几年？", marker, LOAN)
        assert any(e.kind == "silence" for e in result.evidence), marker


def test_a_yes_word_inside_a_word_or_a_question_back_settles_nothing(rules: Assessor) -> None:
    # 有 of 有事, 没 of 没空: not yes/no answers to "is the account funded".
    assert rules.assess("还款卡里的钱每个月都够扣吗？", "有事，晚点联系。", LOAN).label == "evasive"
    assert rules.assess("还款卡里的钱每个月都够扣吗？", "你们不是能看到余额吗？", LOAN).label == "evasive"
    assert rules.assess("还款卡里的钱每个月都够扣吗？", "够的，每个月存足了。", LOAN).label == "clear"


def test_cue_words_heard_as_homophones(rules: Assessor) -> None:
    # Whisper writes 清出 for 清楚: still "does not know".
    assert rules.assess("担保的事您清楚吗？", "这个我不太清出。", LoanRecord(role="guarantor")).label == "omission"


def test_the_learned_part_reads_only_question_and_answer(default: Assessor) -> None:
    model = default.classifier
    assert model is not None
    probs = model.probabilities("月供现在每个月是多少？", "我在开会，回头再说。")
    assert set(probs) == {"clear", "omission", "unclear", "evasive"} and abs(sum(probs.values()) - 1) < 1e-5
    # Where it picks the kind of a non-answer, busy is evasive. (Alone, the head since the colloquial corpus of
    # issue #25 rates this reply clear at about 0.6, near 我在医院上班: the busy cue of the rules decides it,
    # and the full assessor's verdict is checked in CASES. docs/nlu.md, known limits.)
    assert probs["evasive"] > max(probs["omission"], probs["unclear"])
    assert default.assess("月供现在每个月是多少？", "我在开会，回头再说。").label == "evasive"


def test_a_learned_decision_shows_its_nearest_examples(default: Assessor) -> None:
    result = default.assess("这套房子您家自己住着吗？", "今天天气真热，我刚从外面回来。", LOAN)
    kinds = {e.kind for e in result.evidence}
    assert "learned" in kinds and "example" in kinds, result.evidence
    assert all(e.text for e in result.evidence if e.kind == "example")


# -- question detection by what is asked -------------------------------------------------------------------

WORDINGS = [
    ("您这边每个月是几日扣款来着？", "repay_date"),  # 几日, not the script's 几号
    ("您知道这笔贷款的年利率是多少吗？", "rate"),  # the co-borrower question's frame, about the rate
    ("贷款买的那套房您现在自己住吗？", "purpose"),
    ("您家里现在经济来源主要靠什么？", "income"),
    ("麻烦您报一下当时贷的总额。", "loan_amount"),  # a request, no question mark
    ("这个贷款是分多少年还完的？", "term"),
    ("每个月要还银行多少钱您清楚吗？", "monthly"),
    ("最近手头紧不紧，会不会影响按时还款？", "overdue"),
    ("您的手机号码和住的地址有没有换？", "contact"),
    ("借款人如果还不上，您知道需要由您来还吗？", "coborrower"),
    ("如果借款人还不上，您愿意代为偿还吗？", "guarantor"),
    # ASR homophones
    ("未来有没有可能出现于期？", "overdue"),
    ("请问您的夜供是多少？", "monthly"),
    ("您的利律是多少？", "rate"),
]


@pytest.mark.parametrize(("question", "topic"), WORDINGS)
def test_topics_by_what_is_asked(question: str, topic: str) -> None:
    assert detect_topics(question, load_script())[:1] == [topic]


def test_two_topics_in_one_question_and_stated_figures() -> None:
    script = load_script()
    assert set(detect_topics("您贷款的金额和期限分别是多少？", script)) == {"loan_amount", "term"}
    # A figure the agent states is context, not a second question.
    assert detect_topics("每月五千二的月供您能按时还上吗？", script) == ["overdue"]


def test_questions_outside_the_script_and_statements() -> None:
    script = load_script()
    assert ask("您最近身体还好吗？", script).topics == (OTHER_TOPIC,)
    assert ask("好的，我知道了，谢谢您。", script).topics == ()
    assert ask("还款日是每月十二号，请您按时存款。", script).topics == ()


def _turn(uid: str, speaker: str, text: str, start: float, end: float) -> Turn:
    return Turn(uid, speaker, text, start, end)  # type: ignore[arg-type]


def test_an_unknown_question_starts_the_silence_timer(rules: Assessor) -> None:
    dialogue = CallDialogue(rules, LOAN)
    assert dialogue.add(_turn("a1", "agent", "您家里现在一共几口人？", 0.0, 3.0)) == []
    assert dialogue.silence_due_s() == pytest.approx(8.0)
    (verdict,) = dialogue.tick(8.5)
    assert verdict.topic == OTHER_TOPIC and verdict.assessment.label in ("omission", "evasive")
    assert all(item.topic != OTHER_TOPIC for item in dialogue.checklist())


def test_other_answers_are_reported_without_points_unless_configured(rules: Assessor) -> None:
    turns = [_turn("a1", "agent", "您最近身体还好吗？", 0.0, 2.0),
             _turn("c1", "customer", "问这个干什么？跟你们有关系吗？", 2.5, 4.0)]
    report = score_call("c", turns, rules, LOAN, 10.0)
    other = [a for a in report.answers if a.topic == OTHER_TOPIC]
    assert other and other[0].label == "evasive" and other[0].name == "其他问题"
    assert not any(c.topic == OTHER_TOPIC for c in report.contributions)
    risk = load_risk()
    with_points = type(risk)(**{**{f: getattr(risk, f) for f in risk.__dataclass_fields__},
                                "overrides": {**risk.overrides, "other.evasive": 5.0}})
    report = score_call("c", turns, rules, LOAN, 10.0, risk=with_points)
    assert any(c.topic == OTHER_TOPIC and c.points == 5.0 for c in report.contributions)


def test_every_assessment_and_report_carries_the_assessor_version(rules: Assessor, default: Assessor) -> None:
    a = rules.assess("月供是多少？", "五千二。", LOAN)
    b = default.assess("月供是多少？", "五千二。", LOAN)
    assert a.assessor_version.startswith("rules+") and b.assessor_version.startswith("use-")
    assert a.assessor_version != b.assessor_version and a.to_dict()["assessor_version"] == a.assessor_version
    report = score_call("c", [_turn("a1", "agent", "月供是多少？", 0.0, 2.0),
                              _turn("c1", "customer", "五千二。", 2.5, 3.5)], default, LOAN, 5.0)
    assert report.assessor_version == default.version and report.to_dict()["assessor_version"] == default.version
