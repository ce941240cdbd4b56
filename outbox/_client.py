"""The relay's seam to Cloud Tasks: the official client, the emulator, or a client that costs nothing.

The relay needs a single operation, `send_batch_async(requests, timeout=)`, the same one as the core's
`TaskSender`: create named tasks of one queue and report, per request, the created task or the error. Anything with
that method can be given to the relay; `CloudTasksRelayClient` wraps the official async client and translates
`google.api_core` errors into the library's exceptions.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

from google.api_core import exceptions as core_exceptions
from google.cloud import tasks_v2
from google.rpc import code_pb2  # type: ignore[import-untyped, unused-ignore]

from fastapi_gcp_tasks.exception import FastAPIGCPTasksError, SendError, TaskAlreadyExistsError
from fastapi_gcp_tasks.transport._clients import EMULATOR_HOST_ENV

__all__ = ["BatchSender", "CloudTasksRelayClient", "NullRelayClient", "translate_error"]

BATCH_LIMIT = 100
"""`batch_create_tasks` takes at most 100 requests of one queue."""

_PERMANENT = (
    core_exceptions.InvalidArgument,
    core_exceptions.OutOfRange,
    core_exceptions.MethodNotImplemented,
)
# google.rpc.Code values, for the per-request statuses of batch_create_tasks
_ALREADY_EXISTS = code_pb2.ALREADY_EXISTS
_PERMANENT_CODES = {code_pb2.INVALID_ARGUMENT, code_pb2.OUT_OF_RANGE, code_pb2.UNIMPLEMENTED}


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


def translate_error(exc: BaseException, task_name: str) -> FastAPIGCPTasksError:
    """The library's exception for an error raised while creating `task_name`."""
    if isinstance(exc, FastAPIGCPTasksError):
        return exc
    if isinstance(exc, core_exceptions.AlreadyExists):
        return TaskAlreadyExistsError(task_name)
    if isinstance(exc, core_exceptions.GoogleAPICallError):
        code = exc.grpc_status_code
        label = code.name if code is not None else type(exc).__name__
        return SendError(f"{label}: {exc.message}", retryable=not isinstance(exc, _PERMANENT))
    return SendError(f"{type(exc).__name__}: {exc}", retryable=True)


def _from_status(code: int, message: str, task_name: str) -> FastAPIGCPTasksError:
    if code == _ALREADY_EXISTS:
        return TaskAlreadyExistsError(task_name)
    return SendError(f"{code_pb2.Code.Name(code)}: {message}", retryable=code not in _PERMANENT_CODES)


class CloudTasksRelayClient:
    """`BatchSender` over the official `CloudTasksAsyncClient`.

    `mode="batch"` uses `batch_create_tasks` (up to 100 tasks per call); `mode="concurrent"` sends one
    `create_task` per task with at most `concurrency` in flight. The client is created on first use, inside the
    running event loop (a `grpc.aio` channel belongs to the loop that created it).
    """

    def __init__(
        self,
        client_factory: Callable[[], tasks_v2.CloudTasksAsyncClient] = tasks_v2.CloudTasksAsyncClient,
        *,
        mode: Literal["batch", "concurrent"] = "concurrent",
        concurrency: int = 32,
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

    @classmethod
    def for_emulator(
        cls, host: str, *, mode: Literal["batch", "concurrent"] = "concurrent", concurrency: int = 32
    ) -> CloudTasksRelayClient:
        """A client for the local emulator at `host` ("127.0.0.1:8123"), reconnecting quickly after an outage."""

        def factory() -> tasks_v2.CloudTasksAsyncClient:
            import grpc
            from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcAsyncIOTransport

            channel = grpc.aio.insecure_channel(
                host,
                options=[("grpc.initial_reconnect_backoff_ms", 200), ("grpc.max_reconnect_backoff_ms", 2000)],
            )
            return tasks_v2.CloudTasksAsyncClient(transport=CloudTasksGrpcAsyncIOTransport(channel=channel))

        return cls(factory, mode=mode, concurrency=concurrency)

    @classmethod
    def from_environment(
        cls, *, mode: Literal["batch", "concurrent"] = "concurrent", concurrency: int = 32
    ) -> CloudTasksRelayClient:
        """The emulator's client when `FASTAPI_GCP_TASKS_EMULATOR_HOST` is set, else Google's (default credentials)."""
        host = os.environ.get(EMULATOR_HOST_ENV)
        if host:
            return cls.for_emulator(host, mode=mode, concurrency=concurrency)
        return cls(mode=mode, concurrency=concurrency)

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
        """Create the tasks; per-request failures are returned, never raised."""
        client = self._get()
        if self.mode == "concurrent":
            return list(await asyncio.gather(*(self._create_one(client, r, timeout) for r in requests)))
        results: list[tasks_v2.Task | FastAPIGCPTasksError] = []
        for start in range(0, len(requests), BATCH_LIMIT):
            results.extend(await self._create_batch(client, requests[start : start + BATCH_LIMIT], timeout))
        return results

    async def _create_one(
        self,
        client: tasks_v2.CloudTasksAsyncClient,
        request: tasks_v2.CreateTaskRequest,
        timeout: float,
    ) -> tasks_v2.Task | FastAPIGCPTasksError:
        assert self._semaphore is not None
        async with self._semaphore:
            try:
                return await client.create_task(request=request, timeout=timeout)
            except (core_exceptions.GoogleAPICallError, core_exceptions.RetryError, TimeoutError) as exc:
                return translate_error(exc, request.task.name)

    async def _create_batch(
        self,
        client: tasks_v2.CloudTasksAsyncClient,
        requests: Sequence[tasks_v2.CreateTaskRequest],
        timeout: float,
    ) -> list[tasks_v2.Task | FastAPIGCPTasksError]:
        # Raw protobuf messages: proto-plus attribute access would cost more than the call itself.
        raw_requests = [tasks_v2.CreateTaskRequest.pb(r) for r in requests]
        batch = tasks_v2.BatchCreateTasksRequest.pb()(parent=raw_requests[0].parent)
        batch.requests.extend(raw_requests)
        try:
            operation = await client.batch_create_tasks(
                request=tasks_v2.BatchCreateTasksRequest.wrap(batch), timeout=timeout
            )
            response: Any = await operation.result(timeout=timeout)  # type: ignore[no-untyped-call]
        except (core_exceptions.GoogleAPICallError, core_exceptions.RetryError, TimeoutError) as exc:
            return [translate_error(exc, r.task.name) for r in raw_requests]
        metadata = operation.metadata
        failed = tasks_v2.BatchCreateTasksMetadata.pb(metadata).failed_requests if metadata is not None else {}
        created = {task.name: task for task in tasks_v2.BatchCreateTasksResponse.pb(response).tasks}
        results: list[tasks_v2.Task | FastAPIGCPTasksError] = []
        for index, request in enumerate(raw_requests):
            if index in failed:
                status = failed[index]
                results.append(_from_status(status.code, status.message, request.task.name))
            else:
                results.append(tasks_v2.Task.wrap(created.get(request.task.name, request.task)))
        return results


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
