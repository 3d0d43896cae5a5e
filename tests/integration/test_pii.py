"""Redaction of Mandarin personal data (nlu/pii.py) and where it is applied."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nlu.assess import Assessor
from nlu.pii import Redactor, classify, id_checksum_ok, luhn_ok, public_loan_file
from tools.pii_corpus import build, make_card, make_id


def redact(text: str, **kw: tuple[str, ...]) -> str:
    return Redactor(**kw).redact(text)[0]


@pytest.mark.parametrize("text,expected", [
    ("换了，新号码是一三九零一二三四五六七。", "换了，新号码是[手机号]。"),
    ("我手机幺三八 一二三四 五六七八", "我手机[手机号]"),
    ("打139-0123-4567就行", "打[手机号]就行"),
    ("1三9零1二3四5六7，这是我老婆的电话。", "[手机号]，这是我老婆的电话。"),
    ("我身份证号是110105198003154231", "我身份证号是[身份证号]"),
    ("证件号码一一零一零五一九八零零三一五四二三一", "证件号码[身份证号]"),
    ("身份证后四位四二三一", "身份证后四位[身份证号]"),
    ("从我尾号八八六六的工资卡里扣", "从我尾号[银行卡号]的工资卡里扣"),
    ("座机是010-62345678", "座机是[电话号码]"),
])
def test_personal_numbers_are_masked_by_type(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize("text", [
    "贷了八十万，三十年。", "每个月4200元。", "1200000元。", "利率是百分之三点九五。", "3.65%吧。", "每月18号。",
    "2026年11月29日放的款。", "一百二十万，贷了二十五年。", "我打过95588问过了。", "热线400-820-8820",
    "合同是20230515签的。", "大概七八十万。",
])
def test_look_alikes_are_left_alone(text: str) -> None:
    assert redact(text) == text


def test_checks() -> None:
    assert id_checksum_ok("11010519491231002X") and not id_checksum_ok("110105194912310021")
    assert luhn_ok("6222021234567890128") is luhn_ok("6222021234567890128")  # deterministic
    import random

    rng = random.Random(1)
    assert all(id_checksum_ok(make_id(rng)) for _ in range(50))
    assert all(luhn_ok(make_card(rng, 16)) and classify(make_card(rng, 19)) == "card" for _ in range(50))


def test_a_number_split_across_utterances_is_masked() -> None:
    r = Redactor()
    first, _ = r.redact("我新号码是一三九零一", 10.0, 12.0)
    second, _ = r.redact("二三四五六七，记一下。", 12.8, 14.0)
    assert first == "我新号码是[手机号]" and second.startswith("[手机号]")
    # A number that does not continue is not swallowed by the next utterance's amount.
    r2 = Redactor()
    r2.redact("我的手机是一三九零一二三四五六七", 0.0, 2.0)
    assert r2.redact("八十万", 2.5, 3.0)[0] == "八十万"


def test_names_and_addresses_of_the_loan_file_also_as_homophones() -> None:
    out = redact("钱雪文先生您好，钱先生住在科技园南路18号对吧", names=("钱学文",),
                 addresses=("深圳市南山区科技园南路18号",))
    assert "钱" not in out and "科技园南路" not in out and out.count("[姓名]") == 2 and "[地址]" in out


def test_masks_keep_the_assessment_working() -> None:
    assessor = Assessor()
    answer = redact("换了，新号码是一三九零一二三四五六七。")
    result = assessor.assess("您的联系电话最近有变化吗？", answer)
    assert result.label == "clear"


def test_the_corpus_meets_the_aims() -> None:
    from nlu.pii import loan_file_identities
    from tools.pii_corpus import leaked

    cases = build()
    assert sum(1 for c in cases if c["pii"]) >= 300
    caught: dict[str, list[bool]] = {}
    false_masks = [c for c in cases if c.get("lookalike") and "[" in redact(c["text"])]
    for case in cases:
        if case.get("lookalike"):
            continue
        names, addresses = loan_file_identities(case.get("loan_file"))
        r = Redactor(names, addresses)
        texts = case["text"] if isinstance(case["text"], list) else [case["text"]]
        out = "".join(r.redact(t, 2.0 * i, 2.0 * i + 1.5)[0] for i, t in enumerate(texts))
        for pii in case["pii"]:
            caught.setdefault(pii["kind"], []).append(not leaked(pii["value"], out))
    for kind in ("id", "mobile", "card"):
        assert all(caught[kind]), kind
    assert len(false_masks) / sum(1 for c in cases if c.get("lookalike")) < 0.02


def test_the_public_loan_file_carries_no_identifiers() -> None:
    loan = {"borrower": "钱学文", "role": "borrower", "repay_day": 11, "phone": "13812345678",
            "id_number": "110105198003154231", "address": "科技园南路18号"}
    assert public_loan_file(loan) == {"borrower": "钱**", "role": "borrower", "repay_day": 11}


def test_live_events_carry_no_personal_data(tmp_path: Path, shared_data: Path) -> None:
    """call_s11 (a new phone number, ID and card digits; a loan file with phone and ID) through the live path:
    no event holds a raw value."""
    from service.app import create_app
    from service.settings import Settings
    from tests.integration.test_live_assist import ScriptedTranscriber, _call, _stream
    from tests.support.server import authed

    script, pcm = _call(shared_data, "call_s11")
    app = create_app(Settings(data_dir=tmp_path), transcriber=ScriptedTranscriber(script))  # type: ignore[arg-type]
    with authed(app) as client:
        events = _stream(client, "s11", script, pcm)
    text = json.dumps(events, ensure_ascii=False)
    for raw in ("13901234567", "13812345678", "110105198003154231", "钱学文", "4231", "8866", "一三九零"):
        assert raw not in text, raw
    assert "[手机号]" in text
    contact = [e for e in events if e["type"] == "assessment" and e["topic"] == "contact"]
    assert contact and contact[-1]["label"] == "clear"


def test_digits_answering_an_identifier_question_are_masked() -> None:
    from nlu.pii import requested_identifier

    asked = "为了核实身份，请您报一下身份证后四位。"
    assert requested_identifier(asked) == "id" and requested_identifier("您的月供是多少？") is None
    # As Whisper base heard it on call_s11 (transcription path): matched by sound.
    assert requested_identifier("为了核实身份，请您报一下身份正后思维。") == "id"
    assert requested_identifier("我们再核对一下，好吗？") is None  # 好吗 sounds like 号码: two syllables are not enough
    customer = Redactor()
    customer.expect("id", 18.0)
    assert customer.redact("四二三一。", 14.0, 15.0)[0] == "[身份证号]。"
    assert customer.redact("八十万", 16.0, 17.0)[0] == "八十万"  # quantities stay
    assert customer.redact("1231", 30.0, 31.0)[0] == "1231"  # long after the question: an ordinary number


def test_identifier_words_heard_as_homophones_still_mask() -> None:
    assert redact("生煎器，从我为号8866的工资卡扣。") == "生煎器，从我为号[银行卡号]的工资卡扣。"
    assert redact("从我伟后8866的工资卡里控。") == "从我伟后[银行卡号]的工资卡里控。"  # named by the card after it


def test_logs_mask_personal_numbers_and_drop_frame_dumps() -> None:
    import logging

    from service.logs import PiiLogFilter

    f = PiiLogFilter()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "caller said %s", ("手机13901234567",), None)
    assert f.filter(record) and "13901234567" not in record.getMessage() and "[手机号]" in record.getMessage()
    frame = logging.LogRecord("uvicorn.error", logging.DEBUG, __file__, 1, "< %s", ("TEXT '{\"loan_file\"...'",),
                              None)
    assert not f.filter(frame)
