"""Declarative schedules: every cron job of an app in one registry, reconciled with Cloud Scheduler."""

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
