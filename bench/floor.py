"""The floor under load: N simulated live calls streamed through the real call socket (/v1/calls/{id}/audio) into
a server, with the wallboard (/live) open in headless Chromium; how far each tile is drawn behind its call and
what the floor costs the server's CPU per call. Issue #31's aims: every tile at most 1 s behind, p95, measured in
the page; the floor at most 2% of a core per call; a supervisor's note on the agent's console within 1 s, p95.

    python -m bench.floor [--calls 50] [--call-s 150] [--window 30:130]

No speech model runs. The server (started by this script as its own process, `--serve`, so that its CPU is its
own) has a recogniser that reads the words off the audio: each utterance of a simulated call is a square wave
whose amplitude is the index of its text. The texts are the shared calls' scripts (../shared/data/calls), at
their own turn times, so finals come at the rate real calls have them (one every 3-5 s a call) and carry
their follow-up questions and answers, hedged and evasive ones included. Silero VAD is replaced by a level gate
for the same reason (the floor is what is measured, not speech detection); everything after it (endpointing,
turn pairing, assessment, the events and the floor) is the service's own.

Prints one JSON line per result:
- `tile_lag`: p95 and max of the page's own record (window.__floorLag: Date.now() when a tile update was drawn
  minus the message's `sent_at`), for the updates of the measuring window.
- `floor_cpu`: the server process's CPU seconds per second (/proc) over the same window of the same load run
  three times: with the floor switched off (the live path's calls into service/floor/ made no-ops), on with
  nobody watching (its bookkeeping: tiles, alerts), on with the wallboard open (the feed as well); per call, in %
  of a core. The live risk score is computed in the calls' NLU step whether or not the floor runs (the console's
  `risk` event): it is in all three.
- `note_delivery`: p95 and max from POST /v1/calls/{id}/notes to the `supervisor_note` event on that call's
  events socket, when the server has the notes API (else the line says it was not measured).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import AUTH, BENCH_TOKEN, bench_tokens_env, emit, require_shared
from bench.stream_latency import free_port, server_cpu_s

RATE_HZ = 16_000
FRAME_S = 0.2
#: One step of the code: an utterance of text k is a square wave of amplitude (k + 1) * STEP / 32768, exact in
#: pcm16, far above the gate and far below clipping for the few hundred texts of the shared scripts.
STEP = 16
#: A window is speech when any sample in it reaches this level (the codes start at 16 / 32768).
GATE = 8 / 32768
#: Set to `off` in the environment of `--serve`: the floor is switched off (the baseline run).
FLOOR_SWITCH = "BENCH_FLOOR"
#: The browser the bench drives (Debian's Chromium, as the browser tests).
CHROMIUM = os.environ.get("HUIFANG_CHROMIUM", "/usr/bin/chromium")


# -- the server side: a recogniser that reads the code, a level gate for the VAD -------------------------------------

def level_gate(windows: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
    """Stand-in for Silero VAD (asr.streaming.VadStep): a 512-sample window is speech when it carries a code."""
    from asr.streaming import VAD_WINDOW

    rows = windows.reshape(-1, VAD_WINDOW)
    return (np.abs(rows).max(axis=1) >= GATE).astype(np.float32), state


class LevelGate:
    """`level_gate` in the shape of asr.streaming.SileroStep (built once, called per batch of windows)."""

    def __call__(self, windows: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        return level_gate(windows, state)


class CodeReader:
    """The recogniser: the text whose index the span's amplitude carries (no audio is decoded)."""

    model_path = "bench-code-reader"

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts

    def load(self) -> None:
        pass

    def transcribe_span(self, samples: np.ndarray, channel: str, offset_s: float, beam_size: int | None = None,
                        min_window_s: float | None = None, provisional: bool = False,
                        abandon: Any = None) -> Any:
        from asr.types import Utterance

        code = round(float(np.abs(samples).max(initial=0.0)) * 32768 / STEP) - 1 if len(samples) else -1
        if not 0 <= code < len(self.texts):
            return None
        return Utterance(channel, offset_s, offset_s + len(samples) / RATE_HZ, self.texts[code], None, -0.1, 0.0)

    def transcribe_spans(self, spans: Any, beam_size: int | None = None,
                         min_window_s: float | None = None) -> list[Any]:
        return [self.transcribe_span(samples, channel, offset_s) for samples, channel, offset_s in spans]


def serve(port: int, texts_path: Path) -> None:
    """The measured server: the app with the code reader and the level gate, on `port` (settings from the
    environment, as `huifang serve`)."""
    import uvicorn

    import service.app as app_module
    from service.settings import Settings

    texts = json.loads(texts_path.read_text(encoding="utf-8"))
    app_module.SileroStep = LevelGate  # type: ignore[misc,assignment]  # the engine builds its VAD from this name
    if os.environ.get(FLOOR_SWITCH) == "off":
        # The baseline: the live path's three calls into the floor (service/floor/floor.py) do nothing, so no
        # tile is folded, no alert raised, nothing published.
        from service.floor import Floor

        for name in ("open", "observe", "close"):
            setattr(Floor, name, lambda self, *args, **kwargs: None)
    app = app_module.create_app(Settings(), transcriber=CodeReader(texts))  # type: ignore[arg-type]
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", ws_max_size=1 << 20)


# -- the calls ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Turn:
    channel: int  # 0 agent, 1 customer
    start_s: float
    end_s: float
    code: int


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    loan_file: dict[str, Any]
    turns: list[Turn]
    length_s: float


def load_scripts(folder: Path) -> tuple[list[Script], list[str]]:
    """The shared calls' scripts with their turn times, and the texts they use (indexed by the turns' codes)."""
    texts: list[str] = []
    index: dict[str, int] = {}
    scripts = []
    for path in sorted(folder.glob("call_s*.json")):
        meta = json.loads(path.read_text(encoding="utf-8"))
        turns = []
        for t in meta["turns"]:
            text = (t.get("text") or "").strip()
            if not text or t["end_s"] - t["start_s"] < 0.3:
                continue  # a silence in the script: no audio
            if text not in index:
                index[text] = len(texts)
                texts.append(text)
            turns.append(Turn(0 if t["speaker"] == "agent" else 1, float(t["start_s"]), float(t["end_s"]), index[text]))
        scripts.append(Script(path.stem, dict(meta.get("loan_file") or {}), turns, float(meta["duration_s"]) + 2.0))
    return scripts, texts


def frame(script: Script, start_s: float) -> bytes:
    """FRAME_S of the call from `start_s` (the script repeated), interleaved pcm16, agent then customer."""
    n = int(FRAME_S * RATE_HZ)
    out = np.zeros((n, 2), dtype=np.int16)
    offset = start_s % script.length_s
    first = int(offset * RATE_HZ)
    for lap in (0.0, script.length_s):  # a frame may cross the end of the script into its next lap
        for turn in script.turns:
            a = max(int((turn.start_s + lap) * RATE_HZ) - first, 0)
            b = min(int((turn.end_s + lap) * RATE_HZ) - first, n)
            if a < b:
                level = (turn.code + 1) * STEP
                out[a:b, turn.channel] = np.where(np.arange(a, b) % 2 == 0, level, -level)
    return out.tobytes()


async def drive_call(ws_base: str, call_id: str, script: Script, number: int, began: float, call_s: float) -> None:
    """One call: its start, then real-time frames for `call_s`, then its stop; the server's events are read and
    dropped (as a switch would)."""
    from websockets.asyncio.client import connect

    loan = {**script.loan_file, "customer_id": f"C{number:04d}", "loan_id": f"L{number:04d}"}
    start = {"type": "start", "sample_rate_hz": RATE_HZ, "encoding": "pcm16", "channels": ["agent", "customer"],
             "loan_file": loan, "agent_id": f"A{number % 12 + 1:02d}"}
    async with connect(f"{ws_base}/v1/calls/{call_id}/audio", additional_headers=AUTH, max_size=None) as ws:
        await ws.send(json.dumps(start, ensure_ascii=False))

        async def drain() -> None:
            with contextlib.suppress(Exception):
                async for _ in ws:
                    pass

        reader = asyncio.create_task(drain())
        for k in range(int(call_s / FRAME_S)):
            await asyncio.sleep(max(0.0, began + k * FRAME_S - time.monotonic()))
            await ws.send(frame(script, k * FRAME_S))
        await ws.send(json.dumps({"type": "stop"}))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(reader, 60)


# -- one measured run ------------------------------------------------------------------------------------------------

@dataclass
class Run:
    cpu_s_per_s: float
    lags_ms: list[float]
    notes_ms: list[float] | None
    calls_on_board: int


async def _notes(base: str, ws_base: str, call_ids: list[str], until: float) -> list[float] | None:
    """Notes to calls in turn until `until`: the time from each POST to its event (matched by note id) on the
    call's events socket; a note whose event did not come within 10 s counts as 10 s. None when the server has no
    notes API."""
    import httpx
    from websockets.asyncio.client import connect

    out: list[float] = []
    async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=10) as client:
        paths = (await client.get("/openapi.json")).json()["paths"]
        if "post" not in paths.get("/v1/calls/{call_id}/notes", {}):
            return None
        i = 0
        while time.monotonic() < until:
            call_id = call_ids[i % len(call_ids)]
            i += 1
            async with connect(f"{ws_base}/v1/calls/{call_id}/events", additional_headers=AUTH, max_size=None) as ws:
                seen: dict[int, float] = {}

                async def read(ws: Any = ws, seen: dict[int, float] = seen) -> None:
                    with contextlib.suppress(Exception):
                        async for raw in ws:
                            event = json.loads(raw)
                            if event.get("type") == "supervisor_note":
                                seen[int(event["note_id"])] = time.monotonic()

                reader = asyncio.create_task(read())
                await asyncio.sleep(0.5)  # past the call's history, replayed on connect
                sent = time.monotonic()
                res = await client.post(f"/v1/calls/{call_id}/notes", json={"text": "请再核实担保人的担保意愿"})
                if res.status_code in (404, 409):  # that call has just ended
                    reader.cancel()
                    continue
                res.raise_for_status()
                note_id = int(res.json()["note_id"])
                while note_id not in seen and time.monotonic() - sent < 10:
                    await asyncio.sleep(0.005)
                reader.cancel()
                out.append((seen.get(note_id, sent + 10) - sent) * 1000)
            await asyncio.sleep(1.0)
    return out


async def measure(port: int, pid: int, scripts: list[Script], calls: int, call_s: float, window: tuple[float, float],
                  tag: str, watched: bool) -> Run:
    """`calls` calls streamed together (starts spread over the first 10 s); the server's CPU over `window`
    (seconds from the first start) and, when `watched`, the wallboard's tile lags and notes' delivery."""
    base, ws_base = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"
    browser = page = pw = None
    if watched:
        from playwright.async_api import async_playwright

        pw = await async_playwright().start()
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = await browser.new_page(viewport={"width": 1920, "height": 1080})
        await page.goto(f"{base}/live#token={BENCH_TOKEN}")
        await page.wait_for_selector("body[data-ready=true]")
        await page.wait_for_selector("#status[data-state=live]")
    began = time.monotonic()
    tasks = [asyncio.create_task(drive_call(ws_base, f"floor-{tag}-{i:03d}", scripts[i % len(scripts)], i,
                                            began + 10.0 * i / calls, call_s)) for i in range(calls)]
    notes: asyncio.Task[list[float] | None] | None = None
    await asyncio.sleep(max(0.0, began + window[0] - time.monotonic()))
    cpu0, t0 = server_cpu_s(pid), time.monotonic()
    lag0 = await page.evaluate("window.__floorLag.length") if page else 0
    if watched:
        notes = asyncio.create_task(_notes(base, ws_base, [f"floor-{tag}-{i:03d}" for i in range(calls)],
                                           began + window[1] - 2))
    await asyncio.sleep(max(0.0, began + window[1] - time.monotonic()))
    cpu1, t1 = server_cpu_s(pid), time.monotonic()
    lags: list[float] = []
    on_board = 0
    if page:
        lags = (await page.evaluate("window.__floorLag"))[lag0:]
        on_board = await page.locator(".tile").count()
        await page.screenshot(path=str(Path(tempfile.gettempdir()) / "bench-floor.png"))
    note_ms = await notes if notes else None
    await asyncio.gather(*tasks)
    if browser and pw:
        await browser.close()
        await pw.stop()
    return Run((cpu1 - cpu0) / (t1 - t0), lags, note_ms, on_board)


def _p95(values: list[float]) -> float:
    """The 95th percentile, within the values seen (never extrapolated past the largest)."""
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def start(port: int, texts_path: Path, data_dir: Path, env_extra: dict[str, str]) -> subprocess.Popen[bytes]:
    """This module's `--serve` as its own process, with a fresh data directory; returns once it is healthy."""
    import httpx

    env = {**os.environ, "HUIFANG_DATA_DIR": str(data_dir), "HUIFANG_METRICS__PORT": "0",
           "HUIFANG_LIVE__CAPACITY": "off", "HUIFANG_LIVE__MAX_CALLS_PER_TOKEN": "500",
           "HUIFANG_LIVE__MAX_WATCHERS_PER_TOKEN": "500", **bench_tokens_env(data_dir), **env_extra}
    log = open(data_dir / "server.log", "wb")  # noqa: SIM115 - the server writes it until it stops
    proc = subprocess.Popen([sys.executable, "-m", "bench.floor", "--serve", str(port), "--texts", str(texts_path)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    proc.kill()
    sys.exit(f"the server did not become healthy; see {data_dir / 'server.log'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--call-s", type=float, default=150.0, help="seconds each simulated call streams")
    parser.add_argument("--window", default="30:130", help="measured seconds from the first call's start, A:B")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--texts", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.texts)
        return

    scripts, texts = load_scripts(require_shared("calls"))
    a, b = (float(x) for x in args.window.split(":"))
    assert 0 <= a < b <= args.call_s, "the window must lie within the calls"
    work = Path(tempfile.mkdtemp(prefix="huifang-bench-floor-"))
    texts_path = work / "texts.json"
    texts_path.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")

    runs: dict[str, Run] = {}
    for tag, watched, env in (("off", False, {FLOOR_SWITCH: "off"}), ("unwatched", False, {}),
                              ("watched", True, {})):
        data_dir = work / tag
        data_dir.mkdir()
        port = free_port()
        proc = start(port, texts_path, data_dir, env)
        try:
            runs[tag] = asyncio.run(measure(port, proc.pid, scripts, args.calls, args.call_s, (a, b), tag, watched))
        finally:
            proc.terminate()
            proc.wait(timeout=60)

    off, unwatched, watched = runs["off"], runs["unwatched"], runs["watched"]
    common = {"bench": "floor", "calls": args.calls, "window_s": b - a, "load_avg_1m": round(os.getloadavg()[0], 2)}
    lags = watched.lags_ms
    emit({**common, "result": "tile_lag", "updates": len(lags), "tiles_on_board": watched.calls_on_board,
          "p95_ms": round(_p95(lags), 1), "max_ms": round(max(lags), 1) if lags else None,
          "median_ms": round(statistics.median(lags), 1) if lags else None})

    def per_call(more: Run, less: Run) -> float:
        return round(100 * (more.cpu_s_per_s - less.cpu_s_per_s) / args.calls, 2)

    emit({**common, "result": "floor_cpu", "cpu_s_per_s": {k: round(r.cpu_s_per_s, 3) for k, r in runs.items()},
          "per_call_pct_of_core": per_call(watched, off), "bookkeeping_pct": per_call(unwatched, off),
          "watching_pct": per_call(watched, unwatched),
          "how": "server process CPU (/proc) over the window, the same load three times: floor switched off, on "
                 "with nobody watching, on with the wallboard open; per call = (watched - off) / calls"})
    notes = watched.notes_ms
    if notes is None:
        emit({**common, "result": "note_delivery", "measured": False,
              "why": "the server has no POST /v1/calls/{call_id}/notes"})
    else:
        emit({**common, "result": "note_delivery", "measured": True, "notes": len(notes),
              "p95_ms": round(_p95(notes), 1) if notes else None, "max_ms": round(max(notes), 1) if notes else None,
              "median_ms": round(statistics.median(notes), 1) if notes else None})


if __name__ == "__main__":
    main()
