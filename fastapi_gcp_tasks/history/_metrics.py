"""Prometheus counters of the task history, when `prometheus-client` is installed.

One collector in the default registry reports the sum over every open `TaskHistory` of the process, so that
creating several histories (tests, several apps) never registers a metric twice. Without `prometheus-client`
nothing happens.
"""

from __future__ import annotations

import importlib.util
import threading
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi_gcp_tasks.history._history import TaskHistory

__all__ = ["HistoryCollector", "track", "untrack"]

_histories: weakref.WeakSet[TaskHistory] = weakref.WeakSet()
_lock = threading.RLock()  # registering runs a first collect(), which takes it too
_registered = False
_retired = {"recorded": 0, "dropped": 0, "write_errors": 0}
"""What closed histories counted: counters never go down."""


class HistoryCollector:
    """Sums the counters of the tracked histories at each scrape."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        with _lock:
            stats = [history.stats for history in list(_histories)]
            retired = dict(_retired)
        docs = {
            "recorded": "Task history events written to the database",
            "dropped": "Task history events dropped (queue full or database failing)",
            "write_errors": "Failed task history writes (each retried, then dropped)",
        }
        for name, doc in docs.items():
            value = retired[name] + sum(getattr(s, name) for s in stats)
            yield CounterMetricFamily(f"fastapi_gcp_tasks_history_{name}", doc, value=value)
        queued = sum(s.queued for s in stats)
        yield GaugeMetricFamily("fastapi_gcp_tasks_history_queued", "Task history events waiting to be written", queued)


def track(history: TaskHistory) -> None:
    """Count `history` in the process's metrics (registering the collector on first use)."""
    global _registered
    with _lock:
        _histories.add(history)
        if _registered or importlib.util.find_spec("prometheus_client") is None:
            return
        from prometheus_client import REGISTRY

        REGISTRY.register(HistoryCollector())
        _registered = True


def untrack(history: TaskHistory) -> None:
    """Stop counting a closed history."""
    with _lock:
        if history in _histories:
            stats = history.stats
            for name in _retired:
                _retired[name] += getattr(stats, name)
        _histories.discard(history)
