"""Live calls in the books (issue #29): how soon a live call is stored after it ends, and whether what is stored
agrees with scoring its recording.

Each shared call of ../shared/data/calls (call_s*, 16 kHz stereo, its loan file with a customer id added so the
loan book has a customer) is streamed through a real `huifang serve` over the native websocket, one call at a
time, at real-time pace (`--speed` to go faster). For each call:

- store delay: seconds from the client's `stop` (the end of its audio) to the call's first appearance in
  `GET /v1/calls`, polled every 0.1 s (the issue's aim: within 5 s); also when the `end` event (which carries the
  report's URL once stored) arrived, and the listing's delay after the `summary` event (every final out, the
  dialogue concluded): the storing's own share;
- whether the stored call says `source` live and `complete`, whether both channels' audio is served and how
  long it is, and whether the customer was re-planned (the call is on `GET /v1/customers/{id}`);
- agreement of its stored live verdicts with scoring the same recording: once every call has streamed, each
  file is uploaded to `POST /v1/recordings` under another call id (same loan file), and the labels of the two
  reports are compared topic by topic: matching labels / topics labelled in either (the issue's aim: >= 95%).

Prints one JSON line per call and a summary line (p50/max store delay, overall agreement, cores).

    python -m bench.live_books [--calls call_s01,call_s03] [--speed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from asr.audio import load_call_audio
from bench._common import AUTH, emit, require_shared
from bench.stream_latency import free_port, peak_rss_mb, start_server
from service.cli.replay import ReplayResult, replay
from service.settings import Settings

#: How often `GET /v1/calls` is asked whether the call is stored, and for how long at most.
POLL_S = 0.1
STORE_TIMEOUT_S = 120.0


def stop_sent_at(result: ReplayResult, audio_s: float, speed: float) -> float:
    """Wall time (time.monotonic) the client sent `stop`: at real-time pace `replay` sends it as soon as the last
    frame's slot (`audio_s / speed` after its start) is over, or at once when sending ran late."""
    if not result.send_marks:
        return 0.0
    started = result.send_marks[0][1]  # taken right after the first frame went, a moment after `replay`'s start
    return max(result.send_marks[-1][1], started + audio_s / speed)


def labels(report: dict[str, Any]) -> dict[str, str]:
    """A report's label per topic (topics without one left out)."""
    return {t["topic"]: t["label"] for t in report.get("topics", []) if t.get("label")}


def agreement(live: dict[str, str], scored: dict[str, str]) -> tuple[int, int, list[str]]:
    """(matching labels, topics labelled in either, the topics that differ)."""
    topics = sorted(set(live) | set(scored))
    differ = [t for t in topics if live.get(t) != scored.get(t)]
    return len(topics) - len(differ), len(topics), differ


async def wait_listed(http: Any, call_id: str, not_before: float) -> float | None:
    """Poll `GET /v1/calls` from `not_before` (wall time) until `call_id` is listed; when, or None (timeout)."""
    await asyncio.sleep(max(0.0, not_before - time.monotonic()))
    deadline = time.monotonic() + STORE_TIMEOUT_S
    while time.monotonic() < deadline:
        asked = time.monotonic()
        page = (await http.get("/v1/calls", params={"limit": 200})).json()
        if any(item["call_id"] == call_id for item in page["items"]):
            return asked
        await asyncio.sleep(max(0.0, asked + POLL_S - time.monotonic()))
    return None


async def stream_one(port: int, http: Any, call: dict[str, Any], audio: np.ndarray, call_id: str,
                     loan_file: dict[str, Any], speed: float) -> dict[str, Any]:
    """Stream one call live and measure when it is stored."""
    audio_s = audio.shape[1] / 16000
    began = time.monotonic()
    # Polling starts about when the audio ends (a little before is harmless: the call is not stored yet).
    listed = asyncio.create_task(wait_listed(http, call_id, began + audio_s / speed))
    result = await replay(f"ws://127.0.0.1:{port}/v1/calls/{call_id}/audio", audio, 16000, ["agent", "customer"],
                          realtime=True, speed=speed, loan_file=loan_file, headers=AUTH)
    appeared = await listed
    stopped = stop_sent_at(result, audio_s, speed)
    ends = [(e, t) for e, t in zip(result.events, result.arrival, strict=True) if e.get("type") == "end"]
    end_event, end_at = ends[-1] if ends else ({}, None)
    summaries = [t for e, t in zip(result.events, result.arrival, strict=True) if e.get("type") == "summary"]
    concluded = summaries[-1] if summaries else None
    return {"call": call["id"], "call_id": call_id, "audio_s": round(audio_s, 1), "close_code": result.close_code,
            "store_delay_s": round(appeared - stopped, 3) if appeared is not None else None,
            "end_event_s": round(end_at - stopped, 3) if end_at is not None else None,
            # The storing's own share: from the dialogue's summary (every final out) to the call being listed.
            "listed_after_summary_s": (round(appeared - concluded, 3)
                                       if appeared is not None and concluded is not None else None),
            "end_report_url": end_event.get("report_url"),
            "finals": sum(1 for e in result.finals() if e["text"])}


async def check_stored(http: Any, row: dict[str, Any], customer_id: str) -> dict[str, Any]:
    """What the books hold of a streamed call: source, completeness, audio served, customer re-planned."""
    from asr.audio import decode_audio

    got = await http.get(f"/v1/calls/{row['call_id']}/report")
    if got.status_code != 200:
        return {"stored": False}
    report = got.json()
    seconds: list[float] = []
    served = bool(report["audio"])
    with tempfile.TemporaryDirectory() as tmp:
        for link in report["audio"]:
            played = await http.get(link["url"])
            if played.status_code != 200 or not played.content:
                served = False
                continue
            path = Path(tmp) / "played.flac"
            path.write_bytes(played.content)
            seconds.append(round(decode_audio(str(path)).duration_s, 2))
    customer = await http.get(f"/v1/customers/{customer_id}")
    return {"stored": True, "source": report.get("source"), "complete": report.get("complete"),
            "audio_served": served and len(seconds) == 2, "audio_channels_s": seconds,
            "customer_replanned": customer.status_code == 200 and row["call_id"] in customer.text,
            "live_labels": labels(report)}


async def score_uploads(http: Any, folder: Path, rows: list[dict[str, Any]],
                        loans: dict[str, dict[str, Any]]) -> dict[str, dict[str, str] | None]:
    """Upload every call's recording under `<call id>-upload`, wait for the jobs, and return each report's labels
    (None: its job failed)."""
    jobs: dict[str, str] = {}
    for row in rows:
        with open(folder / f"{row['call']}.flac", "rb") as f:
            sent = await http.post("/v1/recordings", files={"file": (f"{row['call']}.flac", f, "audio/flac")},
                                   data={"call_id": f"{row['call_id']}-upload",
                                         "loan_file": json.dumps(loans[row["call"]], ensure_ascii=False)})
        sent.raise_for_status()
        jobs[row["call"]] = sent.json()["id"]
    out: dict[str, dict[str, str] | None] = {}
    while len(out) < len(jobs):
        for call, job_id in jobs.items():
            if call in out:
                continue
            job = (await http.get(f"/v1/recordings/{job_id}")).json()
            if job["status"] == "failed":
                out[call] = None
            elif job["status"] == "done":
                report = (await http.get(f"/v1/calls/{job['call_id']}/report")).json()
                out[call] = labels(report)
        await asyncio.sleep(0.5)
    return out


async def run(port: int, folder: Path, calls: list[dict[str, Any]], speed: float, tag: str) -> list[dict[str, Any]]:
    import httpx

    loans = {c["id"]: {**c["loan_file"], "customer_id": f"BENCH-{c['id']}"} for c in calls}
    rows: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=AUTH, timeout=60) as http:
        for call in calls:  # one at a time: the delay measured is the storing's, not a queue's
            audio = load_call_audio(str(folder / f"{call['id']}.flac"), 16000)
            row = await stream_one(port, http, call, audio, f"{call['id']}-{tag}", loans[call["id"]], speed)
            row.update(await check_stored(http, row, loans[call["id"]]["customer_id"]))
            rows.append(row)
        # Scored after every live call, so that scoring does not share the cores with the calls measured.
        scored = await score_uploads(http, folder, [r for r in rows if r["stored"]], loans)
    for row in rows:
        live, after = row.pop("live_labels", None), scored.get(row["call"])
        if live is None or after is None:
            row.update(upload_scored=after is not None)
            continue
        same, topics, differ = agreement(live, after)
        row.update(upload_scored=True, topics=topics, matching=same,
                   agreement=round(same / topics, 3) if topics else None,
                   differ={t: [live.get(t), after.get(t)] for t in differ})
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    delays = [r["store_delay_s"] for r in rows if r.get("store_delay_s") is not None]
    same = sum(r.get("matching", 0) for r in rows)
    topics = sum(r.get("topics", 0) for r in rows)
    return {"calls": len(rows), "stored": sum(1 for r in rows if r.get("stored")),
            "store_delay_p50_s": round(float(np.percentile(delays, 50)), 3) if delays else None,
            "store_delay_max_s": round(max(delays), 3) if delays else None,
            "within_5s": sum(1 for d in delays if d <= 5.0),
            "audio_served": sum(1 for r in rows if r.get("audio_served")),
            "customers_replanned": sum(1 for r in rows if r.get("customer_replanned")),
            "topics": topics, "label_agreement": round(same / topics, 3) if topics else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", default="", help="call ids to stream, comma-separated (default: all call_s*)")
    parser.add_argument("--speed", type=float, default=1.0, help="times real-time pace (1: as a switch sends)")
    args = parser.parse_args()
    folder = require_shared("calls")
    wanted = {c for c in args.calls.split(",") if c}
    calls = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("call_s*.json"))]
    calls = [c for c in calls if not wanted or c["id"] in wanted]
    if wanted - {c["id"] for c in calls}:
        raise SystemExit(f"no such shared call(s): {', '.join(sorted(wanted - {c['id'] for c in calls}))}")
    # A fresh data directory (the calls listed are this run's), reusing an already joined model.
    data_dir = Path(tempfile.mkdtemp(prefix="huifang-books-"))
    models = Settings().data_dir / "models"  # HUIFANG_DATA_DIR's, or the default data directory's
    if models.is_dir():
        (data_dir / "models").symlink_to(models)
    port = free_port()
    server = start_server(port, {"HUIFANG_DATA_DIR": str(data_dir)})
    try:
        rows = asyncio.run(run(port, folder, calls, args.speed, os.urandom(3).hex()))
        for row in rows:
            emit({"bench": "live_books", "speed": args.speed, **row})
        emit({"bench": "live_books", "speed": args.speed, **summarise(rows),
              "server_peak_rss_mb": round(peak_rss_mb(server.pid))})
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(data_dir, ignore_errors=True)  # the stored calls and audio (the model is only linked)


if __name__ == "__main__":
    main()
