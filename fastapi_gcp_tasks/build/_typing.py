"""Static types for task endpoints: what `.delay()`, `.options()` and `.scheduler()` accept.

`.delay` and friends are attached to endpoint functions when routes are registered, which type checkers
cannot see. Wrap the endpoint with `as_delayed_task` (innermost decorator) to give it a type whose
`.delay()` takes exactly the endpoint's parameters, keyword-only, and whose `.options()` takes only known
options:

```python
@router.post("/hello/{name}")
@as_delayed_task
def hello(name: str, greeting: Greeting) -> None: ...

hello.delay(name="Ada", greeting=Greeting(text="hi"))   # checked
hello.options(countdown=60).delay(name="Ada", greeting=...)
```
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import ParamSpec, Protocol, TypedDict, TypeVar, cast

from google.cloud import scheduler_v1, tasks_v2
from typing_extensions import Unpack

from fastapi_gcp_tasks.build._hooks import DelayedTaskHook, ScheduledHook
from fastapi_gcp_tasks.dispatch._sink import TaskSink

__all__ = [
    "AsyncDelayOptions",
    "AsyncDelayedTask",
    "AsyncScheduledTask",
    "AsyncSchedulerOptions",
    "DelayOptions",
    "DelayedTask",
    "ScheduledTask",
    "SchedulerOptions",
    "TaskDefaultOptions",
    "as_async_delayed_task",
    "as_async_scheduled_task",
    "as_delayed_task",
    "as_scheduled_task",
]

P = ParamSpec("P")
R = TypeVar("R", covariant=True)


class TaskDefaultOptions(TypedDict, total=False):
    """Options shared by sync and async delayed routes (`task_default_options`, `.options()`)."""

    countdown: float | dt.timedelta
    eta: dt.datetime
    task_id: str
    hash_task_id: bool
    dispatch_deadline: float | dt.timedelta
    task_create_timeout: float
    callback_base_url: str
    base_url: str
    queue_path: str
    pre_create_hook: DelayedTaskHook
    auto_create_queue: bool
    headers: Mapping[str, str]
    sink: TaskSink


class DelayOptions(TaskDefaultOptions, total=False):
    """Per-call overrides for `.options()` on a `DelayedRouteBuilder` endpoint."""

    client: tasks_v2.CloudTasksClient | Callable[[], tasks_v2.CloudTasksClient]


class AsyncDelayOptions(TaskDefaultOptions, total=False):
    """Per-call overrides for `.options()` on an `AsyncDelayedRouteBuilder` endpoint."""

    client: tasks_v2.CloudTasksAsyncClient | Callable[[], tasks_v2.CloudTasksAsyncClient]


class _SchedulerCommon(TypedDict, total=False):
    callback_base_url: str
    base_url: str
    location_path: str
    job_create_timeout: float
    retry_config: scheduler_v1.RetryConfig
    time_zone: str
    force: bool
    attempt_deadline: float | dt.timedelta
    description: str
    headers: Mapping[str, str]
    pre_create_hook: ScheduledHook


class SchedulerOptions(_SchedulerCommon, total=False):
    """Options for `.scheduler()` on a `ScheduledRouteBuilder` endpoint."""

    client: scheduler_v1.CloudSchedulerClient | Callable[[], scheduler_v1.CloudSchedulerClient]


class AsyncSchedulerOptions(_SchedulerCommon, total=False):
    """Options for `.scheduler()` on an `AsyncScheduledRouteBuilder` endpoint."""

    client: scheduler_v1.CloudSchedulerAsyncClient | Callable[[], scheduler_v1.CloudSchedulerAsyncClient]


class DelayHandle(Protocol[P]):
    """`endpoint.options(...)`: a `.delay()` with those options."""

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> tasks_v2.Task:
        """Create the task (keyword arguments only)."""
        ...


class AsyncDelayHandle(Protocol[P]):
    """`endpoint.options(...)` on an async route."""

    async def delay(self, *args: P.args, **kwargs: P.kwargs) -> tasks_v2.Task:
        """Create the task (keyword arguments only)."""
        ...


class ScheduleHandle(Protocol[P]):
    """`endpoint.scheduler(...)`: the Cloud Scheduler job of this endpoint."""

    def schedule(self, *args: P.args, **kwargs: P.kwargs) -> scheduler_v1.Job:
        """Create the job, update it in place when it differs, or leave it when it matches."""
        ...

    def delete(self) -> bool:
        """Delete the job; whether it existed."""
        ...


class AsyncScheduleHandle(Protocol[P]):
    """`endpoint.scheduler(...)` on an async route."""

    async def schedule(self, *args: P.args, **kwargs: P.kwargs) -> scheduler_v1.Job:
        """Create the job, update it in place when it differs, or leave it when it matches."""
        ...

    async def delete(self) -> bool:
        """Delete the job; whether it existed."""
        ...


class DelayedTask(Protocol[P, R]):
    """An endpoint of a `DelayedRouteBuilder` route, as typed by `as_delayed_task`."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the endpoint directly."""
        ...

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> tasks_v2.Task:
        """Create a task that calls this endpoint with these arguments."""
        ...

    def options(self, **options: Unpack[DelayOptions]) -> DelayHandle[P]:
        """Override options for one call: `endpoint.options(countdown=60).delay(...)`."""
        ...


class AsyncDelayedTask(Protocol[P, R]):
    """An endpoint of an `AsyncDelayedRouteBuilder` route, as typed by `as_async_delayed_task`."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the endpoint directly."""
        ...

    async def delay(self, *args: P.args, **kwargs: P.kwargs) -> tasks_v2.Task:
        """Create a task that calls this endpoint with these arguments."""
        ...

    def options(self, **options: Unpack[AsyncDelayOptions]) -> AsyncDelayHandle[P]:
        """Override options for one call: `await endpoint.options(countdown=60).delay(...)`."""
        ...


class ScheduledTask(Protocol[P, R]):
    """An endpoint of a `ScheduledRouteBuilder` route, as typed by `as_scheduled_task`."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the endpoint directly."""
        ...

    def scheduler(self, *, name: str, schedule: str, **options: Unpack[SchedulerOptions]) -> ScheduleHandle[P]:
        """The Cloud Scheduler job `name` calling this endpoint on the cron `schedule`."""
        ...


class AsyncScheduledTask(Protocol[P, R]):
    """An endpoint of an `AsyncScheduledRouteBuilder` route, as typed by `as_async_scheduled_task`."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the endpoint directly."""
        ...

    def scheduler(
        self, *, name: str, schedule: str, **options: Unpack[AsyncSchedulerOptions]
    ) -> AsyncScheduleHandle[P]:
        """The Cloud Scheduler job `name` calling this endpoint on the cron `schedule`."""
        ...


def as_delayed_task(fn: Callable[P, R]) -> DelayedTask[P, R]:
    """Type an endpoint as a `DelayedTask` (identity at runtime; apply as the innermost decorator)."""
    return cast("DelayedTask[P, R]", fn)


def as_async_delayed_task(fn: Callable[P, R]) -> AsyncDelayedTask[P, R]:
    """Type an endpoint as an `AsyncDelayedTask`. See `as_delayed_task`."""
    return cast("AsyncDelayedTask[P, R]", fn)


def as_scheduled_task(fn: Callable[P, R]) -> ScheduledTask[P, R]:
    """Type an endpoint as a `ScheduledTask`. See `as_delayed_task`."""
    return cast("ScheduledTask[P, R]", fn)


def as_async_scheduled_task(fn: Callable[P, R]) -> AsyncScheduledTask[P, R]:
    """Type an endpoint as an `AsyncScheduledTask`. See `as_delayed_task`."""
    return cast("AsyncScheduledTask[P, R]", fn)
