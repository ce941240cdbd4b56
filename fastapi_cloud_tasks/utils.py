"""fastapi-cloud-tasks' `utils` module: the same names from `fastapi_gcp_tasks.utils`."""

from fastapi_gcp_tasks.utils import (
    async_emulator_client,
    async_scheduler_emulator_client,
    emulator_client,
    ensure_queue,
    ensure_queue_async,
    location_path,
    queue_path,
    scheduler_emulator_client,
)

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
