"""`AsyncScheduledRouteBuilder`: `await endpoint.scheduler(...).schedule()` over the async client."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.routing import APIRoute
from google.cloud import scheduler_v1

from fastapi_gcp_tasks.build._routes import scheduled_route_class
from fastapi_gcp_tasks.delayed_route import _options
from fastapi_gcp_tasks.hooks import ScheduledHook
from fastapi_gcp_tasks.receive._poison import PoisonPolicy

__all__ = ["AsyncScheduledRouteBuilder"]


def AsyncScheduledRouteBuilder(  # noqa: N802 - the 0.3 name is a function
    *,
    location_path: str,
    callback_base_url: str | None = None,
    base_url: str | None = None,
    job_create_timeout: float = 10.0,
    pre_create_hook: ScheduledHook | None = None,
    client: scheduler_v1.CloudSchedulerAsyncClient | Callable[[], scheduler_v1.CloudSchedulerAsyncClient] | None = None,
    poison_policy: PoisonPolicy | None = None,
) -> type[APIRoute]:
    """Like `ScheduledRouteBuilder`, with awaitable `.schedule()` and `.delete()` (one client per loop)."""
    return scheduled_route_class(
        builder_options=_options(locals()), client=client, is_async=True, poison_policy=poison_policy
    )
