"""From `.delay()` keywords to a created task: options, the CreateTaskRequest, and the sender.

`DelayConfig` holds a builder's settings merged with per-endpoint (`task_default_options`) and per-call
(`.options()`) overrides; it is checked when it is made, so a bad option fails at the call site.
`Delayer.request()` is the one pure builder used by every sending mode; `Delayer.delay()` and
`Delayer.delay_async()` differ only in how they hand the request over.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from google.api_core import exceptions as core
from google.cloud import tasks_v2
from google.protobuf import duration_pb2, timestamp_pb2

from fastapi_gcp_tasks.build import _naming

from fastapi_gcp_tasks.build import _tracing
from fastapi_gcp_tasks.transport._clients import AsyncClientSource, SyncClientSource
from fastapi_gcp_tasks.dispatch._sink import PreparedTask, TaskSink, current_sink
from fastapi_gcp_tasks.transport._errors import translate
from fastapi_gcp_tasks.build._plan import RoutePlan
from fastapi_gcp_tasks._limits import (
    MAX_DISPATCH_DEADLINE,
    MAX_HEADER_BYTES,
    MAX_SCHEDULE_AHEAD,
    MAX_TASK_BYTES,
    MAX_URL_LENGTH,
    MIN_DISPATCH_DEADLINE,
)
from fastapi_gcp_tasks.exception import (
    FastAPIGCPTasksError,
    TaskAlreadyExistsError,
    TaskArgumentError,
    TaskLimitError,
    UnknownParamError,
)

__all__ = ["DELAY_OPTION_NAMES", "DelayConfig", "Delayer", "RouteSender", "check_url", "to_seconds"]

logger = logging.getLogger("fastapi_gcp_tasks")


_HTTP_METHODS = {
    "POST": tasks_v2.HttpMethod.POST,
    "GET": tasks_v2.HttpMethod.GET,
    "HEAD": tasks_v2.HttpMethod.HEAD,
    "PUT": tasks_v2.HttpMethod.PUT,
    "DELETE": tasks_v2.HttpMethod.DELETE,
    "PATCH": tasks_v2.HttpMethod.PATCH,
    "OPTIONS": tasks_v2.HttpMethod.OPTIONS,
}
_RequestPB = tasks_v2.CreateTaskRequest.pb()
_TaskPB = tasks_v2.Task.pb()
_HttpRequestPB = tasks_v2.HttpRequest.pb()

DELAY_OPTION_NAMES = frozenset(
    {
        "queue_path",
        "callback_base_url",
        "base_url",
        "task_create_timeout",
        "pre_create_hook",
        "client",
        "auto_create_queue",
        "countdown",
        "eta",
        "task_id",
        "hash_task_id",
        "dispatch_deadline",
        "headers",
        "sink",
    }
)


def to_seconds(value: Any, *, param: str) -> float:
    """A duration given as seconds or a `timedelta`, as float seconds."""
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TaskArgumentError(f"{param} must be a number of seconds or a timedelta, not {value!r}", param=param)
    return float(value)


def check_url(base_url: Any, *, param: str) -> str:
    """A callback base URL without its trailing slash; it must be absolute http(s)."""
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise TaskArgumentError(f"{param} must be an absolute http(s) URL, not {base_url!r}", param=param)
    return base_url.rstrip("/")


@dataclasses.dataclass(frozen=True, slots=True)
class DelayConfig:
    """A builder's settings with overrides applied; validated when made."""

    queue_path: str
    callback_base_url: str
    task_create_timeout: float = 10.0
    pre_create_hook: Callable[[tasks_v2.CreateTaskRequest], tasks_v2.CreateTaskRequest] | None = None
    auto_create_queue: bool = True
    countdown: float | None = None
    eta: dt.datetime | None = None
    task_id: str | None = None
    hash_task_id: bool = False
    dispatch_deadline: float | None = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    sink: TaskSink | None = None

    @classmethod
    def create(cls, options: Mapping[str, Any]) -> DelayConfig:
        """Check options (by name) and build the config; `base_url` is the legacy `callback_base_url`."""
        unknown = set(options) - DELAY_OPTION_NAMES
        if unknown:
            raise UnknownParamError(
                f"unknown option(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(DELAY_OPTION_NAMES))}",
                param=sorted(unknown)[0],
            )
        values = {k: v for k, v in options.items() if k not in {"client", "base_url"}}
        base = options.get("callback_base_url")
        if base is None:
            base = options.get("base_url")
        if base is None:
            raise TaskArgumentError("callback_base_url (or the legacy base_url) is required", param="callback_base_url")
        values["callback_base_url"] = check_url(base, param="callback_base_url")
        queue_path = values.get("queue_path")
        if not isinstance(queue_path, str) or _parse_queue_path(queue_path) is None:
            raise TaskArgumentError(
                f"queue_path must look like projects/P/locations/L/queues/Q, not {queue_path!r}", param="queue_path"
            )
        if values.get("countdown") is not None:
            values["countdown"] = to_seconds(values["countdown"], param="countdown")
            if values["countdown"] < 0:
                raise TaskArgumentError("countdown must not be negative", param="countdown")
            if values["countdown"] > MAX_SCHEDULE_AHEAD.total_seconds():
                raise TaskLimitError("countdown: Cloud Tasks schedules at most 30 days ahead", param="countdown")
        eta = values.get("eta")
        if eta is not None:
            if not isinstance(eta, dt.datetime) or eta.tzinfo is None or eta.utcoffset() is None:
                raise TaskArgumentError("eta must be a timezone-aware datetime", param="eta")
            if values.get("countdown") is not None:
                raise TaskArgumentError("give countdown or eta, not both", param="eta")
        if values.get("task_id") is not None and not values.get("hash_task_id"):
            _naming.check_id(values["task_id"], param="task_id")
        elif values.get("task_id") is not None and not isinstance(values["task_id"], str):
            raise TaskArgumentError("task_id must be a string", param="task_id")
        if values.get("dispatch_deadline") is not None:
            seconds = to_seconds(values["dispatch_deadline"], param="dispatch_deadline")
            if not MIN_DISPATCH_DEADLINE <= seconds <= MAX_DISPATCH_DEADLINE:
                raise TaskLimitError(
                    f"dispatch_deadline must be between 15 seconds and 30 minutes, not {seconds:g} s",
                    param="dispatch_deadline",
                )
            values["dispatch_deadline"] = seconds
        timeout = values.get("task_create_timeout")
        if timeout is not None:
            values["task_create_timeout"] = to_seconds(timeout, param="task_create_timeout")
        headers = values.get("headers")
        if headers is not None and not (
            isinstance(headers, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
        ):
            raise TaskArgumentError("headers must be a mapping of str to str", param="headers")
        if values.get("pre_create_hook") is None:
            values.pop("pre_create_hook", None)
        return cls(**values)


def _parse_queue_path(path: str) -> dict[str, str] | None:
    parsed = tasks_v2.CloudTasksClient.parse_queue_path(path)
    return parsed or None


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
        self._ensured: set[tuple[int, str]] = set()
        self._lock = threading.Lock()
        self._budgets_checked: set[tuple[str, int]] = set()

    def send(self, request: tasks_v2.CreateTaskRequest, *, timeout: float) -> tasks_v2.Task:
        """Create the task now with the sync client (blocking)."""
        if self._sync_source is None:
            raise RuntimeError("this route was built by AsyncDelayedRouteBuilder: use `await ....delay()`")
        client = self._sync_source.get()
        try:
            self._ensure_queue(client, request.parent)
            return client.create_task(request=request, timeout=timeout)
        except Exception as exc:
            raise translate(exc, what="create_task", name=request.task.name) from exc

    async def send_async(self, request: tasks_v2.CreateTaskRequest, *, timeout: float) -> tasks_v2.Task:
        """Create the task now from the running loop (a sync client runs in a worker thread)."""
        if self._async_source is None:
            return await asyncio.to_thread(self.send, request, timeout=timeout)
        client = self._async_source.get()
        try:
            await self._ensure_queue_async(client, request.parent)
            return await client.create_task(request=request, timeout=timeout)
        except Exception as exc:
            raise translate(exc, what="create_task", name=request.task.name) from exc

    async def send_batch_async(
        self, requests: Sequence[tasks_v2.CreateTaskRequest], *, timeout: float
    ) -> list[tasks_v2.Task | FastAPIGCPTasksError]:
        """Create named tasks, 100 per `batch_create_tasks` call when the client is async.

        A batch that fails as a whole is retried task by task (the tasks are named, so nothing is created
        twice) so that each request gets its own result.
        """
        results: list[tasks_v2.Task | FastAPIGCPTasksError | None] = [None] * len(requests)
        by_queue: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            by_queue.setdefault(request.parent, []).append(index)
        singles: list[int] = []
        if self._async_source is not None and hasattr(tasks_v2, "BatchCreateTasksRequest"):
            client = self._async_source.get()
            for parent, indexes in by_queue.items():
                await self._ensure_queue_async(client, parent)
                for start in range(0, len(indexes), 100):
                    chunk = indexes[start : start + 100]
                    if len(chunk) == 1:
                        singles.extend(chunk)
                        continue
                    try:
                        operation = await client.batch_create_tasks(
                            request=tasks_v2.BatchCreateTasksRequest(
                                parent=parent, requests=[requests[i] for i in chunk]
                            ),
                            timeout=timeout,
                        )
                        response = await operation.result(timeout=timeout)  # type: ignore[no-untyped-call]
                    except Exception as exc:  # noqa: BLE001 - fall back to one call per task
                        logger.debug("batch_create_tasks failed (%s); creating %d tasks one by one", exc, len(chunk))
                        singles.extend(chunk)
                        continue
                    created = {task.name: task for task in response.tasks}
                    for i in chunk:
                        task = created.get(requests[i].task.name)
                        if task is None:
                            singles.append(i)
                        else:
                            results[i] = task
        else:
            singles = list(range(len(requests)))

        async def one(index: int) -> None:
            try:
                results[index] = await self.send_async(requests[index], timeout=timeout)
            except FastAPIGCPTasksError as exc:
                results[index] = exc

        await asyncio.gather(*(one(i) for i in singles))
        return [r if r is not None else TaskAlreadyExistsError(requests[i].task.name) for i, r in enumerate(results)]

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
            logger.debug("cannot read queue %s to compare its max_attempts with max_retries: %s", parent, exc)
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
            logger.debug("cannot read queue %s to compare its max_attempts with max_retries: %s", parent, exc)
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
            from fastapi_gcp_tasks.utils import ensure_queue

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
        from fastapi_gcp_tasks.utils import ensure_queue_async

        try:
            await ensure_queue_async(client=client, path=parent)
        except core.PermissionDenied:
            _log_cannot_create(parent)
        self._ensured.add(key)


QUEUE_READ_TIMEOUT = 10.0
"""Seconds allowed for the one GetQueue of `check_retry_budget`."""


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


class Delayer:
    """One route with one resolved configuration: builds requests and hands them over."""

    __slots__ = ("_base_url", "_deadline", "_hook", "_http_method", "config", "plan", "retry_limit", "sender")

    def __init__(
        self, plan: RoutePlan, config: DelayConfig, sender: RouteSender, *, retry_limit: int | None = None
    ) -> None:
        self.plan = plan
        self.config = config
        self.sender = sender
        self.retry_limit = retry_limit
        """The route's `max_retries` count: the queue is read once to check it allows that many attempts."""
        self._base_url = config.callback_base_url
        self._http_method = _HTTP_METHODS[plan.method]
        self._hook = config.pre_create_hook
        self._deadline: duration_pb2.Duration | None = None
        if config.dispatch_deadline is not None:
            self._deadline = duration_pb2.Duration()
            self._deadline.FromTimedelta(dt.timedelta(seconds=config.dispatch_deadline))

    def request(self, values: Mapping[str, Any], *, name_required: bool = False) -> tasks_v2.CreateTaskRequest:
        """The CreateTaskRequest for these endpoint arguments (pure: no I/O)."""
        config = self.config
        parts = self.plan.build(values)
        url = self._base_url + parts.path_and_query
        if len(url) > MAX_URL_LENGTH:
            raise TaskLimitError(
                f"{self.plan.endpoint_name}.delay(): the URL would be {len(url)} characters; "
                f"Cloud Tasks accepts at most {MAX_URL_LENGTH}: move large values to the body",
            )
        headers = parts.headers
        if config.headers:
            headers = {**config.headers, **headers}
        trace = _tracing.propagation_headers()
        if trace:
            headers.update(trace)
        http = _HttpRequestPB(url=url, http_method=self._http_method, headers=headers)
        if parts.body is not None:
            http.body = parts.body
        task = _TaskPB(http_request=http)
        queue_path = config.queue_path
        if config.task_id is not None:
            task_id = _naming.hashed_task_id(config.task_id) if config.hash_task_id else config.task_id
            task.name = f"{queue_path}/tasks/{task_id}"
        elif name_required:
            task.name = f"{queue_path}/tasks/{_naming.new_task_id()}"
        if config.countdown:
            task.schedule_time.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=config.countdown))
        elif config.eta is not None:
            eta = config.eta
            if eta - dt.datetime.now(dt.UTC) > MAX_SCHEDULE_AHEAD:
                raise TaskLimitError("eta: Cloud Tasks schedules at most 30 days ahead", param="eta")
            task.schedule_time.CopyFrom(_timestamp(eta))
        if self._deadline is not None:
            task.dispatch_deadline.CopyFrom(self._deadline)
        request: tasks_v2.CreateTaskRequest = tasks_v2.CreateTaskRequest.wrap(_RequestPB(parent=queue_path, task=task))
        if self._hook is not None:
            request = self._hook(request)
            _check_hooked(request)
        size = request._pb.task.ByteSize()
        if size > MAX_TASK_BYTES:
            raise TaskLimitError(
                f"{self.plan.endpoint_name}.delay(): the task would be {size} bytes; Cloud Tasks accepts at most "
                f"{MAX_TASK_BYTES} (1 MB): store large payloads elsewhere and pass a reference"
            )
        return request

    def delay(self, values: Mapping[str, Any]) -> tasks_v2.Task:
        """Build and send now, or hand over to the current sink."""
        sink = self.config.sink or current_sink()
        request = self.request(values, name_required=sink is not None)
        timeout = self.config.task_create_timeout
        if sink is not None:
            return sink.submit(PreparedTask(request=request, timeout=timeout, sender=self.sender))
        task = self.sender.send(request, timeout=timeout)
        if self.retry_limit is not None:
            self.sender.check_retry_budget(request.parent, self.retry_limit)
        return task

    async def delay_async(self, values: Mapping[str, Any]) -> tasks_v2.Task:
        """Build and send now, or hand over to the current sink, from a coroutine."""
        sink = self.config.sink or current_sink()
        request = self.request(values, name_required=sink is not None)
        timeout = self.config.task_create_timeout
        if sink is not None:
            return await sink.submit_async(PreparedTask(request=request, timeout=timeout, sender=self.sender))
        task = await self.sender.send_async(request, timeout=timeout)
        if self.retry_limit is not None:
            await self.sender.check_retry_budget_async(request.parent, self.retry_limit)
        return task


def _timestamp(when: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when.astimezone(dt.UTC).replace(tzinfo=None))
    return stamp


def _check_hooked(request: Any) -> None:
    if not isinstance(request, tasks_v2.CreateTaskRequest):
        raise TypeError(f"pre_create_hook must return the CreateTaskRequest, not {type(request).__name__}")
