"""Faults a live service meets (issue #16 point 12): the server stopped with calls on the line, recording jobs
in flight when it stops, the database gone during a live call, and a replica killed mid-call (issue #29: the call
is stored as incomplete by the next replica). (A decoder failing for one utterance and a screen that stops reading
are in test_live_socket.py and test_live_assist.py.)"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.auth import write_tokens_file
from tests.integration.test_live_socket import START, _speech, _stereo_pcm16
from tests.support.server import SUPERVISOR, bearer, free_port, wait_healthy

REPO = Path(__file__).resolve().parents[2]
INGEST = "f-ingest"

_SERVER = """
import sys
from pathlib import Path

from service.server import serve
from service.settings import Settings
from tests.integration.test_live_socket import FakeTranscriber

serve(Settings(data_dir=Path(sys.argv[1]), port=int(sys.argv[2]), auth={"tokens_file": sys.argv[3]},
               metrics={"port": int(sys.argv[4])}), FakeTranscriber())
"""


@pytest.mark.asyncio
async def test_sigterm_ends_live_calls_cleanly_before_the_server_stops(tmp_path: Path, shared_data: Path) -> None:
    """SIGTERM with a call on the line: no new call is accepted, the audio already received is transcribed and
    sent, the call gets its `end`, and the socket closes with 1001 so the switch reconnects elsewhere."""
    import httpx
    import websockets

    tokens = tmp_path / "tokens.yaml"
    write_tokens_file(tokens, {INGEST: ("ingest", None)})
    port, metrics_port = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-c", _SERVER, str(tmp_path / "data"), str(port), str(tokens),
                             str(metrics_port)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_healthy(proc, port, 60)  # blocking, but nothing else runs on this test's loop yet
        url = f"ws://127.0.0.1:{port}/v1/calls/on-the-line/audio"
        headers = {"Authorization": f"Bearer {INGEST}"}
        async with websockets.connect(url, additional_headers=headers) as ws:
            await ws.send(json.dumps(START))
            assert json.loads(await ws.recv())["type"] == "ready"
            audio = _stereo_pcm16(_speech(shared_data)[: 3 * 16000])  # mid-sentence when the signal comes
            for i in range(0, len(audio), 6400):
                await ws.send(audio[i: i + 6400])
            await asyncio.sleep(0.5)
            # The metrics port (not the API's) sees the call; no call id is a label.
            scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
            assert 'huifang_live_calls{mode="decoded"} 1.0' in scraped and "on-the-line" not in scraped
            assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 404
            proc.send_signal(signal.SIGTERM)
            events = [json.loads(m) async for m in ws]
            close_code = ws.close_code
        kinds = [e["type"] for e in events]
        assert "final" in kinds and kinds[-1] == "end", kinds
        assert close_code == 1001
        # uvicorn re-raises the signal once it has shut down, as a process killed by it would end.
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
        assert proc.stderr is not None and b"Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


#: A replica with a short lease and audio flushed often, whose recogniser says the shared call's script text.
_REPLICA = """
import json
import sys
from pathlib import Path

from service.server import serve
from service.settings import Settings
from tests.integration.test_live_assist import ScriptedTranscriber

script = json.loads(Path(sys.argv[5]).read_text(encoding="utf-8"))
serve(Settings(data_dir=Path(sys.argv[1]), port=int(sys.argv[2]), auth={"tokens_file": sys.argv[3]},
               metrics={"port": int(sys.argv[4])}, live={"lease_s": 2.0, "audio_flush_s": 0.5}),
      ScriptedTranscriber(script))
"""


def _replica(tmp_path: Path, name: str, tokens: Path, script: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A `serve` process on the test's one data directory (SQLite), on a new port, healthy."""
    port = free_port()
    log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - the process writes it until it ends
    proc = subprocess.Popen([sys.executable, "-c", _REPLICA, str(tmp_path / "data"), str(port), str(tokens),
                             str(free_port()), str(script)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        wait_healthy(proc, port, 60)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, port


def _log_tail(tmp_path: Path, name: str) -> str:
    return (tmp_path / f"{name}.log").read_text(encoding="utf-8", errors="replace")[-3000:]


@pytest.mark.asyncio
async def test_a_replica_killed_mid_call_leaves_the_call_stored_incomplete(tmp_path: Path,
                                                                          shared_data: Path) -> None:
    """SIGKILL with a call on the line, after finals were sent and more audio came: the next replica on the same
    database stores the call once its lease runs out, marked incomplete, with every final the switch got, its
    audio as flushed, and its audit entry (issue #29: nothing said before the crash is lost)."""
    import httpx
    import websockets
    from sqlalchemy import select

    from asr.audio import decode_audio
    from service.store import Store
    from service.store.models import AuditEntry
    from tests.integration.test_live_assist import _call
    from tests.integration.test_live_books import _start

    script, pcm = _call(shared_data, "call_s01")
    tokens = tmp_path / "tokens.yaml"
    write_tokens_file(tokens, {INGEST: ("ingest", None), SUPERVISOR: ("supervisor", None)})
    script_path = shared_data / "calls" / "call_s01.json"
    frame = 12800  # 200 ms of 16 kHz stereo pcm16
    # The agent's opening and the customer's first answer, with the pause after it (two finals at least).
    first = int(15.0 * 16000) * 4
    more = int(3.0 * 16000) * 4  # then the agent's next turn starts: audio the killed replica had in hand

    proc, port = _replica(tmp_path, "first", tokens, script_path)
    finals: list[dict[str, Any]] = []
    try:
        ws = await websockets.connect(f"ws://127.0.0.1:{port}/v1/calls/killed/audio",
                                      additional_headers={"Authorization": f"Bearer {INGEST}"})
        await ws.send(json.dumps(_start(script)))
        assert json.loads(await ws.recv())["type"] == "ready"
        for i in range(0, first, frame):
            await ws.send(pcm[i: i + frame])
        while len(finals) < 2:
            event = json.loads(await asyncio.wait_for(ws.recv(), 60))
            if event["type"] == "final" and event["text"]:
                finals.append(event)
        for i in range(first, first + more, frame):  # at the pace of the line
            await ws.send(pcm[i: i + frame])
            await asyncio.sleep(0.2)
        while True:  # whatever else the replica sent before it dies counts as received
            try:
                event = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
            except TimeoutError:
                break
            if event["type"] == "final" and event["text"]:
                finals.append(event)
        proc.kill()
        assert proc.wait(timeout=30) == -signal.SIGKILL
        await ws.close()  # no closing handshake comes from a killed process: this only ends the client's side
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    second, port = _replica(tmp_path, "second", tokens, script_path)
    try:
        supervisor = bearer(SUPERVISOR)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=supervisor, timeout=10) as http:
            deadline = time.monotonic() + 60
            while not (listed := (await http.get("/v1/calls")).json())["items"]:
                assert second.poll() is None, _log_tail(tmp_path, "second")
                assert time.monotonic() < deadline, "the killed replica's call was not stored:\n" + \
                    _log_tail(tmp_path, "second")
                await asyncio.sleep(0.2)
            assert [(c["call_id"], c["source"], c["complete"]) for c in listed["items"]] == [
                ("killed", "live", False)]
            report = (await http.get("/v1/calls/killed/report")).json()
            assert report["source"] == "live" and report["complete"] is False
            # Every final the switch got, in order, with its text: up to the last one, nothing is lost.
            stored = {u["utterance_id"]: u for u in report["utterances"]}
            for final in finals:
                assert final["utterance_id"] in stored, (final, list(stored))
                assert stored[final["utterance_id"]]["text"] == final["text"]
            starts = [u["start_s"] for u in report["utterances"]]
            assert starts == sorted(starts)
            # Both channels' audio as flushed before the kill (at most `audio_flush_s` short of what the
            # replica had taken in, which runs past the last final), served and with the agent's speech in it.
            assert [a["channels"] for a in report["audio"]] == [["agent"], ["customer"]]
            last_end_s = max(f["end_s"] for f in finals)
            for link in report["audio"]:
                served = await http.get(link["url"])
                assert served.status_code == 200
                path = tmp_path / f"{link['channels'][0]}.flac"
                path.write_bytes(served.content)
                audio = decode_audio(str(path))
                assert last_end_s - 0.5 <= audio.duration_s <= (first + more) / 4 / 16000 + 0.01
            assert float(np.abs(decode_audio(str(tmp_path / "agent.flac")).samples).max()) > 0.05
        # The audit log has the stored report (written by the replica that stored it).
        store = Store(f"sqlite:///{tmp_path / 'data' / 'huifang.db'}")
        with store.session() as s:
            entries = s.scalars(select(AuditEntry).where(AuditEntry.kind == "report",
                                                         AuditEntry.call_id == "killed")).all()
        assert len(entries) == 1 and entries[0].actor == "live"
    finally:
        second.terminate()
        second.wait(timeout=30)


@pytest.mark.asyncio
async def test_recording_jobs_in_flight_are_handed_back_when_the_service_stops(tmp_path: Path) -> None:
    from pipeline.recording import Scored
    from service.store import Store
    from service.workers.jobs import JobContext, JobRunner

    store = Store(f"sqlite:///{tmp_path / 'j.db'}")
    store.migrate()
    scoring = threading.Event()
    release = threading.Event()

    def slow(call_id: str, parts: Any, loan: Any, progress: Any) -> Scored:
        scoring.set()
        release.wait(10)  # still scoring when the service stops
        raise RuntimeError("interrupted")

    runner = JobRunner(JobContext(store, tmp_path, slow, 90.0), workers=1)
    await runner.start()
    job = store.create_job("c1", [], None, None)
    runner.notify()
    assert await asyncio.to_thread(scoring.wait, 10)
    assert store.get_job(job.id).status == "running"  # type: ignore[union-attr]
    await runner.close()
    assert store.get_job(job.id).status == "queued"  # type: ignore[union-attr]  # another process may take it now
    release.set()


def test_a_live_call_goes_on_when_the_database_goes_away(tmp_path: Path, shared_data: Path) -> None:
    """The audit log cannot be written: transcripts and prompts keep flowing, the call is told once what is not
    being recorded, and the call ends normally."""
    from sqlalchemy.exc import OperationalError

    from service.api.deps import get_calls
    from service.app import create_app, state_of
    from service.settings import Settings
    from tests.integration.test_live_socket import FakeTranscriber, _drain
    from tests.support.server import authed

    class GoneStore:
        anchor = None

        def session(self) -> Any:
            raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    app = create_app(Settings(data_dir=tmp_path), transcriber=FakeTranscriber())  # type: ignore[arg-type]
    with authed(app) as client:
        calls = state_of(app).calls
        app.dependency_overrides[get_calls] = lambda: dataclasses.replace(calls, store=GoneStore())
        silence = np.zeros(2 * 16000, dtype=np.float32)
        speech = _speech(shared_data)
        audio = _stereo_pcm16(np.concatenate([speech, silence, speech, silence]))
        with client.websocket_connect("/v1/calls/db-gone/audio") as ws:
            ws.send_json({**START, "loan_file": {"repay_day": 20}})
            assert ws.receive_json()["type"] == "ready"
            for i in range(0, len(audio), 6400):
                ws.send_bytes(audio[i: i + 6400])
            ws.send_json({"type": "stop"})
            events = _drain(ws)
    kinds = [e["type"] for e in events]
    assert kinds.count("final") >= 2 and kinds[-1] == "end"
    lost = [e for e in events if e["type"] == "error" and e["code"] == "audit_unavailable"]
    assert len(lost) == 1 and "summary" in kinds  # said once; the call's summary still reached the agent


def test_a_stopping_server_takes_no_new_call(tmp_path: Path) -> None:
    from service.app import create_app, state_of
    from service.protocol import CloseCode
    from service.settings import Settings
    from tests.integration.test_auth import _closed
    from tests.integration.test_live_socket import FakeTranscriber
    from tests.support.server import authed

    app = create_app(Settings(data_dir=tmp_path), transcriber=FakeTranscriber())  # type: ignore[arg-type]
    with authed(app) as client:
        state_of(app).calls.stopping.set()  # what SIGTERM does first (service/server.py)
        with client.websocket_connect("/v1/calls/late/audio") as ws:
            ws.send_json(START)
            events, code = _closed(ws)
    assert code == CloseCode.GOING_AWAY and events[0]["code"] == "shutting_down"
