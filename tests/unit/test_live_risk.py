"""The live risk (`risk` events, nlu.report.live_risk): the report's own scoring of the answers so far, stepped
through the live path's `CallAssist` with each shared call's scripted turns (rules-only assessor: no model).
At the end of a call it equals the stored report's score and tier, both the live dialogue's report (what the
books store) and a replay of the same turns (a recording's); mid-call, topics not yet asked add nothing."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from nlu.assess import Assessor
from nlu.dialogue import DialogueOptions, Turn
from nlu.report import live_risk, load_risk, score_call
from pipeline.call import CallPipeline
from service.live.assist import CallAssist
from service.protocol import RiskEvent

RISK = load_risk()
CALLS = [f"call_s{n:02d}" for n in range(1, 12)]


def _turns(script: dict[str, Any]) -> list[Turn]:
    counts: dict[str, int] = {}
    turns = []
    for t in script["turns"]:
        if not t["text"]:
            continue
        counts[t["speaker"]] = counts.get(t["speaker"], 0) + 1
        turns.append(Turn(f"{t['speaker']}-{counts[t['speaker']]}", t["speaker"], t["text"], t["start_s"], t["end_s"]))
    return turns


async def _live(call_id: str, turns: list[Turn], loan: dict[str, Any] | None, duration_s: float,
                assessor: Assessor) -> tuple[list[BaseModel], CallPipeline]:
    """Step the call through `CallAssist` as the live path does: the clock ticks to each utterance's start, then
    its final is handed over, in the order utterances ended."""
    events: list[BaseModel] = []

    async def emit(event: BaseModel) -> None:
        events.append(event)

    pipeline = CallPipeline(call_id, ("agent", "customer"), assessor, loan, DialogueOptions())
    with ThreadPoolExecutor(1) as executor:
        assist = CallAssist(call_id, pipeline, executor, emit, RISK)
        loop = asyncio.get_running_loop()
        for turn in sorted(turns, key=lambda t: (t.end_s, t.start_s)):
            await assist.tick(turn.start_s, busy=False)
            decoded: asyncio.Future[Turn | None] = loop.create_future()
            decoded.set_result(turn)
            await assist.turn_in_order(decoded)
        await assist.finish(duration_s)
    return events, pipeline


@pytest.fixture(scope="module")
def assessor() -> Assessor:
    return Assessor()


@pytest.mark.asyncio
@pytest.mark.parametrize("name", CALLS)
async def test_the_live_risk_at_the_end_of_a_call_is_its_reports(name: str, shared_data: Path,
                                                                 assessor: Assessor) -> None:
    script = json.loads((shared_data / "calls" / f"{name}.json").read_text(encoding="utf-8"))
    turns, duration = _turns(script), float(script["duration_s"])
    events, pipeline = await _live(name, turns, script.get("loan_file"), duration, assessor)
    risks = [e for e in events if isinstance(e, RiskEvent)]
    assert risks, "a call with answers gets its risk"
    stored = pipeline.report(duration, RISK)  # what LiveBooks.store_call stores for a live call
    replayed = score_call(name, turns, assessor, pipeline.dialogue.loan if pipeline.dialogue else None, duration,
                          risk=RISK)
    assert (risks[-1].score, risks[-1].tier) == (stored.risk_score, stored.tier) == (replayed.risk_score,
                                                                                      replayed.tier)
    # What clear answers stated, as the report has it per topic (the floor's alerts match it).
    assert risks[-1].stated == {t.topic: t.stated for t in stored.topics if t.stated}
    # Sent only when it changed, and the last one before the summary.
    assert all((a.score, a.tier, a.stated) != (b.score, b.tier, b.stated)
               for a, b in zip(risks, risks[1:], strict=False))
    kinds = [e.type for e in events]  # type: ignore[attr-defined]
    assert kinds.index("summary") > max(i for i, k in enumerate(kinds) if k == "risk")


def test_mid_call_topics_not_yet_asked_add_nothing_and_at_the_end_they_count(shared_data: Path,
                                                                            assessor: Assessor) -> None:
    script = json.loads((shared_data / "calls" / "call_s05.json").read_text(encoding="utf-8"))
    turns = _turns(script)
    pipeline = CallPipeline("s05", ("agent", "customer"), assessor, script["loan_file"], DialogueOptions())
    for turn in turns[:4]:  # up to the guarantor's first hedge
        pipeline.add(turn)
    assert pipeline.dialogue is not None
    mid = live_risk(pipeline.turns, pipeline.dialogue, assessor.script, RISK, ended=False)
    # guarantor.unclear alone (configs/risk.yaml overrides: 35): no not-asked points for the topics to come.
    assert (mid.score, mid.tier) == (35, "medium")
    at_end = live_risk(pipeline.turns, pipeline.dialogue, assessor.script, RISK, ended=True)
    assert at_end.score > mid.score
    assert at_end.score == pipeline.report(turns[3].end_s, RISK).risk_score
