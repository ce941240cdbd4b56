"""Paths, queues and clients for Cloud Tasks, Cloud Scheduler and the emulator (the 0.3 module).

The implementation lives in `build._naming` (paths) and `transport` (queues, clients); this module keeps the
names importable from where fastapi-gcp-tasks 0.3 had them.
"""

from __future__ import annotations

from fastapi_gcp_tasks.build._naming import location_path, queue_path
from fastapi_gcp_tasks.transport._clients import (
    DEFAULT_EMULATOR_HOST,  # noqa: F401
    async_emulator_client,
    async_scheduler_emulator_client,
    emulator_client,
    scheduler_emulator_client,
)
from fastapi_gcp_tasks.transport._queues import ensure_queue, ensure_queue_async

# DEFAULT_EMULATOR_HOST stays importable from here, outside `__all__` as in 0.3.
__all__ = [
    "async_emulator_client",
    "async_scheduler_emulator_client",
    "emulator_client",
    "ensure_queue",
    "ensure_queue_async",
    "location_path",
    "queue_path",
    "scheduler_emulator_client",
]
