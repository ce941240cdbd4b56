"""Relay metrics in the Prometheus text format (needs `prometheus-client`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi_gcp_tasks.outbox._relay import Relay

__all__ = ["serve_metrics"]

INSTALL_HINT = "pip install 'fastapi-gcp-tasks[prometheus]'"


class _RelayCollector:
    def __init__(self, relay: Relay) -> None:
        self._relay = relay

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = self._relay.stats
        counters = {
            "delivered": ("Rows turned into tasks (created, or found already created)", stats.delivered),
            "already_existed": ("Delivered rows whose task existed already (a redelivery)", stats.already_existed),
            "retried": ("Failed attempts scheduled for a retry", stats.retried),
            "dead_lettered": ("Rows moved to the dead-letter table", stats.dead_lettered),
            "lease_lost": ("Outcomes dropped because another relay had taken the rows over", stats.lease_lost),
            "database_errors": ("Failed database calls (retried)", stats.database_errors),
        }
        for name, (doc, value) in counters.items():
            yield CounterMetricFamily(f"outbox_relay_{name}", doc, value=value)
        snapshot = stats.last_snapshot
        if snapshot is None:
            return
        yield GaugeMetricFamily("outbox_backlog", "Rows not delivered yet", value=snapshot.pending)
        yield GaugeMetricFamily("outbox_ready", "Pending rows a relay may claim now", value=snapshot.ready)
        yield GaugeMetricFamily("outbox_dead_letters", "Rows in the dead-letter table", value=snapshot.dead_letters)
        yield GaugeMetricFamily(
            "outbox_oldest_age_seconds", "Age of the oldest pending row", value=snapshot.oldest_age_seconds or 0.0
        )


def serve_metrics(relay: Relay, port: int, addr: str = "0.0.0.0") -> None:
    """Serve `/metrics` for `relay` on `port` from a background thread."""
    try:
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError as exc:
        raise ImportError(f"the metrics endpoint needs prometheus-client: {INSTALL_HINT}") from exc
    registry = CollectorRegistry()
    registry.register(_RelayCollector(relay))
    start_http_server(port, addr=addr, registry=registry)
