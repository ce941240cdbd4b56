"""fastapi-cloud-tasks' `hooks` module: the same names from `fastapi_gcp_tasks.hooks`."""

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
