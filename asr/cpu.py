"""Where the CPU of speech recognition goes: which work (a final, a partial, a decode ahead) and which phase of
it (features, encoder, text decoder, temperature fallback), in CPU seconds.

CTranslate2 computes in threads of its own (its replica worker and its OpenMP pool: native threads, not Python
ones), so timing the Python thread that asked for a decode misses most of it. A phase's CPU here is the Python
thread's own CPU during the phase (the log-mel features are numpy in that thread) plus what the native threads
used while it ran. When several decodes run at once (more than one decode worker), the native CPU of the time
they overlap is split equally between the phases then running; native CPU while no phase runs (OpenMP threads
spinning after a parallel region) is counted as `idle`.

One `LEDGER` per process (like its metrics registry). Live decoding opens an `Account` around each piece of work
(`Ledger.job`) and charges it to what the work turned out to be; decodes outside live calls (scoring recordings,
re-decoding, the transcription API) are charged as `recording`. The service reads the totals into Prometheus.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

#: Linux's clock id for a thread's CPU time, by thread id (include/linux/posix-timers.h: per-thread, SCHED).
_CPUCLOCK_PERTHREAD_SCHED = 4 | 2


def thread_cpu_s(tid: int) -> float:
    """CPU seconds used so far by the thread `tid` of this process (0.0 when it has gone)."""
    try:
        return time.clock_gettime((~tid << 3) | _CPUCLOCK_PERTHREAD_SCHED)
    except OSError:
        return 0.0


def native_thread_ids() -> set[int]:
    """This process's threads that are not Python threads (CTranslate2's, OpenMP's, onnxruntime pools')."""
    try:
        tids = {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:  # not Linux: no native accounting
        return set()
    return tids - {t.native_id for t in threading.enumerate() if t.native_id is not None}


@dataclass
class Account:
    """The CPU one piece of work used, by phase; charged to a kind of work once its outcome is known (a
    decode ahead is `used` or `wasted` only when the final comes)."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


_current = threading.local()


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Count the CPU of this block to the work the calling thread is doing (`recording` when no live work
    opened an account)."""
    ledger: Ledger | None = getattr(_current, "ledger", None)
    account: Account | None = getattr(_current, "account", None)
    if ledger is None or account is None:
        account = Account()
        with LEDGER.measure(account, name):
            yield
        LEDGER.charge("recording", account)
        return
    with ledger.measure(account, name):
        yield


class Ledger:
    """Totals of CPU seconds by (work, phase) for one process; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.totals: dict[tuple[str, str], float] = {}
        #: Phases running now (one per decode worker at most): their accounts and names.
        self._running: dict[int, tuple[Account, str]] = {}
        self._native_seen = self._native_now()

    @staticmethod
    def _native_now() -> float:
        return sum(thread_cpu_s(t) for t in native_thread_ids())

    def _split(self) -> None:
        """Share the native CPU used since the last change among the phases running (under the lock)."""
        now = self._native_now()
        used, self._native_seen = max(now - self._native_seen, 0.0), now
        if not self._running:
            self.totals[("idle", "native")] = self.totals.get(("idle", "native"), 0.0) + used
            return
        share = used / len(self._running)
        for account, name in self._running.values():
            account.add(name, share)

    @contextmanager
    def job(self, account: Account) -> Iterator[Account]:
        """Phases the calling thread runs in this block are counted to `account`."""
        _current.ledger, _current.account = self, account
        try:
            yield account
        finally:
            _current.ledger = _current.account = None

    @contextmanager
    def measure(self, account: Account, name: str) -> Iterator[None]:
        """Count the calling thread's CPU, and its share of the native threads', during the block."""
        key = threading.get_ident()
        with self._lock:
            self._split()
            self._running[key] = (account, name)
        own = time.thread_time()
        try:
            yield
        finally:
            own = time.thread_time() - own
            with self._lock:
                self._split()
                self._running.pop(key, None)
            account.add(name, own)

    def charge(self, work: str, account: Account) -> None:
        """Add `account` to the totals as `work` (e.g. `final`, `partial_wasted`)."""
        with self._lock:
            for name, seconds in account.seconds.items():
                self.totals[(work, name)] = self.totals.get((work, name), 0.0) + seconds

    def add(self, work: str, name: str, seconds: float) -> None:
        """Add CPU measured elsewhere (the VAD, text, assessment: Python threads timed by their callers)."""
        with self._lock:
            self.totals[(work, name)] = self.totals.get((work, name), 0.0) + seconds

    def snapshot(self) -> dict[tuple[str, str], float]:
        """The totals so far, with the native CPU up to now settled."""
        with self._lock:
            self._split()
            return dict(self.totals)


class Tab:
    """Work whose kind is known only after it ran (a decode ahead is used or wasted once the final comes, a
    partial shown or not): its account is charged when both the work has finished and its kind is settled."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.account = Account()
        self._lock = threading.Lock()
        self._finished = False
        self._work: str | None = None

    @contextmanager
    def running(self) -> Iterator[None]:
        """The work itself (in the thread that does it)."""
        try:
            with self.ledger.job(self.account):
                yield
        finally:
            with self._lock:
                self._finished = True
                work = self._work
            if work is not None:
                self.ledger.charge(work, self.account)

    def settle(self, work: str) -> None:
        """What the work turned out to be; the first call counts (later ones are ignored)."""
        with self._lock:
            if self._work is not None:
                return
            self._work = work
            finished = self._finished
        if finished:
            self.ledger.charge(work, self.account)


#: The process's ledger.
LEDGER = Ledger()
