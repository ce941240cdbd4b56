"""The relay's seam to Cloud Tasks: the official client, the emulator, or a client that costs nothing.

The relay needs a single operation, `send_batch_async(requests, timeout=)`, the same one as the core's
`TaskSender`: create named tasks of one queue and report, per request, the created task or the error. Anything with
that method can be given to the relay; `CloudTasksRelayClient` wraps the official async client and sends through the
core's transport, so the relay reads errors through the same policy as `.delay()` and the request buffer.

An outbox row stores the `CreateTaskRequest` only, not the route's `auto_create_queue`: the relay's client has
its own switch with the library's default (on), and creates each queue once per client, as the immediate path does.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from typing import Literal, Protocol

from google.api_core import exceptions as core
from google.cloud import tasks_v2

from fastapi_gcp_tasks.exception import FastAPIGCPTasksError, TaskAlreadyExistsError
from fastapi_gcp_tasks.transport._clients import ASYNC_TASKS, EMULATOR_HOST_ENV, FAST_RECONNECT
from fastapi_gcp_tasks.transport._errors import translate
from fastapi_gcp_tasks.transport._queues import ensure_queue_async
from fastapi_gcp_tasks.transport._tasks import create_task_async, create_tasks_async

__all__ = ["BatchSender", "CloudTasksRelayClient", "NullRelayClient"]

logger = logging.getLogger("outbox.relay")


class BatchSender(Protocol):
    """Creates named tasks of one queue (the core's `TaskSender` satisfies it)."""

    async def send_batch_async(
        self,
        requests: Sequence[tasks_v2.CreateTaskRequest],
        *,
        timeout: float,
    ) -> list[tasks_v2.Task | FastAPIGCPTasksError]:
        """One entry per request, in order: the task, or the error that request got."""
        ...


class CloudTasksRelayClient:
    """`BatchSender` over the official `CloudTasksAsyncClient`.

    `mode="batch"` uses `batch_create_tasks` (up to 100 tasks per call); `mode="concurrent"` sends one
    `create_task` per task with at most `concurrency` in flight. The client is created on first use, inside the
    running event loop (a `grpc.aio` channel belongs to the loop that created it).

    With `auto_create_queue` (the default, like the route builders'), the first send to a queue creates it unless
    it exists (without `roles/cloudtasks.queueAdmin` the queue is assumed to exist); the outcome is remembered per
    queue for the client's life.
    """

    def __init__(
        self,
        client_factory: Callable[[], tasks_v2.CloudTasksAsyncClient] = tasks_v2.CloudTasksAsyncClient,
        *,
        mode: Literal["batch", "concurrent"] = "concurrent",
        concurrency: int = 32,
        auto_create_queue: bool = True,
    ) -> None:
        if mode not in ("batch", "concurrent"):
            raise ValueError(f"mode={mode!r}: use 'batch' or 'concurrent'")
        if concurrency < 1:
            raise ValueError(f"concurrency={concurrency!r} must be at least 1")
        self._factory = client_factory
        self._client: tasks_v2.CloudTasksAsyncClient | None = None
        self.mode = mode
        self._concurrency = concurrency
        self._semaphore: asyncio.Semaphore | None = None
        self.auto_create_queue = auto_create_queue
        self._ensured: set[str] = set()

    @classmethod
    def for_emulator(
        cls,
        host: str,
        *,
        mode: Literal["batch", "concurrent"] = "concurrent",
        concurrency: int = 32,
        auto_create_queue: bool = True,
    ) -> CloudTasksRelayClient:
        """A client for the local emulator at `host` ("127.0.0.1:8123"), reconnecting quickly after an outage."""

        def factory() -> tasks_v2.CloudTasksAsyncClient:
            return ASYNC_TASKS.connect(host, options=FAST_RECONNECT)

        return cls(factory, mode=mode, concurrency=concurrency, auto_create_queue=auto_create_queue)

    @classmethod
    def from_environment(
        cls,
        *,
        mode: Literal["batch", "concurrent"] = "concurrent",
        concurrency: int = 32,
        auto_create_queue: bool = True,
    ) -> CloudTasksRelayClient:
        """The emulator's client when `FASTAPI_GCP_TASKS_EMULATOR_HOST` is set, else Google's (default credentials)."""
        host = os.environ.get(EMULATOR_HOST_ENV)
        if host:
            return cls.for_emulator(host, mode=mode, concurrency=concurrency, auto_create_queue=auto_create_queue)
        return cls(mode=mode, concurrency=concurrency, auto_create_queue=auto_create_queue)

    def _get(self) -> tasks_v2.CloudTasksAsyncClient:
        if self._client is None:
            self._client = self._factory()
            self._semaphore = asyncio.Semaphore(self._concurrency)
        return self._client

    async def close(self) -> None:
        """Close the gRPC channel, if one was opened."""
        client, self._client = self._client, None
        if client is not None:
            await client.transport.close()  # type: ignore[no-untyped-call]

    async def send_batch_async(
        self,
        requests: Sequence[tasks_v2.CreateTaskRequest],
        *,
        timeout: float,
    ) -> list[tasks_v2.Task | FastAPIGCPTasksError]:
        """Create the tasks; per-request failures are returned, never raised.

        What is not a failure of a call (building the client without credentials, a bug) does raise; the relay
        records it on the rows.
        """
        client = self._get()
        if self.auto_create_queue:
            for parent in dict.fromkeys(request.parent for request in requests):
                await self._ensure_queue(client, parent)
        if self.mode == "batch":
            return await create_tasks_async(client, requests, timeout=timeout)
        semaphore = self._semaphore
        assert semaphore is not None

        async def one(request: tasks_v2.CreateTaskRequest) -> tasks_v2.Task | FastAPIGCPTasksError:
            async with semaphore:
                return await create_task_async(client, request, timeout=timeout)

        return list(await asyncio.gather(*(one(request) for request in requests)))

    async def _ensure_queue(self, client: tasks_v2.CloudTasksAsyncClient, parent: str) -> None:
        if parent in self._ensured:
            return
        try:
            await ensure_queue_async(client=client, path=parent)
        except core.PermissionDenied:
            # roles/cloudtasks.enqueuer may create tasks but not queues: the queue is then managed elsewhere.
            logger.info(
                "not allowed to create queue %s; assuming it exists (CloudTasksRelayClient(auto_create_queue=False) "
                "skips the attempt)",
                parent,
                extra={"event": "queue_create_denied", "queue_path": parent},
            )
        except Exception as exc:
            # Not remembered: the next batch tries again. A call error fails this batch like a send would.
            raise translate(exc, what="create_queue") from exc
        else:
            logger.info("queue %s is ready", parent, extra={"event": "queue_ensured", "queue_path": parent})
        self._ensured.add(parent)


class NullRelayClient:
    """A `BatchSender` that creates nothing and succeeds at once; for benchmarks of the relay itself.

    Like Cloud Tasks it refuses a name it has already seen (`TaskAlreadyExistsError`), and it counts what it got.
    """

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.calls = 0

    async def send_batch_async(
        self,
        requests: Sequence[tasks_v2.CreateTaskRequest],
        *,
        timeout: float,
    ) -> list[tasks_v2.Task | FastAPIGCPTasksError]:
        """Accept every request whose name is new."""
        self.calls += 1
        results: list[tasks_v2.Task | FastAPIGCPTasksError] = []
        for request in requests:
            task = tasks_v2.CreateTaskRequest.pb(request).task  # the raw message: no proto-plus wrapping cost
            if task.name in self.names:
                results.append(TaskAlreadyExistsError(task.name))
            else:
                self.names.add(task.name)
                results.append(tasks_v2.Task.wrap(task))
        return results
