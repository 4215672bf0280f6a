"""`make bench` exits non-zero when a row misses its target or a row group crashes."""

from __future__ import annotations

from bench.__main__ import exit_status
from bench.report import Row, Target

PICKUP = Target("<=", 50, on="project", unit="ms")


def test_a_run_where_every_target_is_met_exits_0() -> None:
    rows = [
        Row("2", "queue pickup p50", "ms", project=14.0, target=PICKUP),
        Row("6", "time per epoch", "ms", project=4.6),  # info: no target
        Row("3a", "predict", "req/s", unavailable="hey is not installed"),  # skipped
    ]
    assert exit_status(rows, interrupted=False, crashed=[]) == 0


def test_a_missed_target_exits_1() -> None:
    rows = [Row("2", "queue pickup p50", "ms", project=80.0, target=PICKUP)]
    assert exit_status(rows, interrupted=False, crashed=[]) == 1


def test_a_crashed_row_group_exits_1_even_with_no_row_failing() -> None:
    assert exit_status([], interrupted=False, crashed=["serving"]) == 1


def test_an_interrupted_run_exits_130() -> None:
    assert exit_status([], interrupted=True, crashed=[]) == 130
