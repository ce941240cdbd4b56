"""The four route builders of the 0.3 API: a route class that gives each endpoint `.delay()` or `.scheduler()`.

Each builder checks its arguments where it is called and returns an `APIRoute` subclass (see `_routes.py`);
nothing is sent until an endpoint's `.delay()` or `.schedule()` runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi.routing import APIRoute
from google.cloud import scheduler_v1, tasks_v2

from fastapi_gcp_tasks.build._hooks import DelayedTaskHook, ScheduledHook
from fastapi_gcp_tasks.build._routes import delayed_route_class, scheduled_route_class
from fastapi_gcp_tasks.dispatch._sink import TaskSink
from fastapi_gcp_tasks.receive._poison import PoisonPolicy

if TYPE_CHECKING:
    from fastapi_gcp_tasks.history._history import TaskHistory

__all__ = ["AsyncDelayedRouteBuilder", "AsyncScheduledRouteBuilder", "DelayedRouteBuilder", "ScheduledRouteBuilder"]


def DelayedRouteBuilder(  # noqa: N802 - the 0.3 name is a function
    *,
    queue_path: str,
    callback_base_url: str | None = None,
    base_url: str | None = None,
    task_create_timeout: float = 10.0,
    pre_create_hook: DelayedTaskHook | None = None,
    client: tasks_v2.CloudTasksClient | Callable[[], tasks_v2.CloudTasksClient] | None = None,
    auto_create_queue: bool = True,
    dispatch_deadline: float | None = None,
    hash_task_id: bool = False,
    headers: dict[str, str] | None = None,
    sink: TaskSink | None = None,
    poison_policy: PoisonPolicy | None = None,
    history: TaskHistory | None = None,
) -> type[APIRoute]:
    """A route class for `APIRouter(route_class=...)` that gives each endpoint `.delay()` and `.options()`.

    `callback_base_url` is the externally reachable URL to which the route's path (including its own
    router's prefix) is appended; it must include prefixes added by outer `include_router` calls and mount
    paths. `base_url` is its legacy name.

    `client` is a `CloudTasksClient`, a zero-argument factory of one, or None for the process-wide default
    (the emulator when `FASTAPI_GCP_TASKS_EMULATOR_HOST` is set). Nothing is called when the route class is
    built: the client is created on the first `.delay()`, and with `auto_create_queue` the queue is created
    then too (once per process), so an app imports while Cloud Tasks is unreachable.

    `sink` hands every task to a sink (for example the transactional outbox) instead of sending it.
    `poison_policy` acknowledges requests that fail the endpoint's validation after handing them to a
    dead-letter sink, instead of letting Cloud Tasks retry them (see `fastapi_gcp_tasks.poison`).
    `history` (a `fastapi_gcp_tasks.history.TaskHistory`) records every task the routes create and every
    attempt they handle (`.options(history=...)` overrides it for the creating side of one call).
    """
    return delayed_route_class(
        builder_options=_options(locals()),
        client=client,
        is_async=False,
        poison_policy=poison_policy,
        history=history,
    )


def _options(arguments: dict[str, Any]) -> dict[str, Any]:
    options = {k: v for k, v in arguments.items() if k not in {"client", "poison_policy", "history"} and v is not None}
    if base := options.pop("base_url", None):
        options.setdefault("callback_base_url", base)
    return options


def AsyncDelayedRouteBuilder(  # noqa: N802 - the 0.3 name is a function
    *,
    queue_path: str,
    callback_base_url: str | None = None,
    base_url: str | None = None,
    task_create_timeout: float = 10.0,
    pre_create_hook: DelayedTaskHook | None = None,
    client: tasks_v2.CloudTasksAsyncClient | Callable[[], tasks_v2.CloudTasksAsyncClient] | None = None,
    auto_create_queue: bool = True,
    dispatch_deadline: float | None = None,
    hash_task_id: bool = False,
    headers: dict[str, str] | None = None,
    sink: TaskSink | None = None,
    poison_policy: PoisonPolicy | None = None,
    history: TaskHistory | None = None,
) -> type[APIRoute]:
    """Like `DelayedRouteBuilder`, with an awaitable `.delay()` over `CloudTasksAsyncClient`.

    A `grpc.aio` client belongs to the event loop that created it, so pass a factory (or nothing) rather
    than an instance when several loops may call `.delay()` (tests, scripts): one client is then created
    per running loop.
    """
    return delayed_route_class(
        builder_options=_options(locals()), client=client, is_async=True, poison_policy=poison_policy, history=history
    )


def ScheduledRouteBuilder(  # noqa: N802 - the 0.3 name is a function
    *,
    location_path: str,
    callback_base_url: str | None = None,
    base_url: str | None = None,
    job_create_timeout: float = 10.0,
    pre_create_hook: ScheduledHook | None = None,
    client: scheduler_v1.CloudSchedulerClient | Callable[[], scheduler_v1.CloudSchedulerClient] | None = None,
    poison_policy: PoisonPolicy | None = None,
    history: TaskHistory | None = None,
) -> type[APIRoute]:
    """A route class that gives each endpoint `.scheduler(name=..., schedule=..., ...)`.

    `.scheduler(...)` returns a handle whose `.schedule(**values)` creates the job, updates it in place
    when it differs, or writes nothing when it matches; `.delete()` removes it. Nothing is called when the
    route class is built. `history` (a `TaskHistory`) records every run the routes handle (the worker side).
    """
    return scheduled_route_class(
        builder_options=_options(locals()), client=client, is_async=False, poison_policy=poison_policy, history=history
    )


def AsyncScheduledRouteBuilder(  # noqa: N802 - the 0.3 name is a function
    *,
    location_path: str,
    callback_base_url: str | None = None,
    base_url: str | None = None,
    job_create_timeout: float = 10.0,
    pre_create_hook: ScheduledHook | None = None,
    client: scheduler_v1.CloudSchedulerAsyncClient | Callable[[], scheduler_v1.CloudSchedulerAsyncClient] | None = None,
    poison_policy: PoisonPolicy | None = None,
    history: TaskHistory | None = None,
) -> type[APIRoute]:
    """Like `ScheduledRouteBuilder`, with awaitable `.schedule()` and `.delete()` (one client per loop)."""
    return scheduled_route_class(
        builder_options=_options(locals()), client=client, is_async=True, poison_policy=poison_policy, history=history
    )
