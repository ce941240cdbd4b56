"""Paths, queues and clients for Cloud Tasks, Cloud Scheduler and the emulator."""

from __future__ import annotations

import contextlib
from typing import Any

import grpc
from google.api_core.exceptions import AlreadyExists
from google.cloud import scheduler_v1, tasks_v2
from google.cloud.scheduler_v1.services.cloud_scheduler import transports as scheduler_transports
from google.cloud.tasks_v2.services.cloud_tasks import transports as tasks_transports

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

DEFAULT_EMULATOR_HOST = "localhost:8123"


def location_path(*, project: str, location: str, **_ignored: str) -> str:
    """`projects/{project}/locations/{location}`, the parent of Cloud Scheduler jobs and of queues.

    Other keywords are ignored, as fastapi-cloud-tasks did, so `location_path(**parse_queue_path(path))` works.
    """
    return f"projects/{project}/locations/{location}"


def queue_path(*, project: str, location: str, queue: str) -> str:
    """`projects/{project}/locations/{location}/queues/{queue}`."""
    return f"projects/{project}/locations/{location}/queues/{queue}"


def _create_queue_request(path: str, **queue_fields: Any) -> tasks_v2.CreateQueueRequest:
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
        client.create_queue(request=_create_queue_request(path, **queue_fields))


async def ensure_queue_async(*, client: tasks_v2.CloudTasksAsyncClient, path: str, **queue_fields: Any) -> None:
    """`ensure_queue` with the async client; a good fit for a FastAPI lifespan."""
    with contextlib.suppress(AlreadyExists):
        await client.create_queue(request=_create_queue_request(path, **queue_fields))


def emulator_client(*, host: str = DEFAULT_EMULATOR_HOST) -> tasks_v2.CloudTasksClient:
    """A `CloudTasksClient` talking to the emulator at `host` (plain gRPC, no credentials)."""
    transport = tasks_transports.CloudTasksGrpcTransport(channel=grpc.insecure_channel(host))
    return tasks_v2.CloudTasksClient(transport=transport)


def async_emulator_client(*, host: str = DEFAULT_EMULATOR_HOST) -> tasks_v2.CloudTasksAsyncClient:
    """A `CloudTasksAsyncClient` for the emulator; create it inside the event loop that will use it."""
    transport = tasks_transports.CloudTasksGrpcAsyncIOTransport(channel=grpc.aio.insecure_channel(host))
    return tasks_v2.CloudTasksAsyncClient(transport=transport)


def scheduler_emulator_client(*, host: str = DEFAULT_EMULATOR_HOST) -> scheduler_v1.CloudSchedulerClient:
    """A `CloudSchedulerClient` talking to the emulator at `host`."""
    transport = scheduler_transports.CloudSchedulerGrpcTransport(channel=grpc.insecure_channel(host))
    return scheduler_v1.CloudSchedulerClient(transport=transport)


def async_scheduler_emulator_client(*, host: str = DEFAULT_EMULATOR_HOST) -> scheduler_v1.CloudSchedulerAsyncClient:
    """A `CloudSchedulerAsyncClient` for the emulator; create it inside the loop that will use it."""
    transport = scheduler_transports.CloudSchedulerGrpcAsyncIOTransport(channel=grpc.aio.insecure_channel(host))
    return scheduler_v1.CloudSchedulerAsyncClient(transport=transport)
