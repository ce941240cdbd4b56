"""Every error this library raises.

```
FastAPIGCPTasksError
├── RouteDefinitionError      a route the builder cannot represent faithfully (raised at registration)
│   └── BadMethodError        no HTTP method, several, or one Cloud Tasks cannot send
├── TaskArgumentError         a `.delay()`, `.schedule()` or `.options()` call that cannot be sent (at the call site)
│   ├── MissingParamError     a required endpoint parameter was not given
│   ├── UnknownParamError     a keyword the endpoint does not declare (also a TypeError)
│   ├── WrongTypeError        a value the endpoint's own validation rejects
│   ├── UnrepresentableValueError  a valid value that cannot travel in its part of the request
│   └── TaskLimitError        something Cloud Tasks / Cloud Scheduler would refuse (size, eta, names, cron, ...)
├── TaskAlreadyExistsError    a task with this name exists or existed recently (duplicate `task_id`)
├── SendError                 the service refused or could not be reached while creating a task or job
├── WorkerConfigError         a worker-side dependency or policy given a value it cannot honour (raised when created)
├── BufferRequiredError       a `.delay()` that must be buffered ran outside any request buffer
├── OutboxError               (fastapi_gcp_tasks.outbox) the outbox cannot be used as configured
│   └── OutboxSchemaError     the outbox tables are missing: run `fastapi-gcp-tasks outbox migrate`
├── ConsoleConfigError        (fastapi_gcp_tasks.console) a console without `auth` or `local_only`, or a bad argument
├── ConsoleActionError        (fastapi_gcp_tasks.console) a console action failed: shown as a message, never a 500
└── RelayDatabaseError        (fastapi_gcp_tasks.outbox) the relay gave up reaching its database
```

`TaskArgumentError` subclasses `ValueError`, and `MissingParamError` / `WrongTypeError` keep the
`ValueError` base they had in fastapi-gcp-tasks 0.3, so existing `except ValueError` blocks still work.
"""

from __future__ import annotations

from typing import Any

from google.api_core.exceptions import AlreadyExists

__all__ = [
    "BadMethodError",
    "BufferRequiredError",
    "FastAPIGCPTasksError",
    "MissingParamError",
    "RouteDefinitionError",
    "SendError",
    "TaskAlreadyExistsError",
    "TaskArgumentError",
    "TaskLimitError",
    "UnknownParamError",
    "UnrepresentableValueError",
    "WorkerConfigError",
    "WrongTypeError",
]


class FastAPIGCPTasksError(Exception):
    """Base class of every error raised by fastapi-gcp-tasks."""


class RouteDefinitionError(FastAPIGCPTasksError, TypeError):
    """The route cannot be turned into a task faithfully; raised when the route is registered."""


class BadMethodError(RouteDefinitionError):
    """The route has no HTTP method, several of them, or one that Cloud Tasks cannot send."""


class TaskArgumentError(FastAPIGCPTasksError, ValueError):
    """A call that cannot become a valid task; raised at the call site, before any network call.

    `param` names the endpoint parameter (or option) at fault, when there is one.
    """

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class MissingParamError(TaskArgumentError):
    """A required endpoint parameter was not given."""

    def __init__(self, message: str | None = None, *, param: str, **_: Any) -> None:
        super().__init__(message or f"field required: {param}", param=param)


class UnknownParamError(TaskArgumentError, TypeError):
    """A keyword argument that the endpoint does not declare."""


class WrongTypeError(TaskArgumentError):
    """A value that the endpoint's own validation would reject."""

    def __init__(self, message: str | None = None, *, field: str, type: Any = None, **_: Any) -> None:
        super().__init__(message or f"Expected {field} to be of type {type}", param=field)


class UnrepresentableValueError(TaskArgumentError):
    """A value that is valid for the endpoint but cannot travel in its part of an HTTP request.

    For example a path parameter containing `/` on a route without a `:path` convertor, or a
    header holding a list of several values (Cloud Tasks sends each header once).
    """


class TaskLimitError(TaskArgumentError):
    """The task or job would be refused by Cloud Tasks or Cloud Scheduler (size, eta, name, cron, ...)."""


class TaskAlreadyExistsError(FastAPIGCPTasksError, AlreadyExists):
    """A task with this name exists, or existed recently (Cloud Tasks keeps names for up to 24 hours).

    Raised when `.delay()` is given a `task_id` that was already used: catch it to deduplicate. It is also
    a `google.api_core.exceptions.AlreadyExists`, which is what fastapi-gcp-tasks 0.3 let through.
    """

    def __init__(self, task_name: str) -> None:
        AlreadyExists.__init__(self, f"task {task_name!r} already exists or existed recently")  # type: ignore[no-untyped-call]
        self.task_name = task_name


class SendError(FastAPIGCPTasksError):
    """Cloud Tasks or Cloud Scheduler refused the request or could not be reached.

    The original `google.api_core` exception is the `__cause__`; `retryable` says whether trying
    again later may succeed.
    """

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class WorkerConfigError(FastAPIGCPTasksError, ValueError):
    """A worker-side dependency or policy was given a value it cannot honour.

    Raised where `max_retries`, `OIDCVerifier` or `PoisonPolicy` is created, before any request arrives.

    `param` names the argument at fault.
    """

    def __init__(self, message: str, *, param: str) -> None:
        super().__init__(message)
        self.param = param


class BufferRequiredError(FastAPIGCPTasksError, RuntimeError):
    """A `.delay()` routed through `require_buffer` ran where no request buffer or other sink was active.

    Raised at the call site, before anything is sent, for tasks that must only be created once the
    request (or `task_buffer()` block) that produced them has succeeded.
    """
