"""Creating a queue unless it exists, for `auto_create_queue` and for a lifespan."""

from __future__ import annotations

import contextlib
from typing import Any

from google.api_core.exceptions import AlreadyExists
from google.cloud import tasks_v2

from fastapi_gcp_tasks.build._naming import location_path

__all__ = ["create_queue_request", "ensure_queue", "ensure_queue_async"]


def create_queue_request(path: str, **queue_fields: Any) -> tasks_v2.CreateQueueRequest:
    """The CreateQueueRequest for the queue `path`; `queue_fields` (rate_limits, retry_config, ...) are its settings."""
    parts = tasks_v2.CloudTasksClient.parse_queue_path(path)
    if not parts:
        raise ValueError(f"queue path must look like projects/P/locations/L/queues/Q, not {path!r}")
    return tasks_v2.CreateQueueRequest(
        parent=location_path(project=parts["project"], location=parts["location"]),
        queue=tasks_v2.Queue(name=path, **queue_fields),
    )


def ensure_queue(*, client: tasks_v2.CloudTasksClient, path: str, **queue_fields: Any) -> None:
    """Create the queue unless it exists; `queue_fields` (rate_limits, retry_config, ...) apply on creation."""
    with contextlib.suppress(AlreadyExists):
        client.create_queue(request=create_queue_request(path, **queue_fields))


async def ensure_queue_async(*, client: tasks_v2.CloudTasksAsyncClient, path: str, **queue_fields: Any) -> None:
    """`ensure_queue` with the async client; a good fit for a FastAPI lifespan."""
    with contextlib.suppress(AlreadyExists):
        await client.create_queue(request=create_queue_request(path, **queue_fields))
