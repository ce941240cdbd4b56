"""The web console of fastapi-gcp-tasks: see every task, every attempt and every failure, and act on them.

`create_console(...)` builds the ASGI app a production app mounts (`app.mount("/tasks-console", ...)`), fed by
task history, the Cloud Tasks API, schedules and the outbox; `console_app(backend, ...)` serves any
`ConsoleBackend` (the emulator serves its own). Install with `pip install 'fastapi-gcp-tasks[console]'`.

Every public name is imported on first use (PEP 562): importing this package loads neither Jinja2 nor
Starlette's templating.
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING

from fastapi_gcp_tasks._lazy import lazy_exports as _lazy_exports

if _TYPE_CHECKING:
    from fastapi_gcp_tasks.console._app import console_app
    from fastapi_gcp_tasks.console._app_backend import AppBackend
    from fastapi_gcp_tasks.console._backend import (
        FEATURES,
        AttemptView,
        ConsoleBackend,
        EndpointStats,
        JobView,
        LetterView,
        Overview,
        QueueView,
        TaskDetail,
        TaskView,
    )
    from fastapi_gcp_tasks.console._create import create_console
    from fastapi_gcp_tasks.console._errors import ConsoleActionError, ConsoleConfigError

_LAZY: dict[str, str] = {
    "AppBackend": "fastapi_gcp_tasks.console._app_backend",
    "AttemptView": "fastapi_gcp_tasks.console._backend",
    "ConsoleActionError": "fastapi_gcp_tasks.console._errors",
    "ConsoleBackend": "fastapi_gcp_tasks.console._backend",
    "ConsoleConfigError": "fastapi_gcp_tasks.console._errors",
    "EndpointStats": "fastapi_gcp_tasks.console._backend",
    "FEATURES": "fastapi_gcp_tasks.console._backend",
    "JobView": "fastapi_gcp_tasks.console._backend",
    "LetterView": "fastapi_gcp_tasks.console._backend",
    "Overview": "fastapi_gcp_tasks.console._backend",
    "QueueView": "fastapi_gcp_tasks.console._backend",
    "TaskDetail": "fastapi_gcp_tasks.console._backend",
    "TaskView": "fastapi_gcp_tasks.console._backend",
    "console_app": "fastapi_gcp_tasks.console._app",
    "create_console": "fastapi_gcp_tasks.console._create",
}
"""Public name -> the module that defines it."""

__getattr__, __dir__ = _lazy_exports(__name__, _LAZY)

__all__ = [
    "FEATURES",
    "AppBackend",
    "AttemptView",
    "ConsoleActionError",
    "ConsoleBackend",
    "ConsoleConfigError",
    "EndpointStats",
    "JobView",
    "LetterView",
    "Overview",
    "QueueView",
    "TaskDetail",
    "TaskView",
    "console_app",
    "create_console",
]
