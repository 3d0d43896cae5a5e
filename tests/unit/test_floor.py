"""The floor's pure parts and its one-process wiring: the fold of a call's events into its tile, the alert rules
of configs/alerts.yaml, and a `Floor` with its board (coalesced tiles, alerts, acknowledgements, wallboards).
Events are built directly from the protocol's models. Milliseconds."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from nlu.report import load_risk
from nlu.script import load_script
from service.floor import Floor
from service.floor.alerts import AlertsError, load_alert_rules, raised
from service.floor.tile import Tile, fold, masked_parties, new_tile
from service.protocol import (
    AssessmentEvent,
    ChecklistEvent,
    ChecklistItemModel,
    EndEvent,
    FinalEvent,
    MismatchInfo,
    PartialEvent,
    PromptEvent,
    ReadyEvent,
    RecordOnlyEvent,
    RiskEvent,
    SummaryEvent,
)

SCRIPT = load_script()
TOPICS = set(SCRIPT.topics) | {"other"}
STATED = load_risk().stated
RULES = load_alert_rules(topics=TOPICS, stated=STATED)


def assessment(topic: str, label: str, question: str = "agent-2", revision: int = 0,
               mismatch: MismatchInfo | None = None) -> AssessmentEvent:
    return AssessmentEvent(topic=topic, topic_name=SCRIPT.topics[topic].name if topic in SCRIPT.topics else topic,
                           label=label, confidence=0.9, evidence=[], slots=[], mismatch=mismatch,  # type: ignore[arg-type]
                           question_utterance_id=question, answer_utterance_id="customer-2",
                           answer_utterance_ids=["customer-2"], answer_end_s=20.0, revision=revision)


def checklist(*states: tuple[str, str, str | None]) -> ChecklistEvent:
    return ChecklistEvent(items=[ChecklistItemModel(topic=t, name=SCRIPT.topics[t].name, state=s, label=lab)  # type: ignore[arg-type]
                                 for t, s, lab in states], coverage=0.5)


LOAN = {"borrower": "刘*", "customer_id": "C-20240017", "loan_id": "L-2024-0093", "role": "guarantor",
        "amount_yuan": 900000, "repay_day": 25}


# -- the fold ---------------------------------------------------------------------------------------------------

def test_a_calls_events_fold_into_its_tile() -> None:
    tile = new_tile("c1", "A08", 1000.0)
    tile = fold(tile, ReadyEvent(call_id="c1", channels=["agent", "customer"], loan_file=LOAN), 1000.1)
    assert (tile.customer, tile.loan) == ("刘*", "****0093 · 担保人 · 90 万元")
    tile = fold(tile, checklist(("guarantor", "vague", "unclear"), ("overdue", "not_asked", None)), 1010.0)
    tile = fold(tile, assessment("guarantor", "unclear", "agent-2"), 1010.0)
    tile = fold(tile, PromptEvent(text="请客户明确答复", topic="guarantor", topic_name="担保意愿", label="unclear",
                                  mismatch=False, question_utterance_id="agent-2", answer_end_s=20.0), 1010.0)
    tile = fold(tile, RiskEvent(score=35, tier="medium"), 1010.0)
    data = tile.to_json(now_s=1012.0)
    assert data["checklist"] == {"items": [{"topic": "guarantor", "name": "担保意愿", "state": "vague",
                                            "label": "unclear"},
                                           {"topic": "overdue", "name": "还款困难风险", "state": "not_asked",
                                            "label": None}], "coverage": 0.5}
    assert data["vague"] == {"omission": 0, "unclear": 1, "evasive": 0}
    assert data["risk"] == {"score": 35, "tier": "medium"}
    assert data["last_prompt"] == {"text": "请客户明确答复", "topic_name": "担保意愿", "label": "unclear"}
    assert (data["state"], data["duration_s"], data["seq"], data["agent_id"]) == ("live", 12.0, 5, "A08")
    assert data["started_at"] == "1970-01-01T00:16:40.000+00:00" and data["updated_at"].endswith("16:50.000+00:00")
    # The end: the summary's duration, then ended.
    tile = fold(tile, SummaryEvent(call_id="c1", duration_s=36.34, checklist=[], coverage=1.0, answers=1,
                                   vague_answers=1, mismatches=0, assessments=[], prompts=[]), 1040.0)
    tile = fold(tile, EndEvent(call_id="c1", report_url="/v1/calls/c1/report"), 1040.0)
    assert (tile.state, tile.to_json(now_s=5000.0)["duration_s"]) == ("ended", 36.3)


def test_vague_answers_count_the_latest_revision_per_question_and_topic() -> None:
    tile = new_tile("c1", None, 0.0)
    tile = fold(tile, assessment("guarantor", "evasive", "agent-2", 0), 1.0)
    tile = fold(tile, assessment("guarantor", "unclear", "agent-2", 1), 2.0)  # went on answering
    tile = fold(tile, assessment("guarantor", "evasive", "agent-2", 0), 3.0)  # an old revision, late: ignored
    tile = fold(tile, assessment("guarantor", "unclear", "agent-3", 0), 4.0)  # asked again, hedged again
    tile = fold(tile, assessment("overdue", "clear", "agent-4", 0), 5.0)
    assert tile.vague == {"omission": 0, "unclear": 2, "evasive": 0}


def test_events_that_show_nothing_leave_the_tile_as_it_is() -> None:
    tile = fold(new_tile("c1", None, 0.0), RiskEvent(score=10, tier="low"), 1.0)
    for event in (PartialEvent(channel="agent", utterance_id="agent-1", text="您好", start_s=0.0),
                  FinalEvent(channel="agent", utterance_id="agent-1", text="您好", start_s=0.0, end_s=1.0),
                  RiskEvent(score=10, tier="low")):
        assert fold(tile, event, 2.0) is tile


def test_a_recorded_only_call_and_its_end() -> None:
    tile = fold(new_tile("c1", None, 0.0), RecordOnlyEvent(call_id="c1", message="…"), 1.0)
    assert tile.state == "record_only"
    assert fold(tile, EndEvent(call_id="c1"), 2.0).state == "ended"


def test_the_floor_never_shows_an_id_whole_a_phone_or_a_card() -> None:
    assert masked_parties(None) == (None, None)
    assert masked_parties({"customer_id": "C-20240017"}) == ("****0017", None)
    # What the ready event carries is public_loan_file's: even if more came, only the masked parts are used.
    customer, loan = masked_parties({**LOAN, "phone": "13812345678", "card_number": "6222021234567890123"})
    assert "1381234" not in f"{customer}{loan}" and "62220212" not in f"{customer}{loan}"
    assert "C-20240017" not in f"{customer}{loan}" and "L-2024-0093" not in f"{customer}{loan}"


# -- alerts as data ---------------------------------------------------------------------------------------------

def test_the_shipped_rules_raise_on_what_the_bank_asked_for() -> None:
    assert {r.id for r in RULES} >= {"guarantor_hedged", "repayment_evasive", "loan_mismatch", "high_risk"}
    [hedged] = raised("c1", assessment("guarantor", "unclear", "agent-2"), RULES, 0.0)
    assert (hedged.alert_id, hedged.rule, hedged.topic, hedged.label) == (
        "c1:guarantor_hedged:agent-2:guarantor", "guarantor_hedged", "guarantor", "unclear")
    assert hedged.title == "担保人对担保责任含糊其辞" and hedged.open
    assert raised("c1", assessment("guarantor", "clear"), RULES, 0.0) == []
    assert [a.rule for a in raised("c1", assessment("overdue", "evasive"), RULES, 0.0)] == ["repayment_evasive"]
    assert raised("c1", assessment("overdue", "unclear"), RULES, 0.0) == []
    mismatch = MismatchInfo(field="repay_day", stated=18, on_file=8)
    [wrong] = raised("c1", assessment("repay_date", "clear", mismatch=mismatch), RULES, 0.0)
    assert (wrong.rule, wrong.label) == ("loan_mismatch", "mismatch")
    [high] = raised("c1", RiskEvent(score=60, tier="high"), RULES, 0.0)
    assert (high.alert_id, high.label) == ("c1:high_risk", "high")
    assert raised("c1", RiskEvent(score=30, tier="medium"), RULES, 0.0) == []


def test_a_clear_refusal_or_a_stated_difficulty_raises_its_own_alert_once() -> None:
    # A guarantor's plain 不同意 is a clear answer: no hedge alert, but what it states is the risk.
    refused = RiskEvent(score=50, tier="high", stated={"guarantor": "no", "contact": "yes"})
    alerts = raised("c1", refused, RULES, 0.0)
    assert {(a.alert_id, a.rule, a.topic, a.label) for a in alerts} == {
        ("c1:high_risk", "high_risk", None, "high"),
        ("c1:guarantor_refuses:stated:guarantor:no", "guarantor_refuses", "guarantor", "stated:no")}
    # The same stated value in the call's next risk event is the same moment: the same id, so raised once.
    again = raised("c1", RiskEvent(score=65, tier="high", stated={"guarantor": "no", "overdue": "yes"}), RULES, 1.0)
    assert {a.alert_id for a in again} == {"c1:high_risk", "c1:guarantor_refuses:stated:guarantor:no",
                                           "c1:repayment_difficulty:stated:overdue:yes"}
    assert raised("c1", RiskEvent(score=0, tier="low", stated={"overdue": "no", "contact": "yes"}), RULES, 0.0) == []


@pytest.mark.parametrize("rules, problem", [
    ("rules: [{id: x, title: t, when: ['guarantor.stated:maybe']}]", "never states 'maybe'"),
    ("rules: [{id: x, title: t, when: ['loan_amount.stated:no']}]", "no stated rule for topic loan_amount"),
    ("rules: {}", "must be a list"),
    ("rules: [{id: x, title: t, when: [guarantor.hedged]}]", "is not TOPIC.LABEL"),
    ("rules: [{id: x, title: t, when: [guarantr.unclear]}]", "names no topic"),
    ("rules: [{id: x, title: '', when: [guarantor.unclear]}]", "title"),
    ("rules: [{id: X-1, title: t, when: [guarantor.unclear]}]", "snake_case"),
    ("rules: [{id: x, title: t, when: [risk.high]}, {id: x, title: t, when: [risk.high]}]", "used twice"),
    ("rules: [{id: x, title: t, when: []}]", "non-empty list"),
])
def test_a_bad_alerts_file_is_refused_saying_where(tmp_path: Path, rules: str, problem: str) -> None:
    path = tmp_path / "alerts.yaml"
    path.write_text(rules, encoding="utf-8")
    with pytest.raises(AlertsError, match=problem):
        load_alert_rules(path, TOPICS, STATED)


def test_patterns_may_name_any_topic(tmp_path: Path) -> None:
    path = tmp_path / "alerts.yaml"
    path.write_text("rules: [{id: any_evasion, title: 回避, when: ['*.evasive']}]", encoding="utf-8")
    rules = load_alert_rules(path, TOPICS)
    assert [a.rule for a in raised("c1", assessment("income", "evasive"), rules, 0.0)] == ["any_evasion"]


# -- the floor of one process -----------------------------------------------------------------------------------

def _messages(sub: Any) -> list[dict[str, Any]]:
    out = []
    while not sub.queue.empty():
        out.append(json.loads(sub.queue.get_nowait()))
    return out


@pytest.mark.asyncio
async def test_a_call_on_the_floor_tiles_coalesced_alerts_at_once_acknowledged_everywhere() -> None:
    floor = Floor(RULES, tile_interval_s=0.05)
    wallboard = floor.board.subscribe()
    floor.open("c1", "A08")
    floor.observe("c1", ReadyEvent(call_id="c1", channels=["agent", "customer"], loan_file=LOAN))
    floor.observe("c1", checklist(("guarantor", "asked", None)))
    floor.observe("c1", FinalEvent(channel="agent", utterance_id="agent-2", text="…", start_s=0, end_s=1))
    started = _messages(wallboard)
    assert [m["type"] for m in started] == ["call_started"]  # the burst after it waits for the interval
    await asyncio.sleep(0.15)
    [tile] = _messages(wallboard)
    assert tile["type"] == "tile" and tile["tile"]["customer"] == "刘*" and tile["seq"] == tile["tile"]["seq"] == 2
    # A hedged consent: the alert and its tile go at once.
    floor.observe("c1", assessment("guarantor", "unclear", "agent-2"))
    alert, with_alert = _messages(wallboard)
    assert alert["type"] == "alert" and alert["alert"]["rule"] == "guarantor_hedged"
    alert_id = alert["alert"]["alert_id"]
    assert with_alert["type"] == "tile" and with_alert["tile"]["alerts"] == [alert_id]
    # The same answer revised raises nothing new.
    floor.observe("c1", assessment("guarantor", "evasive", "agent-2", revision=1))
    await asyncio.sleep(0.15)
    assert [m["type"] for m in _messages(wallboard)] == ["tile"]
    view = floor.board.snapshot(0.0)
    assert [a["alert_id"] for a in view["alerts"]] == [alert_id]
    assert view["calls"][0]["vague"] == {"omission": 0, "unclear": 0, "evasive": 1}
    # Acknowledged: off the open alerts and the tile, once.
    acked, changed = floor.acknowledge(alert_id, "supervisor-1") or (None, False)
    assert changed and acked is not None and acked.acknowledged_by == "supervisor-1" and acked.acknowledged_at
    ack, tile_after = _messages(wallboard)
    assert ack["type"] == "alert_ack" and ack["alert"]["acknowledged_by"] == "supervisor-1"
    assert tile_after["tile"]["alerts"] == [] and floor.board.snapshot(0.0)["alerts"] == []
    again = floor.acknowledge(alert_id, "supervisor-2")
    assert again is not None and again[0].acknowledged_by == "supervisor-1" and not again[1]
    assert floor.acknowledge("c1:nothing", "supervisor-1") is None
    # The end: call_ended with the last tile; the riskiest call first while both are on the board.
    floor.open("c2", None)
    floor.observe("c2", RiskEvent(score=60, tier="high"))
    await asyncio.sleep(0.15)
    assert [c["call_id"] for c in floor.board.calls(0.0)] == ["c2", "c1"]
    floor.close("c1")
    ended = [m for m in _messages(wallboard) if m["type"] == "call_ended"]
    assert [m["tile"]["state"] for m in ended] == ["ended"]


@pytest.mark.asyncio
async def test_an_ended_call_leaves_the_board_after_a_while_with_its_alerts() -> None:
    floor = Floor(RULES, keep_ended_s=0.0)
    floor.open("c1", None)
    floor.observe("c1", assessment("overdue", "evasive"))
    assert floor.board.open_alerts()
    floor.close("c1")
    assert floor.board.calls(0.0)[0]["state"] == "ended"
    assert floor.board.sweep(1e12) == ["c1"]
    assert floor.board.snapshot(0.0) == {"calls": [], "alerts": []}


def test_a_tile_record_has_the_contracts_keys() -> None:
    keys = set(Tile("c", None, 0.0).to_json(0.0))
    assert keys == {"call_id", "agent_id", "customer", "loan", "started_at", "duration_s", "state", "checklist",
                    "vague", "risk", "last_prompt", "alerts", "seq", "updated_at"}


class _Peers:
    """A shared bus stand-in whose other replica has died: nothing comes, and no call of theirs is claimed."""

    shared = True

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def publish(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    async def start(self, deliver: Any) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def held(self, call_ids: list[str]) -> list[bool]:
        return [False] * len(call_ids)

    async def check(self) -> str | None:
        return None


@pytest.mark.asyncio
async def test_the_calls_of_a_replica_that_died_leave_the_board_and_acks_reach_the_owner() -> None:
    peers = _Peers()
    floor = Floor(RULES, peers, "replica-b")  # type: ignore[arg-type]
    wallboard = floor.board.subscribe()
    dead = new_tile("c-dead", None, 0.0).to_json(1.0)
    floor.receive({"type": "call_started", "call_id": "c-dead", "tile": dead}, "replica-a")
    floor.receive({"type": "alert", "call_id": "c-dead", "alert": raised(
        "c-dead", assessment("overdue", "evasive"), RULES, 1.0)[0].to_json()}, "replica-a")
    # This replica's own call: it is never checked against the claims.
    floor.open("c-own", None)
    floor.observe("c-own", assessment("guarantor", "evasive"))
    [own_alert] = [a for a in floor.board.alerts.values() if a.call_id == "c-own"]
    assert {m["type"] for m in peers.sent} == {"call_started", "alert", "tile"}
    # An acknowledgement made on another replica reaches the owner: the tile without it goes out to the others.
    peers.sent.clear()
    floor.receive({"type": "alert_ack", "call_id": "c-own", "alert": own_alert.acknowledged(
        "supervisor-a", 2.0).to_json()}, "replica-a")
    assert [(m["type"], m["tile"]["alerts"]) for m in peers.sent] == [("tile", [])]
    for _ in range(3):
        await floor._check_lost()
    assert [t["call_id"] for t in floor.board.calls(5.0)] == ["c-own"]
    assert all(a.call_id != "c-dead" for a in floor.board.alerts.values())
    lost = [m for m in _messages(wallboard) if m["type"] == "call_ended"]
    assert [(m["call_id"], m["lost"], m["tile"]["state"]) for m in lost] == [("c-dead", True, "ended")]
