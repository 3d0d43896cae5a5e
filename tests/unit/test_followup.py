"""The follow-up policy as pure functions (issue #18 point 2): facts of a call, tiers from call histories, due
dates on the bank's calendar, follow-ups created, merged, closed by a later call and settled by delivery."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import pytest

from nlu.report import read_report
from nlu.script import ScriptError
from service.loanbook.policy import (
    BusinessCalendar,
    CallFacts,
    FollowUpState,
    call_facts,
    customer_tier,
    load_policy,
    plan_customer,
)
from tests.support.reports import stored_report

POLICY = load_policy()
TODAY = date(2026, 12, 2)  # a Wednesday


def _call(call_id: str, day: int, tier: str = "low", unresolved: dict[str, str] | None = None,
          clear: tuple[str, ...] = (), mismatched: tuple[str, ...] = (),
          actions: dict[str, tuple[str, ...]] | None = None, month: int = 11) -> CallFacts:
    return CallFacts(call_id, datetime(2026, month, day, 10), tier, 10, unresolved or {}, clear,  # type: ignore[arg-type]
                     mismatched, (), actions or {})


def test_a_report_reduces_to_what_it_left_open() -> None:
    report = stored_report("c1", "medium", 38,
                           {"income": "unclear", "overdue": "evasive", "monthly": "clear", "term": "clear"},
                           mismatch=("monthly",), not_asked=("rate",),
                           actions={"second_call": ["income", "overdue"], "check_loan_file": ["monthly"]})
    facts = call_facts("c1", datetime(2026, 12, 1, 9), read_report(report))
    assert facts.unresolved == {"income": "unclear", "overdue": "evasive"}
    assert facts.clear == ("term",)  # a clear answer contradicting the loan file does not settle the topic
    assert facts.mismatched == ("monthly",)
    assert facts.not_asked == ("rate",)
    assert facts.actions == {"second_call": ("income", "overdue"), "check_loan_file": ("monthly",)}
    assert (facts.tier, facts.risk_score) == ("medium", 38)
    again = CallFacts.from_row("c1", facts.at, "medium", 38, json.loads(json.dumps(facts.to_json())))
    assert again == facts


def test_business_days_skip_weekends_and_holidays_but_not_working_weekends() -> None:
    calendar = BusinessCalendar(holidays=frozenset({date(2026, 10, 1), date(2026, 10, 2)}),
                                workdays=frozenset({date(2026, 10, 10)}))
    assert calendar.add_business_days(date(2026, 12, 2), 3) == date(2026, 12, 7)  # Wed + 3 -> Mon
    assert calendar.add_business_days(date(2026, 12, 5), 0) == date(2026, 12, 7)  # a Saturday -> Monday
    assert calendar.add_business_days(date(2026, 9, 30), 1) == date(2026, 10, 5)  # over the holidays
    assert calendar.add_business_days(date(2026, 10, 9), 1) == date(2026, 10, 10)  # a working Saturday
    assert POLICY.calendar.add_business_days(date(2026, 9, 30), 1) == date(2026, 10, 5)


def test_tiers_from_call_histories() -> None:
    low = _call("a", 1, "low", clear=("term",))
    assert customer_tier([low], [], POLICY, TODAY) == ("low", ())
    # One vague answer on repayment makes a medium customer; the same topic vague twice running makes a high one.
    first = _call("b", 2, "low", {"income": "unclear"})
    assert customer_tier([first], [], POLICY, TODAY)[0] == "medium"
    second = _call("c", 20, "low", {"income": "omission"})
    tier, reasons = customer_tier([first, second], [], POLICY, TODAY)
    assert tier == "high" and reasons == ("同一问题连续回访仍未说清",)
    # A guarantor's hedged consent is high at once.
    assert customer_tier([_call("d", 3, "medium", {"guarantor": "unclear"})], [], POLICY, TODAY)[0] == "high"
    # A contradicted figure alone is medium; calls outside the window do not count.
    assert customer_tier([_call("e", 3, mismatched=("monthly",))], [], POLICY, TODAY)[0] == "medium"
    old = CallFacts("f", datetime(2024, 1, 1), "high", 90)
    assert customer_tier([old], [], POLICY, TODAY) == (None, ())
    assert customer_tier([old, low], [], POLICY, TODAY)[0] == "low"


def test_an_overdue_second_call_raises_the_tier() -> None:
    calls = [_call("a", 1, "low", clear=("term",))]
    late = FollowUpState("f1", "k1", "call", "second_call", ("income",), "assigned", date(2026, 11, 20),
                         datetime(2026, 11, 10))
    assert customer_tier(calls, [late], POLICY, TODAY) == ("high", ("二次回访逾期未完成",))
    assert customer_tier(calls, [late], POLICY, date(2026, 11, 24))[0] == "low"  # only 4 days late


def test_a_vague_call_plans_a_second_call_and_messages_over_allowed_channels() -> None:
    call = _call("c1", 30, "medium", {"overdue": "evasive", "repay_date": "unclear"}, mismatched=("monthly",),
                 actions={"second_call": ("overdue",), "send_schedule": ("repay_date", "monthly"),
                          "check_loan_file": ("monthly",)})
    plan = plan_customer("u1", [call], [], POLICY, TODAY, allowed=("call", "sms", "letter"), loan_id="L1")
    assert plan.tier == "medium"
    by_reason = {f.reason: f for f in plan.create}
    second = by_reason["second_call"]
    assert second.channel == "call" and set(second.topics) == {"overdue", "repay_date", "monthly"}
    # check_loan_file is due in 5 business days, sooner than the medium tier's 10: the call takes the sooner.
    assert second.due_date == date(2026, 12, 9) and second.source_call_id == "c1"
    schedule = by_reason["send_schedule"]
    assert schedule.channel == "sms" and schedule.due_date == date(2026, 12, 3)
    assert schedule.topics == ("repay_date", "monthly")
    assert second.plan_key == "u1:L1:second_call:call:c1"
    # No SMS consent: the schedule goes by e-mail if allowed, else by letter.
    assert {f.reason: f.channel for f in plan_customer("u1", [call], [], POLICY, TODAY,
                                                       allowed=("email",)).create}["send_schedule"] == "email"
    assert {f.reason: f.channel for f in plan_customer("u1", [call], [], POLICY, TODAY,
                                                       allowed=()).create}["send_schedule"] == "letter"


def test_planning_twice_creates_nothing_new() -> None:
    call = _call("c1", 30, "high", {"guarantor": "unclear"}, actions={"legal_review": ("guarantor",)})
    plan = plan_customer("u1", [call], [], POLICY, TODAY)
    assert {f.reason for f in plan.create} == {"second_call", "legal_review"}
    stored = [FollowUpState(f"id{i}", f.plan_key, f.channel, f.reason, f.topics, "open", f.due_date,
                            datetime(2026, 12, 2, 8)) for i, f in enumerate(plan.create)]
    again = plan_customer("u1", [call], stored, POLICY, TODAY)
    assert again.create == () and again.change == () and again.tier == "high"
    # Done or refused follow-ups are not planned again either.
    refused = [FollowUpState(s.id, s.plan_key, s.channel, s.reason, s.topics, "refused", s.due_date, s.created_at)
               for s in stored]
    assert plan_customer("u1", [call], refused, POLICY, TODAY).create == ()


def test_a_later_call_answering_every_topic_closes_the_second_call() -> None:
    first = _call("c1", 2, "medium", {"overdue": "unclear", "income": "unclear"})
    second_call = FollowUpState("f1", "u1:-:second_call:call:c1", "call", "second_call", ("overdue", "income"),
                                "assigned", date(2026, 11, 16), datetime(2026, 11, 2, 11))
    partly = _call("c2", 10, "low", {"income": "unclear"}, clear=("overdue",))
    plan = plan_customer("u1", [first, partly], [second_call], POLICY, TODAY)
    assert [(c.id, c.topics, c.status) for c in plan.change] == [("f1", ("income",), None)]
    fully = _call("c3", 20, "low", clear=("income", "term"))
    plan = plan_customer("u1", [first, partly, fully], [second_call], POLICY, TODAY)
    assert [(c.id, c.status, c.call_id) for c in plan.change] == [("f1", "done", "c3")]
    assert plan.tier == "low" and not [f for f in plan.create if f.channel == "call"]


def test_an_open_second_call_takes_new_topics_instead_of_a_twin() -> None:
    first = _call("c1", 2, "medium", {"overdue": "unclear"})
    open_call = FollowUpState("f1", "u1:-:second_call:call:c1", "call", "second_call", ("overdue",), "open",
                              date(2026, 12, 20), datetime(2026, 11, 2, 11))
    later = _call("c2", 30, "high", {"purpose": "evasive", "overdue": "unclear"})
    plan = plan_customer("u1", [first, later], [open_call], POLICY, TODAY)
    assert not [f for f in plan.create if f.channel == "call"]
    (change,) = plan.change
    assert change.id == "f1" and set(change.topics or ()) == {"overdue", "purpose"}
    assert change.due_date == date(2026, 12, 7)  # high: 3 business days, sooner than it was


def test_message_follow_ups_settle_by_delivery() -> None:
    call = _call("c1", 30, "low", clear=("term",))
    states = [FollowUpState(f"m{i}", f"k{i}", "sms", "education", (), "open", TODAY, datetime(2026, 12, 1),
                            delivery) for i, delivery in enumerate(("sent", "dead", "suppressed", "queued"))]
    plan = plan_customer("u1", [call], states, POLICY, TODAY, allowed=("sms",))
    assert {c.id: c.status for c in plan.change} == {"m0": "done", "m1": "unreachable", "m2": "unreachable"}
    # A low-risk customer is educated by message once per call.
    (education,) = plan.create
    assert education.reason == "education" and education.channel == "sms"
    assert plan_customer("u1", [call], states, POLICY, TODAY, allowed=()).create == ()


def test_a_bad_policy_says_where(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("tier_rules:\n  - {tier: severe, kind: latest_tier, reason: x}\n", encoding="utf-8")
    with pytest.raises(ScriptError, match="tier rule 1"):
        load_policy(bad)
    bad.write_text("actions:\n  send_schedule: {channels: [fax]}\n", encoding="utf-8")
    with pytest.raises(ScriptError, match="send_schedule"):
        load_policy(bad)


def test_an_unanswered_second_call_is_followed_by_a_message() -> None:
    call = _call("c1", 30, "medium", {"overdue": "unclear"})
    missed = FollowUpState("f1", "u1:-:second_call:call:c1", "call", "second_call", ("overdue",), "unreachable",
                           date(2026, 12, 1), datetime(2026, 11, 30, 9))
    plan = plan_customer("u1", [call], [missed], POLICY, TODAY, allowed=("email",))
    (message,) = [f for f in plan.create if f.channel != "call"]
    assert (message.channel, message.reason, message.topics) == ("email", "unreachable", ("overdue",))
    assert message.due_date == date(2026, 12, 3)
    stored = FollowUpState("m1", message.plan_key, "email", "unreachable", ("overdue",), "open", message.due_date,
                           datetime(2026, 12, 2, 9))
    assert not [f for f in plan_customer("u1", [call], [missed, stored], POLICY, TODAY, allowed=("email",)).create
                if f.channel != "call"]
