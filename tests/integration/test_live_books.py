"""Live calls in the books (issue #29): a live call is stored when it ends, by the same code as a scored
recording (coaching's row, the loan book's summary, the audit entry), with its audio; a stored call id is refused;
a dropped connection continues on reconnect; a call nobody continues is stored as incomplete once its lease runs
out. The real VAD and live pipeline with the recogniser replaced (the script's text): these check the books, not
ASR. The real model end to end is in test_live_socket.py (SQLite) and test_replicas.py (PostgreSQL, two
replicas); a replica killed mid-call is in test_faults.py."""

from __future__ import annotations

import dataclasses
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.app import state_of
from service.protocol import CloseCode
from service.store.models import AgentCallStats, CallSummary
from tests.integration.test_live_assist import ScriptedTranscriber, _call
from tests.integration.test_live_assist import _drain as _events
from tests.support.server import ADMIN, AGENT_ID, INGEST, SUPERVISOR, audited, bearer, served_app, tokens_client

TOKENS = {INGEST: ("ingest", None), SUPERVISOR: ("supervisor", None), ADMIN: ("admin", None)}
FRAME = 12800  # 200 ms of 16 kHz stereo pcm16


CUSTOMER = "C-LIVE-01"


def _start(script: dict[str, Any]) -> dict[str, Any]:
    return {"type": "start", "sample_rate_hz": 16000, "encoding": "pcm16", "channels": ["agent", "customer"],
            "loan_file": {**script["loan_file"], "customer_id": CUSTOMER, "loan_id": "L-LIVE-01"},
            "agent_id": AGENT_ID}


def _send(ws: Any, pcm: bytes) -> None:
    for i in range(0, len(pcm), FRAME):  # as fast as the socket takes them
        ws.send_bytes(pcm[i: i + FRAME])


@pytest.fixture()
def call_s01(shared_data: Path) -> tuple[dict[str, Any], bytes]:
    return _call(shared_data, "call_s01")


def _client(tmp_path: Path, script: dict[str, Any], **live: Any) -> Any:
    return tokens_client(tmp_path, TOKENS, ScriptedTranscriber(script), live={"idle_timeout_s": 5.0, **live})


def _labels(report: dict[str, Any]) -> dict[str, str]:
    return {t["topic"]: t["label"] for t in report["topics"] if t["label"]}


def test_a_live_call_is_in_the_books_when_it_ends(tmp_path: Path, call_s01: tuple[dict[str, Any], bytes]) -> None:
    from asr.audio import decode_audio

    script, pcm = call_s01
    with _client(tmp_path, script) as client:
        with client.websocket_connect("/v1/calls/live-b1/audio", headers=bearer(INGEST)) as ws:
            ws.send_json(_start(script))
            _send(ws, pcm)
            ws.send_json({"type": "stop"})
            events, code = _events(ws)
        assert code == CloseCode.NORMAL
        end = events[-1]
        assert end == {"type": "end", "call_id": "live-b1", "report_url": "/v1/calls/live-b1/report",
                       "resumable": False}
        # Listed at once, as a live call that ended cleanly, for the agent it was streamed for.
        listed = client.get("/v1/calls", headers=bearer(SUPERVISOR)).json()
        assert [(c["call_id"], c["source"], c["complete"], c["agent_id"]) for c in listed["items"]] == [
            ("live-b1", "live", True, AGENT_ID)]
        report = client.get(end["report_url"], headers=bearer(SUPERVISOR)).json()
        # Nothing was assessed again: the stored verdicts are the ones the agent's screen got in the summary.
        summary = next(e for e in events if e["type"] == "summary")
        assert _labels(report) == {a["topic"]: a["label"] for a in summary["assessments"]}
        assert len(_labels(report)) >= 5
        finals = [e for e in events if e["type"] == "final" and e["text"]]
        assert [u["utterance_id"] for u in report["utterances"]] == [f["utterance_id"] for f in finals]
        assert report["loan_file"] and report["source"] == "live" and report["complete"] is True
        # Both channels' audio as received, one file each, playable from the report page.
        assert [a["channels"] for a in report["audio"]] == [["agent"], ["customer"]]
        duration = len(pcm) / 4 / 16000
        for link in report["audio"]:
            got = client.get(link["url"], headers=bearer(SUPERVISOR))
            assert got.status_code == 200
            path = tmp_path / "played.flac"
            path.write_bytes(got.content)
            audio = decode_audio(str(path))
            assert abs(audio.duration_s - duration) < 0.05
            assert float(np.abs(audio.samples).max()) > 0.05
        # The same transaction wrote coaching's row and the loan book's summary; the audit has the report.
        store = state_of(client.app).store  # type: ignore[arg-type]
        assert store is not None
        with store.session() as s:
            assert s.get(AgentCallStats, "live-b1") is not None
            summary_row = s.get(CallSummary, "live-b1")
            assert summary_row is not None and summary_row.customer_id == CUSTOMER
        [entry] = audited(client, "report")
        assert entry.actor == "live" and entry.call_id == "live-b1"
        # The customer was re-planned from it.
        customer = client.get(f"/v1/customers/{CUSTOMER}", headers=bearer(SUPERVISOR))
        assert customer.status_code == 200, customer.text
        assert "live-b1" in customer.text
        # A stored call id is streamed once: a second stream is refused (4409), and nothing is replaced.
        with client.websocket_connect("/v1/calls/live-b1/audio", headers=bearer(INGEST)) as again:
            again.send_json(_start(script))
            events, code = _events(again)
        assert code == CloseCode.CALL_IN_PROGRESS
        assert events[-1]["type"] == "error" and events[-1]["code"] == "call_exists"
        assert client.get("/v1/calls", headers=bearer(SUPERVISOR)).json()["total"] == 1


def test_a_dropped_connection_continues_the_call_on_reconnect(tmp_path: Path,
                                                              call_s01: tuple[dict[str, Any], bytes]) -> None:
    script, pcm = call_s01
    cut = len(pcm) // 2 // 4 * 4
    with _client(tmp_path, script) as client:
        with client.websocket_connect("/v1/calls/live-b2/audio", headers=bearer(INGEST)) as ws:
            ws.send_json(_start(script))
            assert ws.receive_json()["type"] == "ready"
            _send(ws, pcm[:cut])
            first = []
            while len([e for e in first if e["type"] == "final"]) < 3:
                first.append(ws.receive_json())
            ws.close(code=1001)  # the line went away (not a normal close, which ends the call)
        # The socket dropped without `stop`: nothing is stored yet, and the same id continues the call.
        calls = state_of(client.app).calls  # type: ignore[arg-type]
        deadline = time.monotonic() + 60  # the audio already sent is processed first
        while calls.active:
            assert time.monotonic() < deadline, "the dropped connection was not noticed"
            time.sleep(0.05)
        assert client.get("/v1/calls", headers=bearer(SUPERVISOR)).json()["total"] == 0
        with client.websocket_connect("/v1/calls/live-b2/audio", headers=bearer(INGEST)) as ws:
            ws.send_json(_start(script))
            assert ws.receive_json()["type"] == "ready"
            _send(ws, pcm[cut:])
            ws.send_json({"type": "stop"})
            second, code = _events(ws)
        assert code == CloseCode.NORMAL and second[-1]["report_url"] == "/v1/calls/live-b2/report"
        report = client.get("/v1/calls/live-b2/report", headers=bearer(SUPERVISOR)).json()
        earlier = [e for e in first if e["type"] == "final" and e["text"]]
        later = [e for e in second if e["type"] == "final" and e["text"]]
        # The second connection's finals carry on the call's clock and each channel's numbering (audio the first
        # connection had not taken in when it dropped is lost, as on a real line).
        assert later and min(f["start_s"] for f in later) >= max(f["end_s"] for f in earlier) - 0.01

        def number(utterance_id: str) -> int:
            return int(utterance_id.rpartition("-")[2])

        for channel in ("agent", "customer"):
            before = [number(f["utterance_id"]) for f in earlier if f["channel"] == channel]
            after = [number(f["utterance_id"]) for f in later if f["channel"] == channel]
            assert not before or not after or min(after) > max(before), channel
        # Everything said on both connections is in the one report, in order.
        ids = [u["utterance_id"] for u in report["utterances"]]
        assert len(ids) == len(set(ids))
        assert {f["utterance_id"] for f in earlier + later} <= set(ids)
        starts = [u["start_s"] for u in report["utterances"]]
        assert starts == sorted(starts)
        assert report["duration_s"] >= (len(pcm) - cut) / 4 / 16000 + max(f["end_s"] for f in earlier) - 0.5
        assert report["complete"] is True


def test_a_dropped_call_nobody_continues_is_stored_incomplete(tmp_path: Path,
                                                             call_s01: tuple[dict[str, Any], bytes]) -> None:
    script, pcm = call_s01
    with _client(tmp_path, script, lease_s=2.0) as client:
        with client.websocket_connect("/v1/calls/live-b3/audio", headers=bearer(INGEST)) as ws:
            ws.send_json(_start(script))
            assert ws.receive_json()["type"] == "ready"
            _send(ws, pcm[: len(pcm) // 3 // 4 * 4])
            finals = []
            while len(finals) < 2:
                event = ws.receive_json()
                if event["type"] == "final" and event["text"]:
                    finals.append(event)
            ws.close(code=1006)  # no close frame: a dead line
        deadline = time.monotonic() + 30
        while not (listed := client.get("/v1/calls", headers=bearer(SUPERVISOR)).json())["items"]:
            assert time.monotonic() < deadline, "the abandoned call was not stored"
            time.sleep(0.2)
        assert [(c["call_id"], c["source"], c["complete"]) for c in listed["items"]] == [("live-b3", "live", False)]
        report = client.get("/v1/calls/live-b3/report", headers=bearer(SUPERVISOR)).json()
        texts = [u["text"] for u in report["utterances"]]
        assert all(f["text"] in texts for f in finals)
        assert report["audio"]


def test_without_keep_audio_the_report_is_stored_and_no_audio(tmp_path: Path,
                                                             call_s01: tuple[dict[str, Any], bytes]) -> None:
    script, pcm = call_s01
    with _client(tmp_path, script, keep_audio=False) as client:
        with client.websocket_connect("/v1/calls/live-b4/audio", headers=bearer(INGEST)) as ws:
            ws.send_json(_start(script))
            _send(ws, pcm[: len(pcm) // 4 // 4 * 4])
            ws.send_json({"type": "stop"})
            events, _ = _events(ws)
        assert events[-1]["report_url"]
        report = client.get("/v1/calls/live-b4/report", headers=bearer(SUPERVISOR)).json()
        assert report["audio"] == [] and report["utterances"]
        assert not any((tmp_path / "data" / "audio").rglob("*.*"))


def test_an_upload_is_refused_while_its_call_streams(tmp_path: Path,
                                                     call_s01: tuple[dict[str, Any], bytes]) -> None:
    script, pcm = call_s01
    with _client(tmp_path, script) as client:
        with client.websocket_connect("/v1/calls/live-b5/audio", headers=bearer(INGEST)) as ws:
            ws.send_json(_start(script))
            assert ws.receive_json()["type"] == "ready"
            upload = client.post("/v1/recordings", headers=bearer(INGEST), data={"call_id": "live-b5"},
                                 files={"file": ("call.wav", io.BytesIO(b"RIFF"), "audio/wav")})
            assert upload.status_code == 409 and upload.json()["code"] == "call_live", upload.text
            ws.send_json({"type": "stop"})
            _events(ws)
        with store_of(client).session() as s:
            assert s.scalars(select(CallSummary)).all() == []  # nothing said: nothing stored


def store_of(client: TestClient) -> Any:
    store = state_of(client.app).store  # type: ignore[arg-type]
    assert store is not None
    return store


class UnderLoadTranscriber(ScriptedTranscriber):
    """Live finals come out greedy (decoded under load); decoded again after the call with the final beam, every
    customer answer turns out to be "记不清了": what the re-decoding job stores is then visible in the labels."""

    def transcribe_span(self, samples: np.ndarray, channel: str, offset_s: float, beam_size: int | None = None,
                        min_window_s: float | None = None, provisional: bool = False,
                        abandon: Any = None) -> Any:
        heard = super().transcribe_span(samples, channel, offset_s, beam_size, min_window_s, provisional, abandon)
        if heard is None:
            return None
        if abandon is not None:  # the live path's decodes (partials, finals decoded early)
            return dataclasses.replace(heard, greedy=True)
        return dataclasses.replace(heard, text="记不清了") if channel == "customer" else heard

    def transcribe_spans(self, spans: Any, beam_size: int | None = None,
                         min_window_s: float | None = None) -> list[Any]:
        heard = [super(UnderLoadTranscriber, self).transcribe_span(samples, channel, offset_s)
                 for samples, channel, offset_s in spans]
        return [dataclasses.replace(u, greedy=True) if u is not None else None for u in heard]


def test_finals_decoded_under_load_are_decoded_again_after_the_call(tmp_path: Path,
                                                                    call_s01: tuple[dict[str, Any], bytes]) -> None:
    from service.metrics import scrape

    script, pcm = call_s01
    before = scrape().decode()
    with tokens_client(tmp_path, TOKENS, UnderLoadTranscriber(script), live={"idle_timeout_s": 5.0}) as client:
        with client.websocket_connect("/v1/calls/live-b6/audio", headers=bearer(INGEST)) as ws:
            ws.send_json(_start(script))
            _send(ws, pcm)
            ws.send_json({"type": "stop"})
            events, _ = _events(ws)
        summary = next(e for e in events if e["type"] == "summary")
        live = {a["topic"]: a["label"] for a in summary["assessments"]}
        assert "clear" in live.values()
        deadline = time.monotonic() + 60
        while not (report := client.get("/v1/calls/live-b6/report", headers=bearer(SUPERVISOR)).json())["redecoded"]:
            assert time.monotonic() < deadline, "the degraded finals were not re-decoded"
            time.sleep(0.2)
        # The report carries both: the verdicts the agent got live, and the ones from the re-decoded text.
        assert report["live_labels"] == live
        customer_ids = {f["utterance_id"] for f in events if f["type"] == "final" and f["channel"] == "customer"
                        and f["text"]}
        assert set(report["redecoded"]) >= customer_ids
        assert all(u["text"] == "记不清了" for u in report["utterances"] if u["channel"] == "customer")
        assert _labels(report) != live and "omission" in _labels(report).values()
        assert report["source"] == "live" and report["complete"] is True
        store = store_of(client)
        [earlier] = store.report_versions("live-b6")
        assert earlier.reason == "redecode" and _labels(earlier.report) == live
        with store.session() as s:  # the job kept the loan file only while it ran
            from service.store.models import Recording

            jobs = s.scalars(select(Recording).where(Recording.call_id == "live-b6")).all()
            assert sorted((j.kind, j.status) for j in jobs) == [("redecode", "done"), ("score", "done")]
            kept = {j.kind: j.loan_file for j in jobs}
            assert kept["redecode"] is None and "*" in kept["score"]["borrower"]
    after = scrape().decode()

    def counter(text: str, name: str) -> float:
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))

    assert counter(after, "huifang_redecoded_utterances_total") > counter(before, "huifang_redecoded_utterances_total")
    assert counter(after, 'huifang_live_final_labels_total{agreed="false"}') > counter(
        before, 'huifang_live_final_labels_total{agreed="false"}')


def test_a_normal_close_without_stop_ends_the_call(tmp_path: Path, call_s01: tuple[dict[str, Any], bytes]) -> None:
    """FreeSWITCH's `uuid_audio_stream stop` closes the socket (1000) instead of sending `stop`: the call ends and is
    stored at once, complete. (A real socket: TestClient's sessions do not pass a client's close on.)"""
    import httpx
    import websockets.sync.client as ws_client

    script, pcm = call_s01
    with served_app(tmp_path, ScriptedTranscriber(script)) as (base, _):
        url = base.replace("http://", "ws://") + "/v1/calls/live-b7/audio"
        with ws_client.connect(url, additional_headers=bearer(INGEST), max_size=2**22) as ws:
            ws.send(json.dumps(_start(script)))
            assert json.loads(ws.recv(timeout=30))["type"] == "ready"
            quarter = len(pcm) // 4 // 4 * 4
            for i in range(0, quarter, FRAME):
                ws.send(pcm[i: i + FRAME])
            while json.loads(ws.recv(timeout=60))["type"] != "final":
                pass
            ws.close(code=1000)
        deadline = time.monotonic() + 60
        while not (listed := httpx.get(f"{base}/v1/calls", headers=bearer(SUPERVISOR), timeout=10).json())["items"]:
            assert time.monotonic() < deadline, "the closed call was not stored"
            time.sleep(0.1)
        assert [(c["call_id"], c["complete"]) for c in listed["items"]] == [("live-b7", True)]
