"""A replica keeps its live-call capacity (issue #30 point 3): with capacity 1, a second call is not decoded. When
another replica has room the upgrade is answered 503 `at_capacity` (the front proxy tries the next one); when
none has, the call is taken record-only: told so after `ready`, its audio kept, and scored after the call by the
job worker as a recording (a report of source `live`), also when its connection dropped and it continued, or
when nobody continued it. `/readyz` and `/metrics` say how full the replica is. The real VAD and pipeline with
the recogniser replaced (the script's text); two real replicas behind nginx are in test_replicas.py."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from service.app import state_of
from service.live.capacity import LocalBoard
from service.metrics import scrape
from service.protocol import CloseCode
from tests.integration.test_live_assist import _call
from tests.integration.test_live_assist import _drain as _events
from tests.integration.test_live_books import CUSTOMER, _client, _send, _start
from tests.support.server import INGEST, SUPERVISOR, bearer


@pytest.fixture()
def call_s01(shared_data: Path) -> tuple[dict[str, Any], bytes]:
    return _call(shared_data, "call_s01")


def _admissions(outcome: str) -> float:
    found = re.search(rf'^huifang_live_admissions_total{{outcome="{outcome}"}} (\S+)$', scrape().decode(), re.M)
    return float(found.group(1)) if found else 0.0


def _gauge(name: str, labels: str = "") -> float | None:
    found = re.search(rf"^{name}{re.escape(labels)} (\S+)$", scrape().decode(), re.M)
    return float(found.group(1)) if found else None


def _scored(client: TestClient, call_id: str, timeout_s: float = 60) -> dict[str, Any]:
    """The call's report once the job worker has scored it."""
    deadline = time.monotonic() + timeout_s
    while (answer := client.get(f"/v1/calls/{call_id}/report", headers=bearer(SUPERVISOR))).status_code != 200:
        assert time.monotonic() < deadline, f"{call_id} was not scored: {answer.status_code} {answer.text}"
        time.sleep(0.2)
    report: dict[str, Any] = answer.json()
    return report


def _idle(client: TestClient) -> None:
    calls = state_of(client.app).calls  # type: ignore[arg-type]
    deadline = time.monotonic() + 60
    while calls.active or calls.load.decoded or calls.load.record_only:
        assert time.monotonic() < deadline, "the calls did not end"
        time.sleep(0.05)


def test_a_call_beyond_capacity_is_recorded_and_scored_after_the_call(
        tmp_path: Path, call_s01: tuple[dict[str, Any], bytes]) -> None:
    script, pcm = call_s01
    cut = len(pcm) // 2 // 4 * 4
    recorded_before = _admissions("record_only")
    with _client(tmp_path, script, capacity=1) as client:
        assert _gauge("huifang_live_capacity") == 1
        with client.websocket_connect("/v1/calls/cap-decoded/audio", headers=bearer(INGEST)) as first:
            first.send_json(_start(script))
            assert first.receive_json()["type"] == "ready"
            # The box decodes its one call: the next is recorded only (no other replica to send it to).
            with client.websocket_connect("/v1/calls/cap-recorded/audio", headers=bearer(INGEST)) as second:
                second.send_json(_start(script))
                ready, told = second.receive_json(), second.receive_json()
                assert ready["type"] == "ready" and ready["loan_file"]
                assert told["type"] == "record_only" and told["call_id"] == "cap-recorded" and told["message"]
                ready_now = client.get("/readyz")
                assert ready_now.status_code == 200  # full of live calls, still ready for HTTP
                assert ready_now.json()["live"] == {"calls": 1, "record_only": 1, "capacity": 1, "full": True}
                assert _gauge("huifang_live_calls", '{mode="record_only"}') == 1
                assert _gauge("huifang_live_calls", '{mode="decoded"}') == 1
                _send(second, pcm[:cut])
                second.close(code=1001)  # the line went away mid-call
            _send(first, pcm[: len(pcm) // 4 // 4 * 4])
            first.send_json({"type": "stop"})
            decoded, _ = _events(first)
        assert decoded[-1]["report_url"] == "/v1/calls/cap-decoded/report"
        _idle(client)
        assert client.get("/v1/calls/cap-recorded/report", headers=bearer(SUPERVISOR)).status_code == 404
        # The box has room now, yet the dropped call continues as it was taken: recorded only.
        with client.websocket_connect("/v1/calls/cap-recorded/audio", headers=bearer(INGEST)) as again:
            again.send_json(_start(script))
            assert [again.receive_json()["type"], again.receive_json()["type"]] == ["ready", "record_only"]
            _send(again, pcm[cut:])
            again.send_json({"type": "stop"})
            rest, code = _events(again)
        assert code == CloseCode.NORMAL
        # Nothing was decoded live on it; its end comes before its report, which the job worker makes.
        assert [e["type"] for e in rest] == ["end"] and rest[0]["report_url"] is None
        report = _scored(client, "cap-recorded")
        assert report["source"] == "live" and report["loan_file"]
        assert len(report["utterances"]) >= 5 and any(t["label"] for t in report["topics"])
        # Both connections' audio on one clock (the test client cancels a dropped connection's task, so the first
        # connection's last frames may not have been taken in, as on a real line).
        second_s = (len(pcm) - cut) / 4 / 16000
        assert second_s + 5 < report["duration_s"] <= len(pcm) / 4 / 16000 + 0.1
        assert report["utterances"][-1]["end_s"] > report["duration_s"] - second_s
        assert [a["channels"] for a in report["audio"]] == [["agent"], ["customer"]]
        listed = client.get("/v1/calls", headers=bearer(SUPERVISOR)).json()["items"]
        assert {(c["call_id"], c["source"]) for c in listed} == {("cap-decoded", "live"), ("cap-recorded", "live")}
        # The customer was re-planned from it, as from any scored call.
        customer = client.get(f"/v1/customers/{CUSTOMER}", headers=bearer(SUPERVISOR))
        assert customer.status_code == 200 and "cap-recorded" in customer.text
        assert client.get("/readyz").json()["live"] == {"calls": 0, "record_only": 0, "capacity": 1, "full": False}
    # Admitted record-only once: its reconnect found room and was admitted to decode, then continued as it was.
    assert _admissions("record_only") == recorded_before + 1


class _RoomElsewhere(LocalBoard):
    """The load board of a cluster where another replica has room (the seam the Redis board fills)."""

    async def others_have_room(self) -> bool | None:
        return True


def test_a_full_replica_answers_the_upgrade_503_when_another_has_room(
        tmp_path: Path, call_s01: tuple[dict[str, Any], bytes]) -> None:
    script, _ = call_s01
    redirected_before = _admissions("redirected")
    with _client(tmp_path, script, capacity=1) as client:
        state_of(client.app).calls.board = _RoomElsewhere()
        with client.websocket_connect("/v1/calls/cap-here/audio", headers=bearer(INGEST)) as first:
            first.send_json(_start(script))
            assert first.receive_json()["type"] == "ready"
            with pytest.raises(WebSocketDenialResponse) as denied:
                client.websocket_connect("/v1/calls/cap-elsewhere/audio", headers=bearer(INGEST)).__enter__()
            answer = denied.value
            assert answer.status_code == 503 and answer.headers["retry-after"]
            assert answer.json()["code"] == "at_capacity"
            first.send_json({"type": "stop"})
            _events(first)
        _idle(client)
        # Room again: the same call is taken here.
        with client.websocket_connect("/v1/calls/cap-elsewhere/audio", headers=bearer(INGEST)) as later:
            later.send_json(_start(script))
            assert later.receive_json()["type"] == "ready"
            later.send_json({"type": "stop"})
            assert _events(later)[0][-1]["type"] == "end"
    assert _admissions("redirected") == redirected_before + 1


def test_a_recorded_call_nobody_continues_is_scored_from_its_audio(
        tmp_path: Path, call_s01: tuple[dict[str, Any], bytes]) -> None:
    script, pcm = call_s01
    with _client(tmp_path, script, capacity=1, lease_s=2.0, keep_audio=False) as client:
        with client.websocket_connect("/v1/calls/cap-busy/audio", headers=bearer(INGEST)) as first:
            first.send_json(_start(script))
            assert first.receive_json()["type"] == "ready"
            with client.websocket_connect("/v1/calls/cap-lost/audio", headers=bearer(INGEST)) as second:
                second.send_json(_start(script))
                assert [second.receive_json()["type"], second.receive_json()["type"]] == ["ready", "record_only"]
                _send(second, pcm[: len(pcm) // 2 // 4 * 4])
                second.close(code=1006)  # a dead line, and nobody calls back
            first.send_json({"type": "stop"})
            _events(first)
        # Its lease runs out, the sweep queues it and the worker scores it; its audio was kept although live
        # calls' audio is not (keep_audio off): it is all there is of the call.
        report = _scored(client, "cap-lost")
        assert report["source"] == "live" and report["utterances"] and report["audio"]


def test_a_demo_replay_takes_a_decoded_seat_and_none_beyond_capacity(
        tmp_path: Path, call_s01: tuple[dict[str, Any], bytes]) -> None:
    script, _ = call_s01
    with _client(tmp_path, script, capacity=1) as client:
        started = client.post("/v1/demo/calls", headers=bearer(SUPERVISOR), json={"speed": 4})
        assert started.status_code == 202, started.text
        assert client.get("/readyz").json()["live"]["calls"] == 1
        # A demo decodes like a real call: none beyond capacity (it is not worth a real call's latency).
        refused = client.post("/v1/demo/calls", headers=bearer(SUPERVISOR), json={"speed": 4})
        assert refused.status_code == 503 and refused.json()["code"] == "at_capacity"
        assert refused.headers["retry-after"]
        # And a real call while the demo plays is recorded only.
        with client.websocket_connect("/v1/calls/cap-after-demo/audio", headers=bearer(INGEST)) as ws:
            ws.send_json(_start(script))
            assert [ws.receive_json()["type"], ws.receive_json()["type"]] == ["ready", "record_only"]
            ws.send_json({"type": "stop"})
            events, _ = _events(ws)
        assert [e["type"] for e in events] == ["end"]
