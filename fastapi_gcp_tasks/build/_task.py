"""From `.delay()` keywords to a CreateTaskRequest, handed to a sink or to the route's `RouteSender`.

`DelayConfig` holds a builder's settings merged with per-endpoint (`task_default_options`) and per-call
(`.options()`) overrides; it is checked when it is made, so a bad option fails at the call site.
`Delayer.request()` is the one pure builder used by every sending mode; `Delayer.delay()` and
`Delayer.delay_async()` differ only in how they hand the request over.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from google.cloud import tasks_v2
from google.protobuf import duration_pb2, timestamp_pb2

from fastapi_gcp_tasks._limits import (
    MAX_DISPATCH_DEADLINE,
    MAX_SCHEDULE_AHEAD,
    MAX_TASK_BYTES,
    MAX_URL_LENGTH,
    MIN_DISPATCH_DEADLINE,
)
from fastapi_gcp_tasks.build import _naming, _tracing, _wire
from fastapi_gcp_tasks.build._plan import RoutePlan
from fastapi_gcp_tasks.dispatch._sink import PreparedTask, TaskSink, current_sink
from fastapi_gcp_tasks.exception import TaskArgumentError, TaskLimitError, UnknownParamError
from fastapi_gcp_tasks.transport._tasks import RouteSender

__all__ = ["DELAY_OPTION_NAMES", "DelayConfig", "Delayer", "check_headers", "check_url", "to_seconds"]


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
    """A callback base URL without its trailing slash: absolute http(s), a host, no query or fragment.

    The route's path is appended to it, so a query string or fragment would swallow the path (every
    task would answer 404 until the queue gives up).
    """
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise TaskArgumentError(f"{param} must be an absolute http(s) URL, not {base_url!r}", param=param)
    parts = urlsplit(base_url)
    if not parts.hostname:
        raise TaskArgumentError(f"{param} must name a host, not {base_url!r}", param=param)
    if "?" in base_url or "#" in base_url:
        raise TaskArgumentError(
            f"{param} must not contain a query string or fragment ({base_url!r}): the route's path is appended "
            "to it; put values in the endpoint's parameters instead",
            param=param,
        )
    if any(char.isspace() or ord(char) > 0x7E for char in base_url):
        raise TaskArgumentError(f"{param} must be ASCII without spaces (percent-encode it): {base_url!r}", param=param)
    return base_url.rstrip("/")


def check_headers(headers: Any, *, param: str = "headers", where: str = "") -> dict[str, str]:
    """Extra request headers: names are HTTP tokens, values arrive unchanged (visible ASCII)."""
    prefix = f"{where}: " if where else ""
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise TaskArgumentError(f"{prefix}{param} must be a mapping of str to str", param=param)
    for name, value in headers.items():
        if _wire.HEADER_NAME.fullmatch(name) is None:
            raise TaskLimitError(f"{prefix}{param}: {name!r} is not a valid header name", param=param)
        if _wire.HEADER_VALUE.fullmatch(value) is None:
            raise TaskLimitError(
                f"{prefix}{param}: the value of {name!r} ({value!r}) would not arrive unchanged: header values "
                "must be visible ASCII without leading or trailing spaces",
                param=param,
            )
    return dict(headers)


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
        if values.get("headers") is not None:
            values["headers"] = check_headers(values["headers"])
        if values.get("pre_create_hook") is None:
            values.pop("pre_create_hook", None)
        return cls(**values)


def _parse_queue_path(path: str) -> dict[str, str] | None:
    parsed = tasks_v2.CloudTasksClient.parse_queue_path(path)
    return parsed or None


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
        url = self.plan.callback_url(self._base_url, parts.path_and_query)
        if len(url) > MAX_URL_LENGTH:
            raise self._too_large(
                values,
                f"the URL would be {len(url)} characters; Cloud Tasks accepts at most {MAX_URL_LENGTH}: "
                "move large values to the body",
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
            raise self._too_large(
                values,
                f"the task would be {size} bytes; Cloud Tasks accepts at most {MAX_TASK_BYTES} (1 MB): "
                "store large payloads elsewhere and pass a reference",
            )
        return request

    def _too_large(self, values: Mapping[str, Any], problem: str) -> TaskLimitError:
        """A size refusal naming the largest parameters with their sizes on the wire (`param`: the largest)."""
        sizes = self.plan.wire_sizes(values)
        listed = ", ".join(f"{name}: {size:,} bytes" for name, size in sizes[:3])
        hint = f"largest parameters: {listed}" if listed else "no parameter is large: check headers and options"
        return TaskLimitError(
            f"{self.plan.endpoint_name}.delay(): {problem} ({hint})", param=sizes[0][0] if sizes else None
        )

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
