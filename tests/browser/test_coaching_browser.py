"""The coaching pages in a real browser: Playwright drives Debian's Chromium against a real server whose calls
were scored by the real pipeline from text turns. Saves screenshots to artifacts/agents.png and
artifacts/agents-A08.png."""

from __future__ import annotations

from pathlib import Path

import pytest

from nlu.assess import Assessor
from service.bootstrap import report_rows
from service.settings import Settings
from service.store import Store
from tests.integration.test_coaching import CLEAN_CALL, GUARANTOR_CALL, _store_call, report_of
from tests.support.paths import ARTIFACTS
from tests.support.server import AGENT, AGENT_ID, SUPERVISOR, running_server


@pytest.mark.browser
def test_scorecards_charts_and_moments_in_the_browser(browser, model_cache: Path,  # type: ignore[no-untyped-def]
                                                      tmp_path: Path) -> None:
    from playwright.sync_api import expect

    rules = Assessor()
    data = tmp_path / "data"
    with running_server(data, model_cache) as port:
        # The server's database, migrated by it; the features' rows are written as the server writes them.
        store = Store(f"sqlite:///{data / 'huifang.db'}", report_rows(Settings(data_dir=data)))
        _store_call(store, report_of(rules, GUARANTOR_CALL, "g1"), AGENT_ID)
        _store_call(store, report_of(rules, CLEAN_CALL, "ok1", "borrower", 20.0), AGENT_ID)
        _store_call(store, report_of(rules, CLEAN_CALL, "b1", "borrower", 20.0), "A09")
        store.close()
        base = f"http://127.0.0.1:{port}"

        # The supervisor's scoreboard: both agents, the team's median, sorting by a figure.
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(f"{base}/agents#token={SUPERVISOR}")
        expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=30_000)
        expect(page.locator("#board tbody tr[data-agent]")).to_have_count(2)
        expect(page.locator('#board tr[data-agent="A08"] td[data-figure="calls"]')).to_contain_text("2")
        expect(page.locator("#board tr.median")).to_contain_text("团队中位数")
        page.locator('#board th[data-sort="high_skipped_per_call"]').click()  # fewest first is better: desc first
        expect(page.locator('#board th[data-sort="high_skipped_per_call"]')).to_have_attribute("data-sorted", "desc")
        expect(page.locator("#board tbody tr[data-agent]").first).to_have_attribute("data-agent", "A08")
        page.locator('#board th[data-sort="high_skipped_per_call"]').click()
        expect(page.locator("#board tbody tr[data-agent]").first).to_have_attribute("data-agent", "A09")
        assert "token" not in page.url
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "agents.png"), full_page=True)

        # One agent's card: figures, the coaching list, the charts, and the moments behind a figure.
        page.locator('#board a[href="/agents/A08"]').click()
        expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=30_000)
        expect(page.locator('#figures tr[data-figure="calls"] .value')).to_have_text("2")
        expect(page.locator("#review > li").first).to_have_attribute("data-call", "g1")
        expect(page.locator('#review > li[data-call="g1"] .why').first).to_have_attribute(
            "data-rule", "guarantor_consent_skipped")
        expect(page.locator('#review .why[data-rule="evasion_unchallenged"] a')).to_have_attribute(
            "href", "/calls/g1#t=11-13")
        expect(page.locator("#trend path.agent")).to_have_count(1)
        expect(page.locator("#trend circle.point")).to_have_count(1)  # calls in the last of six periods only
        expect(page.locator('#coverage rect.bar[data-topic="repay_date"]')).to_have_count(1)
        expect(page.locator('#prompts rect.followed[data-topic="monthly"]')).to_have_count(1)
        page.locator('#figures tr[data-figure="vague_unresolved_per_call"] button.listen').click()
        expect(page.locator("#moments li[data-call]")).to_have_count(1)
        expect(page.locator("#moments li a").last).to_have_attribute("href", "/calls/g1#t=11-13")
        expect(page.locator("#calls tbody tr[data-call]")).to_have_count(2)
        page.screenshot(path=str(ARTIFACTS / "agents-A08.png"), full_page=True)

        # The moment's link opens the call's report cued at that span.
        page.locator("#moments li a").last.click()
        expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=30_000)
        expect(page.locator("body")).to_have_attribute("data-cue", "11-13")
        page.close()

        # An agent: their own card, and a refusal for another agent's.
        page = browser.new_page()
        page.goto(f"{base}/agents/A09#token={AGENT}")
        expect(page.locator("#banner")).to_contain_text("打开坐席 A09 的辅导卡失败（无权限）")
        expect(page.locator("#card")).to_be_hidden()
        page.goto(f"{base}/agents/{AGENT_ID}")
        expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=30_000)
        expect(page.locator("#calls tbody tr[data-call]")).to_have_count(2)
        page.close()
