"""The CPU ledger (asr/cpu.py): native CPU shared between the phases running, work charged once its kind is
known, decodes outside live work counted as `recording`."""

from __future__ import annotations

import threading

import numpy as np

from asr import cpu
from asr.cpu import Account, Ledger, Tab, native_thread_ids, thread_cpu_s


class FakeNative(Ledger):
    """A ledger whose native threads' CPU is whatever the test says it is."""

    native = 0.0

    @staticmethod
    def _native_now() -> float:
        return FakeNative.native


def test_native_cpu_is_split_between_the_phases_running_and_idle_time_is_apart() -> None:
    FakeNative.native = 0.0
    ledger = FakeNative()
    a, b = Account(), Account()
    FakeNative.native = 0.5  # used before any phase ran: spinning threads
    with ledger.measure(a, "encoder"):
        FakeNative.native = 1.5  # a alone: 1.0
        other = threading.Thread(target=lambda: _overlap(ledger, b))
        other.start()
        other.join()
        FakeNative.native = 4.0  # a alone again: 0.5
    assert ledger.snapshot()[("idle", "native")] == 0.5
    # a: 1.0 alone + half of the 2.0 both used + 0.5 alone; b: the other half (own thread CPU is tiny here).
    assert abs(a.seconds["encoder"] - 2.5) < 0.05
    assert abs(b.seconds["decoder"] - 1.0) < 0.05


def _overlap(ledger: FakeNative, account: Account) -> None:
    with ledger.measure(account, "decoder"):
        FakeNative.native = 3.5  # both running: 2.0 to share


def test_a_tab_is_charged_once_both_the_work_and_its_outcome_are_in_whichever_comes_first() -> None:
    ledger = Ledger()
    early, late = Tab(ledger), Tab(ledger)
    early.settle("prefetch_wasted")  # the final came before the decode ran
    with early.running():
        early.account.add("encoder", 0.25)
    with late.running():
        late.account.add("encoder", 0.5)
    assert ("prefetch_used", "encoder") not in ledger.snapshot()
    late.settle("prefetch_used")
    late.settle("prefetch_wasted")  # only the first outcome counts
    totals = ledger.snapshot()
    assert totals[("prefetch_wasted", "encoder")] >= 0.25 and totals[("prefetch_used", "encoder")] >= 0.5
    assert totals[("prefetch_wasted", "encoder")] < 0.5


def test_phases_outside_live_work_count_as_recording_and_inside_go_to_its_account() -> None:
    before = cpu.LEDGER.snapshot().get(("recording", "features"), 0.0)
    with cpu.phase("features"):
        np.linalg.svd(np.random.default_rng(0).normal(size=(200, 200)))
    assert cpu.LEDGER.snapshot()[("recording", "features")] > before
    ledger, account = Ledger(), Account()
    with ledger.job(account), cpu.phase("encoder"):
        np.linalg.svd(np.random.default_rng(1).normal(size=(200, 200)))
    assert account.seconds["encoder"] > 0
    assert not ledger.snapshot().get(("recording", "encoder"))


def test_thread_cpu_clocks_read_this_process_threads() -> None:
    me = threading.get_native_id()
    assert me not in native_thread_ids()  # a Python thread
    spent = thread_cpu_s(me)
    sum(i * i for i in range(200_000))
    assert thread_cpu_s(me) > spent
    assert thread_cpu_s(2**22 + 12345) == 0.0  # no such thread
