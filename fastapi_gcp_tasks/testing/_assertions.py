"""Which tasks were created for an endpoint, with which arguments, read back the way FastAPI reads them.

A task is decoded from its HTTP request (method, URL, headers, body) with FastAPI's own parameter
functions and the endpoint's own field definitions, so `arguments` holds what the endpoint receives:
a `datetime` is a `datetime`, a model is the model. The same reading works on the emulator (tasks
delivered and tasks still queued) and on an eager run (`eager_tasks`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fastapi.dependencies import utils as fastapi_utils
from fastapi.routing import APIRoute
from google.cloud import tasks_v2
from starlette.datastructures import Headers, QueryParams
from starlette.requests import cookie_parser

if TYPE_CHECKING:
    from fastapi_gcp_tasks.emulator import Emulator
    from fastapi_gcp_tasks.testing._eager import EagerTasks

__all__ = ["CreatedTask", "RawTask", "assert_task_created", "created_tasks", "raw_tasks_of"]

_BOUND_ROUTE = "__fastapi_gcp_tasks_route__"  # set on the endpoint by build._routes


@dataclasses.dataclass(frozen=True, slots=True)
class RawTask:
    """A task's HTTP request as Cloud Tasks delivers it."""

    name: str
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class CreatedTask:
    """A task created for an endpoint, with the arguments the endpoint receives from it."""

    name: str
    """The full task name (`projects/.../queues/.../tasks/ID`)."""
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    arguments: dict[str, Any]
    """The endpoint's parameters as FastAPI validates them from the request (parameters not sent get their default)."""

    @property
    def queue(self) -> str:
        """The full path of the task's queue."""
        return self.name.rpartition("/tasks/")[0]


def _route_of(endpoint: Any) -> APIRoute:
    route = getattr(endpoint, _BOUND_ROUTE, None)
    if not isinstance(route, APIRoute):
        raise TypeError(
            f"endpoint must be a task endpoint (a function registered on a DelayedRouteBuilder route), not {endpoint!r}"
        )
    return route


def _match(route: APIRoute, method: str, path: str) -> dict[str, Any] | None:
    """The path parameters if the task's request reaches `route` (its path may stand behind a prefix)."""
    if method not in (route.methods or ()):
        return None
    start = 0
    while start != -1:
        found = route.path_regex.match(path[start:])
        if found is not None:
            convertors = route.param_convertors
            return {key: convertors[key].convert(value) for key, value in found.groupdict().items()}
        start = path.find("/", start + 1)
    return None


def _run_now(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """The result of a coroutine that never suspends (FastAPI's body reading of an already parsed JSON body)."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    coroutine.close()
    raise RuntimeError("reading the task's body had to wait, which a JSON body never does")


def _decode(route: APIRoute, raw: RawTask, path_values: Mapping[str, Any]) -> dict[str, Any]:
    dependant = route.dependant
    parts = urlsplit(raw.url)
    headers = Headers(headers=dict(raw.headers))
    values: dict[str, Any] = {}
    errors: list[Any] = []
    for fields, received in (
        (dependant.path_params, path_values),
        (dependant.query_params, QueryParams(parts.query)),
        (dependant.header_params, headers),
        (dependant.cookie_params, cookie_parser(headers.get("cookie", ""))),
    ):
        found, problems = fastapi_utils.request_params_to_args(fields, received)
        values.update(found)
        errors.extend(problems)
    if dependant.body_params:
        body = json.loads(raw.body) if raw.body else None
        embed_rule: Callable[[Any], bool] | None = getattr(fastapi_utils, "_should_embed_body_fields", None)
        embed = embed_rule(dependant.body_params) if embed_rule is not None else len(dependant.body_params) > 1
        found, problems = _run_now(fastapi_utils.request_body_to_args(dependant.body_params, body, embed))
        values.update(found)
        errors.extend(problems)
    if errors:
        raise AssertionError(f"task {raw.name} does not validate for {route.path}: {errors}")
    return values


def raw_tasks_of(source: Emulator | EagerTasks) -> list[RawTask]:
    """Every task `source` saw created: an emulator's (delivered first, in order, then those still queued) or an
    eager run's (in the order they ran)."""
    from fastapi_gcp_tasks.testing._eager import EagerTasks

    if isinstance(source, EagerTasks):
        return [delivery.task for delivery in source.deliveries]
    seen: dict[str, RawTask] = {}
    for record in source.deliveries:
        if "/tasks/" in record.source and record.source not in seen:
            seen[record.source] = RawTask(record.source, record.method, record.url, dict(record.headers), record.body)
    client = source.tasks_client()
    for queue_name in source.queue_names():
        request = tasks_v2.ListTasksRequest(parent=queue_name, response_view=tasks_v2.Task.View.FULL)
        for task in client.list_tasks(request=request):
            if task.name not in seen:
                http = task.http_request
                method = tasks_v2.HttpMethod(http.http_method).name
                seen[task.name] = RawTask(task.name, method, http.url, dict(http.headers), http.body)
    return list(seen.values())


def created_tasks(source: Emulator | EagerTasks, endpoint: Callable[..., Any]) -> list[CreatedTask]:
    """The tasks `source` saw created for `endpoint`, each with the arguments the endpoint receives from it.

    `source` is the `Emulator` the app sends to (tasks delivered, in the order of their first attempt, then
    tasks not delivered yet) or an `EagerTasks` run (in the order they ran). `endpoint` is the task's
    endpoint function (`hello`, whose `hello.delay()` created them).
    """
    route = _route_of(endpoint)
    found: list[CreatedTask] = []
    for raw in raw_tasks_of(source):
        path_values = _match(route, raw.method, urlsplit(raw.url).path)
        if path_values is None:
            continue
        arguments = _decode(route, raw, path_values)
        found.append(CreatedTask(raw.name, raw.method, raw.url, raw.headers, raw.body, arguments))
    return found


def assert_task_created(source: Emulator | EagerTasks, endpoint: Callable[..., Any], **arguments: Any) -> CreatedTask:
    """The first task created for `endpoint` whose arguments include `arguments` (compared with `==`).

    Raises AssertionError listing the arguments of the tasks that were created for `endpoint` otherwise.
    """
    tasks = created_tasks(source, endpoint)
    for task in tasks:
        if all(key in task.arguments and task.arguments[key] == value for key, value in arguments.items()):
            return task
    name = getattr(endpoint, "__qualname__", repr(endpoint))
    listed = "\n".join(f"  {task.arguments!r}" for task in tasks) or "  (none)"
    raise AssertionError(f"no task for {name} with {arguments!r}; created for {name}:\n{listed}")
