"""`BufferStats` as Prometheus counters (needs `prometheus-client`, imported only when collected)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi_gcp_tasks.dispatch._buffer_send import BufferStats

__all__ = ["BufferCollector"]

_HELP = {
    "kept": "Tasks that entered a buffer; each ends as created, already_existed, discarded, failed or lost",
    "created": "Buffered tasks created",
    "already_existed": "Buffered tasks found already created (a retry, or a reused task_id)",
    "discarded": "Buffered tasks dropped with their request (the reason is logged)",
    "failed": "Buffered tasks taken by the fallback after their retries",
    "lost": "Buffered tasks logged as lost, by name",
    "retried": "Buffered task sends retried",
    "calls": "create_task and batch_create_tasks calls made by buffers",
}


class BufferCollector:
    """A Prometheus collector reading `stats`: `REGISTRY.register(BufferCollector(stats))`.

    Each counter is exported as `{prefix}_{name}_total`, and `{prefix}_pending` is the gauge of tasks kept
    that have not ended yet (it returns to 0 when no request is being sent; one that stays up is stuck).
    """

    def __init__(self, stats: BufferStats, *, prefix: str = "fastapi_gcp_tasks_buffer") -> None:
        self._stats = stats
        self._prefix = prefix

    def collect(self) -> Iterator[Any]:
        """Called by the registry on every scrape."""
        try:
            from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        except ImportError as exc:
            raise ImportError(
                "BufferCollector needs prometheus-client: pip install 'fastapi-gcp-tasks[prometheus]'"
            ) from exc
        for name, value in self._stats.snapshot().items():
            yield CounterMetricFamily(f"{self._prefix}_{name}", _HELP[name], value=value)
        yield GaugeMetricFamily(f"{self._prefix}_pending", "Buffered tasks not ended yet", value=self._stats.pending)
