"""The agent console in a real browser: Playwright drives Debian's Chromium against a real server while a
shared call is streamed through it with the real model. Saves screenshots to artifacts/console-call_s03*.png."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from pathlib import Path

import pytest

from tests.browser.test_pages_browser import ALLOWED_LATIN, AUDIT_JS
from tests.support.paths import ARTIFACTS
from tests.support.server import INGEST, SUPERVISOR, bearer, running_server


@pytest.mark.model
@pytest.mark.browser
def test_the_console_shows_prompt_cards_and_checklist_for_a_shared_call(
        browser, model_cache: Path, tmp_path: Path, shared_data: Path) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    from asr.audio import load_call_audio
    from service.cli.replay import replay

    script = json.loads((shared_data / "calls" / "call_s03.json").read_text(encoding="utf-8"))
    audio = load_call_audio(str(shared_data / "calls" / "call_s03.flac"), 16000)
    with running_server(tmp_path / "data", model_cache) as port:
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(f"http://127.0.0.1:{port}/console?call=browser-s03#token={SUPERVISOR}")
        expect(page.locator("#status")).to_have_attribute("data-state", "waiting")

        # The switch starts streaming after the agent's screen is open, as in a real call.
        stream = threading.Thread(target=lambda: asyncio.run(replay(
            f"ws://127.0.0.1:{port}/v1/calls/browser-s03/audio", audio, 16000, ["agent", "customer"],
            loan_file=script["loan_file"], headers=bearer(INGEST))))
        stream.start()
        try:
            expect(page.locator("#status")).to_have_attribute("data-state", "ended", timeout=180_000)
        finally:
            stream.join(timeout=60)

        for topic in ("monthly", "purpose", "overdue"):
            card = page.locator(f'.card[data-topic="{topic}"]')
            expect(card).to_have_count(1)
            expect(card).to_have_attribute("data-label", "evasive")
            expect(card.locator(".badge")).to_have_text("避而不答")
            expect(page.locator(f'.checklist li[data-topic="{topic}"]')).to_have_attribute("data-state", "vague")
        expect(page.locator('.checklist li[data-topic="loan_amount"]')).to_have_attribute("data-state", "not_asked")
        expect(page.locator('.card[data-topic="overdue"] .answer')).to_contain_text("未作回答")
        expect(page.locator(".utt.agent").first).to_contain_text("银行")
        expect(page.locator(".utt.customer").first).to_be_visible()
        expect(page.locator("#loan")).to_contain_text("赵*")  # the surname only
        expect(page.locator("#summary-panel")).to_be_visible()
        expect(page.locator("#summary-wait")).to_be_hidden()  # the summary replaced what it said would come
        # Stored when it ended (#29): the console links to the call's report page (not the JSON API).
        link = page.locator("#report-link")
        expect(link).to_have_text("查看报告")
        expect(link).to_have_attribute("href", "/calls/browser-s03")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "console-call_s03.png"), full_page=True)
        # The answer tags on the customer's bubbles are read whole at every width (issue #27: 收入情况 · 表 / 述不清).
        for width in (1024, 1280, 1920):
            page.set_viewport_size({"width": width, "height": 900})
            audit = page.evaluate(AUDIT_JS, sorted(ALLOWED_LATIN))
            assert not audit["problems"] and not audit["latin"], (width, audit)
            page.screenshot(path=str(ARTIFACTS / f"console-call_s03-{width}.png"), full_page=True)

        # The link opens the stored report of this call, marked as a live call that ended cleanly; the calls
        # list marks it the same way.
        link.click()
        expect(page).to_have_url(f"http://127.0.0.1:{port}/calls/browser-s03")
        expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=30_000)
        expect(page.locator("#source .source")).to_have_attribute("data-source", "live")
        expect(page.locator("#source")).to_have_text("实时通话")
        expect(page.locator("#call-note")).to_be_hidden()
        expect(page.locator('#checklist tr[data-topic="overdue"]')).to_contain_text("避而不答")
        page.goto(f"http://127.0.0.1:{port}/calls")
        row = page.locator('#calls tr[data-call-id="browser-s03"]')
        expect(row).to_have_attribute("data-source", "live")
        expect(row.locator(".origin")).to_have_text("实时通话")
        page.close()


@pytest.mark.model
@pytest.mark.browser
def test_the_report_page_of_a_scored_shared_call(browser, model_cache: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                 shared_data: Path) -> None:
    import time

    import httpx
    from playwright.sync_api import expect

    calls = shared_data / "calls"
    script = json.loads((calls / "call_s09.json").read_text(encoding="utf-8"))
    with running_server(tmp_path / "data", model_cache) as port:
        base = f"http://127.0.0.1:{port}"
        with open(calls / "call_s09.flac", "rb") as f:
            job = httpx.post(f"{base}/v1/recordings", files={"file": ("call_s09.flac", f, "audio/flac")},
                             headers=bearer(INGEST),
                             data={"call_id": "report-s09", "agent_id": "A08",
                                   "loan_file": json.dumps(script["loan_file"], ensure_ascii=False)}).json()
        deadline = time.monotonic() + 240
        while httpx.get(f"{base}/v1/recordings/{job['id']}", headers=bearer(INGEST)).json()["status"] not in (
                "done", "failed"):
            assert time.monotonic() < deadline, "scoring did not finish"
            time.sleep(1)
        report = httpx.get(f"{base}/v1/calls/report-s09/report", headers=bearer(SUPERVISOR)).json()

        page = browser.new_page(viewport={"width": 1440, "height": 1100})
        page.goto(f"{base}/calls/report-s09#token={SUPERVISOR}")
        expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=30_000)
        expect(page.locator("#score")).to_have_text(str(report["risk_score"]))
        expect(page.locator("#tier")).to_have_attribute("data-tier", report["tier"])
        # The customer refuses to talk about repayment difficulty: flagged on the timeline, first in the score's
        # contributions, in the checklist and as an action; the loan amount was answered clearly.
        expect(page.locator('#checklist tr[data-topic="overdue"]')).to_contain_text("避而不答")
        expect(page.locator('.flag[data-topic="overdue"]')).to_have_attribute("data-label", "evasive")
        expect(page.locator("#contributions li").first).to_contain_text("还款困难风险")
        expect(page.locator('#actions li[data-action="second_call"]')).to_be_visible()
        expect(page.locator('#checklist tr[data-topic="loan_amount"]')).to_have_attribute("data-label", "clear")
        expect(page.locator(".timeline .utt-bar")).to_have_count(len(report["utterances"]))
        # The stored audio is fetched with the header and played from memory: no credential in any URL.
        expect(page.locator("#player")).to_have_attribute("src", re.compile(r"^blob:"))
        assert "token" not in page.url
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report-call_s09.png"), full_page=True)

        page.goto(f"{base}/calls")
        row = page.locator('#calls tr[data-call-id="report-s09"]')
        expect(row).to_contain_text("A08")
        row.locator("a").click()
        expect(page).to_have_url(f"{base}/calls/report-s09")
        page.close()


@pytest.mark.browser
def test_the_console_says_when_a_call_is_recorded_only(browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A server at its capacity of one live call takes the next record-only: the agent's screen says so (no
    prompts will come, the call is scored after it ends) and, at the end, that it is being scored."""
    import websockets.sync.client as ws_client
    from playwright.sync_api import expect

    from tests.integration.test_live_socket import FakeTranscriber
    from tests.support.server import served_app

    start = json.dumps({"type": "start", "sample_rate_hz": 16000, "encoding": "pcm16",
                        "channels": ["agent", "customer"]})
    with served_app(tmp_path, FakeTranscriber(), capacity=1) as (base, _):
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{base}/console?call=recorded-1#token={SUPERVISOR}")
        expect(page.locator("#status")).to_have_attribute("data-state", "waiting")
        sockets = base.replace("http", "ws")
        with ws_client.connect(f"{sockets}/v1/calls/holding-1/audio", additional_headers=bearer(INGEST)) as hold:
            hold.send(start)  # the server's one decoded call
            assert json.loads(hold.recv(timeout=10))["type"] == "ready"
            with ws_client.connect(f"{sockets}/v1/calls/recorded-1/audio",
                                   additional_headers=bearer(INGEST)) as call:
                call.send(start)
                assert [json.loads(call.recv(timeout=10))["type"] for _ in range(2)] == ["ready", "record_only"]
                expect(page.locator("#status")).to_have_attribute("data-state", "recording")
                expect(page.locator("#status")).to_have_text("仅录音")
                expect(page.locator("#banner")).to_contain_text("坐席提示暂不可用：本通话仅录音，结束后评分")
                call.send(b"\x00\x00" * 2 * 16000)  # a second of silence on both channels
                call.send(json.dumps({"type": "stop"}))
                assert json.loads(call.recv(timeout=30))["type"] == "end"
            expect(page.locator("#status")).to_have_attribute("data-state", "ended")
            expect(page.locator("#banner")).to_contain_text("系统正在评分")
            hold.send(json.dumps({"type": "stop"}))
        page.close()
