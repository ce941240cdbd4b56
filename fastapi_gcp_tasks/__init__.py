"""Strongly typed background tasks and cron jobs for FastAPI on Google Cloud Tasks and Cloud Scheduler.

Every public name is imported on first use (PEP 562), so that `import fastapi_gcp_tasks` and the command
line's `--help` do not load FastAPI, pydantic, gRPC and Google's clients until something needs them.
"""

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

if _TYPE_CHECKING:
    from fastapi_gcp_tasks.async_delayed_route import AsyncDelayedRouteBuilder
    from fastapi_gcp_tasks.async_scheduled_route import AsyncScheduledRouteBuilder
    from fastapi_gcp_tasks.buffering import RetryPolicy, TaskBufferMiddleware, require_buffer, task_buffer
    from fastapi_gcp_tasks.build._naming import hashed_task_id
    from fastapi_gcp_tasks.build._reach import check_app
    from fastapi_gcp_tasks.decorators import task_default_options
    from fastapi_gcp_tasks.delayed_route import DelayedRouteBuilder
    from fastapi_gcp_tasks.dependencies import CloudSchedulerHeaders, CloudTasksHeaders, max_retries
    from fastapi_gcp_tasks.dispatch._sink import PreparedTask, TaskSender, TaskSink, use_sink
    from fastapi_gcp_tasks.exception import (
        BadMethodError,
        BufferRequiredError,
        FastAPIGCPTasksError,
        MissingParamError,
        RouteDefinitionError,
        SendError,
        TaskAlreadyExistsError,
        TaskArgumentError,
        TaskLimitError,
        UnknownParamError,
        UnrepresentableValueError,
        WorkerConfigError,
        WrongTypeError,
    )
    from fastapi_gcp_tasks.hooks import (
        DelayedTaskHook,
        ScheduledHook,
        chained_hook,
        deadline_delayed_hook,
        deadline_scheduled_hook,
        noop_hook,
        oauth_delayed_hook,
        oauth_scheduled_hook,
        oidc_delayed_hook,
        oidc_scheduled_hook,
    )
    from fastapi_gcp_tasks.oidc import OIDCClaims, OIDCVerifier
    from fastapi_gcp_tasks.poison import DeadLetter, PoisonPolicy, poison_route_class
    from fastapi_gcp_tasks.protocols import (
        AsyncDelayedTask,
        AsyncDelayedTaskWithArgs,
        AsyncDelayOptions,
        AsyncScheduledTask,
        AsyncScheduledTaskWithArgs,
        AsyncSchedulerOptions,
        DelayedTask,
        DelayedTaskWithArgs,
        DelayOptions,
        ScheduledTask,
        ScheduledTaskWithArgs,
        SchedulerOptions,
        TaskDefaultOptions,
        as_async_delayed_task,
        as_async_scheduled_task,
        as_delayed_task,
        as_scheduled_task,
    )
    from fastapi_gcp_tasks.receive import PrivateEndpoint, WorkerRoute
    from fastapi_gcp_tasks.receive._tracing import TraceContextMiddleware
    from fastapi_gcp_tasks.scheduled_route import ScheduledRouteBuilder
    from fastapi_gcp_tasks.schedules import Schedules
    from fastapi_gcp_tasks.utils import (
        async_emulator_client,
        async_scheduler_emulator_client,
        emulator_client,
        ensure_queue,
        ensure_queue_async,
        location_path,
        queue_path,
        scheduler_emulator_client,
    )

_LAZY: dict[str, str] = {
    "AsyncDelayOptions": "fastapi_gcp_tasks.protocols",
    "AsyncDelayedRouteBuilder": "fastapi_gcp_tasks.async_delayed_route",
    "AsyncDelayedTask": "fastapi_gcp_tasks.protocols",
    "AsyncDelayedTaskWithArgs": "fastapi_gcp_tasks.protocols",
    "AsyncScheduledRouteBuilder": "fastapi_gcp_tasks.async_scheduled_route",
    "AsyncScheduledTask": "fastapi_gcp_tasks.protocols",
    "AsyncScheduledTaskWithArgs": "fastapi_gcp_tasks.protocols",
    "AsyncSchedulerOptions": "fastapi_gcp_tasks.protocols",
    "BadMethodError": "fastapi_gcp_tasks.exception",
    "BufferRequiredError": "fastapi_gcp_tasks.exception",
    "CloudSchedulerHeaders": "fastapi_gcp_tasks.dependencies",
    "CloudTasksHeaders": "fastapi_gcp_tasks.dependencies",
    "DeadLetter": "fastapi_gcp_tasks.poison",
    "DelayOptions": "fastapi_gcp_tasks.protocols",
    "DelayedRouteBuilder": "fastapi_gcp_tasks.delayed_route",
    "DelayedTask": "fastapi_gcp_tasks.protocols",
    "DelayedTaskHook": "fastapi_gcp_tasks.hooks",
    "DelayedTaskWithArgs": "fastapi_gcp_tasks.protocols",
    "FastAPIGCPTasksError": "fastapi_gcp_tasks.exception",
    "MissingParamError": "fastapi_gcp_tasks.exception",
    "OIDCClaims": "fastapi_gcp_tasks.oidc",
    "OIDCVerifier": "fastapi_gcp_tasks.oidc",
    "PoisonPolicy": "fastapi_gcp_tasks.poison",
    "PreparedTask": "fastapi_gcp_tasks.dispatch._sink",
    "PrivateEndpoint": "fastapi_gcp_tasks.receive",
    "RetryPolicy": "fastapi_gcp_tasks.buffering",
    "RouteDefinitionError": "fastapi_gcp_tasks.exception",
    "ScheduledHook": "fastapi_gcp_tasks.hooks",
    "ScheduledRouteBuilder": "fastapi_gcp_tasks.scheduled_route",
    "ScheduledTask": "fastapi_gcp_tasks.protocols",
    "ScheduledTaskWithArgs": "fastapi_gcp_tasks.protocols",
    "SchedulerOptions": "fastapi_gcp_tasks.protocols",
    "Schedules": "fastapi_gcp_tasks.schedules",
    "SendError": "fastapi_gcp_tasks.exception",
    "TaskAlreadyExistsError": "fastapi_gcp_tasks.exception",
    "TaskArgumentError": "fastapi_gcp_tasks.exception",
    "TaskBufferMiddleware": "fastapi_gcp_tasks.buffering",
    "TaskDefaultOptions": "fastapi_gcp_tasks.protocols",
    "TaskLimitError": "fastapi_gcp_tasks.exception",
    "TaskSender": "fastapi_gcp_tasks.dispatch._sink",
    "TaskSink": "fastapi_gcp_tasks.dispatch._sink",
    "TraceContextMiddleware": "fastapi_gcp_tasks.receive._tracing",
    "UnknownParamError": "fastapi_gcp_tasks.exception",
    "UnrepresentableValueError": "fastapi_gcp_tasks.exception",
    "WorkerConfigError": "fastapi_gcp_tasks.exception",
    "WorkerRoute": "fastapi_gcp_tasks.receive",
    "WrongTypeError": "fastapi_gcp_tasks.exception",
    "as_async_delayed_task": "fastapi_gcp_tasks.protocols",
    "as_async_scheduled_task": "fastapi_gcp_tasks.protocols",
    "as_delayed_task": "fastapi_gcp_tasks.protocols",
    "as_scheduled_task": "fastapi_gcp_tasks.protocols",
    "async_emulator_client": "fastapi_gcp_tasks.utils",
    "async_scheduler_emulator_client": "fastapi_gcp_tasks.utils",
    "chained_hook": "fastapi_gcp_tasks.hooks",
    "check_app": "fastapi_gcp_tasks.build._reach",
    "deadline_delayed_hook": "fastapi_gcp_tasks.hooks",
    "deadline_scheduled_hook": "fastapi_gcp_tasks.hooks",
    "emulator_client": "fastapi_gcp_tasks.utils",
    "ensure_queue": "fastapi_gcp_tasks.utils",
    "ensure_queue_async": "fastapi_gcp_tasks.utils",
    "hashed_task_id": "fastapi_gcp_tasks.build._naming",
    "location_path": "fastapi_gcp_tasks.utils",
    "max_retries": "fastapi_gcp_tasks.dependencies",
    "noop_hook": "fastapi_gcp_tasks.hooks",
    "oauth_delayed_hook": "fastapi_gcp_tasks.hooks",
    "oauth_scheduled_hook": "fastapi_gcp_tasks.hooks",
    "oidc_delayed_hook": "fastapi_gcp_tasks.hooks",
    "oidc_scheduled_hook": "fastapi_gcp_tasks.hooks",
    "poison_route_class": "fastapi_gcp_tasks.poison",
    "queue_path": "fastapi_gcp_tasks.utils",
    "require_buffer": "fastapi_gcp_tasks.buffering",
    "scheduler_emulator_client": "fastapi_gcp_tasks.utils",
    "task_buffer": "fastapi_gcp_tasks.buffering",
    "task_default_options": "fastapi_gcp_tasks.decorators",
    "use_sink": "fastapi_gcp_tasks.dispatch._sink",
}
"""Public name -> the module that defines it."""


def __getattr__(name: str) -> _Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__version__ = "1.0.0.dev0"

__all__ = [
    "AsyncDelayOptions",
    "AsyncDelayedRouteBuilder",
    "AsyncDelayedTask",
    "AsyncDelayedTaskWithArgs",
    "AsyncScheduledRouteBuilder",
    "AsyncScheduledTask",
    "AsyncScheduledTaskWithArgs",
    "AsyncSchedulerOptions",
    "BadMethodError",
    "BufferRequiredError",
    "CloudSchedulerHeaders",
    "CloudTasksHeaders",
    "DeadLetter",
    "DelayOptions",
    "DelayedRouteBuilder",
    "DelayedTask",
    "DelayedTaskHook",
    "DelayedTaskWithArgs",
    "FastAPIGCPTasksError",
    "MissingParamError",
    "OIDCClaims",
    "OIDCVerifier",
    "PoisonPolicy",
    "PreparedTask",
    "PrivateEndpoint",
    "RetryPolicy",
    "RouteDefinitionError",
    "ScheduledHook",
    "ScheduledRouteBuilder",
    "ScheduledTask",
    "ScheduledTaskWithArgs",
    "SchedulerOptions",
    "Schedules",
    "SendError",
    "TaskAlreadyExistsError",
    "TaskArgumentError",
    "TaskBufferMiddleware",
    "TaskDefaultOptions",
    "TaskLimitError",
    "TaskSender",
    "TaskSink",
    "TraceContextMiddleware",
    "UnknownParamError",
    "UnrepresentableValueError",
    "WorkerConfigError",
    "WorkerRoute",
    "WrongTypeError",
    "as_async_delayed_task",
    "as_async_scheduled_task",
    "as_delayed_task",
    "as_scheduled_task",
    "async_emulator_client",
    "async_scheduler_emulator_client",
    "chained_hook",
    "check_app",
    "deadline_delayed_hook",
    "deadline_scheduled_hook",
    "emulator_client",
    "ensure_queue",
    "ensure_queue_async",
    "hashed_task_id",
    "location_path",
    "max_retries",
    "noop_hook",
    "oauth_delayed_hook",
    "oauth_scheduled_hook",
    "oidc_delayed_hook",
    "oidc_scheduled_hook",
    "poison_route_class",
    "queue_path",
    "require_buffer",
    "scheduler_emulator_client",
    "task_buffer",
    "task_default_options",
    "use_sink",
]
