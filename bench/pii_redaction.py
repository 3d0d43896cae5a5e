"""PII redaction: recall on the project's PII corpus, false masks on look-alikes, and a leak check end to end.

Corpus part (no model): every case of `tools.pii_corpus` goes through a fresh `Redactor` (utterance by utterance
for split numbers). A value is caught when neither it nor its digits survive in the output; a look-alike
(amount, date, rate, term) is falsely masked when any mask appears. One JSON line per kind and one summary.

Leak part (`--leak`, real model and server): the shared calls with spoken personal data (call_s11: a new phone
number, the last digits of an ID and a card; its loan file carries a phone and an ID number) are streamed
through the live socket with an events subscriber and uploaded as recordings; every event, the stored report,
the database file and the server's log are searched for the raw values. Aim: zero hits.

    python -m bench.pii_redaction [--leak]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._common import AUTH, bench_tokens_env, emit, require_shared
from nlu.pii import _IDENTIFIER_WORDS, Redactor, loan_file_identities
from tools.pii_corpus import build, digits_view, leaked


def corpus_numbers() -> None:
    cases = build()
    by_kind: dict[str, list[bool]] = {}
    false_masks = lookalikes = 0
    misses = []
    for case in cases:
        texts = case["text"] if isinstance(case["text"], list) else [case["text"]]
        names, addresses = loan_file_identities(case.get("loan_file"))
        redactor = Redactor(names, addresses)
        out = "".join(redactor.redact(t, 2.0 * i, 2.0 * i + 1.5)[0] for i, t in enumerate(texts))
        if case.get("lookalike"):
            lookalikes += 1
            if "[" in out:
                false_masks += 1
                misses.append({"lookalike": texts, "out": out})
            continue
        for pii in case["pii"]:
            ok = not leaked(pii["value"], out)
            by_kind.setdefault(pii["kind"], []).append(ok)
            if not ok:
                misses.append({"kind": pii["kind"], "text": texts, "out": out})
    for kind, results in sorted(by_kind.items()):
        emit({"bench": "pii_redaction", "kind": kind, "cases": len(results),
              "recall": round(sum(results) / len(results), 4)})
    total = sum(len(r) for r in by_kind.values())
    emit({"bench": "pii_redaction", "cases": len(cases), "pii_values": total,
          "recall": round(sum(sum(r) for r in by_kind.values()) / total, 4), "lookalikes": lookalikes,
          "false_mask_rate": round(false_masks / lookalikes, 4), "misses": misses[:10]})


def leak_check() -> None:
    import httpx

    from asr.audio import load_call_audio
    from bench.stream_latency import free_port
    from service.cli.replay import replay

    folder = require_shared("calls")
    calls = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("call_*.json"))]
    with_pii = [c for c in calls if any(k in c["loan_file"] for k in ("phone", "id_number"))]
    raw: set[str] = set()
    for call in with_pii:
        lf = call["loan_file"]
        raw |= {str(lf[k]) for k in ("phone", "id_number", "card_number", "borrower") if lf.get(k)}
        for turn in call["turns"]:
            raw |= {m for m in re.findall(r"\d{4,}", digits_view(turn["text"]))}
    data_dir = tempfile.mkdtemp(prefix="huifang-leak-")
    if os.environ.get("HUIFANG_DATA_DIR"):
        Path(data_dir, "models").symlink_to(Path(os.environ["HUIFANG_DATA_DIR"]) / "models")
    port = free_port()
    log_path = Path(data_dir) / "server.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
                                  env={**os.environ, "HUIFANG_DATA_DIR": data_dir, "HUIFANG_LOG_LEVEL": "debug",
                                       **bench_tokens_env(data_dir)},
                                  stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        seen: list[str] = []
        for call in with_pii:
            audio = load_call_audio(str(folder / f"{call['id']}.flac"), 16000)
            result = asyncio.run(replay(f"ws://127.0.0.1:{port}/v1/calls/{call['id']}/audio", audio, 16000,
                                        ["agent", "customer"], loan_file=call["loan_file"], headers=AUTH))
            seen += [json.dumps(e, ensure_ascii=False) for e in result.events]
            with open(folder / f"{call['id']}.flac", "rb") as f:
                job = httpx.post(f"{base}/v1/recordings", files={"file": ("c.flac", f, "audio/flac")}, headers=AUTH,
                                 data={"call_id": f"{call['id']}-rec",
                                       "loan_file": json.dumps(call["loan_file"], ensure_ascii=False)}).json()
            while httpx.get(f"{base}/v1/recordings/{job['id']}", headers=AUTH).json()["status"] not in (
                    "done", "failed"):
                time.sleep(1)
            seen.append(httpx.get(f"{base}/v1/calls/{call['id']}-rec/report", headers=AUTH).text)
    finally:
        server.terminate()
        server.wait(timeout=30)
    stores = {"events_and_reports": "\n".join(seen), "log": log_path.read_text(errors="replace")}
    for db in Path(data_dir).glob("huifang.db*"):
        stores[db.name] = db.read_bytes().decode("utf-8", errors="replace")
    hits = {name: sorted(v for v in raw if leaked(v, text)) for name, text in stores.items()}
    emit({"bench": "pii_leak", "calls": [c["id"] for c in with_pii], "raw_values": len(raw),
          "hits": {k: v for k, v in hits.items() if v}, "leaks": sum(len(v) for v in hits.values())})


def identifier_requests() -> None:
    """How often an identifier request is recognised in real call-centre text (../shared/data/text) and in the
    shared calls' agent turns: in so many words, and by sound only (a request misheard by ASR). Every sound-only
    match in real text would arm the customer's side where nobody asked: the figure to keep at zero."""
    from nlu.pii import requested_identifier

    segments = []
    for path in sorted(require_shared("text").rglob("*")):
        if path.suffix in (".txt", ".csv", ".jsonl", ".json", ".tsv"):
            text = path.read_text(encoding="utf-8", errors="replace")
            segments += re.findall(r"[\u4e00-\u9fff，。？！、0-9]{4,120}", text)
    agent_turns = [t["text"] for p in sorted(require_shared("calls").glob("call_s*.json"))
                   for t in json.loads(p.read_text(encoding="utf-8"))["turns"] if t["speaker"] == "agent"]
    for name, texts in (("call_centre_text", segments), ("shared_calls_agent_turns", agent_turns)):
        asked = [t for t in texts if requested_identifier(t) is not None]
        literal = [t for t in asked if any(w in t for words in _IDENTIFIER_WORDS.values() for w in words)]
        emit({"bench": "pii_identifier_requests", "set": name, "segments": len(texts), "asked": len(asked),
              "in_words": len(literal), "by_sound_only": len(asked) - len(literal)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leak", action="store_true", help="also stream calls with spoken PII through the service")
    args = parser.parse_args()
    corpus_numbers()
    identifier_requests()
    if args.leak:
        leak_check()


if __name__ == "__main__":
    main()
