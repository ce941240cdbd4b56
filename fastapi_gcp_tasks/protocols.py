"""Static types for task endpoints (the 0.3 module): re-exports `build._typing`."""

from fastapi_gcp_tasks.build._typing import (
    AsyncDelayedTask,
    AsyncDelayOptions,
    AsyncScheduledTask,
    AsyncSchedulerOptions,
    DelayedTask,
    DelayOptions,
    ScheduledTask,
    SchedulerOptions,
    TaskDefaultOptions,
    as_async_delayed_task,
    as_async_scheduled_task,
    as_delayed_task,
    as_scheduled_task,
)

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
