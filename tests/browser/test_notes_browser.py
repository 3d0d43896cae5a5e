"""A supervisor's note reaching the agent's open console in a real browser (Chromium), and the supervisor's 监听
button (shown to supervisors, not to agents) starting and stopping an audited listening. A recogniser that says
"测试" stands in for the model: the claim is about the wiring, not ASR. Screenshot: artifacts/console-note.png."""

from __future__ import annotations

import json
import threading
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from service.app import state_of
from tests.integration.test_live_socket import FakeTranscriber
from tests.support.paths import ARTIFACTS
from tests.support.server import AGENT, AGENT_ID, INGEST, SUPERVISOR, bearer, served_app


@pytest.mark.browser
def test_a_note_reaches_the_agents_open_console(browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect
    from sqlalchemy import select
    from websockets.sync.client import connect

    from service.store.models import AuditEntry

    with served_app(tmp_path, FakeTranscriber()) as (base, app):
        ready, stop = threading.Event(), threading.Event()

        def switch() -> None:  # the phone switch streams the call until the test is done with it
            with connect(f"{base.replace('http', 'ws')}/v1/calls/bn-1/audio",
                         additional_headers=bearer(INGEST)) as ws:
                ws.send(json.dumps({"type": "start", "sample_rate_hz": 16000, "encoding": "pcm16",
                                    "channels": ["agent", "customer"], "agent_id": AGENT_ID}))
                assert json.loads(ws.recv(timeout=30))["type"] == "ready"
                ready.set()
                while not stop.wait(1.0):
                    ws.send(b"\x00\x00" * 2 * 1600)  # silence, so the call is not idle
                ws.send(json.dumps({"type": "stop"}))

        streaming = threading.Thread(target=switch, daemon=True)
        streaming.start()
        try:
            assert ready.wait(60)
            agent = browser.new_page(viewport={"width": 1280, "height": 900})
            agent.goto(f"{base}/console?call=bn-1#token={AGENT}")
            expect(agent.locator("#status")).to_have_attribute("data-state", "live")
            supervisor = browser.new_page(viewport={"width": 1280, "height": 900})
            supervisor.goto(f"{base}/console?call=bn-1#token={SUPERVISOR}")
            expect(supervisor.locator("#status")).to_have_attribute("data-state", "live")
            expect(supervisor.locator("#listen-btn")).to_be_visible()
            expect(agent.locator("#listen-btn")).to_be_hidden()  # listening in is the supervisor's

            sent = httpx.post(f"{base}/v1/calls/bn-1/notes", headers=bearer(SUPERVISOR), timeout=30,
                              json={"text": "客户手机13812345678已变更，请核实担保人是否同意"})
            assert sent.status_code == 201, sent.text
            card = agent.locator(f'.note-card[data-note-id="{sent.json()["note_id"]}"]')
            expect(card).to_be_visible()
            expect(card).to_contain_text("主管提示")
            at = datetime.fromisoformat(sent.json()["at"]).astimezone(ZoneInfo("Asia/Shanghai"))
            expect(card.locator(".note-meta")).to_have_text(f"supervisor-2 {at:%H:%M}")  # the bank's zone
            expect(card.locator(".note-text")).to_have_text("客户手机[手机号]已变更，请核实担保人是否同意")
            expect(supervisor.locator(".note-card")).to_have_count(1)  # every screen of the call shows it
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            agent.screenshot(path=str(ARTIFACTS / "console-note.png"), full_page=True)
            card.locator(".note-dismiss").click()
            expect(agent.locator(".note-card")).to_have_count(0)

            listen = supervisor.locator("#listen-btn")
            listen.click()
            expect(listen).to_have_attribute("data-state", "on")
            expect(listen).to_have_text("停止监听")
            listen.click()
            expect(listen).to_have_attribute("data-state", "off")
        finally:
            stop.set()
            streaming.join(timeout=30)
        store = state_of(app).store
        assert store is not None
        with store.session() as s:
            kinds = [e.kind for e in s.scalars(select(AuditEntry).where(AuditEntry.call_id == "bn-1"))]
        assert kinds.count("supervisor_note") == 1 and kinds.count("listen_in") == 2, kinds
