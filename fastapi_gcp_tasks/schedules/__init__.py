"""Declarative schedules: every cron job of an app in one registry, reconciled with Cloud Scheduler.

Names are imported on first use (PEP 562), so that `fastapi-gcp-tasks schedules --help` loads neither
Google's clients nor FastAPI.
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING

from fastapi_gcp_tasks._lazy import lazy_exports as _lazy_exports

if _TYPE_CHECKING:
    from fastapi_gcp_tasks.schedules._schedules import (
        Action,
        FieldChange,
        JobChange,
        Plan,
        ScheduleEntry,
        Schedules,
    )

__all__ = [
    "Action",
    "FieldChange",
    "JobChange",
    "Plan",
    "ScheduleEntry",
    "Schedules",
]

_LAZY = dict.fromkeys(__all__, "fastapi_gcp_tasks.schedules._schedules")
"""Public name -> the module that defines it."""

__getattr__, __dir__ = _lazy_exports(__name__, _LAZY)
