"""Task and job names: the id grammar Cloud Tasks accepts and names that do not slow it down.

Cloud Tasks keeps a task name for up to 24 hours after the task is gone, so a name doubles as a
deduplication key. Sequential names (counters, timestamps) concentrate load on one index range and make
the service slower: `hashed_task_id` spreads them while staying deterministic.
"""

from __future__ import annotations

import hashlib
import secrets

from fastapi_gcp_tasks._limits import ID_PATTERN
from fastapi_gcp_tasks.exception import TaskLimitError

__all__ = ["ID_PATTERN", "check_id", "hashed_task_id", "location_path", "new_task_id", "queue_path", "task_name"]


def location_path(*, project: str, location: str, **_ignored: str) -> str:
    """`projects/{project}/locations/{location}`, the parent of Cloud Scheduler jobs and of queues.

    Other keywords are ignored, as fastapi-cloud-tasks did, so `location_path(**parse_queue_path(path))` works.
    """
    return f"projects/{project}/locations/{location}"


def queue_path(*, project: str, location: str, queue: str) -> str:
    """`projects/{project}/locations/{location}/queues/{queue}`."""
    return f"projects/{project}/locations/{location}/queues/{queue}"


def check_id(value: str, *, param: str, what: str = "task id") -> str:
    """Return `value` if it is a valid task or job id, else raise `TaskLimitError` naming `param`."""
    if not isinstance(value, str) or ID_PATTERN.fullmatch(value) is None:
        raise TaskLimitError(
            f"{param}={value!r} is not a valid {what}: use 1 to 500 characters from [A-Za-z0-9_-]",
            param=param,
        )
    return value


def hashed_task_id(key: str) -> str:
    """A deterministic, evenly spread task id for `key` (sha256, 64 hex characters).

    The same key always gives the same id, so it still deduplicates; unlike `key` itself it has no
    sequential prefix.
    """
    return hashlib.sha256(key.encode()).hexdigest()


def new_task_id() -> str:
    """A random task id, for tasks that must be named before they are sent (buffer, outbox)."""
    return hashed_task_id(secrets.token_hex(16))


def task_name(queue_path: str, task_id: str) -> str:
    """The full task name in `queue_path`."""
    return f"{queue_path}/tasks/{task_id}"
