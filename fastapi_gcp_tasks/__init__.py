"""Strongly typed background tasks and cron jobs for FastAPI on Google Cloud Tasks and Cloud Scheduler."""

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
