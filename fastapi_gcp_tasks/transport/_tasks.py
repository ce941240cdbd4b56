"""Creating tasks: one at a time, or in batches grouped by queue; every failure read through the one policy.

`create_tasks` / `create_tasks_async` are the one batch routine (the request buffer and the outbox relay both
end here). They group requests by queue, cut each group into chunks of `BATCH_CREATE_LIMIT`, call
`batch_create_tasks` once per chunk, and read each task's own outcome from the operation: the created tasks
from its response, the failed ones from `metadata.failed_requests` (a `google.rpc.Status` per request index).
A call that fails as a whole gives every task of its chunk the translated error; nothing is re-sent here,
the caller's retry policy decides.

`RouteSender` is one route builder's I/O edge: it owns the builder's client source, creates the queue on
first use (`auto_create_queue`) and checks the queue's retry budget once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

from google.api_core import exceptions as core
from google.cloud import tasks_v2

from fastapi_gcp_tasks._limits import BATCH_CREATE_LIMIT
from fastapi_gcp_tasks.exception import FastAPIGCPTasksError, SendError
from fastapi_gcp_tasks.transport._clients import AsyncClientSource, SyncClientSource, per_client_memory
from fastapi_gcp_tasks.transport._errors import classify, from_status, translate
from fastapi_gcp_tasks.transport._queues import ensure_queue, ensure_queue_async

__all__ = [
    "QUEUE_READ_TIMEOUT",
    "Result",
    "RouteSender",
    "batches",
    "create_task_async",
    "create_tasks",
    "create_tasks_async",
    "warn_if_queue_gives_up_first",
]

logger = logging.getLogger("fastapi_gcp_tasks")

T = TypeVar("T")
Result = tasks_v2.Task | FastAPIGCPTasksError
"""One request's outcome: the created task, or its error (`TaskAlreadyExistsError` when it existed already)."""

QUEUE_READ_TIMEOUT = 10.0
"""Seconds allowed for the one GetQueue of `check_retry_budget`."""

_BatchRequestPB: Any = tasks_v2.BatchCreateTasksRequest.pb()


def batches(items: Sequence[T], key: Callable[[T], Hashable]) -> list[list[T]]:
    """`items` grouped by `key` (a queue, or a sender and a queue) in first-seen order, each group cut into
    chunks of at most `BATCH_CREATE_LIMIT`: the calls `batch_create_tasks` accepts."""
    groups: dict[Hashable, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return [
        group[start : start + BATCH_CREATE_LIMIT]
        for group in groups.values()
        for start in range(0, len(group), BATCH_CREATE_LIMIT)
    ]


def _parent(request: tasks_v2.CreateTaskRequest) -> str:
    return str(tasks_v2.CreateTaskRequest.pb(request).parent)


def _chunks(requests: Sequence[tasks_v2.CreateTaskRequest]) -> list[list[int]]:
    return batches(range(len(requests)), lambda i: _parent(requests[i]))


def _batch_request(requests: Sequence[tasks_v2.CreateTaskRequest]) -> tasks_v2.BatchCreateTasksRequest:
    # Raw protobuf messages: proto-plus attribute access would cost more than the call itself.
    raw = [tasks_v2.CreateTaskRequest.pb(request) for request in requests]
    batch = _BatchRequestPB(parent=raw[0].parent)
    batch.requests.extend(raw)
    request: tasks_v2.BatchCreateTasksRequest = tasks_v2.BatchCreateTasksRequest.wrap(batch)
    return request


def _name(request: tasks_v2.CreateTaskRequest) -> str:
    return str(tasks_v2.CreateTaskRequest.pb(request).task.name)


def _read(
    requests: Sequence[tasks_v2.CreateTaskRequest],
    operation: Any,
    response: Any,
    error: Exception | None,
) -> list[Result]:
    """Each request's outcome from a batch call (`error`: what the call or `operation.result()` raised, if anything).

    The error stands for every task only when the operation reported no per-task outcome at all.
    """
    metadata = getattr(operation, "metadata", None) if operation is not None else None
    failed = tasks_v2.BatchCreateTasksMetadata.pb(metadata).failed_requests if metadata is not None else {}
    if error is not None and not failed:
        return [_whole_call_error(error, _name(request)) for request in requests]
    created = list(tasks_v2.BatchCreateTasksResponse.pb(response).tasks) if response is not None else []
    succeeded = [i for i in range(len(requests)) if i not in failed]
    by_name = {task.name: task for task in created}
    in_order = len(created) == len(succeeded)
    results: list[Result] = []
    for index, request in enumerate(requests):
        name = _name(request)
        if index in failed:
            status = failed[index]
            results.append(from_status(status.code, status.message, name))
        elif name in by_name:
            results.append(tasks_v2.Task.wrap(by_name[name]))
        elif in_order and not name:
            results.append(tasks_v2.Task.wrap(created[succeeded.index(index)]))
        else:
            # Neither reported created nor failed: never count it as created; a named task is safe to send again.
            results.append(SendError("batch_create_tasks reported no outcome for this task", retryable=True))
    return results


def _whole_call_error(exc: Exception, name: str, *, what: str = "batch_create_tasks") -> FastAPIGCPTasksError:
    translated = translate(exc, what=what, name=name)
    assert isinstance(translated, FastAPIGCPTasksError), "only call errors reach here"
    return translated


def _call_failed(exc: Exception) -> bool:
    return isinstance(exc, FastAPIGCPTasksError) or classify(exc) is not None


def create_tasks(
    client: tasks_v2.CloudTasksClient, requests: Sequence[tasks_v2.CreateTaskRequest], *, timeout: float
) -> list[Result]:
    """Create `requests` with `batch_create_tasks` (blocking); one result per request, in order.

    Raises only what is not a failure of the call (a bug); the queues must exist.
    """
    results: list[Result | None] = [None] * len(requests)
    for chunk in _chunks(requests):
        part = [requests[i] for i in chunk]
        operation: Any = None
        try:
            operation = client.batch_create_tasks(request=_batch_request(part), timeout=timeout)
            answers = _read(part, operation, operation.result(timeout=timeout), None)
        except Exception as exc:
            if not _call_failed(exc):
                raise
            answers = _read(part, operation, None, exc)
        for i, answer in zip(chunk, answers, strict=True):
            results[i] = answer
    return [result for result in results if result is not None]


async def create_tasks_async(
    client: tasks_v2.CloudTasksAsyncClient, requests: Sequence[tasks_v2.CreateTaskRequest], *, timeout: float
) -> list[Result]:
    """`create_tasks` from the running loop; the chunks are sent concurrently."""

    async def chunk_results(chunk: list[int]) -> list[Result]:
        part = [requests[i] for i in chunk]
        operation: Any = None
        try:
            operation = await client.batch_create_tasks(request=_batch_request(part), timeout=timeout)
            return _read(part, operation, await operation.result(timeout=timeout), None)
        except Exception as exc:
            if not _call_failed(exc):
                raise
            return _read(part, operation, None, exc)

    chunks = _chunks(requests)
    answered = await asyncio.gather(*(chunk_results(chunk) for chunk in chunks))
    results: list[Result | None] = [None] * len(requests)
    for chunk, answers in zip(chunks, answered, strict=True):
        for i, answer in zip(chunk, answers, strict=True):
            results[i] = answer
    return [result for result in results if result is not None]


async def create_task_async(
    client: tasks_v2.CloudTasksAsyncClient, request: tasks_v2.CreateTaskRequest, *, timeout: float
) -> Result:
    """One `create_task`, its failure returned as the translated error rather than raised."""
    try:
        task: tasks_v2.Task = await client.create_task(request=request, timeout=timeout)
    except Exception as exc:
        if not _call_failed(exc):
            raise
        return _whole_call_error(exc, _name(request), what="create_task")
    return task


class RouteSender:
    """Creates tasks through the builder's client: sync, async, and in batches (the I/O edge)."""

    def __init__(
        self,
        *,
        sync_source: SyncClientSource[tasks_v2.CloudTasksClient] | None,
        async_source: AsyncClientSource[tasks_v2.CloudTasksAsyncClient] | None,
        auto_create_queue: bool,
    ) -> None:
        self._sync_source = sync_source
        self._async_source = async_source
        self._auto_create_queue = auto_create_queue
        self._ensured: set[tuple[int, str]] = per_client_memory()  # emptied by reset_clients()
        self._lock = threading.Lock()
        self._budgets_checked: set[tuple[str, int]] = set()

    def send(self, request: tasks_v2.CreateTaskRequest, *, timeout: float) -> tasks_v2.Task:
        """Create the task now with the sync client (blocking)."""
        client = self._sync_client()
        try:
            self._ensure_queue(client, request.parent)
            task: tasks_v2.Task = client.create_task(request=request, timeout=timeout)
        except Exception as exc:
            raise translate(exc, what="create_task", name=request.task.name) from exc
        return task

    async def send_async(self, request: tasks_v2.CreateTaskRequest, *, timeout: float) -> tasks_v2.Task:
        """Create the task now from the running loop (a sync client runs in a worker thread)."""
        if self._async_source is None:
            return await asyncio.to_thread(self.send, request, timeout=timeout)
        client = self._async_source.get()
        try:
            await self._ensure_queue_async(client, request.parent)
            task: tasks_v2.Task = await client.create_task(request=request, timeout=timeout)
        except Exception as exc:
            raise translate(exc, what="create_task", name=request.task.name) from exc
        return task

    def send_batch(self, requests: Sequence[tasks_v2.CreateTaskRequest], *, timeout: float) -> list[Result]:
        """Create named tasks, 100 per `batch_create_tasks` call; one result per request, in order."""
        client = self._sync_client()
        for parent in dict.fromkeys(_parent(request) for request in requests):
            try:
                self._ensure_queue(client, parent)
            except Exception as exc:
                raise translate(exc, what="create_queue") from exc
        return create_tasks(client, requests, timeout=timeout)

    async def send_batch_async(self, requests: Sequence[tasks_v2.CreateTaskRequest], *, timeout: float) -> list[Result]:
        """`send_batch` from the running loop (a sync client runs in a worker thread)."""
        if self._async_source is None:
            return await asyncio.to_thread(self.send_batch, requests, timeout=timeout)
        client = self._async_source.get()
        for parent in dict.fromkeys(_parent(request) for request in requests):
            try:
                await self._ensure_queue_async(client, parent)
            except Exception as exc:
                raise translate(exc, what="create_queue") from exc
        return await create_tasks_async(client, requests, timeout=timeout)

    def _sync_client(self) -> tasks_v2.CloudTasksClient:
        if self._sync_source is None:
            raise RuntimeError("this route was built by AsyncDelayedRouteBuilder: use `await ....delay()`")
        return self._sync_source.get()

    def _first_budget_check(self, parent: str, retries: int) -> bool:
        key = (parent, retries)
        if key in self._budgets_checked:
            return False
        self._budgets_checked.add(key)
        return True

    def check_retry_budget(self, parent: str, retries: int) -> None:
        """Warn once when the queue drops a task before a route's `max_retries(retries)` can give it up."""
        if self._sync_source is None or not self._first_budget_check(parent, retries):
            return
        try:
            queue = self._sync_source.get().get_queue(name=parent, timeout=QUEUE_READ_TIMEOUT)
        except (core.GoogleAPIError, OSError) as exc:
            _cannot_read_queue(parent, exc)
            return
        warn_if_queue_gives_up_first(queue, retries)

    async def check_retry_budget_async(self, parent: str, retries: int) -> None:
        """`check_retry_budget` from a coroutine."""
        if self._async_source is None:
            await asyncio.to_thread(self.check_retry_budget, parent, retries)
            return
        if not self._first_budget_check(parent, retries):
            return
        try:
            queue = await self._async_source.get().get_queue(name=parent, timeout=QUEUE_READ_TIMEOUT)
        except (core.GoogleAPIError, OSError) as exc:
            _cannot_read_queue(parent, exc)
            return
        warn_if_queue_gives_up_first(queue, retries)

    def _ensure_queue(self, client: tasks_v2.CloudTasksClient, parent: str) -> None:
        if not self._auto_create_queue:
            return
        key = (id(client), parent)
        if key in self._ensured:
            return
        with self._lock:
            if key in self._ensured:
                return
            try:
                ensure_queue(client=client, path=parent)
            except core.PermissionDenied:
                _log_cannot_create(parent)
            self._ensured.add(key)

    async def _ensure_queue_async(self, client: tasks_v2.CloudTasksAsyncClient, parent: str) -> None:
        if not self._auto_create_queue:
            return
        key = (id(client), parent)
        if key in self._ensured:
            return
        try:
            await ensure_queue_async(client=client, path=parent)
        except core.PermissionDenied:
            _log_cannot_create(parent)
        self._ensured.add(key)


def _cannot_read_queue(parent: str, exc: Exception) -> None:
    # The check is advice: a sender that may not read the queue (roles/cloudtasks.enqueuer) says nothing.
    logger.debug("cannot read queue %s to compare its max_attempts with max_retries: %s", parent, exc)


def warn_if_queue_gives_up_first(queue: tasks_v2.Queue, retries: int) -> None:
    """Warn when the queue allows fewer attempts than `retries + 1`, the attempt `max_retries(retries)` gives up on."""
    attempts = queue.retry_config.max_attempts
    if 0 < attempts < retries + 1:
        logger.warning(
            "queue %s allows %d attempts, but max_retries(%d) gives up only on attempt %d: Cloud Tasks will drop "
            "failing tasks first, with no dead letter. Raise the queue's max_attempts to at least %d.",
            queue.name,
            attempts,
            retries,
            retries + 1,
            retries + 1,
        )


def _log_cannot_create(parent: str) -> None:
    # roles/cloudtasks.enqueuer may create tasks but not queues: the queue is then managed elsewhere.
    logger.info("not allowed to create queue %s; assuming it exists (set auto_create_queue=False)", parent)
