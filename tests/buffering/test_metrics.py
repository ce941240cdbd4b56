"""`BufferCollector` exports `BufferStats` in the Prometheus text format."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from fastapi_gcp_tasks.buffering import BufferCollector, BufferStats


def test_counters_are_exported_with_their_current_values() -> None:
    stats = BufferStats()
    registry = CollectorRegistry()
    registry.register(BufferCollector(stats))
    stats.add(kept=3, created=2, lost=1)
    text = generate_latest(registry).decode()
    assert "fastapi_gcp_tasks_buffer_kept_total 3.0" in text
    assert "fastapi_gcp_tasks_buffer_created_total 2.0" in text
    assert "fastapi_gcp_tasks_buffer_lost_total 1.0" in text
    assert "fastapi_gcp_tasks_buffer_discarded_total 0.0" in text
    assert "fastapi_gcp_tasks_buffer_pending 0.0" in text, "kept 3 = created 2 + lost 1"
    stats.add(kept=5, discarded=4)
    text = generate_latest(registry).decode()
    assert "fastapi_gcp_tasks_buffer_discarded_total 4.0" in text
    assert "fastapi_gcp_tasks_buffer_pending 1.0" in text
