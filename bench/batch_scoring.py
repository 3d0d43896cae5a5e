"""Post-call scoring throughput, and agreement between post-call and live labels, on the shared calls.

For each worker count (HUIFANG_SCORING__WORKERS), a fresh server gets every call of ../shared/data/calls
uploaded at once (stereo FLAC with its loan file) and the wall time until all reports are done gives calls per
hour and the real-time factor (wall time / audio duration; 2 channels per call). With `--consistency` each call
is also streamed through the live socket (at real-time pace, two at a time) and, for every scripted customer
answer, the post-call label is compared with the live label (the last revision of the assessment for that
question and topic); then each live call as stored (once finals decoded greedily under load are re-decoded) is
compared topic by topic with its scored recording (`stored_vs_recording`), and the re-decoded calls' final labels
with the ones the agent got live (`live_vs_final`).

    python -m bench.batch_scoring [--workers 1,2] [--consistency]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from asr.audio import load_call_audio
from bench._common import AUTH, emit, require_shared
from bench.live_assist import gold_answers, overlap, score_call
from bench.stream_latency import free_port, peak_rss_mb, start_server
from service.cli.replay import replay


def upload_all(base: str, folder: Path, calls: list[dict[str, Any]], tag: str) -> list[str]:
    import httpx

    ids = []
    for call in calls:
        with open(folder / f"{call['id']}.flac", "rb") as f:
            r = httpx.post(f"{base}/v1/recordings", files={"file": (f"{call['id']}.flac", f, "audio/flac")},
                           headers=AUTH,
                           data={"call_id": f"{call['id']}-{tag}",
                                 "loan_file": json.dumps(call["loan_file"], ensure_ascii=False)}, timeout=60)
        r.raise_for_status()
        ids.append(r.json()["id"])
    return ids


def wait_all(base: str, ids: list[str]) -> list[dict[str, Any]]:
    import httpx

    pending, done = set(ids), {}
    while pending:
        for job_id in list(pending):
            job = httpx.get(f"{base}/v1/recordings/{job_id}", headers=AUTH, timeout=30).json()
            if job["status"] in ("done", "failed"):
                done[job_id] = job
                pending.discard(job_id)
        time.sleep(0.5)
    return [done[i] for i in ids]


def post_call_labels(call: dict[str, Any], report: dict[str, Any]) -> list[str | None]:
    """Per gold answer: the post-call label of the answer to that question and topic."""
    out = []
    for gold in gold_answers(call):
        q = gold["question"]
        match = [a for a in report["answers"] if a["topic"] == gold["topic"] and a["question_span"]
                 and overlap(a["question_span"][0], a["question_span"][1], q["start_s"], q["end_s"]) > 0]
        out.append(match[-1]["label"] if match else None)
    return out


def _topic_labels(report: dict[str, Any]) -> dict[str, str]:
    return {t["topic"]: t["label"] for t in report["topics"] if t["label"]}


def _agree(a: dict[str, str], b: dict[str, str]) -> tuple[int, int]:
    topics = set(a) | set(b)
    return sum(a.get(t) == b.get(t) for t in topics), len(topics)


def stored_agreement(base: str, calls: list[dict[str, Any]], workers: int) -> dict[str, Any]:
    """The live calls as stored (issue #29), once any re-decoding of their degraded finals is done: their topic
    labels against the scored recordings', and the re-decoded calls' final labels against the live ones."""
    import httpx

    stored = same = live_same = live_total = redecoded = 0
    topics = 0
    for call in calls:
        deadline = time.monotonic() + 600
        while True:
            got = httpx.get(f"{base}/v1/calls/{call['id']}-live/report", headers=AUTH, timeout=30)
            if got.status_code == 200 and not got.json()["reprocessing"] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if got.status_code != 200:
            continue
        live = got.json()
        stored += 1
        scored = httpx.get(f"{base}/v1/calls/{call['id']}-w{workers}/report", headers=AUTH, timeout=30).json()
        agreed, n = _agree(_topic_labels(live), _topic_labels(scored))
        same, topics = same + agreed, topics + n
        if live["redecoded"]:
            redecoded += 1
            agreed, n = _agree(_topic_labels(live), live["live_labels"])
            live_same, live_total = live_same + agreed, live_total + n
    return {"bench": "batch_scoring", "live_calls_stored": stored, "of": len(calls),
            "stored_vs_recording": round(same / topics, 3) if topics else None, "topics": topics,
            "calls_redecoded": redecoded,
            "live_vs_final": round(live_same / live_total, 3) if live_total else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="worker counts to measure, comma-separated")
    parser.add_argument("--consistency", action="store_true", help="also compare with live labels")
    args = parser.parse_args()
    folder = require_shared("calls")
    calls = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("call_*.json"))]
    audio_s = sum(c["duration_s"] for c in calls)
    models = os.environ.get("HUIFANG_DATA_DIR")
    for workers in [int(w) for w in args.workers.split(",") if w]:
        data_dir = tempfile.mkdtemp(prefix="huifang-batch-")
        if models:  # reuse a joined model instead of joining the packaged parts again
            Path(data_dir, "models").symlink_to(Path(models) / "models")
        port = free_port()
        server = start_server(port, {"HUIFANG_DATA_DIR": data_dir, "HUIFANG_SCORING__WORKERS": str(workers)})
        base = f"http://127.0.0.1:{port}"
        try:
            started = time.monotonic()
            jobs = wait_all(base, upload_all(base, folder, calls, f"w{workers}"))
            wall = time.monotonic() - started
            failed = [j for j in jobs if j["status"] != "done"]
            emit({"bench": "batch_scoring", "workers": workers, "calls": len(calls), "failed": len(failed),
                  "audio_s": round(audio_s, 1), "wall_s": round(wall, 1),
                  "calls_per_hour": round(len(calls) / wall * 3600), "rtf": round(wall / audio_s, 3),
                  "server_peak_rss_mb": peak_rss_mb(server.pid)})
            if args.consistency and workers == int(args.workers.split(",")[0]):
                import httpx

                same = total = 0
                lives = {}
                for i in range(0, len(calls), 2):  # live at real-time pace, two calls at a time
                    batch = calls[i: i + 2]

                    async def stream(batch: list[dict[str, Any]] = batch, port: int = port) -> list[Any]:
                        return list(await asyncio.gather(*[replay(
                            f"ws://127.0.0.1:{port}/v1/calls/{c['id']}-live/audio",
                            load_call_audio(str(folder / f"{c['id']}.flac"), 16000), 16000, ["agent", "customer"],
                            loan_file=c["loan_file"], realtime=True, headers=AUTH) for c in batch]))

                    lives.update({c["id"]: r for c, r in zip(batch, asyncio.run(stream()), strict=True)})
                for call in calls:
                    report = httpx.get(f"{base}/v1/calls/{call['id']}-w{workers}/report", headers=AUTH,
                                       timeout=30).json()
                    after = post_call_labels(call, report)
                    live_labels = [row["predicted"] for row in score_call(call, lives[call["id"]])]
                    for a, b in zip(after, live_labels, strict=True):
                        total += 1
                        same += a == b
                    emit({"call": call["id"], "post_call": after, "live": live_labels})
                emit({"bench": "batch_scoring", "consistency": round(same / total, 3), "answers": total})
                emit(stored_agreement(base, calls, workers))
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
