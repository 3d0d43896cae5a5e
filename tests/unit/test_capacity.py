"""A process's live-call capacity and where a call beyond it goes (issue #30 point 3): pure functions, fed the
cgroup file's text."""

from __future__ import annotations

import pytest

from service.live.capacity import (
    LiveLoad,
    LoadFigures,
    admit,
    live_capacity,
    quota_cores,
    usable_cores,
)


@pytest.mark.parametrize(("text", "cores"), [
    ("max 100000\n", None),  # no quota
    ("200000 100000\n", 2.0),  # limits.cpu: 2
    ("150000 100000", 1.5),
    ("50000 100000", 0.5),
    ("", None),  # no cgroup v2 file
    (None, None),
    ("garbage", None),
    ("0 100000", None),
])
def test_a_cgroup_quota_is_read_from_cpu_max(text: str | None, cores: float | None) -> None:
    assert quota_cores(text) == cores


def test_the_cores_a_process_may_use_are_its_affinity_lowered_by_a_quota() -> None:
    assert usable_cores(16, "max 100000") == 16  # a node's cores, no limit
    assert usable_cores(16, "150000 100000") == 1.5  # a pod limited to 1.5 cores on a 16-core node
    assert usable_cores(2, "800000 100000") == 2  # a quota above the cores it may run on does not add any
    assert usable_cores(4, None) == 4


def test_capacity_is_calls_per_core_times_cores_rounded_down_and_at_least_one() -> None:
    assert live_capacity("auto", 1.0, 2.0) == 2
    assert live_capacity("auto", 3.0, 2.0) == 6
    assert live_capacity("auto", 2.5, 1.5) == 3  # 3.75 calls: 3 at full quality
    assert live_capacity("auto", 1.0, 0.5) == 1  # a half-core pod still takes a call
    assert live_capacity("auto", 0.7, 10.0) == 7  # 0.7 x 10 is 6.999... in floating point
    assert live_capacity("off", 1.0, 2.0) is None
    assert live_capacity("5", 1.0, 2.0) == 5


def test_a_call_is_decoded_while_there_is_room_then_sent_on_then_recorded() -> None:
    assert admit(0, 2, None, can_record=True) == "decoded"
    assert admit(1, 2, False, can_record=True) == "decoded"
    assert admit(7, None, None, can_record=True) == "decoded"  # no limit
    assert admit(2, 2, True, can_record=True) == "redirected"  # another replica has room
    assert admit(2, 2, False, can_record=True) == "record_only"  # every replica is full
    assert admit(2, 2, None, can_record=True) == "record_only"  # nobody else known (one replica, Redis away)
    assert admit(3, 2, True, can_record=False) == "redirected"
    # Nowhere to record (no database): decoded late rather than lost.
    assert admit(2, 2, None, can_record=False) == "decoded"


def test_seats_count_calls_by_mode_and_are_given_back_once() -> None:
    load = LiveLoad(1)
    first = load.take("decoded")
    assert load.full and load.figures() == LoadFigures(1, 0, 1)
    second = load.take("record_only")
    second.move("record_only")
    first.release()
    first.release()
    assert (load.decoded, load.record_only, load.full) == (0, 1, False)
    second.move("decoded")
    assert (load.decoded, load.record_only) == (1, 0)
    second.release()
    second.move("record_only")  # a released seat counts nothing
    assert (load.decoded, load.record_only) == (0, 0)


def test_a_published_load_reads_back_and_says_whether_the_replica_is_full() -> None:
    for figures in (LoadFigures(2, 1, 2), LoadFigures(0, 0, None), LoadFigures(1, 0, 3)):
        assert LoadFigures.from_json(figures.to_json()) == figures
    assert LoadFigures(2, 1, 2).full and not LoadFigures(9, 0, None).full and not LoadFigures(1, 0, 3).full
    assert LoadFigures.from_json("not json") is None and LoadFigures.from_json('{"calls": 1}') is None
