"""Answer assessment: slots, question detection, labels, loan-record mismatch, silence and prompts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nlu.assess import Assessor, PromptLimiter
from nlu.questions import detect_topics
from nlu.script import load_cues, load_script
from nlu.slots import extract_amount, extract_day, extract_percent, extract_years, extract_yes_no
from nlu.types import LoanRecord

LOAN = LoanRecord(amount_yuan=1_200_000, term_years=25, repay_day=20, monthly_yuan=6500, rate_pct=3.85,
                  role="borrower")


@pytest.fixture(scope="module", params=["rules", "fused"])
def assessor(request: pytest.FixtureRequest) -> Assessor:
    """The rules alone, and the service's default: rules with the packaged classifier where they are unsure."""
    if request.param == "rules":
        return Assessor()
    from nlu.classifier import load_classifier

    return Assessor(classifier=load_classifier("default"))


@pytest.mark.parametrize(
    ("text", "value", "approximate"),
    [
        ("八十万", 800_000, False),
        ("80万", 800_000, False),
        ("4千2", 4200, False),
        ("五千三百元", 5300, False),
        ("一共借了一百二十万", 1_200_000, False),
        ("两万五", 25_000, False),
        ("四千二左右", 4200, True),
        ("七八十万吧", 750_000, True),
        ("一百多万", 1_000_000, True),
        ("大概几十万吧", None, True),
    ],
)
def test_amounts(text: str, value: float | None, approximate: bool) -> None:
    slot = extract_amount(text)
    assert slot is not None and slot.value == value and slot.approximate == approximate


def test_days_years_percent() -> None:
    assert extract_day("每个月十五号").value == 15  # type: ignore[union-attr]
    assert extract_day("每月20日扣款").value == 20  # type: ignore[union-attr]
    vague = extract_day("大概月中吧，十几号的样子")
    assert vague is not None and vague.value is None and vague.approximate
    assert extract_years("贷了二十年").value == 20  # type: ignore[union-attr]
    assert extract_years("30年").value == 30  # type: ignore[union-attr]
    assert extract_percent("百分之三点九五").value == pytest.approx(3.95)  # type: ignore[union-attr]
    assert extract_percent("三点六五").value == pytest.approx(3.65)  # type: ignore[union-attr]
    assert extract_percent("3.6%").value == pytest.approx(3.6)  # type: ignore[union-attr]
    assert extract_amount("百分之三点五五") is None  # a rate is not an amount


@pytest.mark.parametrize(
    ("text", "value"),
    [("同意", True), ("不同意", False), ("能，工资卡直接扣", True), ("不会，每个月都提前存好了", False),
     ("没有变化", False), ("知道", True), ("不知道", False)],
)
def test_yes_no_with_negation(text: str, value: bool) -> None:
    slot = extract_yes_no(text, load_cues())
    assert slot is not None and slot.value is value


def test_a_rhetorical_question_settles_nothing() -> None:
    assert extract_yes_no("这个谁能保证呢", load_cues()) is None


@pytest.mark.parametrize(
    ("question", "topics"),
    [
        ("请问您的贷款金额和期限是多少？", ["loan_amount", "term"]),
        ("您每月的还款日是哪一天？", ["repay_date"]),
        ("未来有没有可能出现于期", ["overdue"]),  # ASR homophone of 逾期
        ("每个月的夜公是多少", ["monthly"]),  # ASR homophone of 月供
        ("你每月的还款认识哪一天？", ["repay_date"]),
        ("还款日是每月十六号。您的月供是多少？", ["monthly"]),  # the statement is not the question
        ("好的，还款日是每月二十号，请您注意按时存款。", []),  # a statement is not a question
        ("好的，感谢您的配合，如有疑问请拨打我行客服热线，再见。", []),
    ],
)
def test_question_detection(question: str, topics: list[str]) -> None:
    assert detect_topics(question, load_script()) == topics


def test_role_topics_only_for_their_role() -> None:
    script = load_script()
    assert detect_topics("您知道这笔贷款的年利率吗？", script, "borrower") == ["rate"]
    assert detect_topics("请问您了解这笔贷款的情况吗？", script, "coborrower") == ["coborrower"]


@pytest.mark.parametrize(
    ("question", "answer", "label"),
    [
        ("请问您这笔房贷借了多少钱？", "一百二十万。", "clear"),
        ("请问您这笔房贷借了多少钱？", "这个我记不清了，都是中介办的。", "omission"),
        ("请问您这笔房贷借了多少钱？", "大概几十万吧。", "unclear"),
        ("请问您这笔房贷借了多少钱？", "问这个干嘛，你们系统里不是有吗？", "evasive"),
        ("那每个月几号还款您知道吗？", "二十号。", "clear"),
        ("那每个月几号还款您知道吗？", "月底吧，记不太清。", "unclear"),  # an approximation, however unsure
            ("那每个月几号还款您知道吗？", "记不太清了，得查一下。", "omission"),
        ("未来有没有可能出现还款困难？", "应该不会吧。", "unclear"),
        ("未来有没有可能出现还款困难？", "不会，工作很稳定。", "clear"),
        ("未来有没有可能出现还款困难？", "我在开车，下次再说吧。", "evasive"),
        ("您每月月供大概多少钱？", "六千五左右。", "clear"),  # rounding of the right figure
        ("您每月月供大概多少钱？", "五六千吧。", "unclear"),
    ],
)
def test_labels(assessor: Assessor, question: str, answer: str, label: str) -> None:
    result = assessor.assess(question, answer, LOAN)
    assert result.label == label, result
    assert result.evidence


def test_guarantor_consent(assessor: Assessor) -> None:
    loan = LoanRecord(role="guarantor")
    q = "请问您是否同意为这笔贷款承担担保责任？"
    assert assessor.assess(q, "同意，我愿意担保。", loan).label == "clear"
    assert assessor.assess(q, "算是同意吧。", loan).label == "unclear"
    assert assessor.assess(q, "看情况吧，要是他真还不上再说。", loan).label == "unclear"


def test_mismatch_with_the_loan_record(assessor: Assessor) -> None:
    result = assessor.assess("每月几号还款？", "每月十八号。", LOAN)
    assert result.label == "clear"
    assert result.mismatch is not None and (result.mismatch.stated, result.mismatch.on_file) == (18, 20)
    assert result.prompt is not None and "18" in result.prompt and "20" in result.prompt
    assert assessor.assess("每月几号还款？", "二十号。", LOAN).mismatch is None


def test_silence_after_a_sensitive_question_is_evasive(assessor: Assessor) -> None:
    result = assessor.assess("未来有没有可能出现逾期？", "", LOAN, silence_s=6.0)
    assert result.label == "evasive" and result.evidence[0].kind == "silence"
    assert result.prompt and "逾期" in result.prompt
    # Saying nothing does not answer, whatever the topic's sensitivity (the label set's definition of evasive);
    # sensitivity weighs in the risk score instead (configs/risk.yaml).
    low = assessor.assess("您的贷款期限是多少年？", "", LOAN, silence_s=6.0)
    assert low.label == "evasive"


def test_prompts_use_the_loan_file(assessor: Assessor) -> None:
    result = assessor.assess("您每月的还款日是哪一天？", "不知道，都是自动扣的。", LOAN)
    assert result.label == "omission"
    assert result.prompt == "请提醒客户：还款日为每月20号，请客户确认并按时存款。"
    no_file = assessor.assess("您每月的还款日是哪一天？", "不知道，都是自动扣的。", None)
    assert no_file.prompt and "{" not in no_file.prompt and "还款日" in no_file.prompt
    assert assessor.assess("您每月的还款日是哪一天？", "二十号。", LOAN).prompt is None


def test_prompt_limiter() -> None:
    limiter = PromptLimiter(min_interval_s=8.0)
    assert [limiter.allow(t) for t in (10.0, 12.0, 17.9, 18.0, 30.0)] == [True, False, False, True, True]


def test_scripted_answers_of_the_shared_calls(assessor: Assessor, shared_data: Path) -> None:
    total = right = 0
    for path in sorted((shared_data / "calls").glob("call_s*.json")):
        call = json.loads(path.read_text(encoding="utf-8"))
        loan = LoanRecord.from_mapping(call["loan_file"])
        question = ""
        for turn in call["turns"]:
            if turn["speaker"] == "agent":
                question = turn["text"]
            elif "label" in turn:
                result = assessor.assess(question, turn["text"], loan, silence_s=None if turn["text"] else 7.0)
                total += 1
                right += result.label == turn["label"] and result.topic == turn["topic"]
    # The rules were written with these calls in view: this guards against regressions, it is not a held-out score.
    assert right / total >= 0.9, (right, total)


def test_command_line_json_lines(tmp_path: Path) -> None:
    source = tmp_path / "pairs.jsonl"
    source.write_text(
        json.dumps({"question": "您每月的还款日是哪一天？", "answer": "大概月中吧", "loan_file": {"repay_day": 20}},
                   ensure_ascii=False) + "\n" + json.dumps({"question": "未来有没有可能出现逾期？", "answer": "",
                                                            "silence_s": 8}, ensure_ascii=False) + "\n",
        encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "nlu.assess", str(source)], capture_output=True, text=True,
                         timeout=60, check=True)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["label"] for r in rows] == ["unclear", "evasive"]
    assert rows[0]["topic"] == "repay_date" and "20" in rows[0]["prompt"]
    assert {"label", "confidence", "topic", "evidence", "slots", "mismatch", "prompt"} <= set(rows[0])
    bad = subprocess.run([sys.executable, "-m", "nlu.assess"], input="not json\n", capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "line 1" in bad.stderr
    missing = subprocess.run([sys.executable, "-m", "nlu.assess", "--classifier", str(tmp_path / "no-model")],
                             input="", capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "cannot be loaded" in missing.stderr and "Traceback" not in missing.stderr


def test_http_assess(tmp_path: Path) -> None:
    from service.app import create_app
    from service.settings import Settings
    from tests.integration.test_live_socket import FakeTranscriber
    from tests.support.server import authed

    app = create_app(Settings(data_dir=tmp_path), transcriber=FakeTranscriber())  # type: ignore[arg-type]
    with authed(app) as client:
        response = client.post("/v1/assess", json={"question": "请问您是否同意为这笔贷款承担担保责任？",
                                                   "answer": "我得想想，应该能还上吧。",
                                                   "loan_file": {"role": "guarantor"}})
        assert response.status_code == 200
        body = response.json()
        assert body["topic"] == "guarantor" and body["label"] == "unclear" and body["prompt"]
        assert client.post("/v1/assess", json={"answer": "x"}).status_code == 422
        assert client.post("/v1/assess", json={"question": "q", "loan_file": {"repay_day": 99}}).status_code == 422


def test_a_fact_answers_even_an_unrecognised_question(assessor: Assessor) -> None:
    # ASR turned 几号 into 之后: the topic is lost, but "每月18号" is still a clear, specific answer.
    result = assessor.assess("每月之后还款", "每月18号", LOAN)
    assert result.topic is None and result.label == "clear"
    assert assessor.assess("每月之后还款", "嗯", LOAN).label == "clear"
    assert assessor.assess("每月之后还款", "记不清了", LOAN).label == "omission"


def test_digits_that_identify_something_are_not_an_amount(assessor: Assessor) -> None:
    loan = LoanRecord(monthly_yuan=3700, role="borrower")
    said = assessor.assess("您的月供是多少？", "三千七，从我尾号八八六六的工资卡里扣。", loan)
    assert said.label == "clear" and said.slots[0].value == 3700 and said.mismatch is None
    # An ASR homophone of 尾号 (为号) still marks the digits as an identifier: no 8,866 yuan mismatch.
    garbled = assessor.assess("您的月供是多少？", "从我为号8866的工资卡扣。", loan)
    assert garbled.mismatch is None and not garbled.slots


def test_a_new_phone_number_answers_the_contact_question(assessor: Assessor) -> None:
    result = assessor.assess("您的联系电话最近有变化吗？", "换了，新号码是一三九零一二三四五六七。")
    assert result.label == "clear" and result.slots[0].value is True


def test_a_classifier_that_cannot_load_leaves_the_rules_serving(tmp_path: Path) -> None:
    from service.app import create_app
    from service.settings import Settings
    from tests.integration.test_live_socket import FakeTranscriber
    from tests.support.server import authed

    settings = Settings(data_dir=tmp_path, nlu={"classifier": str(tmp_path / "no-such-model")})
    app = create_app(settings, transcriber=FakeTranscriber())  # type: ignore[arg-type]
    with authed(app) as client:
        health = client.get("/healthz")
        assert health.status_code == 200
        assert health.json()["status"] == "degraded" and "cannot be loaded" in health.json()["warning"]
        answer = client.post("/v1/assess", json={"question": "请问您这笔房贷借了多少钱？", "answer": "大概几十万吧。"})
        assert answer.status_code == 200 and answer.json()["label"] == "unclear"
