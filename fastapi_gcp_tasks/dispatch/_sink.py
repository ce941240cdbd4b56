"""The seam between building a task and sending it.

Every `.delay()` builds one `CreateTaskRequest` (see `_plan.py`) and then hands it over here:

* with no sink active, the route's `TaskSender` creates the task now (immediate mode);
* a `TaskSink` made current with `use_sink()` (the request buffer) or passed as the `sink=` option (the outbox)
  receives a `PreparedTask` instead and decides when and how the task is created.

A sink receives tasks that are already validated and named, so what it stores is exactly what will be sent.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from google.cloud import tasks_v2

from fastapi_gcp_tasks.exception import FastAPIGCPTasksError

__all__ = ["CreationHook", "PreparedTask", "TaskSender", "TaskSink", "creating", "current_sink", "use_sink"]


@runtime_checkable
class TaskSender(Protocol):
    """Creates tasks on Cloud Tasks (or the emulator): the I/O edge of one route builder."""

    def send(self, request: tasks_v2.CreateTaskRequest, *, timeout: float) -> tasks_v2.Task:
        """Create the task from a thread that may block."""
        ...

    async def send_async(self, request: tasks_v2.CreateTaskRequest, *, timeout: float) -> tasks_v2.Task:
        """Create the task from a running event loop."""
        ...

    async def send_batch_async(
        self, requests: Sequence[tasks_v2.CreateTaskRequest], *, timeout: float
    ) -> list[tasks_v2.Task | FastAPIGCPTasksError]:
        """Create named tasks of one queue with as few calls as possible (`batch_create_tasks`, 100 a call).

        Returns one entry per request, in order: the created task, or the error that request got
        (a `TaskAlreadyExistsError` means it had been created already). Raises only for errors that
        affect the whole batch.
        """
        ...


class CreationHook(Protocol):
    """Told when the task of one `.delay()` exists (task history, `receive._record.Creation`)."""

    deferred: bool
    """Set when a sink took the task: the sink, not `.delay()`, then reports its creation."""

    def created(self, task: Any, mode: Any, /) -> None:
        """The task (a `tasks_v2.Task` or its protobuf) exists; `mode` is how it was created."""
        ...


_creating: contextvars.ContextVar[CreationHook | None] = contextvars.ContextVar(
    "fastapi_gcp_tasks_creating", default=None
)


@contextlib.contextmanager
def creating(hook: CreationHook | None) -> Iterator[None]:
    """Within the block (one `.delay()`), a `PreparedTask` made for a sink carries `hook`."""
    token = _creating.set(hook)
    try:
        yield
    finally:
        _creating.reset(token)


def _claim_creation() -> CreationHook | None:
    hook = _creating.get()
    if hook is not None:
        hook.deferred = True
    return hook


@dataclass(frozen=True, slots=True)
class PreparedTask:
    """A validated, fully built task that has not been created yet.

    `request.task.name` is always set when a sink receives it, so the name is final and retries
    of the creation are deduplicated by Cloud Tasks.
    """

    request: tasks_v2.CreateTaskRequest
    timeout: float
    sender: TaskSender
    creation: CreationHook | None = field(default_factory=_claim_creation, compare=False, repr=False)
    """Who to tell once the task exists (task history); taken from the `.delay()` that made the task."""

    def mark_created(self, mode: str) -> None:
        """Tell the task's creation hook, if any, that the sink has created the task (`mode`: how)."""
        if self.creation is not None:
            self.creation.created(self.request._pb.task, mode)

    @property
    def name(self) -> str:
        """The full task name, `projects/.../queues/.../tasks/ID`."""
        return str(self.request._pb.task.name)

    @property
    def queue_path(self) -> str:
        """The queue the task goes to."""
        return str(self.request._pb.parent)

    def placeholder(self) -> tasks_v2.Task:
        """The task as it will be created, returned by `.delay()` when the sending is deferred."""
        # Reading through the raw protobuf skips proto-plus marshalling (several microseconds a call);
        # the wrapper shares the message, exactly as `self.request.task` would.
        task: tasks_v2.Task = tasks_v2.Task.wrap(self.request._pb.task)
        return task


class TaskSink(Protocol):
    """Receives tasks instead of the immediate sender (request buffer, transactional outbox)."""

    def submit(self, task: PreparedTask) -> tasks_v2.Task:
        """Take the task from synchronous code; return what `.delay()` returns."""
        ...

    async def submit_async(self, task: PreparedTask) -> tasks_v2.Task:
        """Take the task from a coroutine; return what `await .delay()` returns."""
        ...


_current_sink: contextvars.ContextVar[TaskSink | None] = contextvars.ContextVar(
    "fastapi_gcp_tasks_current_sink", default=None
)


def current_sink() -> TaskSink | None:
    """The sink made current by `use_sink()` in this context, if any."""
    return _current_sink.get()


@contextlib.contextmanager
def use_sink(sink: TaskSink | None) -> Iterator[None]:
    """Make `sink` receive every `.delay()` in this context (and tasks and threads copying it)."""
    token = _current_sink.set(sink)
    try:
        yield
    finally:
        _current_sink.reset(token)
