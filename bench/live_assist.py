"""Live agent assistance end to end: the shared calls streamed through the real service, prompts measured.

Each call of ../shared/data/calls (16 kHz stereo, with its loan file) is replayed over the native websocket at
real-time pace, N calls at a time (N = 1 and 4 by default), exactly as a switch would send it. For every scripted
customer answer with a gold label the verdict that stands at the end (last revision of the assessment for that
question and topic) is compared with the gold label:

- recall of vague answers: gold omission/unclear/evasive predicted as any of the three;
- false flags: gold clear answers predicted vague (a mismatch flag on an answer the script marks as
  contradicting the loan file is the expected flag, counted separately);
- silence: delay from (question end + silence timeout), in wall time while streaming, to the evasive verdict;
- latency: from the end of the customer's answer (gold end time, audio time converted to the wall time that
  audio had been sent) to the `prompt` event, p50/p95; also to the `assessment` event.

Prints one JSON line per N, plus one per call with --verbose.

    python -m bench.live_assist [--concurrency 1,4] [--calls call_s01,call_s03] [--verbose]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from typing import Any

import numpy as np

from asr.audio import load_call_audio
from bench._common import AUTH, emit, require_shared
from bench.stream_latency import free_port, peak_rss_mb, start_server
from service.cli.replay import ReplayResult, replay

VAGUE = {"omission", "unclear", "evasive"}
SILENCE_TIMEOUT_S = 5.0


def overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def gold_answers(call: dict[str, Any]) -> list[dict[str, Any]]:
    """The labelled customer turns, each with the agent question before it."""
    out, question = [], None
    for turn in call["turns"]:
        if turn["speaker"] == "agent" and turn["text"]:
            question = turn
        elif turn["speaker"] == "customer" and "label" in turn and question is not None:
            out.append({**turn, "question": question})
    return out


def score_call(call: dict[str, Any], result: ReplayResult) -> list[dict[str, Any]]:
    """One row per gold answer: gold and predicted label, silence delay, latencies."""
    finals = {e["utterance_id"]: e for e in result.finals()}
    assessments = [(e, t) for e, t in zip(result.events, result.arrival, strict=True) if e["type"] == "assessment"]
    prompts = [(e, t) for e, t in zip(result.events, result.arrival, strict=True) if e["type"] == "prompt"]
    rows = []
    for gold in gold_answers(call):
        q = gold["question"]
        mine = []
        for event, arrived in assessments:
            qf = finals.get(event["question_utterance_id"])
            if qf is None or event["topic"] != gold["topic"]:
                continue
            if overlap(qf["start_s"], qf["end_s"], q["start_s"], q["end_s"]) > 0:
                mine.append((event, arrived))
        silent = not gold["text"]
        end_audio = q["end_s"] + SILENCE_TIMEOUT_S if silent else gold["end_s"]
        ready_wall = result.sent_at(end_audio)
        row: dict[str, Any] = {"call": call["id"], "topic": gold["topic"], "gold": gold["label"],
                               "mismatch_expected": "mismatch" in (gold.get("note") or ""), "silent": silent}
        if not mine:
            row.update(predicted=None, mismatch=False)
        else:
            final_event = max(mine, key=lambda m: m[0]["revision"])[0]
            first_event, first_arrival = mine[0]
            row.update(predicted=final_event["label"], mismatch=final_event["mismatch"] is not None,
                       assessment_latency_s=round(first_arrival - ready_wall, 3),
                       heard="，".join(finals[i]["text"] for i in final_event["answer_utterance_ids"] if i in finals),
                       evidence=[e["text"] for e in final_event["evidence"]])
            if silent:
                row["silence_delay_s"] = round(first_arrival - ready_wall, 3)
            question_ids = {m[0]["question_utterance_id"] for m in mine}
            mine_prompts = [(p, t) for p, t in prompts
                            if p["question_utterance_id"] in question_ids and p["topic"] == gold["topic"]]
            if mine_prompts:
                row["prompt_latency_s"] = round(mine_prompts[0][1] - ready_wall, 3)
        rows.append(row)
    return rows


async def run_batch(port: int, calls: list[dict[str, Any]], audio: dict[str, np.ndarray]) -> list[ReplayResult]:
    jobs = [replay(f"ws://127.0.0.1:{port}/v1/calls/{call['id']}-{np.random.randint(1 << 30)}/audio",
                   audio[call["id"]], 16000, ["agent", "customer"], realtime=True, loan_file=call["loan_file"],
                   headers=AUTH)
            for call in calls]
    return list(await asyncio.gather(*jobs))


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    vague = [r for r in rows if r["gold"] in VAGUE]
    clear = [r for r in rows if r["gold"] == "clear"]
    recalled = sum(1 for r in vague if r["predicted"] in VAGUE)
    false_flags = sum(1 for r in clear if r["predicted"] in VAGUE or (r["mismatch"] and not r["mismatch_expected"]))
    expected_mismatch = [r for r in clear if r["mismatch_expected"]]
    silence = [r.get("silence_delay_s") for r in rows if r["silent"]]
    prompt_lat = [r["prompt_latency_s"] for r in rows if "prompt_latency_s" in r]
    assess_lat = [r["assessment_latency_s"] for r in rows if "assessment_latency_s" in r and not r["silent"]]

    def pct(values: list[float], q: float) -> float | None:
        return round(float(np.percentile(values, q)), 3) if values else None

    return {
        "answers": len(rows), "vague": len(vague), "clear": len(clear),
        "vague_recall": round(recalled / len(vague), 3) if vague else None,
        "false_flag_rate": round(false_flags / len(clear), 3) if clear else None,
        "label_accuracy": round(sum(1 for r in rows if r["predicted"] == r["gold"]) / len(rows), 3),
        "missed_topics": sum(1 for r in rows if r["predicted"] is None),
        "mismatch_found": f"{sum(1 for r in expected_mismatch if r['mismatch'])}/{len(expected_mismatch)}",
        "silence_delay_s": silence, "silence_within_1s": all(d is not None and d <= 1.0 for d in silence),
        "prompt_latency_p50_s": pct(prompt_lat, 50), "prompt_latency_p95_s": pct(prompt_lat, 95),
        "prompts_timed": len(prompt_lat),
        "assessment_latency_p50_s": pct(assess_lat, 50), "assessment_latency_p95_s": pct(assess_lat, 95),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1,4", help="concurrent calls per run, comma-separated")
    parser.add_argument("--calls", default="", help="call ids to use (default: all shared calls)")
    parser.add_argument("--verbose", action="store_true", help="also print one line per answer")
    args = parser.parse_args()
    folder = require_shared("calls")
    wanted = {c for c in args.calls.split(",") if c}
    calls = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("call_*.json"))]
    calls = [c for c in calls if not wanted or c["id"] in wanted]
    audio = {c["id"]: load_call_audio(str(folder / f"{c['id']}.flac"), 16000) for c in calls}
    port = free_port()
    data_dir = os.environ.get("HUIFANG_DATA_DIR", tempfile.mkdtemp(prefix="huifang-bench-"))
    server = start_server(port, {"HUIFANG_DATA_DIR": data_dir,
                                 "HUIFANG_NLU__SILENCE_TIMEOUT_S": str(SILENCE_TIMEOUT_S)})
    try:
        for n in [int(x) for x in args.concurrency.split(",") if x]:
            rows: list[dict[str, Any]] = []
            for i in range(0, len(calls), n):
                batch = calls[i: i + n]
                results = asyncio.run(run_batch(port, batch, audio))
                for call, result in zip(batch, results, strict=True):
                    rows += score_call(call, result)
            if args.verbose:
                for row in rows:
                    emit({"concurrency": n, **row})
            emit({"bench": "live_assist", "concurrency": n, "calls": len(calls), **summarise(rows),
                  "server_peak_rss_mb": peak_rss_mb(server.pid)})
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
