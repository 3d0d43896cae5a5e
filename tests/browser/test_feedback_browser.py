"""An agent's 提示有误 in the console reaches the review queue, a supervisor upholds it there, the report shows it
and the export contains it (issue #31), in Chromium against a real server while a shared call streams through
the live path (its recogniser scripted: the claim is about the wiring, not ASR). Screenshots in
artifacts/feedback-*.png."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.app import state_of
from service.cli.feedback import export_command
from tests.integration.test_live_assist import ScriptedTranscriber, _call
from tests.support.paths import ARTIFACTS
from tests.support.server import ADMIN, AGENT, AGENT_ID, INGEST, SUPERVISOR, bearer, served_app


@pytest.mark.browser
def test_a_dispute_in_the_console_is_reviewed_on_the_queue_and_exported(  # type: ignore[no-untyped-def]
        browser, tmp_path: Path, shared_data: Path) -> None:
    import websockets.sync.client as ws_client
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    script, pcm = _call(shared_data, "call_s03")
    start = json.dumps({"type": "start", "sample_rate_hz": 16000, "encoding": "pcm16", "agent_id": AGENT_ID,
                        "channels": ["agent", "customer"], "loan_file": {**script["loan_file"], "customer_id": "C1"}})
    with served_app(tmp_path, ScriptedTranscriber(script)) as (base, app):
        console = browser.new_page(viewport={"width": 1280, "height": 900})
        console.goto(f"{base}/console?call=fb-1#token={AGENT}")
        expect(console.locator("#status")).to_have_attribute("data-state", "waiting")
        with ws_client.connect(f"{base.replace('http', 'ws')}/v1/calls/fb-1/audio",
                               additional_headers=bearer(INGEST)) as call:
            call.send(start)
            for i in range(0, len(pcm), 12800):
                call.send(pcm[i: i + 12800])
            card = console.locator('#prompts .card[data-topic="overdue"]')
            expect(card).to_be_visible(timeout=60_000)
            # 提示有误: the customer's answer was in fact clear, with a note.
            card.locator(".fb-dispute").click()
            card.locator('.fb-form input[value="clear"]').check()
            card.locator('.fb-form input[name="note"]').fill("客户停顿后表示会按时还款")
            card.locator('.fb-form button[type="submit"]').click()
            expect(card.locator(".fb-state")).to_have_text("✓ 提示有误：回答其实清楚")
            expect(card).to_have_attribute("data-feedback", "disputed")
            console.screenshot(path=str(ARTIFACTS / "feedback-console.png"), full_page=True)
            call.send(json.dumps({"type": "stop"}))
            while json.loads(call.recv(timeout=60))["type"] != "end":
                pass
        expect(console.locator("#status")).to_have_attribute("data-state", "ended")
        console.close()

        # The supervisor's queue: the question, the (silent) answer, the assessor's label and prompt, the reason.
        queue = browser.new_page(viewport={"width": 1400, "height": 900})
        queue.goto(f"{base}/reviews#token={SUPERVISOR}")
        expect(queue.locator("body")).to_have_attribute("data-ready", "true", timeout=30_000)
        row = queue.locator('#reviews tr[data-call="fb-1"]')
        expect(row).to_have_count(1)
        expect(row.locator(".question")).to_contain_text("还款困难")
        expect(row.locator(".answer")).to_have_text("（沉默）")
        expect(row.locator(".reason")).to_contain_text("回答其实清楚")
        expect(row.locator(".reason")).to_contain_text("客户停顿后表示会按时还款")
        queue.screenshot(path=str(ARTIFACTS / "feedback-reviews-open.png"), full_page=True)
        row.locator('select[name="decision"]').select_option("uphold")
        row.locator('select[name="label"]').select_option("clear")
        row.locator('form.decide button[type="submit"]').click()
        expect(row).to_have_attribute("data-status", "upheld")
        expect(row.locator(".decision")).to_contain_text("风险评分")
        queue.screenshot(path=str(ARTIFACTS / "feedback-reviews-upheld.png"), full_page=True)

        # The report: the prompt with the agent's verdict and the review beside it; the verdict corrected.
        queue.goto(f"{base}/calls/fb-1")
        expect(queue.locator("body")).to_have_attribute("data-ready", "true", timeout=30_000)
        prompt = queue.locator('#prompts tr[data-topic="overdue"]')
        expect(prompt).to_have_attribute("data-review", "upheld")
        expect(prompt.locator(".feedback")).to_contain_text("提示有误")
        corrected = queue.locator('#checklist tr[data-topic="overdue"]')
        expect(corrected).to_have_attribute("data-label", "clear")
        expect(corrected.locator(".corrected")).to_have_text("主管复核更正")
        queue.screenshot(path=str(ARTIFACTS / "feedback-report.png"), full_page=True)
        expect(queue.locator("#versions-panel")).to_be_hidden()  # earlier reports are for admins
        queue.close()

        # An admin opens the earlier reports: the original, replaced by the review.
        admin = browser.new_page(viewport={"width": 1280, "height": 900})
        admin.goto(f"{base}/calls/fb-1#token={ADMIN}")
        expect(admin.locator("body")).to_have_attribute("data-ready", "true", timeout=30_000)
        admin.locator("#versions-panel summary").click()
        kept = admin.locator('#versions tr[data-version="1"]')
        expect(kept).to_have_attribute("data-reason", "review")
        expect(kept).to_contain_text("主管复核更正")
        admin.screenshot(path=str(ARTIFACTS / "feedback-report-versions.png"), full_page=True)
        admin.close()

        out = tmp_path / "feedback.jsonl"
        assert export_command(state_of(app).settings, None, out) == 0
        [line] = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
        assert (line["topic"], line["label"], line["answer"]) == ("overdue", "clear", "")
        assert "还款困难" in line["question"]
