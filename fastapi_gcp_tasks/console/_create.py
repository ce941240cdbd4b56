"""`create_console`: the console of a production app, in one call."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp

from fastapi_gcp_tasks.console._app import console_app, require_auth
from fastapi_gcp_tasks.console._app_backend import AppBackend

if TYPE_CHECKING:
    from fastapi import APIRouter, FastAPI

    from fastapi_gcp_tasks.schedules import Schedules

__all__ = ["create_console"]


def create_console(
    *,
    auth: Callable[..., Any] | None = None,
    local_only: bool = False,
    history: Any = None,
    queues: Sequence[str] = (),
    tasks_client: Any = None,
    schedules: Schedules | None = None,
    outbox: Any = None,
    app: FastAPI | APIRouter | None = None,
    title: str = "Tasks",
    window: dt.timedelta = dt.timedelta(hours=24),
    bucket: dt.timedelta = dt.timedelta(hours=1),
) -> ASGIApp:
    """The web console of an app, as an ASGI app to mount: `app.mount("/tasks-console", create_console(...))`.

    Args:
        auth: a FastAPI dependency run before every request of the console (pages, static files, live
            updates, actions); it refuses by raising `HTTPException(401)` or `HTTPException(403)`. Required
            unless `local_only=True`.
        local_only: serve loopback clients under a loopback Host name only (for a laptop); everyone else 403.
        history: the app's `TaskHistory`: every task and attempt, throughput, dead letters.
        queues: full queue paths (`projects/P/locations/L/queues/Q`), or location paths for every queue of a
            location, shown on the queues page and the only ones actions may touch.
        tasks_client: the Cloud Tasks client (or a factory); by default the process's shared one.
        schedules: the app's `Schedules` registry: the plan against what is deployed, pause, resume, run.
        outbox: an `OutboxStore`, for the outbox backlog on the overview.
        app: the app holding the task routes, to replay dead letters through their current validation.
        title: the console's name in its header.
        window / bucket: the overview chart's span and bar width.

    Raises:
        ConsoleConfigError: no `auth` and not `local_only` (`param="auth"`), or an argument of the wrong kind
            (named by `param`).
    """
    require_auth(auth, local_only)  # before anything else: the one refusal a user must meet first
    backend = AppBackend(
        history=history,
        queues=queues,
        tasks_client=tasks_client,
        schedules=schedules,
        outbox=outbox,
        app=app,
        title=title,
        window=window,
        bucket=bucket,
    )
    return console_app(backend, auth=auth, local_only=local_only, title=title)
