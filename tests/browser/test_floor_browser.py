"""The wallboard (/live, issue #31) in Chromium: three demo calls replayed at once through the live pipeline, each
a tile that updates as its call goes; the guarantor who hedges on consent (call_s05) raises an alert on their
tile, acknowledged in the page; the page reconnects and resyncs when its socket drops; a tile opens that call's
console read-only. The recogniser is a stand-in that knows the three recordings' scripts (the claim is about the
floor, not ASR): the VAD, turn pairing, assessment, live risk and alerts are the service's own. Saves screenshots
to artifacts/floor/."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.browser.test_pages_browser import ALLOWED_LATIN, AUDIT_JS, WIDTHS, Watch
from tests.integration.test_live_assist import ScriptedTranscriber
from tests.support.paths import ARTIFACTS
from tests.support.server import AGENT, AGENT_ID, SUPERVISOR, bearer, served_app

SHOTS = ARTIFACTS / "floor"
#: A clean call, a borrower who refuses to talk about repayment difficulty, a guarantor who hedges on consent.
DEMOS = ("call_s01", "call_s09", "call_s05")
RATE_HZ = 16_000


class RecordingsTranscriber(ScriptedTranscriber):
    """Returns the script text of the turn a span overlaps, in the recording the span came from (found by its
    samples: each demo call replays one of `recordings`' audio)."""

    def __init__(self, recordings: dict[str, tuple[np.ndarray, list[dict[str, Any]]]]) -> None:
        self.recordings = recordings

    def turns_for(self, samples: np.ndarray, channel: str, offset_s: float) -> list[dict[str, Any]]:
        row = 0 if channel == "agent" else 1
        start = round(offset_s * RATE_HZ)

        def distance(audio: np.ndarray) -> float:
            piece = audio[row, start: start + len(samples)]
            if len(piece) < len(samples):
                return float("inf")
            return float(np.abs(piece - samples).mean())

        audio, turns = min(self.recordings.values(), key=lambda r: distance(r[0]))
        return [t for t in turns if t["text"]]


@dataclass
class Floor:
    base: str


@pytest.fixture(scope="module")
def floor(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Iterator[Floor]:
    """The app under uvicorn whose demo calls are DEMOS (linked from the shared data), with room for three demo
    calls decoded at once."""
    from asr.audio import load_call_audio

    tmp = tmp_path_factory.mktemp("floor")
    demos = tmp / "demos"
    demos.mkdir()
    recordings = {}
    for name in DEMOS:
        for suffix in (".flac", ".json"):
            (demos / f"{name}{suffix}").symlink_to(shared_data / "calls" / f"{name}{suffix}")
        script = json.loads((shared_data / "calls" / f"{name}.json").read_text(encoding="utf-8"))
        recordings[name] = (load_call_audio(str(shared_data / "calls" / f"{name}.flac"), RATE_HZ), script["turns"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HUIFANG_NLU__DEMO_DIR", str(demos))
        with served_app(tmp, RecordingsTranscriber(recordings), max_demo_calls=3, capacity="8") as (base, _):
            yield Floor(base)


def _start_demo(base: str, name: str) -> str:
    """A demo call started by the agent (so that it is theirs, as on a real floor), at four times real time."""
    res = httpx.post(f"{base}/v1/demo/calls", json={"name": name, "speed": 4}, headers=bearer(AGENT))
    assert res.status_code == 202, res.text
    return str(res.json()["call_id"])


@pytest.mark.browser
def test_the_wallboard_follows_three_calls_raises_an_alert_and_opens_a_call(browser, floor: Floor) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    watch = Watch(page, floor.base)
    page.goto(f"{floor.base}/live#token={SUPERVISOR}")
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=30_000)
    expect(page.locator("#status")).to_have_attribute("data-state", "live", timeout=30_000)
    expect(page.locator("#empty")).to_be_visible()

    ids = dict(zip(DEMOS, (_start_demo(floor.base, name) for name in DEMOS), strict=True))
    tiles = {name: page.locator(f'.tile[data-call-id="{call_id}"]') for name, call_id in ids.items()}
    for tile in tiles.values():
        expect(tile).to_be_visible(timeout=30_000)
        expect(tile.locator(".agent")).to_have_text(f"坐席 {AGENT_ID}")
    expect(page.locator("#empty")).to_be_hidden()

    # Each tile follows its call: its updates arrive one after another (the tile's change count grows), its
    # checklist fills, the last prompt shows.
    for tile in tiles.values():
        expect(tile).to_have_attribute("data-seq", re.compile(r"^([3-9]|\d\d+)$"), timeout=60_000)
    # The guarantor's hedged consent raises an alert on their tile; the borrower's refusal to talk about repayment
    # difficulty counts as evasive on theirs.
    hedged = tiles["call_s05"]
    expect(hedged).to_have_attribute("data-alert", "true", timeout=60_000)
    expect(hedged.locator('.tile-alerts li[data-rule="guarantor_hedged"]').first).to_be_visible()  # asked twice
    expect(hedged.locator(".tile-alerts .alert-title").first).to_contain_text("担保")
    expect(hedged.locator(".chip.unclear")).not_to_have_attribute("data-count", "0")
    expect(hedged.locator(".last-prompt .topic")).to_have_text("担保意愿", timeout=30_000)
    expect(tiles["call_s09"].locator(".chip.evasive")).not_to_have_attribute("data-count", "0", timeout=60_000)
    expect(tiles["call_s01"]).to_have_attribute("data-alert", "false")
    assert page.locator("#alert-count").inner_text() != "0"
    page.screenshot(path=str(SHOTS / "live-three-calls-alert.png"), full_page=True)

    # Every call ends; the tiles stay (their last state), sorted by the live risk the server gave them.
    for tile in tiles.values():
        expect(tile).to_have_attribute("data-state", "ended", timeout=90_000)
    scores = [float(s or -1) for s in page.locator(".tile").evaluate_all("els => els.map(e => e.dataset.score)")]
    assert scores == sorted(scores, reverse=True), scores
    assert page.evaluate("window.__floorLag.length") > 0  # the bench's record of each update's lag

    # 确认: the alert is taken down in the page and on the server, whose open alerts no longer hold it.
    acks = hedged.locator(".tile-alerts .ack")
    for left in range(acks.count() - 1, -1, -1):
        acks.first.click()
        expect(acks).to_have_count(left)
    expect(hedged).to_have_attribute("data-alert", "false")
    expect(hedged.locator(".tile-alerts li")).to_have_count(0)
    open_alerts = httpx.get(f"{floor.base}/v1/live/calls", headers=bearer(SUPERVISOR)).json()["alerts"]
    assert not [a for a in open_alerts if a["call_id"] == ids["call_s05"]], open_alerts
    page.screenshot(path=str(SHOTS / "live-acknowledged.png"), full_page=True)

    # The socket drops: the page reconnects and resyncs from the snapshot (the same tiles, the alert still gone).
    page.evaluate("floor.socket.close()")
    expect(page.locator("#status")).to_have_attribute("data-state", "waiting")
    expect(page.locator("#status")).to_have_attribute("data-state", "live", timeout=30_000)
    expect(page.locator(".tile")).to_have_count(3)
    expect(hedged).to_have_attribute("data-alert", "false")

    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        audit = page.evaluate(AUDIT_JS, sorted(ALLOWED_LATIN))
        assert not audit["problems"] and not audit["latin"], (width, audit)
        page.screenshot(path=str(SHOTS / f"live-{width}.png"), full_page=True)

    # A tile opens its call's console, read-only: the call's transcript and prompts, no controls of the agent's.
    tiles["call_s09"].locator(".vague").click()
    page.wait_for_url(re.compile(r"/console\?call=.+&watch=1$"))
    expect(page.locator("#call-id")).to_have_text(ids["call_s09"])
    expect(page.locator("#watch-mode")).to_be_visible()
    expect(page.locator("body")).to_have_attribute("data-mode", "watch")
    expect(page.locator(".utt.customer").first).to_be_visible(timeout=30_000)
    expect(page.locator('.card[data-topic="overdue"]')).to_have_count(1)
    page.screenshot(path=str(SHOTS / "console-read-only.png"), full_page=True)
    assert watch.take() == []
    page.close()


@pytest.mark.browser
def test_an_agent_is_not_shown_the_wallboard(browser, floor: Floor) -> None:  # type: ignore[no-untyped-def]
    """The floor is for supervisors: an agent's token opening /live is told so, and nothing of the floor shows."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{floor.base}/live#token={AGENT}")
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=30_000)
    expect(page.locator("#token-form")).to_contain_text("无权")
    expect(page.locator(".tile")).to_have_count(0)
    expect(page.locator("#sitenav .links a", has_text="实时看板")).to_have_count(0)
    page.close()
