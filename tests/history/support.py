"""Events built with defaults, for the history tests."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi_gcp_tasks.history import AttemptEvent, CreatedEvent

QUEUE = "history-test"
T0 = dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC)


def name(task: str, queue: str = QUEUE) -> str:
    return f"projects/p/locations/us-central1/queues/{queue}/tasks/{task}"


def created(task: str, *, at: dt.datetime = T0, endpoint: str = "/tasks/a", **changes: Any) -> CreatedEvent:
    fields: dict[str, Any] = {
        "task_name": name(task),
        "queue_name": QUEUE,
        "endpoint": endpoint,
        "method": "POST",
        "arguments": {"n": 1},
        "eta": None,
        "dispatch_mode": "immediate",
        "created_at": at,
    }
    return CreatedEvent(**{**fields, **changes})


def attempt(
    task: str, *, at: dt.datetime = T0, status_code: int = 200, endpoint: str = "/tasks/a", **changes: Any
) -> AttemptEvent:
    fields: dict[str, Any] = {
        "task_name": name(task),
        "queue_name": QUEUE,
        "endpoint": endpoint,
        "method": "POST",
        "arguments": {"n": 1},
        "retry_count": 0,
        "execution_count": 0,
        "started_at": at,
        "duration": 0.005,
        "status_code": status_code,
    }
    return AttemptEvent(**{**fields, **changes})
