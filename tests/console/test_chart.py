"""The overview's chart: bar geometry, and the throughput buckets the production backend keeps once they are over."""

from __future__ import annotations

import datetime as dt

from fastapi_gcp_tasks.console._app_backend import _Chart
from fastapi_gcp_tasks.console._chart import throughput_charts
from fastapi_gcp_tasks.history._types import ThroughputPoint

T0 = dt.datetime(2026, 11, 28, 0, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def test_bars_stack_failed_on_succeeded_and_share_one_time_axis() -> None:
    points = [
        ThroughputPoint(T0, "/a", 30, 10),
        ThroughputPoint(T0 + HOUR, "/a", 0, 0),
        ThroughputPoint(T0 + 2 * HOUR, "/b", 5, 0),
    ]
    total, per_endpoint = throughput_charts(points, width=300, height=41)
    assert [chart.endpoint for chart in per_endpoint] == ["/a", "/b"]
    assert total.peak == 40
    assert (total.succeeded, total.failed) == (35, 10)
    first = total.bars[0]
    assert (first.ok_height, first.failed_height) == (30.0, 10.0)  # (41 - 1) / 40 per attempt
    assert first.failed_y + first.failed_height == first.ok_y
    assert first.ok_y + first.ok_height == 41
    assert [bar.x for bar in total.bars] == [0.0, 100.0, 200.0]
    assert len(per_endpoint[1].bars) == 3  # /b has bars where it had no attempts, aligned with the total
    assert per_endpoint[1].bars[0].ok_height == 0
    assert "10 failed" in first.label
    assert per_endpoint[0].failure_rate == 0.25


def test_no_points_draw_an_empty_chart() -> None:
    total, per_endpoint = throughput_charts([])
    assert (total.bars, per_endpoint, total.failure_rate) == ([], [], 0.0)


class CountingHistory:
    """Answers `throughput` from a fixed list of attempts per bucket, recording each `since` asked for."""

    def __init__(self, counts: dict[dt.datetime, int]) -> None:
        self.counts = counts
        self.asked: list[dt.datetime] = []

    def throughput(
        self, *, since: dt.datetime, bucket: dt.timedelta, endpoint: str | None = None
    ) -> list[ThroughputPoint]:
        self.asked.append(since)
        return [ThroughputPoint(start, "/a", n, 0) for start, n in sorted(self.counts.items()) if start >= since]


def test_buckets_that_are_over_are_read_once() -> None:
    counts = {T0 + i * HOUR: i + 1 for i in range(27)}  # up to the current hour
    history = CountingHistory(counts)
    chart = _Chart(dt.timedelta(hours=24), HOUR)
    now = T0 + dt.timedelta(hours=26, minutes=30)
    first = chart.points(history, now)  # type: ignore[arg-type]
    assert [p.bucket_start for p in first] == [T0 + i * HOUR for i in range(2, 27)]
    again = chart.points(history, now + dt.timedelta(minutes=1))  # type: ignore[arg-type]
    assert again == first
    assert history.asked == [T0 + 2 * HOUR, T0 + 26 * HOUR]  # the second render read the current hour only

    counts[T0 + 26 * HOUR] = 100  # the current hour keeps changing until it is over
    later = chart.points(history, now + dt.timedelta(hours=1))  # type: ignore[arg-type]
    assert next(p.bucket_start for p in later) == T0 + 3 * HOUR  # the window moved on
    assert {p.bucket_start: p.succeeded for p in later}[T0 + 26 * HOUR] == 100
    assert history.asked[-1] == T0 + 26 * HOUR

    far = chart.points(history, now + dt.timedelta(days=3))  # type: ignore[arg-type]
    assert far == []
    assert history.asked[-1] == T0 + 2 * HOUR + dt.timedelta(days=3)
