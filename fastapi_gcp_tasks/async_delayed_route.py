"""`AsyncDelayedRouteBuilder`: endpoints whose `await .delay()` creates a Cloud Tasks task."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.routing import APIRoute
from google.cloud import tasks_v2

from fastapi_gcp_tasks.build._routes import delayed_route_class
from fastapi_gcp_tasks.delayed_route import _options
from fastapi_gcp_tasks.dispatch._sink import TaskSink
from fastapi_gcp_tasks.hooks import DelayedTaskHook
from fastapi_gcp_tasks.receive._poison import PoisonPolicy

__all__ = ["AsyncDelayedRouteBuilder"]


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
) -> type[APIRoute]:
    """Like `DelayedRouteBuilder`, with an awaitable `.delay()` over `CloudTasksAsyncClient`.

    A `grpc.aio` client belongs to the event loop that created it, so pass a factory (or nothing) rather
    than an instance when several loops may call `.delay()` (tests, scripts): one client is then created
    per running loop.
    """
    return delayed_route_class(
        builder_options=_options(locals()), client=client, is_async=True, poison_policy=poison_policy
    )
