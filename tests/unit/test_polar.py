"""Polar questions answered the way Mandarin answers them, no verdict without evidence, and what a new user saw
on the demo call (issue #25 points 1, 3 and 5). Examples written for these tests, not taken from any validation
or evaluation set."""

from __future__ import annotations

import pytest

from nlu.assess import Assessor, clause_breaks
from nlu.dialogue import CallDialogue, Turn
from nlu.polar import echo, polar_question
from nlu.questions import ask
from nlu.script import load_cues
from nlu.slots import extract_yes_no
from nlu.types import LoanRecord

LOAN = LoanRecord(amount_yuan=800_000, term_years=20, repay_day=15, monthly_yuan=4200, rate_pct=3.6, role="borrower")


@pytest.fixture(scope="module")
def rules() -> Assessor:
    return Assessor()


@pytest.mark.parametrize(("question", "predicate"), [
    ("这期的月供您还了吗？", "还"),          # V了吗
    ("这个月的月供扣了没有？", "扣"),        # V了没有
    ("您这笔贷款有没有逾期过？", "逾期"),    # A-not-A on a modal: the content verb after it
    ("您同不同意承担担保责任？", "同意"),    # A-not-A on a two-syllable verb
    ("您知道自己是共同还款人吗？", "知道"),  # 吗-question
])
def test_the_predicate_a_polar_question_asks_about(question: str, predicate: str) -> None:
    asked = polar_question(question)
    assert asked is not None and predicate in asked.predicates


@pytest.mark.parametrize("question", ["您每月的还款日是哪一天？", "您的贷款金额是多少，您清楚吗？",
                                      "贷款是二十年还是三十年？", "您目前做什么工作？"])
def test_a_question_for_a_figure_or_a_choice_is_no_polar_question(question: str) -> None:
    assert polar_question(question) is None


@pytest.mark.parametrize(("question", "answer", "value"), [
    ("这个月的月供扣了没有？", "上礼拜就扣走了", True),     # a verb of the same act, with a complement
    ("这期的月供您还了吗？", "早还上了", True),
    ("这期的月供您还了吗？", "还没还呢", False),            # the adverb 还 is no echo; the verb after 没 is
    ("这期的月供您还了吗？", "转进去了", True),             # 转 is the same act as 还
    ("您这笔贷款有没有逾期过？", "从来没逾期过", False),
    ("您知道自己是共同还款人吗？", "晓得的", True),         # 晓得 for 知道
])
def test_an_echo_of_the_predicate_is_a_yes_or_a_no(question: str, answer: str, value: bool) -> None:
    asked = polar_question(question)
    assert asked is not None
    found = echo(answer, asked, load_cues().acts)
    assert found is not None and found.value is value


def test_an_echo_asked_back_taken_both_ways_or_embedded_is_none() -> None:
    asked = polar_question("这期的月供您还了吗？")
    assert asked is not None
    acts = load_cues().acts
    assert echo("还了吗？", asked, acts) is None                 # asked back
    assert echo("有时候还，有时候不还", asked, acts) is None     # both ways
    assert echo("还没还我也不知道", asked, acts) is None         # a question embedded in the answer


@pytest.mark.parametrize(("question", "answer", "label"), [
    ("这个月的月供扣了没有？", "上礼拜就扣走了", "clear"),
    ("这期的月供您还了吗？", "应该还了吧", "unclear"),                 # a hedged echo is no yes
    ("这期的月供您还了吗？", "还了吗？你们查不到吗", "evasive"),       # asked back
    ("未来有没有可能出现还款困难？", "家里刚出了事，手头紧得很，下个月都难说", "clear"),  # a yes, with the reason
    ("这期的钱您打算什么时候还上？", "周五下午就去还，行吗", "clear"),  # a named day, phrased as a request
    ("这期的钱您打算什么时候还上？", "等发了工资再说", "unclear"),      # a condition on an uncertain event
    ("您联系方式都没变吧？", "嗯嗯", "clear"),                           # assent to a presumptive question
    ("您这个月的钱够不够扣？", "够啊，哪个月没扣上过，你们自己看记录嘛", "clear"),  # annoyed, still an answer
])
def test_answers_the_way_customers_say_them(rules: Assessor, question: str, answer: str, label: str) -> None:
    assert rules.assess(question, answer, LOAN).label == label


def test_an_answer_with_no_evidence_either_way_is_unclear_not_evasive(rules: Assessor) -> None:
    result = rules.assess("您这个月的钱够不够扣？", "那个小区门口新开了一家超市", LOAN)
    assert result.label == "unclear"
    assert [e.kind for e in result.evidence] == ["no_evidence"]
    # A real non-answer still has its evidence and its kind.
    refused = rules.assess("您这个月的钱够不够扣？", "这个不方便告诉你", LOAN)
    assert refused.label == "evasive" and any(e.kind == "cue" for e in refused.evidence)


def test_a_hedged_a_not_a_extracts_no_yes(rules: Assessor) -> None:
    assert extract_yes_no("能不能还上说不准", load_cues()) is None
    result = rules.assess("未来半年有没有可能出现还款困难？", "能不能还上说不准", LOAN)
    assert result.label == "unclear" and not result.slots


def test_spaces_a_recogniser_writes_are_clause_breaks() -> None:
    assert clause_breaks("月底 三十号") == "月底，三十号"
    assert clause_breaks("八十 万") == "八十，万"  # between Chinese words only
    assert clause_breaks("80 万") == "80 万"


def test_the_opening_is_not_assessed_and_a_decline_asks_for_a_call_back(rules: Assessor) -> None:
    greeting = "您好，我是城南银行个人贷款中心的回访专员，大概耽误您三分钟，方便吗？"
    assert ask(greeting, rules.script).topics == () and ask(greeting, rules.script).opening
    dialogue = CallDialogue(rules, LOAN)
    dialogue.replay([Turn("a1", "agent", greeting, 0.0, 6.0), Turn("c1", "customer", "不方便，我在开车", 6.5, 8.0)],
                    12.0)
    summary = dialogue.summary()
    assert summary.verdicts == () and summary.callback_requested
    assert all(item.topic != "other" for item in summary.checklist)


def test_a_question_asking_two_things_sends_each_part_of_the_answer_to_its_topic(rules: Assessor) -> None:
    # As the recogniser wrote the demo call: 贷 heard as 代. The loan file says 20 years, the customer 30.
    dialogue = CallDialogue(rules, LOAN)
    dialogue.replay([Turn("a1", "agent", "请问您的贷款金额和期限是多少？", 0.0, 3.0),
                     Turn("c1", "customer", "80万代了30年", 3.5, 5.5)], 10.0)
    by_topic = {v.topic: v.assessment for v in dialogue.summary().verdicts}
    assert by_topic["loan_amount"].label == "clear" and by_topic["loan_amount"].mismatch is None
    term = by_topic["term"]
    assert term.mismatch is not None and (term.mismatch.stated, term.mismatch.on_file) == (30.0, 20.0)
    assert {i.topic: i.state for i in dialogue.summary().checklist}["term"] == "vague"


def test_a_declined_opening_becomes_a_call_back_action(rules: Assessor) -> None:
    from nlu.report import load_risk, score_call

    turns = [Turn("a1", "agent", "您好，我是城南银行的回访专员，现在方便吗？", 0.0, 4.0),
             Turn("c1", "customer", "不方便，在开车", 4.5, 6.0)]
    report = score_call("demo", turns, rules, LOAN, duration_s=10.0, risk=load_risk())
    callback = [a for a in report.actions if a.id == "callback"]
    assert callback and callback[0].evidence and not callback[0].topics
    accepted = score_call("demo", [turns[0], Turn("c1", "customer", "方便，你说吧", 4.5, 6.0)], rules, LOAN,
                          duration_s=10.0, risk=load_risk())
    assert not any(a.id == "callback" for a in accepted.actions)
