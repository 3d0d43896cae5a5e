"""Live agent assistance through the service: assessment, prompt, checklist and summary events on the call
socket and on `/v1/calls/{id}/events`, the hub's subscribers, demo mode, and NLU failure isolation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from asr.types import Utterance
from service.api.deps import get_calls
from service.app import create_app, state_of
from service.live.hub import SUBSCRIBER_QUEUE, CallHub
from service.protocol import CloseCode
from service.settings import Settings
from tests.support.server import INGEST, authed, bearer, running_server


class ScriptedTranscriber:
    """Returns the script text of the shared call's turn that the audio span overlaps: the real VAD and live
    pipeline, with the recogniser replaced so the test checks pairing and events, not ASR."""

    model_path = "scripted"

    def __init__(self, script: dict[str, Any]) -> None:
        self.turns = [t for t in script["turns"] if t["text"]]

    def load(self) -> None:
        pass

    def turns_for(self, samples: np.ndarray, channel: str, offset_s: float) -> list[dict[str, Any]]:
        """The scripted turns (with text) a span may come from: the call's."""
        return self.turns

    def transcribe_span(self, samples: np.ndarray, channel: str, offset_s: float, beam_size: int | None = None,
                        min_window_s: float | None = None, provisional: bool = False,
                        abandon: Any = None) -> Utterance | None:
        end_s = offset_s + len(samples) / 16000
        best = max((t for t in self.turns_for(samples, channel, offset_s) if t["speaker"] == channel),
                   key=lambda t: min(end_s, t["end_s"]) - max(offset_s, t["start_s"]))
        if min(end_s, best["end_s"]) - max(offset_s, best["start_s"]) <= 0:
            return None
        return Utterance(channel, offset_s, end_s, best["text"], None, -0.1, 0.0)

    def transcribe_spans(self, spans: Any, beam_size: int | None = None,
                         min_window_s: float | None = None) -> list[Utterance | None]:
        return [self.transcribe_span(samples, channel, offset_s) for samples, channel, offset_s in spans]


def _call(shared_data: Path, name: str) -> tuple[dict[str, Any], bytes]:
    from asr.audio import load_call_audio

    script = json.loads((shared_data / "calls" / f"{name}.json").read_text(encoding="utf-8"))
    audio = load_call_audio(str(shared_data / "calls" / f"{name}.flac"), 16000)
    pcm = (np.clip(audio.T.reshape(-1), -1, 1) * 32767).astype("<i2").tobytes()
    return script, pcm


def _stream(client: TestClient, call_id: str, script: dict[str, Any], pcm: bytes) -> list[dict[str, Any]]:
    events = []
    with client.websocket_connect(f"/v1/calls/{call_id}/audio") as ws:
        ws.send_json({"type": "start", "sample_rate_hz": 16000, "encoding": "pcm16",
                      "channels": ["agent", "customer"], "loan_file": script["loan_file"]})
        for i in range(0, len(pcm), 12800):  # 200 ms frames, as fast as the socket takes them
            ws.send_bytes(pcm[i: i + 12800])
        ws.send_json({"type": "stop"})
        try:
            while True:
                events.append(ws.receive_json())
        except WebSocketDisconnect as closed:
            assert closed.code == CloseCode.NORMAL
    return events


def _drain(ws: Any) -> tuple[list[dict[str, Any]], int]:
    events = []
    try:
        while True:
            events.append(ws.receive_json())
    except WebSocketDisconnect as closed:
        return events, closed.code


def _app(tmp_path: Path, script: dict[str, Any], **nlu: Any) -> Any:
    settings = Settings(data_dir=tmp_path, nlu=nlu)
    return create_app(settings, transcriber=ScriptedTranscriber(script))  # type: ignore[arg-type]


def test_a_call_gets_assessments_prompts_checklist_and_summary(tmp_path: Path, shared_data: Path) -> None:
    script, pcm = _call(shared_data, "call_s03")
    with authed(_app(tmp_path, script)) as client:
        with client.websocket_connect("/v1/calls/s03/events") as early:  # an agent screen opened before the call
            events = _stream(client, "s03", script, pcm)
            watched, code = _drain(early)
        with client.websocket_connect("/v1/calls/s03/events") as late:  # and one opened after it ended
            replayed, late_code = _drain(late)
    assert code == late_code == CloseCode.NORMAL
    assessments = [e for e in events if e["type"] == "assessment"]
    verdicts = {e["topic"]: e for e in assessments}  # the last one per topic stands
    # "您好，还在听吗？" is outside the script: its stalling answer (我现在开车呢，下次再说吧) is reported as `other`.
    assert {t: v["label"] for t, v in verdicts.items()} == {"monthly": "evasive", "purpose": "evasive",
                                                           "overdue": "evasive", "other": "evasive"}
    silent = verdicts["overdue"]
    assert silent["answer_utterance_id"] is None and any(e["kind"] == "silence" for e in silent["evidence"])
    assert silent["answer_end_s"] <= 33.2 + 5.0 + 0.5  # question end + timeout, not the next utterance
    finals = {e["utterance_id"]: e for e in events if e["type"] == "final"}
    question = finals[silent["question_utterance_id"]]
    assert "还款困难" in question["text"]
    prompts = [e for e in events if e["type"] == "prompt"]
    assert {p["topic"] for p in prompts} == {"monthly", "purpose", "overdue", "other"}
    assert all(p["label"] == "evasive" and p["text"] for p in prompts)
    checklist = [e for e in events if e["type"] == "checklist"][-1]
    states = {i["topic"]: i["state"] for i in checklist["items"]}
    assert states["monthly"] == states["purpose"] == states["overdue"] == "vague"
    assert states["loan_amount"] == "not_asked"
    summary = next(e for e in events if e["type"] == "summary")
    assert summary["vague_answers"] == 3 and summary["answers"] == 3
    types = [e["type"] for e in events]
    assert types[0] == "ready" and types[-1] == "end" and types.index("summary") < types.index("end")
    # Subscribers saw the same call: the early one live (partials too), the late one from the history.
    assert [e for e in watched if e["type"] != "partial"] == [e for e in events if e["type"] != "partial"]
    assert replayed == [e for e in events if e["type"] != "partial"]


def test_a_mismatch_and_an_omission_are_prompted(tmp_path: Path, shared_data: Path) -> None:
    script, pcm = _call(shared_data, "call_s06")
    with authed(_app(tmp_path, script)) as client:
        events = _stream(client, "s06", script, pcm)
    verdicts = {e["topic"]: e for e in events if e["type"] == "assessment"}
    assert verdicts["repay_date"]["mismatch"] == {"field": "repay_day", "stated": 18.0, "on_file": 8.0}
    assert verdicts["contact"]["label"] in ("omission", "unclear")
    prompts = {p["topic"]: p for p in events if p["type"] == "prompt"}
    assert prompts["repay_date"]["mismatch"] and "8" in prompts["repay_date"]["text"]


class BrokenAssessor:
    """Fails on every answer, as a bad call-script edit or a bug would."""

    def __init__(self, real: Any) -> None:
        self.script, self.cues = real.script, real.cues

    def assess(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("assessor exploded")


def test_a_failing_assessment_degrades_the_call_to_transcripts(tmp_path: Path, shared_data: Path) -> None:
    script, pcm = _call(shared_data, "call_s03")
    app = _app(tmp_path, script)
    with authed(app) as client:
        calls = state_of(app).calls
        # Calls opened through this socket dependency get an assessor that fails on every answer.
        broken_calls = dataclasses.replace(calls, assessor=BrokenAssessor(calls.assessor))
        app.dependency_overrides[get_calls] = lambda: broken_calls
        broken = _stream(client, "broken", script, pcm)
        del app.dependency_overrides[get_calls]
        healthy = _stream(client, "healthy", script, pcm)  # the next call is not affected
    errors = [e for e in broken if e["type"] == "error"]
    assert [e["code"] for e in errors] == ["assessment_failed"]
    assert not any(e["type"] in ("assessment", "prompt", "summary") for e in broken)
    assert len([e for e in broken if e["type"] == "final"]) >= 8 and broken[-1]["type"] == "end"
    assert any(e["type"] == "prompt" for e in healthy)


def test_assistance_can_be_switched_off_and_needs_both_roles(tmp_path: Path, shared_data: Path) -> None:
    script, pcm = _call(shared_data, "call_s03")
    with authed(_app(tmp_path, script, assist=False)) as client:
        events = _stream(client, "off", script, pcm)
    assert not any(e["type"] in ("assessment", "prompt", "checklist", "summary") for e in events)


@pytest.mark.asyncio
async def test_the_hub_drops_a_subscriber_that_stops_reading() -> None:
    hub = CallHub()
    hub.open("c")
    slow, fine = hub.subscribe("c"), hub.subscribe("c")
    for i in range(SUBSCRIBER_QUEUE + 5):
        hub.publish("c", json.dumps({"type": "final", "i": i}), "final")
        if fine.queue.qsize() > 10:
            while not fine.queue.empty():
                fine.queue.get_nowait()
    assert slow.overflowed and not fine.overflowed
    hub.close("c")
    items = [fine.queue.get_nowait() for _ in range(fine.queue.qsize())]
    assert items[-1] is None and all(json.loads(i)["type"] == "final" for i in items[:-1])
    late = hub.subscribe("c")  # the ended call's history, then the end of its stream
    assert late.queue.get_nowait() is not None


@pytest.mark.asyncio
async def test_the_hub_forgets_old_calls_and_unwatched_waits() -> None:
    hub = CallHub(keep_ended=2)
    for name in ("a", "b", "c"):
        hub.open(name)
        hub.publish(name, "{}", "final")
        hub.close(name)
    old = hub.subscribe("a")  # forgotten: waits as for a call that has not started
    assert old.queue.empty()
    hub.unsubscribe(old)
    recent = hub.subscribe("c")
    assert recent.queue.get_nowait() == "{}" and recent.queue.get_nowait() is None


def test_the_console_and_demo_endpoints(tmp_path: Path, shared_data: Path) -> None:
    script, _ = _call(shared_data, "call_s03")
    with authed(_app(tmp_path, script)) as client:
        page = client.get("/console")
        assert page.status_code == 200 and "坐席控制台" in page.text
        assert client.get("/static/console.js").status_code == 200
        demos = client.get("/v1/demo/calls").json()
        assert {d["name"] for d in demos} == {"call_s03", "call_s07"}
        assert client.post("/v1/demo/calls", json={"name": "nope"}).status_code == 404
        assert client.post("/v1/demo/calls", json={"speed": 99}).status_code == 422
        started = client.post("/v1/demo/calls", json={"name": "call_s03", "speed": 4}).json()
        with client.websocket_connect(f"/v1/calls/{started['call_id']}/events") as ws:
            events, code = _drain(ws)
    assert code == CloseCode.NORMAL and events[0]["type"] == "ready" and events[-1]["type"] == "end"
    assert events[0]["loan_file"]["repay_day"] == 5 and events[0]["loan_file"]["borrower"] == "赵*"
    assert {e["topic"] for e in events if e["type"] == "prompt"} == {"monthly", "purpose", "overdue", "other"}


# -- the real model, through a real server ------------------------------------------------------------------

@pytest.mark.model
@pytest.mark.asyncio
async def test_real_speech_of_a_shared_call_is_assessed_live(model_cache: Path, tmp_path: Path,
                                                       shared_data: Path) -> None:
    """call_s03 at telephone rate (8 kHz u-law, as a switch sends it) through Whisper: the evasive answers and
    the silent one are flagged and prompted."""
    from asr.audio import load_call_audio
    from service.cli.replay import replay

    script = json.loads((shared_data / "calls" / "call_s03.json").read_text(encoding="utf-8"))
    audio = load_call_audio(str(shared_data / "calls" / "call_s03.8k.wav"), 8000)
    with running_server(tmp_path / "data", model_cache) as port:
        result = await replay(f"ws://127.0.0.1:{port}/v1/calls/real/audio", audio, 8000, ["agent", "customer"],
                              encoding="mulaw", loan_file=script["loan_file"], headers=bearer(INGEST))
    verdicts = {e["topic"]: e["label"] for e in result.events if e["type"] == "assessment"}
    assert verdicts.get("overdue") == "evasive"
    assert sum(1 for label in verdicts.values() if label != "clear") >= 2, verdicts
    assert any(e["type"] == "prompt" for e in result.events)
    assert any(e["type"] == "summary" for e in result.events)
