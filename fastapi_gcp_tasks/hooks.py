"""Hooks that adjust a task's or a job's request before it is sent (the 0.3 module): re-exports `build._hooks`."""

from fastapi_gcp_tasks.build._hooks import (
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

__all__ = [
    "DelayedTaskHook",
    "ScheduledHook",
    "chained_hook",
    "deadline_delayed_hook",
    "deadline_scheduled_hook",
    "noop_hook",
    "oauth_delayed_hook",
    "oauth_scheduled_hook",
    "oidc_delayed_hook",
    "oidc_scheduled_hook",
]
