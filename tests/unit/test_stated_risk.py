"""A clear answer can be the risk (configs/risk.yaml `stated`, nlu/stated.py): hand-checked cases on assessments
built directly, so they hold whatever the assessor's wording decisions. Pure, milliseconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from nlu.dialogue import Turn, Verdict
from nlu.report import (
    DEFAULT_RISK_FILE,
    AgentReview,
    AnswerRecord,
    Report,
    RiskConfig,
    Scored,
    load_risk,
    score_topics,
    topic_result,
)
from nlu.script import CallScript, ScriptError, load_script
from nlu.stated import StatedRule, StatedScore, stated_value
from nlu.types import Assessment, Label, Slot

SCRIPT = load_script()
RISK = load_risk()


def _scored(topic: str, question: str, answer: str, label: Label = "clear", slot: Slot | None = None,
            risk: RiskConfig = RISK, script: CallScript = SCRIPT) -> Scored:
    """Score one answered topic: an assessment built here (not by the assessor), paired with its two turns."""
    q, a = Turn("q", "agent", question, 0.0, 2.0), Turn("a", "customer", answer, 2.5, 4.0)
    assessment = Assessment(topic, label, 0.9, (), (slot,) if slot else (), None, None, (topic,), "test")
    verdict = Verdict("q", ("a",), topic, assessment, 4.0, None, 0)
    result = topic_result(topic, script.topics[topic].name, 1, verdict, {"q": q, "a": a})
    return score_topics((result,), (), script, risk)


def _yes(value: bool, text: str, kind: str = "yes_no") -> Slot:
    return Slot(kind, value, False, text)  # type: ignore[arg-type]


def test_a_clear_difficulty_on_overdue_adds_its_points_reason_and_second_call() -> None:
    scored = _scored("overdue", "未来半年有没有可能出现还款困难？", "下个月可能还不上，厂里停工了。",
                     slot=_yes(False, "还不上"))  # 还不上 settles as a no-word; the term says what it means
    assert scored.topics[0].stated == "yes"
    [c] = scored.contributions
    assert (c.points, c.topic, c.label) == (30.0, "overdue", "clear")
    assert c.reason == "还款困难风险：客户明确表示可能出现还款困难"
    assert c.evidence == "下个月可能还不上，厂里停工了。" and c.span == (2.5, 4.0)
    assert scored.score == 30 and scored.tier == "medium"
    [action] = scored.actions
    assert action.id == "second_call" and action.topics == ("overdue",)
    assert action.evidence == ("还款困难风险：下个月可能还不上，厂里停工了。",)


def test_a_plain_yes_to_the_difficulty_question_is_a_difficulty() -> None:
    scored = _scored("overdue", "最近一年会不会出现逾期？", "会，最近生意不好。", slot=_yes(True, "会"))
    assert scored.topics[0].stated == "yes" and scored.score == 30


def test_a_clear_on_time_adds_nothing() -> None:
    # 能按时还 settles as a yes-word (能): to the difficulty question it means no difficulty.
    for question, answer, slot in [("未来有没有可能出现还款困难？", "能按时还，没问题。", _yes(True, "能")),
                                   ("最近一年会不会出现还不上贷款的情况？", "不会的，两份工资。", _yes(False, "不会")),
                                   ("您每个月都能按时还款吗？", "能。", _yes(True, "能")),  # asked the other way
                                   # 按时 in a question about what could affect it asks the risk, not the safe side
                                   ("最近有没有遇到什么困难，可能影响按时还款？", "没有，工资还月供绰绰有余。",
                                    _yes(False, "没有"))]:
        scored = _scored("overdue", question, answer, slot=slot)
        assert scored.topics[0].stated == "no", answer
        assert scored.contributions == () and scored.actions == () and scored.score == 0


def test_a_negated_safe_side_question_is_not_turned_over() -> None:
    scored = _scored("overdue", "会不会不能按时还款？", "会。", slot=_yes(True, "会"))
    assert scored.topics[0].stated == "yes"


def test_a_guarantors_clear_refusal_adds_points_and_legal_review() -> None:
    scored = _scored("guarantor", "请问您是否同意为这笔贷款承担担保责任？", "不同意，这个担保我不认。",
                     slot=_yes(False, "不同意", "consent"))
    assert scored.topics[0].stated == "no"
    [c] = scored.contributions
    assert c.points == 50.0 and c.reason == "担保意愿：担保人明确拒绝承担担保责任"
    assert scored.tier == "high" and [a.id for a in scored.actions] == ["legal_review"]
    consent = _scored("guarantor", "请问您是否同意为这笔贷款承担担保责任？", "同意，字是我签的。",
                      slot=_yes(True, "同意", "consent"))
    assert consent.topics[0].stated == "yes" and consent.score == 0 and consent.actions == ()


def test_a_house_clearly_let_adds_points_and_verify_purpose() -> None:
    scored = _scored("purpose", "您的房子现在是自住吗？", "租出去了，租给一对小夫妻。")
    assert scored.topics[0].stated == "let"
    [c] = scored.contributions
    assert c.points == 20.0 and c.reason == "房屋用途：客户明确表示房屋已出租，与自住用途不符"
    assert [a.id for a in scored.actions] == ["verify_purpose"]


def test_a_negated_term_states_nothing_and_the_heaviest_value_wins() -> None:
    assert _scored("purpose", "房子现在谁在住？", "没出租，我们一家人住。").topics[0].stated is None
    assert _scored("purpose", "房子现在谁在住？", "不是出租，空着呢。").topics[0].stated == "vacant"
    # Two statements: the one that weighs more is the one the supervisor must see.
    assert _scored("purpose", "房子现在谁在住？", "楼上空着，楼下门面开店。").topics[0].stated == "commercial"
    assert _scored("income", "收入怎么样？", "工资没有减少，挺稳的。").topics[0].stated is None
    assert _scored("income", "收入怎么样？", "厂子倒闭了，现在打零工。").topics[0].stated == "fell"


def test_other_yes_no_topics_state_their_risk() -> None:
    unpaid = _scored("paid", "这个月的月供扣了没有？", "还没还，这两天就存。", slot=_yes(False, "没"))
    assert unpaid.topics[0].stated == "no" and unpaid.score == 25
    assert [a.id for a in unpaid.actions] == ["second_call"]
    assert _scored("paid", "这期的月供您还了吗？", "还了。", slot=_yes(True, "还了")).score == 0
    short = _scored("account", "您的还款账户每月能保证足额吗？", "这个月不够，差一点。", slot=_yes(False, "不够"))
    assert short.topics[0].stated == "no" and short.score == 15
    unaware = _scored("coborrower", "您知道作为共同还款人需要承担还款责任吗？", "不知道，我没签过字。",
                      slot=_yes(False, "不知道"))
    assert unaware.score == 30 and [a.id for a in unaware.actions] == ["notify_coborrower"]


def test_changed_contact_details_call_for_an_update_without_points() -> None:
    changed = _scored("contact", "您的联系电话和地址有变化吗？", "换了，新号码我一会儿发您。", slot=_yes(True, "换了"))
    assert changed.topics[0].stated == "yes" and changed.contributions == ()
    assert [a.id for a in changed.actions] == ["update_contact"]
    same = _scored("contact", "您还是住在原来的地方吗？", "是的。", slot=_yes(True, "是的"))  # asked the other way
    assert same.topics[0].stated == "no" and same.actions == ()


def test_a_clear_repayment_commitment_adds_nothing() -> None:
    scored = _scored("repay_plan", "这期的钱您打算什么时候还上？", "明天上午就存进去。")
    assert scored.topics[0].stated is None and scored.score == 0 and scored.actions == ()


def test_vague_answers_are_scored_by_label_only_as_before() -> None:
    # An unclear overdue answer holding a difficulty term keeps its label's points, not the stated value's too.
    scored = _scored("overdue", "未来半年有没有可能出现还款困难？", "说不好，可能还不上吧。", label="unclear")
    assert scored.topics[0].stated is None
    assert [(c.points, c.label) for c in scored.contributions] == [(18.0, "unclear")]
    assert [a.id for a in scored.actions] == ["second_call"]


def test_the_report_serialises_with_the_stated_value_and_versions() -> None:
    scored = _scored("overdue", "未来半年有没有可能出现还款困难？", "下个月可能还不上。", slot=_yes(False, "还不上"))
    report = Report("c", 4.0, (), scored.topics, scored.score, scored.tier, scored.contributions,
                    AgentReview(1.0, 1, 1, (), (), 0), scored.actions,
                    (AnswerRecord("overdue", "还款困难风险", "clear", False, None, None, None, None),),
                    {"clear": 1}, "rules+abc", RISK.version)
    data = json.loads(json.dumps(report.to_dict(), ensure_ascii=False))
    assert data["topics"][0]["stated"] == "yes"
    assert data["contributions"][0]["reason"] == "还款困难风险：客户明确表示可能出现还款困难"
    assert data["assessor_version"] == "rules+abc" and data["risk_version"] == RISK.version != ""


def test_stated_value_without_a_rule_for_the_polar_slot() -> None:
    rule = StatedRule("t", (), (), {"no": StatedScore(5, "x")})
    assert stated_value(rule, "嗯", None, (), ()) is None
    assert stated_value(rule, "不", None, (_yes(False, "不"),), ()).value == "no"  # type: ignore[union-attr]


def _write(tmp_path: Path, change: dict[str, object]) -> Path:
    raw = yaml.safe_load(DEFAULT_RISK_FILE.read_text(encoding="utf-8"))
    raw.update(change)
    path = tmp_path / "risk.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize(("change", "message"), [
    ({"stated": {"overdue": {"values": {"yes": {"points": "many", "reason": "x"}}}}},
     "stated.overdue.values.yes.points must be a number >= 0"),
    ({"stated": {"overdue": {"values": {"yes": {"points": 3}}}}}, "stated.overdue.values.yes.reason"),
    ({"stated": {"purpose": {"values": {"let": {"points": 3, "reason": "x"}}}}},
     "stated.purpose.values: let is neither yes/no nor listed under terms"),
    ({"stated": {"purpose": {"terms": {"let": "出租"}}}}, "stated.purpose.terms.let must be a list"),
    ({"stated": {"purpose": {"term": {}}}}, "stated.purpose: unknown key(s) term"),
    ({"stated": {"overdue": {"values": {"yes": {"points": 3, "reason": "x"}}}},
      "actions": [{"id": "a", "text": "t", "when": ["overdue.stated:yse"]}]},
     "action a: overdue.stated:yse: stated.overdue never states 'yse'"),
    ({"stated": {}, "actions": [{"id": "a", "text": "t", "when": ["purpose.stated:let"]}]},
     "action a: purpose.stated:let: no stated rule for topic purpose"),
])
def test_a_broken_stated_section_is_refused_naming_the_file_and_entry(tmp_path: Path, change: dict[str, object],
                                                                      message: str) -> None:
    path = _write(tmp_path, change)
    with pytest.raises(ScriptError) as e:
        load_risk(path)
    assert str(path) in str(e.value) and message in str(e.value)


def test_the_risk_version_follows_the_file(tmp_path: Path) -> None:
    assert load_risk(_write(tmp_path, {})).version == RISK.version
    assert load_risk(_write(tmp_path, {"tiers": {"medium": 20, "high": 50}})).version != RISK.version
