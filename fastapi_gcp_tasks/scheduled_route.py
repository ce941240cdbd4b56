"""`ScheduledRouteBuilder`: endpoints whose `.scheduler(...).schedule()` keeps a Cloud Scheduler job."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.routing import APIRoute
from google.cloud import scheduler_v1

from fastapi_gcp_tasks.build._routes import scheduled_route_class
from fastapi_gcp_tasks.delayed_route import _options
from fastapi_gcp_tasks.hooks import ScheduledHook
from fastapi_gcp_tasks.receive._poison import PoisonPolicy

__all__ = ["ScheduledRouteBuilder"]


def ScheduledRouteBuilder(  # noqa: N802 - the 0.3 name is a function
    *,
    location_path: str,
    callback_base_url: str | None = None,
    base_url: str | None = None,
    job_create_timeout: float = 10.0,
    pre_create_hook: ScheduledHook | None = None,
    client: scheduler_v1.CloudSchedulerClient | Callable[[], scheduler_v1.CloudSchedulerClient] | None = None,
    poison_policy: PoisonPolicy | None = None,
) -> type[APIRoute]:
    """A route class that gives each endpoint `.scheduler(name=..., schedule=..., ...)`.

    `.scheduler(...)` returns a handle whose `.schedule(**values)` creates the job, updates it in place
    when it differs, or writes nothing when it matches; `.delete()` removes it. Nothing is called when the
    route class is built.
    """
    return scheduled_route_class(
        builder_options=_options(locals()), client=client, is_async=False, poison_policy=poison_policy
    )
