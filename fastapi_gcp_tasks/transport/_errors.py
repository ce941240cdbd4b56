"""The one error policy: what a failed call to Cloud Tasks or Cloud Scheduler means for the task.

Every path reads the same table. The immediate path raises `SendError(retryable=...)` (or
`TaskAlreadyExistsError`), the request buffer retries a retryable error under its `RetryPolicy` and hands
the rest to its fallback, and the outbox relay retries with backoff up to `max_attempts`, then dead-letters
the row with the cause. So "retry" is always bounded and "final" is never silent: the only difference is
how soon a task that cannot be created is handed to a person.

The rule behind the table: an error is final only when the request itself is wrong, so that sending the
same bytes again can never succeed. When what is wrong is the environment (IAM, a missing queue,
credentials, the service's state or load), the same task may succeed once an operator fixes it, and a
relay that dead-lettered its whole backlog on the first PERMISSION_DENIED after a deploy would turn a
five-minute IAM fix into a replay of every row.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import grpc
from google.api_core import exceptions as core
from google.auth import exceptions as auth_exceptions

from fastapi_gcp_tasks.exception import FastAPIGCPTasksError, SendError, TaskAlreadyExistsError

__all__ = ["HTTP_CODES", "POLICY", "Outcome", "classify", "from_status", "outcome_of", "translate"]


class Outcome(enum.Enum):
    """What a status means for the task that got it."""

    EXISTS = "exists"
    """The task was created already (by an earlier attempt or another sender): count it as created."""
    RETRY = "retry"
    """Sending the same request later may succeed."""
    FINAL = "final"
    """Sending the same request again cannot succeed."""


S = grpc.StatusCode

POLICY: Mapping[grpc.StatusCode, Outcome] = {
    # A named task that exists was created: by an earlier attempt whose answer was lost, or by a duplicate.
    S.ALREADY_EXISTS: Outcome.EXISTS,
    # The request is wrong: resending the same bytes gets the same answer.
    S.INVALID_ARGUMENT: Outcome.FINAL,
    S.OUT_OF_RANGE: Outcome.FINAL,  # schedule_time beyond 30 days, a too-large task
    S.UNIMPLEMENTED: Outcome.FINAL,  # a target or method this service does not serve (App Engine on the emulator)
    # The service is busy, unreachable or failed on its side.
    S.UNAVAILABLE: Outcome.RETRY,
    S.DEADLINE_EXCEEDED: Outcome.RETRY,  # the task may exist: only a named task makes the retry safe
    S.RESOURCE_EXHAUSTED: Outcome.RETRY,  # quota or rate: back off
    S.INTERNAL: Outcome.RETRY,
    S.ABORTED: Outcome.RETRY,  # a concurrency conflict on the service's side
    S.UNKNOWN: Outcome.RETRY,  # what a broken connection often looks like
    S.DATA_LOSS: Outcome.RETRY,  # a server-side fault; the request was fine
    # Disputed: the environment, not the task, is wrong; fixed by an operator, so retried within the path's bound.
    S.CANCELLED: Outcome.RETRY,  # the call was cancelled (shutdown, a client deadline); says nothing of the task
    S.PERMISSION_DENIED: Outcome.RETRY,  # a missing role is granted in minutes (IAM propagates in up to ~7 min)
    S.UNAUTHENTICATED: Outcome.RETRY,  # an expired or unrefreshable token; credentials recover or are fixed
    S.NOT_FOUND: Outcome.RETRY,  # the queue does not exist yet (deployed before it) or was deleted: created by ops
    S.FAILED_PRECONDITION: Outcome.RETRY,  # the queue or project is in the wrong state (disabled, billing)
}
"""Every gRPC status an RPC can fail with, and what it means for the task. `OK` is not an error; a code
outside this table (a newer or garbled one) is treated as `UNKNOWN`. RETRY is always bounded by the path's own
budget (the buffer's `RetryPolicy`, the relay's `max_attempts`, about two hours by default), then handed over."""

HTTP_CODES: Mapping[int, grpc.StatusCode] = {
    400: S.INVALID_ARGUMENT,
    401: S.UNAUTHENTICATED,
    403: S.PERMISSION_DENIED,
    404: S.NOT_FOUND,
    408: S.DEADLINE_EXCEEDED,
    409: S.ABORTED,
    412: S.FAILED_PRECONDITION,
    416: S.OUT_OF_RANGE,
    429: S.RESOURCE_EXHAUSTED,
    499: S.CANCELLED,
    500: S.INTERNAL,
    501: S.UNIMPLEMENTED,
    502: S.UNAVAILABLE,  # a proxy or load balancer in front of the service
    503: S.UNAVAILABLE,
    504: S.DEADLINE_EXCEEDED,
}
"""The gRPC status of an HTTP-only `google.api_core` error (REST transport, proxies), after google.rpc.Code's
HTTP mapping. Another 4xx counts as INVALID_ARGUMENT, another 5xx as INTERNAL, anything else as UNKNOWN."""

_BY_NUMBER: Mapping[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}

_NETWORK_ERRORS = (OSError, auth_exceptions.TransportError, auth_exceptions.RefreshError)
"""Errors below gRPC: no answer from the service (OSError covers ConnectionError and TimeoutError, which is also
asyncio's and concurrent.futures' timeout)."""


def outcome_of(code: grpc.StatusCode | int) -> Outcome:
    """The outcome for a gRPC status (a `grpc.StatusCode` or a google.rpc.Code number)."""
    if isinstance(code, int):
        code = _BY_NUMBER.get(code, S.UNKNOWN)
    return POLICY.get(code, Outcome.RETRY)


def _http_status(status: int | None) -> grpc.StatusCode:
    if status is None:
        return S.UNKNOWN
    if status in HTTP_CODES:
        return HTTP_CODES[status]
    if 400 <= status < 500:
        return S.INVALID_ARGUMENT
    return S.INTERNAL if 500 <= status < 600 else S.UNKNOWN


def classify(exc: BaseException) -> grpc.StatusCode | None:
    """The gRPC status `exc` stands for, or None when it is not an error of the call (a bug: let it raise)."""
    if isinstance(exc, core.RetryError):
        # api_core's retry gave up: on the last error when it kept one, else on its own deadline.
        cause = exc.cause
        return (classify(cause) if cause is not None else None) or S.DEADLINE_EXCEEDED
    if isinstance(exc, core.GoogleAPICallError):
        status = exc.grpc_status_code
        return status if isinstance(status, grpc.StatusCode) else _http_status(exc.code)
    if isinstance(exc, grpc.RpcError):
        code = exc.code() if callable(getattr(exc, "code", None)) else None
        return code if isinstance(code, grpc.StatusCode) else S.UNKNOWN
    if isinstance(exc, _NETWORK_ERRORS):
        return S.UNAVAILABLE
    return None


def _error(code: grpc.StatusCode, message: str, *, what: str, name: str) -> FastAPIGCPTasksError:
    outcome = outcome_of(code)
    if outcome is Outcome.EXISTS and name:
        return TaskAlreadyExistsError(name)
    # ALREADY_EXISTS of something unnamed here (a queue, a job) is the caller's conflict: final.
    return SendError(f"{what} failed: {code.name}: {message}", retryable=outcome is Outcome.RETRY)


def translate(exc: Exception, *, what: str, name: str = "") -> Exception:
    """The exception to raise in place of `exc` (raise it `from exc`); `exc` itself when it is not a call error.

    `name` is the full name of the task being created: with it, ALREADY_EXISTS becomes `TaskAlreadyExistsError`.
    """
    if isinstance(exc, FastAPIGCPTasksError):
        return exc
    code = classify(exc)
    if code is None:
        return exc
    if isinstance(exc, core.GoogleAPICallError) and exc.message:
        message = str(exc.message)
    else:
        message = f"{type(exc).__name__}: {exc}".rstrip(": ")
    return _error(code, message, what=what, name=name)


def from_status(code: int, message: str, task_name: str) -> FastAPIGCPTasksError:
    """The error for one task's `google.rpc.Status` (a `batch_create_tasks` per-request failure)."""
    return _error(_BY_NUMBER.get(code, S.UNKNOWN), message, what="batch_create_tasks", name=task_name)
