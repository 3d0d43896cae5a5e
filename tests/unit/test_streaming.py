"""Live endpointing and the decode pool: pure logic with a fake VAD and fake decodes (milliseconds)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from asr.audio import decode_audio
from asr.streaming import (
    VAD_WINDOW,
    ChannelStream,
    FinalRequest,
    PartialRequest,
    PieceRequest,
    PrefetchRequest,
    StreamOptions,
    VadState,
    decode_mulaw,
    decode_pcm16,
    endpoint_offline,
)
from service.live.scheduler import DecodeScheduler
from tests.support.audiogen import write_audio

RATE = 16_000


def energy_vad(windows: np.ndarray, state: VadState) -> tuple[np.ndarray, VadState]:
    """Fake VAD: a window is speech when its RMS is above 0.05."""
    rows = windows.reshape(-1, VAD_WINDOW)
    return (np.sqrt((rows**2).mean(axis=1)) > 0.05).astype(np.float32), state


def _signal(spans_s: list[tuple[float, float]], total_s: float) -> np.ndarray:
    x = np.zeros(int(total_s * RATE), dtype=np.float32)
    for start, end in spans_s:
        t = np.arange(int(start * RATE), int(end * RATE))
        x[t] = 0.3 * np.sin(2 * np.pi * 220 * t / RATE)
    return x


def _run(stream: ChannelStream, x: np.ndarray, chunk: int = 320) -> list[object]:
    out: list[object] = []
    for i in range(0, len(x), chunk):
        out += stream.feed(x[i : i + chunk])
    return out + stream.finish()


def test_one_final_per_utterance_with_times() -> None:
    stream = ChannelStream("customer", StreamOptions(min_silence_ms=500, partial_interval_s=0), energy_vad)
    requests = _run(stream, _signal([(1.0, 2.5), (4.0, 6.0)], 8.0))
    finals = [r for r in requests if isinstance(r, FinalRequest)]
    assert [f.utterance_id for f in finals] == ["customer-1", "customer-2"]
    for final, (start, end) in zip(finals, [(1.0, 2.5), (4.0, 6.0)], strict=True):
        assert abs(final.start_s - start) < 0.25 and abs(final.end_s - end) < 0.3
        assert abs(len(final.audio) / RATE - (final.end_s - final.start_s)) < 0.01


def test_pause_shorter_than_min_silence_does_not_split() -> None:
    stream = ChannelStream("agent", StreamOptions(min_silence_ms=500, partial_interval_s=0), energy_vad)
    finals = [r for r in _run(stream, _signal([(1.0, 2.0), (2.3, 3.0)], 5.0)) if isinstance(r, FinalRequest)]
    assert len(finals) == 1


def test_partials_at_the_configured_cadence_while_speaking() -> None:
    stream = ChannelStream("agent", StreamOptions(partial_interval_s=1.0), energy_vad)
    requests = _run(stream, _signal([(0.5, 5.0)], 6.0))
    partials = [r for r in requests if isinstance(r, PartialRequest)]
    assert len(partials) == 4  # at about 1.5, 2.5, 3.5 and 4.5 s
    assert all(p.utterance_id == "agent-1" for p in partials)
    gaps = np.diff([p.end_s for p in partials])
    assert np.allclose(gaps, 1.0, atol=0.05)
    assert isinstance(requests[-1], FinalRequest) and requests[-1].utterance_id == "agent-1"


def test_long_speech_is_forced_to_end() -> None:
    stream = ChannelStream("agent", StreamOptions(max_utterance_s=4.0, partial_interval_s=0), energy_vad)
    finals = [r for r in _run(stream, _signal([(0.0, 10.0)], 11.0)) if isinstance(r, FinalRequest)]
    assert len(finals) == 3
    assert finals[0].forced and finals[1].forced and not finals[2].forced
    assert all(f.end_s - f.start_s <= 4.05 for f in finals)
    assert finals[1].start_s == pytest.approx(finals[0].end_s)  # nothing lost between the pieces


def test_finish_closes_an_open_utterance_and_blips_are_ignored() -> None:
    stream = ChannelStream("customer", StreamOptions(partial_interval_s=0), energy_vad)
    finals = [r for r in _run(stream, _signal([(1.0, 1.1), (3.0, 4.0)], 4.0)) if isinstance(r, FinalRequest)]
    assert len(finals) == 1 and finals[0].start_s > 2.5  # the 0.1 s click is not an utterance


def test_memory_stays_bounded_on_a_long_silent_channel() -> None:
    stream = ChannelStream("customer", StreamOptions(), energy_vad)
    silence = np.zeros(RATE, dtype=np.float32)
    for _ in range(600):  # ten minutes
        stream.feed(silence)
    assert stream._audio.size < RATE  # only the pre-roll is kept
    assert stream.position_s == pytest.approx(600, abs=0.05)


def test_pcm16_and_mulaw_decoding(tmp_path: Path) -> None:
    x = (0.5 * np.sin(np.linspace(0, 40 * np.pi, 8000))).astype(np.float32)
    pcm = (x * 32767).astype("<i2")
    stereo = np.stack([pcm, -pcm]).T.reshape(-1).tobytes()
    decoded = decode_pcm16(stereo, 2)
    assert decoded.shape == (2, 8000) and np.allclose(decoded[0], x, atol=1e-3) and np.allclose(decoded[1], -x,
                                                                                                  atol=1e-3)
    # Our u-law table must agree with FFmpeg's G.711 decoder on the same bytes.
    path = write_audio(tmp_path / "u.wav", x, 8000, "pcm_mulaw")
    raw = path.read_bytes()[-8000:]
    reference = decode_audio(path).samples  # resampled to 16 kHz by FFmpeg; compare energy and shape
    ours = decode_mulaw(raw, 1)[0]
    assert np.allclose(ours, x, atol=0.02)
    assert abs(np.sqrt((ours**2).mean()) - np.sqrt((reference**2).mean())) < 0.01


@pytest.mark.asyncio
async def test_recording_decodes_wait_for_live_finals_but_not_forever() -> None:
    """A recording scored on the same machine waits before each batch while live finals are queued or decoding
    (service.app wires `yield_to_live` into the scorer), and goes ahead after its bounded wait."""
    scheduler = DecodeScheduler(workers=1, max_batch=4)
    await scheduler.start()
    release = threading.Event()
    events: list[str] = []

    def finals(names: Sequence[str]) -> list[str]:
        release.wait(5)
        events.append("finals-done")
        return list(names)

    assert scheduler.yield_to_live(0.01)  # nothing live: no wait
    live = scheduler.submit_batchable("final-1", finals)
    scheduler.submit_batchable("final-2", finals)

    def recording() -> None:
        events.append("recording-waits")
        idle = scheduler.yield_to_live(5)
        events.append(f"recording-decodes idle={idle}")

    thread = threading.Thread(target=recording)
    thread.start()
    await asyncio.sleep(0.1)
    assert events == ["recording-waits"]  # held while the finals are decoding
    release.set()
    await live
    await asyncio.to_thread(thread.join, 5)
    assert events[-1] == "recording-decodes idle=True" and events.index("finals-done") < len(events) - 1
    # A live side that never goes idle only delays a recording batch by the bounded wait.
    release.clear()
    stuck = scheduler.submit_batchable("final-3", finals)
    began = time.monotonic()
    assert not await asyncio.to_thread(scheduler.yield_to_live, 0.2)
    assert 0.15 < time.monotonic() - began < 2
    release.set()
    await stuck
    await asyncio.sleep(0.05)
    assert scheduler.live_idle.is_set()
    await scheduler.close()


@pytest.mark.asyncio
async def test_scheduler_runs_finals_first_and_drops_partials_when_busy() -> None:
    scheduler = DecodeScheduler(workers=1, max_batch=1)
    await scheduler.start()
    order: list[str] = []
    gate = threading.Event()

    def finals(names: Sequence[str]) -> list[str]:
        if "final-1" in names:
            gate.wait(5)
        order.extend(names)
        return list(names)

    def job(name: str):  # type: ignore[no-untyped-def]
        def run() -> str:
            order.append(name)
            return name
        return run

    first = scheduler.submit_batchable("final-1", finals)
    await asyncio.sleep(0.05)  # final-1 is running: the worker is busy
    dropped = scheduler.offer_partial(job("partial-x"))
    second = scheduler.submit_batchable("final-2", finals)
    gate.set()
    await asyncio.gather(first, second)
    idle_partial = scheduler.offer_partial(job("partial-y"))
    assert idle_partial is not None
    await idle_partial
    await scheduler.close()
    assert dropped is None
    assert order == ["final-1", "final-2", "partial-y"]


@pytest.mark.asyncio
async def test_scheduler_batches_finals_that_wait_together() -> None:
    scheduler = DecodeScheduler(workers=1, max_batch=3)
    await scheduler.start()
    batches: list[list[str]] = []
    gate = threading.Event()

    def runner(items):  # type: ignore[no-untyped-def]
        if "slow" in items:
            gate.wait(5)
        if "bad" in items:
            raise ValueError("undecodable")
        batches.append(list(items))
        return [item.upper() for item in items]

    def other_runner(items):  # type: ignore[no-untyped-def]
        batches.append(["other", *items])
        return list(items)

    first = scheduler.submit_batchable("slow", runner)
    await asyncio.sleep(0.05)  # "slow" runs alone: the worker is busy while the rest queue up
    waiting = [scheduler.submit_batchable(name, runner) for name in ("a", "b", "bad", "c")]
    other = scheduler.submit_batchable("x", other_runner)
    cancelled = scheduler.submit_batchable("gone", runner)
    cancelled.cancel()
    gate.set()
    results = await asyncio.gather(first, *waiting, other, return_exceptions=True)
    sizes = list(scheduler.batch_sizes)
    await scheduler.close()
    # FIFO per runner, at most three per batch; the failing batch is retried one by one so that only the
    # undecodable item fails; another runner's item is never mixed in; a cancelled one is skipped.
    assert batches == [["slow"], ["a"], ["b"], ["c"], ["other", "x"]]
    assert results[:3] == ["SLOW", "A", "B"] and isinstance(results[3], ValueError) and results[4:] == ["C", "x"]
    assert sizes == [1, 3, 1, 1, 1, 1, 1]  # slow; a+b+bad failed; a, b, bad alone; c; x


def test_a_pause_offers_a_prefetch_with_exactly_the_final_audio() -> None:
    options = StreamOptions(min_silence_ms=700, prefetch_silence_ms=300, partial_interval_s=0, piece_min_s=0)
    stream = ChannelStream("customer", options, energy_vad)
    # A 0.45 s pause (prefetch, then speech resumes) and a 2 s pause (prefetch, then the final).
    requests = _run(stream, _signal([(1.0, 2.0), (2.45, 3.5)], 5.5))
    kinds = [type(r).__name__ for r in requests]
    assert kinds == ["PrefetchRequest", "PrefetchRequest", "FinalRequest"]
    first, second, final = requests
    assert first.end_s < 2.5 and first.utterance_id == final.utterance_id  # type: ignore[attr-defined]
    assert (second.start_s, second.end_s) == (final.start_s, final.end_s)  # type: ignore[attr-defined]
    assert np.array_equal(second.audio, final.audio)  # type: ignore[attr-defined]


def test_a_long_utterance_is_cut_into_pieces_at_pauses_and_its_final_covers_only_the_tail() -> None:
    options = StreamOptions(min_silence_ms=700, piece_silence_ms=300, prefetch_silence_ms=300, piece_min_s=4.0,
                            partial_interval_s=1.0)
    stream = ChannelStream("agent", options, energy_vad)
    # 5 s of speech, a 0.45 s pause, 2 s, a 0.45 s pause (piece too short: a prefetch of the tail), 1 s, the end.
    x = _signal([(1.0, 6.0), (6.45, 8.45), (8.9, 9.9)], 12.0)
    requests = _run(stream, x)
    pieces = [r for r in requests if isinstance(r, PieceRequest)]
    finals = [r for r in requests if isinstance(r, FinalRequest)]
    prefetches = [r for r in requests if isinstance(r, PrefetchRequest)]
    assert len(pieces) == 1 and len(finals) == 1
    piece, final = pieces[0], finals[0]
    assert piece.index == 0 and piece.utterance_id == final.utterance_id == "agent-1"
    assert piece.start_s == final.start_s and 6.0 <= piece.end_s <= 6.45
    assert final.tail_start_s == pytest.approx(piece.end_s)
    # Piece + tail are exactly the utterance's audio; the prefetch before the end is exactly the final's tail.
    parts = final.parts()
    assert [start for start, _ in parts] == [final.start_s, final.tail_start_s]
    assert np.array_equal(np.concatenate([a for _, a in parts]), final.audio)
    assert np.array_equal(parts[0][1], piece.audio)
    last = prefetches[-1]
    assert (last.start_s, last.end_s) == (final.tail_start_s, final.end_s) and np.array_equal(last.audio, final.tail())
    # Partials after the cut cover the tail only and say where the utterance began.
    later = [r for r in requests if isinstance(r, PartialRequest) and r.end_s > piece.end_s]
    assert later and all(p.start_s == piece.end_s and p.utterance_start_s == final.start_s for p in later)


def test_a_piece_cut_at_the_final_pause_leaves_no_tail_and_recordings_are_cut_alike() -> None:
    options = StreamOptions(min_silence_ms=700, piece_min_s=4.0, partial_interval_s=0)
    x = _signal([(1.0, 6.0)], 8.0)
    requests = _run(ChannelStream("agent", options, energy_vad), x)
    final = next(r for r in requests if isinstance(r, FinalRequest))
    assert len(final.cuts) == 1 and final.tail().size == 0 and len(final.parts()) == 1
    offline = endpoint_offline(x, "agent", options, energy_vad)
    assert [(f.start_s, f.end_s, f.cuts) for f in offline] == [(final.start_s, final.end_s, final.cuts)]


def test_pieces_join_into_one_utterance() -> None:
    from asr.transcribe import join_parts
    from asr.types import Utterance

    a = Utterance("agent", 1.0, 5.0, "您好，", None, -0.2, 0.1)
    b = Utterance("agent", 5.0, 7.0, "方便吗？", None, -0.5, 0.3)
    joined = join_parts([a, None, b], "agent", 1.0, 7.0)
    assert joined is not None and joined.text == "您好，方便吗？" and (joined.start_s, joined.end_s) == (1.0, 7.0)
    assert joined.avg_logprob == pytest.approx((-0.2 * 3 + -0.5 * 4) / 7) and joined.no_speech_prob == 0.1
    assert join_parts([None, None], "agent", 1.0, 7.0) is None


def test_an_empty_block_upsamples_to_nothing() -> None:
    """Found by the Twilio fuzz test: a media message with an empty payload made FFmpeg fail (the call closed
    with 4500)."""
    from asr.streaming import Upsampler

    up = Upsampler(8000)
    assert up(np.zeros(0, dtype=np.float32)).shape == (0,)
    assert up(np.zeros(800, dtype=np.float32)).size > 0  # and the stream goes on
