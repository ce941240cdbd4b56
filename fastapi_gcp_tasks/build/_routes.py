"""The route classes behind the four builders, and how their methods are attached to endpoints.

A builder returns an `APIRoute` subclass. When FastAPI registers an endpoint with it, the route computes
its `RoutePlan` once and attaches `.delay` / `.options` (delayed routes) or `.scheduler` (scheduled routes)
to the endpoint function. Sync and async builders share everything but the last call: `Delayer.delay`
versus `Delayer.delay_async`, `JobSync.schedule` versus `JobSync.schedule_async`.

FastAPI before 0.137 copies routes when a router is included; the copies keep the original's
`openapi_extra` object, which is how they are recognised and left unbound. Any other second registration
of one endpoint function as a task is an error: its `.delay` could only reach one of the paths.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from fastapi.routing import APIRoute
from google.cloud import scheduler_v1, tasks_v2

from fastapi_gcp_tasks.build._job import JobConfig, JobSync, claim_job, release_job
from fastapi_gcp_tasks.build._plan import RoutePlan
from fastapi_gcp_tasks.build._task import DelayConfig, Delayer
from fastapi_gcp_tasks.dispatch._sink import creating
from fastapi_gcp_tasks.exception import RouteDefinitionError
from fastapi_gcp_tasks.receive._auth import WorkerRoute
from fastapi_gcp_tasks.receive._poison import PoisonPolicy, poison_route_class
from fastapi_gcp_tasks.receive._record import (
    AttemptRecorder,
    Creation,
    check_history,
    endpoint_template,
    location_of,
    recording_route_class,
)
from fastapi_gcp_tasks.receive._retries import declared_retry_limit
from fastapi_gcp_tasks.transport._clients import (
    AsyncClientSource,
    SyncClientSource,
    async_scheduler_source,
    async_tasks_source,
    sync_scheduler_source,
    sync_tasks_source,
)
from fastapi_gcp_tasks.transport._tasks import RouteSender

__all__ = ["delayed_route_class", "scheduled_route_class"]

_BOUND_ROUTE = "__fastapi_gcp_tasks_route__"
CHECK_ARGS_ATTR = "__fastapi_gcp_tasks_check_args__"
"""Set by `as_*_task(args=...)` applied below the route decorator: the check to run once the route exists."""
DEFAULT_OPTIONS_ATTR = "_delay_options"


class _RegistrationMarker(dict[str, Any]):
    """`openapi_extra` of a task route: the user's values plus the route it belongs to."""

    def __init__(self, route: APIRoute, openapi_extra: Mapping[str, Any] | None) -> None:
        super().__init__(openapi_extra or {})
        self.route = route


def _is_registered_copy(route: APIRoute) -> bool:
    """Whether `route` is FastAPI's copy of a task route already attached to its endpoint.

    Raises when the endpoint is already a task at another path.
    """
    endpoint = route.endpoint
    existing: APIRoute | None = getattr(endpoint, _BOUND_ROUTE, None)
    if existing is None:
        return False
    marker = route.openapi_extra
    if isinstance(marker, _RegistrationMarker) and marker.route is existing and type(existing) is type(route):
        return True
    name = getattr(endpoint, "__qualname__", repr(endpoint))
    raise RouteDefinitionError(
        f"endpoint {name!r} is already a task at {existing.path!r}; it cannot also be one at {route.path!r}, "
        "since its .delay()/.scheduler() can reach only one path: register a second function instead"
    )


def _attach(route: APIRoute, methods: Mapping[str, Any]) -> None:
    """Mark `route` as the task route of its endpoint and give the endpoint its task methods."""
    endpoint = route.endpoint
    route.openapi_extra = _RegistrationMarker(route, route.openapi_extra)
    try:
        setattr(endpoint, _BOUND_ROUTE, route)
        for name, method in methods.items():
            setattr(endpoint, name, method)
    except AttributeError:
        raise RouteDefinitionError(
            f"{route.path}: the endpoint {endpoint!r} does not accept attributes; use a plain function"
        ) from None
    check_declared_args = getattr(endpoint, CHECK_ARGS_ATTR, None)
    if check_declared_args is not None:
        check_declared_args()


def _positional_guard(name: str, args: tuple[Any, ...]) -> None:
    if args:
        raise TypeError(f"{name}() takes keyword arguments only (the endpoint's parameter names)")


def _base_route(poison_policy: PoisonPolicy | None, history: Any = None, location: str | None = None) -> type[APIRoute]:
    """The worker side of a builder's routes: authentication first, then the poison policy; history records
    around both, so it sees the final answer (see `receive._record`)."""
    base = WorkerRoute if poison_policy is None else poison_route_class(WorkerRoute, poison_policy)
    if history is None:
        return base
    return recording_route_class(base, AttemptRecorder(history, location=location))


def delayed_route_class(
    *,
    builder_options: Mapping[str, Any],
    client: Any,
    is_async: bool,
    poison_policy: PoisonPolicy | None = None,
    history: Any = None,
) -> type[APIRoute]:
    """The route class returned by `DelayedRouteBuilder` / `AsyncDelayedRouteBuilder`."""
    DelayConfig.create(builder_options)  # a bad builder argument fails where the builder is called
    history = check_history(history)
    sync_source: SyncClientSource[tasks_v2.CloudTasksClient] | None = None
    async_source: AsyncClientSource[tasks_v2.CloudTasksAsyncClient] | None = None
    if is_async:
        async_source = async_tasks_source(client)
    else:
        sync_source = sync_tasks_source(client)
    default_sender = RouteSender(
        sync_source=sync_source,
        async_source=async_source,
        auto_create_queue=bool(builder_options.get("auto_create_queue", True)),
    )

    location = location_of(builder_options.get("queue_path"))

    class DelayedTaskRoute(_base_route(poison_policy, history, location)):  # type: ignore[misc]
        task_plan: RoutePlan
        task_delayer: Delayer

        def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
            super().__init__(path, endpoint, **kwargs)
            if _is_registered_copy(self):
                return
            self.task_plan = RoutePlan(self)
            endpoint_defaults: Mapping[str, Any] = getattr(endpoint, DEFAULT_OPTIONS_ATTR, None) or {}
            self._task_defaults = {**builder_options, **endpoint_defaults}
            self._retry_limit = declared_retry_limit(self.dependant)
            self._task_history = check_history(self._task_defaults.pop("history", history))
            self.task_delayer = self._delayer(self._task_defaults, endpoint_defaults.get("client"))
            delay = _DelayHandle(self.task_delayer, is_async=is_async, history=self._task_history, route=self).delay
            functools.update_wrapper(delay, endpoint, assigned=("__module__", "__qualname__", "__doc__"))
            _attach(self, {"delay": delay, "options": self.task_options})

        def _delayer(self, options: Mapping[str, Any], client_override: Any) -> Delayer:
            config = DelayConfig.create(options)
            sender = default_sender
            if client_override is not None or config.auto_create_queue != default_sender._auto_create_queue:
                sender = RouteSender(
                    sync_source=None if is_async else sync_tasks_source(client_override or client),
                    async_source=async_tasks_source(client_override or client) if is_async else None,
                    auto_create_queue=config.auto_create_queue,
                )
            return Delayer(self.task_plan, config, sender, retry_limit=self._retry_limit)

        def task_options(self, **options: Any) -> _DelayHandle:
            """`endpoint.options(...)`: per-call overrides of any builder keyword or delay option."""
            merged = {**self._task_defaults, **options}
            if "base_url" in options and "callback_base_url" not in options:
                merged.pop("callback_base_url", None)
            chosen = check_history(merged.pop("history")) if "history" in merged else self._task_history
            delayer = self._delayer(merged, options.get("client"))
            return _DelayHandle(delayer, is_async=is_async, history=chosen, route=self)

    return DelayedTaskRoute


class _DelayHandle:
    """What `endpoint.options(...)` returns: `.delay(**values)` with those options."""

    __slots__ = ("_delayer", "delay")

    def __init__(self, delayer: Delayer, *, is_async: bool, history: Any = None, route: APIRoute | None = None) -> None:
        self._delayer = delayer
        method = delayer.plan.method
        endpoint = "" if route is None else endpoint_template(route)
        if is_async and history is None:

            async def delay(*args: Any, **values: Any) -> tasks_v2.Task:
                _positional_guard("delay", args)
                return await delayer.delay_async(values)

        elif is_async:

            async def delay(*args: Any, **values: Any) -> tasks_v2.Task:
                _positional_guard("delay", args)
                creation = Creation.start(history, endpoint, method, values)
                with creating(creation):
                    task = await delayer.delay_async(values)
                if creation is not None and not creation.deferred:
                    creation.created(task, "immediate")
                return task

        elif history is None:

            def delay(*args: Any, **values: Any) -> tasks_v2.Task:  # type: ignore[misc]
                _positional_guard("delay", args)
                return delayer.delay(values)

        else:

            def delay(*args: Any, **values: Any) -> tasks_v2.Task:  # type: ignore[misc]
                _positional_guard("delay", args)
                creation = Creation.start(history, endpoint, method, values)
                with creating(creation):
                    task = delayer.delay(values)
                if creation is not None and not creation.deferred:
                    creation.created(task, "immediate")
                return task

        self.delay = delay

    def request(self, **values: Any) -> tasks_v2.CreateTaskRequest:
        """The CreateTaskRequest `.delay(**values)` would send, without sending it."""
        return self._delayer.request(values)


class ScheduleHandle:
    """What `endpoint.scheduler(...)` returns: `.schedule(**values)` and `.delete()` for one job."""

    def __init__(self, sync: JobSync, *, is_async: bool, owner: Any = None, new_claim: bool = False) -> None:
        self.job_sync = sync
        self.is_async = is_async
        self._owner = owner
        self._new_claim = new_claim

    def _release(self) -> None:
        """Give up the claim on the job id made by `.scheduler()` (a declaration that failed afterwards)."""
        if self._new_claim and self._owner is not None:
            release_job(self.job_name, self._owner)
            self._new_claim = False

    @property
    def job_name(self) -> str:
        """The full job name."""
        return self.job_sync.config.job_name

    def job(self, **values: Any) -> scheduler_v1.Job:
        """The Job `.schedule(**values)` would write, without writing it."""
        return self.job_sync.job(values)

    def schedule(self, *args: Any, **values: Any) -> Any:
        """Create or update the job (awaitable on async routes)."""
        _positional_guard("schedule", args)
        if self.is_async:
            return self.job_sync.schedule_async(values)
        return self.job_sync.schedule(values)

    def delete(self) -> Any:
        """Delete the job; whether there was one (awaitable on async routes)."""
        if self.is_async:
            return self.job_sync.delete_async()
        return self.job_sync.delete()


def scheduled_route_class(
    *,
    builder_options: Mapping[str, Any],
    client: Any,
    is_async: bool,
    poison_policy: PoisonPolicy | None = None,
    history: Any = None,
) -> type[APIRoute]:
    """The route class returned by `ScheduledRouteBuilder` / `AsyncScheduledRouteBuilder`."""
    JobConfig.create(name="check", schedule="* * * * *", options=builder_options, label="ScheduledRouteBuilder")

    def sources(chosen: Any) -> dict[str, Any]:
        if is_async:
            return {"sync_source": None, "async_source": async_scheduler_source(chosen)}
        return {"sync_source": sync_scheduler_source(chosen), "async_source": None}

    default_sources = sources(client)
    history = check_history(history)
    location = location_of(builder_options.get("location_path"))

    class ScheduledTaskRoute(_base_route(poison_policy, history, location)):  # type: ignore[misc]
        task_plan: RoutePlan

        def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
            super().__init__(path, endpoint, **kwargs)
            if _is_registered_copy(self):
                return
            self.task_plan = RoutePlan(self)
            _attach(self, {"scheduler": self.task_scheduler})

        def task_scheduler(self, *, name: str = "", schedule: str, **options: Any) -> ScheduleHandle:
            """`endpoint.scheduler(name=..., schedule=..., ...)`: the job for this endpoint.

            Without `name` the job id is the route's unique id, as in fastapi-gcp-tasks 0.3. A job id that
            another live endpoint already declared in the same location is refused (`param="name"`).
            """
            merged = {**builder_options, **options}
            if "base_url" in options and "callback_base_url" not in options:
                merged.pop("callback_base_url", None)
            config = JobConfig.create(name=name or self.unique_id, schedule=schedule, options=merged)
            new_claim = claim_job(config.job_name, self)
            chosen = sources(options["client"]) if options.get("client") is not None else default_sources
            return ScheduleHandle(
                JobSync(self.task_plan, config, **chosen), is_async=is_async, owner=self, new_claim=new_claim
            )

    return ScheduledTaskRoute
