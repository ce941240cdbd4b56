"""What the console shows and what it can do: the backend protocol and the views its pages render.

The console app (`console_app`) knows nothing about Cloud Tasks, the emulator or SQL: it renders these frozen
views and forwards actions to a `ConsoleBackend`. Two backends implement it: `AppBackend` (a production app:
task history, the Cloud Tasks API, schedules, the outbox) and the emulator's own (its live in-memory state).
Every method is async; a backend that blocks runs its blocking calls in a thread.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from fastapi_gcp_tasks.history._types import Page, ThroughputPoint

__all__ = [
    "FEATURES",
    "AttemptView",
    "ConsoleBackend",
    "EndpointStats",
    "Feature",
    "JobAction",
    "JobView",
    "LetterAction",
    "LetterView",
    "Overview",
    "Page",
    "QueueAction",
    "QueueView",
    "TaskAction",
    "TaskDetail",
    "TaskView",
    "ThroughputPoint",
]

Feature = Literal["history", "dead_letters", "outbox", "schedules", "clock", "replay"]
FEATURES: frozenset[str] = frozenset({"history", "dead_letters", "outbox", "schedules", "clock", "replay"})
"""Every feature a backend may announce; the console hides the pages and buttons of those it lacks."""

QueueAction = Literal["pause", "resume", "purge"]
TaskAction = Literal["run", "delete", "replay"]
LetterAction = Literal["replay", "discard"]
JobAction = Literal["pause", "resume", "run"]


@dataclass(frozen=True, slots=True)
class QueueView:
    """One queue with its state and settings (from Cloud Tasks or the emulator)."""

    name: str
    """The full queue name `projects/P/locations/L/queues/Q`."""
    short_name: str
    state: str
    """`RUNNING`, `PAUSED`, `DISABLED` or `UNKNOWN`."""
    max_dispatches_per_second: float | None
    max_concurrent_dispatches: int | None
    max_attempts: int | None
    tasks: int | None
    """Tasks waiting in the queue when the backend can count them cheaply, else None."""


@dataclass(frozen=True, slots=True)
class TaskView:
    """A task in a list: its latest state."""

    name: str
    """The full task name (or the history's key for a task whose queue is unknown)."""
    short_name: str
    queue: str | None
    """The short queue id."""
    endpoint: str | None
    status: str
    """One of `history.TaskStatus` (`pending`, `running`, `succeeded`, `failed`, `retrying`, `dead_letter`)."""
    created_at: dt.datetime | None
    last_attempt_at: dt.datetime | None
    attempts: int
    last_status_code: int | None


@dataclass(frozen=True, slots=True)
class AttemptView:
    """One delivery of a task."""

    started_at: dt.datetime
    duration_ms: float | None
    status_code: int | None
    outcome: str
    """`succeeded`, `failed`, `dead_letter`, `gave_up`, or the backend's own word (`timeout`, `unreachable`)."""
    error: str | None
    """The exception type and message (`ValueError: bad id`), or None."""
    trace_id: str | None
    body_excerpt: str | None
    """The start of the response body, when the backend saw it (the emulator), else None."""


@dataclass(frozen=True, slots=True)
class TaskDetail:
    """One task with its request and every attempt, oldest first."""

    view: TaskView
    method: str | None
    url: str | None
    arguments: Mapping[str, Any] | None
    """The stored (redacted) endpoint arguments; None when not stored."""
    headers: Mapping[str, str]
    body_excerpt: str | None
    attempts: Sequence[AttemptView]
    actions: frozenset[str]
    """The `TaskAction`s that make sense now (`run` and `delete` for a pending task, `replay` for a failed one)."""


@dataclass(frozen=True, slots=True)
class LetterView:
    """One dead letter."""

    letter_id: str
    reason: str
    endpoint: str
    task_name: str | None
    received_at: dt.datetime
    status: str
    """`open`, `replayed` or `discarded`."""
    errors: Sequence[Mapping[str, Any]]
    replayed_as: str | None


@dataclass(frozen=True, slots=True)
class JobView:
    """One scheduled job: the plan (from the app's routes) against what is deployed."""

    name: str
    short_name: str
    schedule: str | None
    time_zone: str | None
    state: str
    """`ENABLED`, `PAUSED`, `DISABLED`, `NOT_DEPLOYED` or `UNKNOWN`."""
    next_run: dt.datetime | None
    last_attempt_status: str | None
    target: str | None
    planned: bool
    """The app's routes declare this job."""
    deployed: bool
    """The job exists on Cloud Scheduler (or the emulator)."""
    drift: Sequence[str] = field(default_factory=tuple)
    """What differs between the plan and the deployed job (`schedule: */5 * * * * != */10 * * * *`)."""


@dataclass(frozen=True, slots=True)
class EndpointStats:
    """Attempts of one endpoint over the overview's window."""

    endpoint: str
    succeeded: int
    failed: int
    failure_rate: float
    """failed / (succeeded + failed), 0.0 when there were none."""


@dataclass(frozen=True, slots=True)
class Overview:
    """What the overview page shows."""

    queues: Sequence[QueueView]
    endpoints: Sequence[EndpointStats]
    chart: Sequence[ThroughputPoint]
    """Per-endpoint buckets over the window, oldest first; empty without history."""
    dead_letters: int | None
    """Open dead letters; None without a dead-letter store."""
    outbox_backlog: int | None
    """Outbox rows not yet dispatched; None without an outbox."""
    next_runs: Sequence[JobView]


@runtime_checkable
class ConsoleBackend(Protocol):
    """The source of everything the console shows, and the target of its actions.

    Actions return a short message the console flashes; a refused or failed action raises
    `ConsoleActionError(message)` (shown as an error flash, never a 500).
    """

    title: str
    features: frozenset[str]
    """A subset of `FEATURES`."""

    async def change_token(self) -> str:
        """A value that changes whenever what any page shows may have changed (drives live updates)."""
        ...

    async def overview(self) -> Overview: ...

    async def queues(self) -> list[QueueView]: ...

    async def queue_action(self, queue: str, action: Literal["pause", "resume", "purge"]) -> str: ...

    async def tasks(
        self,
        *,
        queue: str | None = None,
        endpoint: str | None = None,
        status: str | None = None,
        search: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page[TaskView]: ...

    async def task(self, name: str) -> TaskDetail | None: ...

    async def task_action(self, name: str, action: Literal["run", "delete", "replay"]) -> str: ...

    async def dead_letters(self, *, cursor: str | None = None, limit: int = 50) -> Page[LetterView]: ...

    async def letter_action(self, letter_id: str, action: Literal["replay", "discard"]) -> str: ...

    async def schedules(self) -> list[JobView]: ...

    async def job_action(self, name: str, action: Literal["pause", "resume", "run"]) -> str: ...

    async def advance_clock(self, seconds: float) -> str:
        """Move the backend's manual clock forward; only called when `clock` is in `features`."""
        ...
