"""The overview's throughput charts, laid out in Python and drawn as inline SVG by the template.

Server-side so the chart needs no script, works with JavaScript off and obeys the console's CSP (presentation
attributes only, no inline style). Every endpoint's chart shares the same time axis, so bars line up.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from fastapi_gcp_tasks.history._types import ThroughputPoint

__all__ = ["Bar", "Chart", "throughput_charts"]


@dataclass(frozen=True, slots=True)
class Bar:
    """One time bucket: a succeeded segment stacked under a failed one (y grows downwards in SVG)."""

    x: float
    width: float
    ok_y: float
    ok_height: float
    failed_y: float
    failed_height: float
    label: str
    """The bucket's start and counts, shown as the bar's tooltip."""


@dataclass(frozen=True, slots=True)
class Chart:
    """One chart: `endpoint` is None for the total of every endpoint."""

    endpoint: str | None
    width: int
    height: int
    bars: Sequence[Bar]
    peak: int
    succeeded: int
    failed: int

    @property
    def failure_rate(self) -> float:
        total = self.succeeded + self.failed
        return self.failed / total if total else 0.0


def _chart(
    endpoint: str | None,
    buckets: Sequence[dt.datetime],
    counts: dict[dt.datetime, tuple[int, int]],
    width: int,
    height: int,
) -> Chart:
    peak = max((ok + failed for ok, failed in counts.values()), default=0)
    slot = width / max(len(buckets), 1)
    bar_width = max(slot - 1.0, 1.0)
    bars: list[Bar] = []
    for index, start in enumerate(buckets):
        ok, failed = counts.get(start, (0, 0))
        scale = (height - 1) / peak if peak else 0.0
        ok_height = ok * scale
        failed_height = failed * scale
        ok_y = height - ok_height
        bars.append(
            Bar(
                x=round(index * slot, 2),
                width=round(bar_width, 2),
                ok_y=round(ok_y, 2),
                ok_height=round(ok_height, 2),
                failed_y=round(ok_y - failed_height, 2),
                failed_height=round(failed_height, 2),
                label=f"{start:%Y-%m-%d %H:%M} UTC: {ok} succeeded, {failed} failed",
            )
        )
    return Chart(
        endpoint=endpoint,
        width=width,
        height=height,
        bars=bars,
        peak=peak,
        succeeded=sum(ok for ok, _ in counts.values()),
        failed=sum(failed for _, failed in counts.values()),
    )


def throughput_charts(
    points: Sequence[ThroughputPoint],
    *,
    width: int = 600,
    height: int = 120,
    small_width: int = 180,
    small_height: int = 28,
) -> tuple[Chart, list[Chart]]:
    """The total chart and one small chart per endpoint (sorted by name), over the buckets present in `points`."""
    buckets = sorted({point.bucket_start for point in points})
    total: dict[dt.datetime, tuple[int, int]] = {}
    by_endpoint: dict[str, dict[dt.datetime, tuple[int, int]]] = {}
    for point in points:
        ok, failed = total.get(point.bucket_start, (0, 0))
        total[point.bucket_start] = (ok + point.succeeded, failed + point.failed)
        mine = by_endpoint.setdefault(point.endpoint, {})
        ok, failed = mine.get(point.bucket_start, (0, 0))
        mine[point.bucket_start] = (ok + point.succeeded, failed + point.failed)
    return (
        _chart(None, buckets, total, width, height),
        [_chart(name, buckets, by_endpoint[name], small_width, small_height) for name in sorted(by_endpoint)],
    )
