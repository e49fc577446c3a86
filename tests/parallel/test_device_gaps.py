"""The rank profile's idle-gap summary (``rank_worker.device_gaps``), on made-up timelines."""

from sarathi.executor.rank_worker import device_gaps


def test_gaps_between_activities_longest_first() -> None:
    got = device_gaps([(0, 10, "a"), (15, 20, "b"), (50, 60, "c")])
    assert got is not None
    assert got.span_us == 60 and got.busy_us == 25
    assert got.gaps == [(30, "b", "c"), (5, "a", "b")]
    assert "35 us of 60 us" in got.describe()


def test_overlapping_activities_count_once() -> None:
    # PDL: the next kernel starts before the previous ends; a short one inside a long one.
    got = device_gaps([(0, 10, "a"), (8, 20, "b"), (9, 12, "short"), (25, 30, "c")])
    assert got is not None
    assert got.busy_us == 25 and got.gaps == [(5, "b", "c")]


def test_no_activity() -> None:
    assert device_gaps([]) is None
