"""The records of task history and of the dead-letter store: what is written and what queries return.

This module is the contract between the history's writers (the worker's recording route, the senders'
creation hook, the outbox), its storage, and its readers (the query API and the console). It does no I/O.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

__all__ = [
    "AttemptEvent",
    "AttemptRecord",
    "CreatedEvent",
    "DispatchMode",
    "HistoryStats",
    "LetterStatus",
    "Page",
    "StoredLetter",
    "TaskRecord",
    "TaskStatus",
    "TaskSummary",
    "ThroughputPoint",
]

DispatchMode = Literal["immediate", "buffered", "outbox", "replay"]
TaskStatus = Literal["pending", "running", "succeeded", "failed", "retrying", "dead_letter"]
"""`pending`: created, no attempt yet; `retrying`: the last attempt failed and Cloud Tasks will try again;
`failed`: the last attempt failed and no retry will follow (given up); `dead_letter`: acknowledged without
running (poison policy, `max_retries`)."""
LetterStatus = Literal["open", "replayed", "discarded"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CreatedEvent:
    """A task was created on Cloud Tasks (or the emulator), or committed to the outbox, by the sending side."""

    task_name: str
    """The full task name `projects/P/locations/L/queues/Q/tasks/ID`."""
    queue_name: str
    """The short queue id."""
    endpoint: str
    """The route's path template (`/tasks/send-email/{user_id}`), the key the console groups by."""
    method: str
    arguments: Mapping[str, Any] | None
    """The `.delay()` keyword arguments, JSON-compatible and already redacted; None when not stored."""
    eta: dt.datetime | None
    dispatch_mode: DispatchMode
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class AttemptEvent:
    """One delivery of a task (or a Cloud Scheduler run) handled by an authenticated worker route."""

    task_name: str
    """The full task name when the queue is known (`X-CloudTasks-QueueName` + `X-CloudTasks-TaskName` and the
    route builder's location), else the short task id; `job:<job id>@<schedule time>` for a Scheduler run."""
    queue_name: str | None
    endpoint: str
    method: str
    arguments: Mapping[str, Any] | None
    """The validated endpoint arguments, JSON-compatible and already redacted; None when not stored or invalid."""
    retry_count: int
    execution_count: int
    started_at: dt.datetime
    duration: float
    """Seconds from the start of the request to the end of the response."""
    status_code: int
    error_type: str | None = None
    error_message: str | None = None
    trace_id: str | None = None
    outcome: Literal["succeeded", "failed", "dead_letter", "gave_up"] = "succeeded"
    job_name: str | None = None


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One stored attempt, as queries return it."""

    attempt_id: int
    task_name: str
    retry_count: int
    execution_count: int
    started_at: dt.datetime
    duration: float
    status_code: int
    outcome: str
    error_type: str | None
    error_message: str | None
    trace_id: str | None


@dataclass(frozen=True, slots=True)
class TaskSummary:
    """A task in a list: the latest state of one task name."""

    task_name: str
    queue_name: str | None
    endpoint: str
    status: TaskStatus
    created_at: dt.datetime | None
    last_attempt_at: dt.datetime | None
    attempts: int
    last_status_code: int | None
    dispatch_mode: DispatchMode | None


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One task with its arguments and every recorded attempt, oldest first."""

    summary: TaskSummary
    method: str | None
    arguments: Mapping[str, Any] | None
    eta: dt.datetime | None
    attempts: Sequence[AttemptRecord] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a keyset-paginated query; pass `next_cursor` back as `cursor` for the next one."""

    items: Sequence[T]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class ThroughputPoint:
    """Attempts of one endpoint in one time bucket."""

    bucket_start: dt.datetime
    endpoint: str
    succeeded: int
    failed: int


@dataclass(frozen=True, slots=True)
class StoredLetter:
    """A dead letter kept by `DeadLetterStore`, with what replay needs."""

    letter_id: int
    key: str | None
    reason: str
    task_name: str | None
    queue_name: str | None
    endpoint: str
    """The request path as received (concrete, not the template)."""
    method: str
    body: bytes
    headers: Mapping[str, str]
    errors: Sequence[Mapping[str, Any]]
    received_at: dt.datetime
    status: LetterStatus
    replayed_as: str | None
    """The name of the task a replay created."""


@dataclass(frozen=True, slots=True)
class HistoryStats:
    """Counters of one `TaskHistory` since it started (exported as metrics too)."""

    recorded: int
    dropped: int
    """Events thrown away because the queue was full or the database failed past the retry budget."""
    write_errors: int
    queued: int
