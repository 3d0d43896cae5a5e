"""A live call's audio as kept while it streams (service/live/books.py `AudioKeeper`): written out once a
channel has `flush_s` buffered (what a crash can lose), channels aligned for a reconnect, and stored as one FLAC
per channel at the call's rate with personal data's utterances silenced; the turns and silenced spans of a
call's written finals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from asr.audio import decode_audio
from nlu.report import SilencedSpan
from service.live.books import AudioKeeper, CallBook, silenced_spans, turns_of
from service.store.store import LiveFinalRecord

RATE = 8000


def _tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_audio_is_written_once_a_channel_has_flush_s_buffered(tmp_path: Path) -> None:
    keeper = AudioKeeper(tmp_path, Path("audio") / "r1", ("agent", "customer"), RATE, flush_s=0.5)
    keeper.add(0, _tone(0.3))
    assert not keeper.path(0).exists()  # still in memory
    keeper.add(0, _tone(0.3))
    assert keeper.path(0).stat().st_size == int(0.6 * RATE) * 2  # both blocks, as 16-bit samples
    keeper.add(1, _tone(0.2))
    assert not keeper.path(1).exists()
    keeper.flush()
    assert keeper.path(1).stat().st_size == int(0.2 * RATE) * 2
    assert abs(keeper.seconds() - 0.6) < 1e-9


def test_a_reconnect_continues_every_channel_at_one_time(tmp_path: Path) -> None:
    keeper = AudioKeeper(tmp_path, Path("audio") / "r2", ("agent", "customer"), RATE, flush_s=10)
    keeper.add(0, _tone(1.0))
    keeper.add(1, _tone(0.25))
    keeper.flush()
    assert abs(keeper.align() - 1.0) < 1e-9
    assert keeper.path(0).stat().st_size == keeper.path(1).stat().st_size


def test_stored_audio_is_one_flac_per_channel_with_personal_data_silenced(tmp_path: Path) -> None:
    keeper = AudioKeeper(tmp_path, Path("audio") / "r3", ("agent", "customer"), RATE, flush_s=10)
    keeper.add(0, _tone(2.0))
    keeper.add(1, _tone(2.0))
    keeper.flush()
    entries = keeper.store([SilencedSpan("customer", 0.5, 1.5)])
    assert entries == [{"path": "audio/r3/agent.flac", "channels": ["agent"], "rate_hz": RATE},
                       {"path": "audio/r3/customer.flac", "channels": ["customer"], "rate_hz": RATE}]
    assert not keeper.path(0).exists() and not keeper.path(1).exists()  # the raw files are gone
    agent = decode_audio(str(tmp_path / "audio/r3/agent.flac")).samples[0]
    customer = decode_audio(str(tmp_path / "audio/r3/customer.flac")).samples[0]
    rate = 16000  # decoded for the model
    assert abs(len(customer) / rate - 2.0) < 0.01
    assert np.abs(customer[int(0.55 * rate): int(1.45 * rate)]).max() < 1e-3  # silenced
    assert np.abs(customer[int(0.1 * rate): int(0.4 * rate)]).max() > 0.3  # kept around it
    assert np.abs(customer[int(1.6 * rate): int(1.9 * rate)]).max() > 0.3
    assert np.abs(agent[int(0.55 * rate): int(1.45 * rate)]).max() > 0.3  # the other channel is untouched
    # Stored again (a replica that lost its lease after storing): the files already there are what is listed.
    assert keeper.store([]) == entries


def _final(seq: int, channel: str, text: str, masked: bool = False) -> LiveFinalRecord:
    return LiveFinalRecord(seq, channel, f"{channel}-{seq}", seq * 2.0, seq * 2.0 + 1.5, text, masked, False)


def test_turns_and_silenced_spans_of_written_finals() -> None:
    finals = [_final(1, "agent", "您的贷款金额是多少？"), _final(2, "customer", "五十万"),
              _final(3, "customer", "我的手机号是[手机号]", masked=True), _final(4, "customer", ""),
              _final(5, "ch3", "别的声道")]
    turns = turns_of(finals)
    assert [(t.utterance_id, t.speaker, t.text) for t in turns] == [
        ("agent-1", "agent", "您的贷款金额是多少？"), ("customer-2", "customer", "五十万"),
        ("customer-3", "customer", "我的手机号是[手机号]")]
    assert silenced_spans(finals) == [SilencedSpan("customer", 6.0, 7.5)]


@pytest.mark.asyncio
async def test_a_reconnect_numbers_utterances_after_the_highest_written() -> None:
    """Utterances that held no speech are never written: numbering continues after the highest id, not the count,
    so no id of the earlier connection comes again."""
    written = (LiveFinalRecord(1, "agent", "agent-1", 0.0, 1.0, "喂", False, False),
               LiveFinalRecord(2, "agent", "agent-4", 5.0, 6.0, "您好", False, False),  # agent-2, -3 were empty
               LiveFinalRecord(3, "customer", "customer-1", 6.5, 7.0, "嗯", False, False))
    book = CallBook(books=None, job=None, audio=None, finals=written)  # type: ignore[arg-type]
    try:
        assert [book.earlier_utterances(c) for c in ("agent", "customer", "ch3")] == [4, 1, 0]
    finally:
        await book._settle()
