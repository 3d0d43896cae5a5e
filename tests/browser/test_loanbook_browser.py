"""The loan book's pages in a real browser (issue #18): Playwright drives Debian's Chromium against the app served
by uvicorn on a loopback port, with a fake recogniser (these claims are about the pages, not the speech model).
Reports are stored the way the job workers store them (tests.integration.test_loanbook's `score`), so planning, tiers
and follow-ups are the real ones. Saves screenshots to artifacts/customers-*.png, artifacts/followups-*.png and
artifacts/console-carried-over.png."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from service.app import state_of
from service.store.models import FollowUp
from tests.integration.test_live_socket import START, FakeTranscriber
from tests.integration.test_loanbook import LOAN, report, score
from tests.support.paths import ARTIFACTS
from tests.support.server import AGENT, AGENT_ID, INGEST, SUPERVISOR, bearer, served_app

PHONE, PHONE_MASKED = "13812345678", "138****5678"
#: C300's loan: the work queue's customer (its follow-ups are assigned and closed by the tests).
LOAN_300 = {**LOAN, "customer_id": "C300", "loan_id": "L300"}


@dataclass(frozen=True)
class Served:
    base: str
    port: int


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The app under uvicorn with the tokens of tests.support.server (the agent is A08) and a small loan book:
    C100 with two calls (a vague one that contradicted the loan file, then a high-risk one) and a phone number,
    C200 of another agent, and C300 whose follow-ups the work-queue test assigns and closes (one overdue)."""
    with served_app(tmp_path_factory.mktemp("loanbook-pages"), FakeTranscriber()) as (base, app):
        # `score` reads the app's state through a client's `app`; this one is never entered (uvicorn serves).
        client = TestClient(app)
        put = httpx.put(f"{base}/v1/customers/C100/contact", headers=bearer(INGEST),
                        json={"phone": PHONE, "email": "zhang.san@example.com", "consent": ["sms"]})
        assert put.status_code == 200
        score(client, "c100-1", report("c100-1", "medium", {
            "overdue": "unclear", "income": "evasive", "term": "clear", "monthly": "clear"}, mismatch=("monthly",),
            actions={"second_call": ["overdue", "income"], "send_schedule": ["repay_date"]}), agent_id=AGENT_ID)
        score(client, "c100-2", report("c100-2", "high", {"overdue": "clear", "guarantor": "omission"},
                                             actions={"legal_review": ["guarantor"]}), agent_id=AGENT_ID)
        score(client, "c200-1", report("c200-1", "medium", {"income": "unclear"}),
              loan={**LOAN, "customer_id": "C200", "loan_id": "L200"}, agent_id="A09")
        score(client, "c300-1", report("c300-1", "high", {"guarantor": "unclear"},
                                             actions={"legal_review": ["guarantor"]}), loan=LOAN_300,
              agent_id=AGENT_ID)
        store = state_of(app).store
        assert store is not None
        with store.session() as s, s.begin():  # C300's letter is long overdue
            s.execute(update(FollowUp).where(FollowUp.customer_id == "C300", FollowUp.channel == "letter")
                      .values(due_date=date(2026, 1, 5)))
        yield Served(base, int(base.rsplit(":", 1)[1]))


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


@pytest.mark.browser
def test_the_customer_page_shows_tier_history_open_topics_calls_and_followups(browser, served: Served) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.goto(f"{served.base}/customers#token={SUPERVISOR}")
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=30_000)
    assert "token" not in page.url
    rows = page.locator("#customers tbody tr[data-customer]")
    expect(rows).to_have_count(3)
    expect(rows.first).to_have_attribute("data-tier", "high")  # highest tier first
    expect(page.locator('#customers tr[data-customer="C100"]')).to_contain_text("高风险")
    _shot(page, "customers-list.png")
    page.select_option('#filters select[name="tier"]', "medium")
    page.locator("#filters button").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-customer", "C200")
    page.select_option('#filters select[name="tier"]', "")
    page.locator("#filters button").click()
    page.locator('#customers tr[data-customer="C100"] a').click()
    expect(page).to_have_url(f"{served.base}/customers/C100")
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=30_000)

    # The tier now and since when, and over time: medium after the first call, high after the second.
    expect(page.locator("#tier")).to_have_attribute("data-tier", "high")
    expect(page.locator("#tier")).to_have_text("高风险")
    expect(page.locator("#tier-since")).to_contain_text("起")
    expect(page.locator("#tier-reasons")).to_contain_text("担保或共同还款意愿未明确")
    marks = page.locator("#tier-timeline circle.mark")
    expect(marks).to_have_count(2)
    assert [marks.nth(i).get_attribute("data-tier") for i in range(2)] == ["medium", "high"]
    expect(marks.first.locator("title")).to_contain_text("客户陈述与贷款档案不一致")

    # Topics never answered clearly, in Chinese, with the call that left each.
    never = page.locator("#never-clear tbody tr[data-topic]")
    expect(never).to_have_count(3)
    for topic, name, label, call in (("income", "收入情况", "避而不答", "c100-1"),
                                     ("monthly", "月供", "与档案不符", "c100-1"),
                                     ("guarantor", "担保意愿", "信息遗漏", "c100-2")):
        row = page.locator(f'#never-clear tr[data-topic="{topic}"]')
        expect(row).to_contain_text(name)
        expect(row.locator(".badge")).to_have_text(label)
        expect(row.locator("a")).to_have_attribute("href", f"/calls/{call}")
    expect(page.locator('#never-clear tr[data-topic="overdue"]')).to_have_count(0)  # answered clearly later

    # The figure that contradicted the loan file: stated against on file.
    mismatch = page.locator('#mismatches tr[data-topic="monthly"]')
    expect(mismatch.locator(".stated")).to_have_text("3000 元")
    expect(mismatch.locator(".on-file")).to_have_text("4200 元")

    # Every call in order, each linking to its report.
    calls = page.locator("#calls tbody tr[data-call]")
    expect(calls).to_have_count(2)
    assert [calls.nth(i).get_attribute("data-call") for i in range(2)] == ["c100-1", "c100-2"]
    expect(calls.first).to_contain_text("表述不清")
    expect(calls.first).to_contain_text("月供：3000 元 / 档案 4200 元")

    # Follow-ups: the second call, the schedule by SMS (the customer consented), the letter to legal review.
    open_rows = page.locator("#open-followups tbody tr[data-followup]")
    expect(open_rows).to_have_count(3)
    second = page.locator('#open-followups tr[data-channel="call"]')
    expect(second).to_contain_text("电话")
    expect(second).to_contain_text("二次回访")
    expect(second).to_contain_text("收入情况")
    expect(second).to_contain_text("待分配")
    expect(page.locator('#open-followups tr[data-channel="sms"]')).to_contain_text("短信")
    expect(page.locator('#open-followups tr[data-channel="letter"]')).to_contain_text("信函")
    expect(page.locator("#closed-followups tbody")).to_contain_text("暂无")

    # Messages with their delivery status and masked address; the contact masked; no full number anywhere.
    sms = page.locator('#messages tr[data-status="queued"]')
    expect(sms).to_contain_text(PHONE_MASKED)
    expect(sms).to_contain_text("排队待发")
    expect(page.locator("#messages tr[data-status='suppressed']")).to_contain_text("未发送")
    expect(page.locator("#contact-phone")).to_have_text(PHONE_MASKED)
    expect(page.locator("#contact-email")).to_have_text("z***@example.com")
    expect(page.locator("#contact-consent")).to_have_text("短信")
    assert PHONE not in page.content()
    _shot(page, "customers-C100.png")

    # A call's link opens its report (the reduced stored report is enough for its header and gauge).
    calls.first.locator("a").click()
    expect(page).to_have_url(f"{served.base}/calls/c100-1")
    expect(page.locator("#report")).to_be_visible(timeout=30_000)
    expect(page.locator("#call-id")).to_have_text("c100-1")
    expect(page.locator("#meta")).to_contain_text(f"坐席 {AGENT_ID}")
    page.close()


@pytest.mark.browser
def test_the_work_queue_assigns_records_outcomes_and_refuses_by_role(browser, served: Served) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1500, "height": 900})
    page.goto(f"{served.base}/followups?customer_id=C300#token={SUPERVISOR}")
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=30_000)
    rows = page.locator("#followups tbody tr[data-followup]")
    expect(rows).to_have_count(2)
    letter = page.locator("#followups tbody tr.overdue")
    expect(letter).to_have_count(1)  # due in January: overdue, highlighted
    expect(letter).to_contain_text("信函")
    expect(letter.locator(".overdue-tag")).to_have_text("逾期")
    call = rows.filter(has_text="二次回访")
    expect(call).not_to_have_class("overdue")
    fid = call.get_attribute("data-followup")
    assert fid
    expect(call.locator(".state-cell")).to_have_text("待分配")
    _shot(page, "followups-queue.png")

    # The supervisor assigns the second call to A08: the row is redrawn from the answer.
    row = page.locator(f'#followups tr[data-followup="{fid}"]')
    row.locator('form.assign input[name="assignee"]').fill(AGENT_ID)
    row.locator("form.assign button").click()
    expect(row.locator(".state-cell")).to_have_text("已分配")
    expect(row.locator(".assignee")).to_have_text(AGENT_ID)
    expect(row).to_have_attribute("data-status", "assigned")
    page.close()

    # The agent: their own follow-up only, their outcome recorded (the note's phone number masked).
    page = browser.new_page(viewport={"width": 1500, "height": 900})
    page.goto(f"{served.base}/followups#token={AGENT}")
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=30_000)
    mine = page.locator("#followups tbody tr[data-followup]")
    expect(mine).to_have_count(1)
    expect(mine.first).to_have_attribute("data-followup", fid)
    mine.first.locator('form.outcome select[name="status"]').select_option("done")
    mine.first.locator('form.outcome input[name="note"]').fill(f"客户回电{PHONE}，已确认担保人书面同意")
    mine.first.locator("form.outcome button").click()
    expect(mine.first.locator(".state-cell")).to_have_text("已完成")
    expect(mine.first.locator(".note")).to_contain_text("已确认担保人书面同意")
    expect(mine.first.locator("form")).to_have_count(0)  # nothing more to do on it
    assert PHONE not in page.content()
    _shot(page, "followups-agent.png")

    # The customer's other follow-up (the letter, nobody's yet) is not in the agent's queue, even asked for.
    page.goto(f"{served.base}/followups?customer_id=C300&status=open&status=assigned")
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=30_000)
    expect(page.locator("#followups tbody tr[data-followup]")).to_have_count(0)

    # The customer of their follow-up opens; another agent's customer is refused with the API's reason.
    page.goto(f"{served.base}/customers/C300")
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=30_000)
    expect(page.locator(f'#closed-followups tr[data-followup="{fid}"]')).to_contain_text("已完成")
    page.goto(f"{served.base}/customers/C200")
    expect(page.locator("#banner")).to_contain_text("查看客户 C200 失败（无权限）")
    expect(page.locator("#banner details.detail")).to_contain_text("no follow-up assigned to you")  # folded
    expect(page.locator("#customer")).to_be_hidden()
    _shot(page, "customers-refused.png")
    page.goto(f"{served.base}/customers")
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=30_000)
    expect(page.locator("#customers tbody tr[data-customer]")).to_have_count(1)  # C300 only
    page.close()

    # A supervisor assigning what is already closed gets the conflict in the banner.
    page = browser.new_page(viewport={"width": 1500, "height": 900})
    page.goto(f"{served.base}/followups?customer_id=C300#token={SUPERVISOR}")
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=30_000)
    letter = page.locator("#followups tbody tr.overdue")
    expect(letter).to_have_count(1)
    lid = letter.get_attribute("data-followup")
    closed = httpx.post(f"{served.base}/v1/followups/{lid}/outcome", json={"status": "cancelled"},
                        headers=bearer(SUPERVISOR))
    assert closed.status_code == 200  # closed meanwhile, elsewhere
    letter.locator('form.assign input[name="assignee"]').fill(AGENT_ID)
    letter.locator("form.assign button").click()
    expect(page.locator("#banner")).to_contain_text("分配失败（状态已变化，请刷新）")
    expect(page.locator("#banner")).to_contain_text("cancelled")
    page.close()


@pytest.mark.browser
def test_the_console_shows_what_earlier_calls_left_open(browser, served: Served) -> None:  # type: ignore[no-untyped-def]
    import websockets.sync.client as ws_client
    from playwright.sync_api import expect

    start = {**START, "loan_file": {"customer_id": "C100", "loan_id": "L100", "role": "borrower"},
             "agent_id": AGENT_ID}
    with ws_client.connect(f"ws://127.0.0.1:{served.port}/v1/calls/live-c100/audio",
                           additional_headers=bearer(INGEST)) as ws:
        ws.send(json.dumps(start))
        ready = json.loads(ws.recv(timeout=30))
        # The switch's own socket reads nothing of the loan book (#26); the agent's console gets the items.
        assert ready["type"] == "ready" and ready["carried_over"] == []
        carried_topics = ("income", "monthly", "guarantor")
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(f"{served.base}/console?call=live-c100#token={AGENT}")  # the call's agent
        expect(page.locator("#status")).to_have_attribute("data-state", "live", timeout=30_000)
        carried = page.locator("#carried-list li")
        expect(page.locator("#carried")).to_be_visible()
        expect(page.locator("#carried h3")).to_contain_text("上次遗留")
        expect(carried).to_have_count(len(carried_topics))
        for topic, label, name, call in (("income", "避而不答", "收入情况", "c100-1"),
                                         ("monthly", "与档案不符", "月供", "c100-1"),
                                         ("guarantor", "信息遗漏", "担保意愿", "c100-2")):
            item = page.locator(f'#carried-list li[data-topic="{topic}"]')
            expect(item.locator(".badge")).to_have_text(label)
            expect(item).to_contain_text(name)
            expect(item.locator("a")).to_have_attribute("href", f"/calls/{call}")
        ws.send(json.dumps({"type": "stop"}))
        events = [json.loads(ws.recv(timeout=30))]
        while events[-1]["type"] != "end":
            events.append(json.loads(ws.recv(timeout=30)))
    # The checklist is this call's own, exactly the server's (no topic asked, none carried in), and so is its count.
    (summary,) = [e for e in events if e["type"] == "summary"]
    expected = [i["topic"] for i in summary["checklist"]]
    expect(page.locator("#status")).to_have_attribute("data-state", "ended", timeout=30_000)
    expect(page.locator("#checklist li")).to_have_count(len(expected))
    assert page.locator("#checklist li").evaluate_all("els => els.map(e => e.dataset.topic)") == expected
    expect(page.locator("#coverage")).to_have_text(f"0/{len(expected)}")
    expect(page.locator("#checklist li[data-state='vague']")).to_have_count(0)
    expect(carried).to_have_count(len(carried_topics))  # still there after the call's summary
    _shot(page, "console-carried-over.png")
    page.close()
