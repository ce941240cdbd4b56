"""Translation of `google.api_core` errors into this library's exceptions, at the transport boundary."""

from __future__ import annotations

from google.api_core import exceptions as core

from fastapi_gcp_tasks.exception import SendError, TaskAlreadyExistsError

__all__ = ["RETRYABLE", "translate"]

RETRYABLE: tuple[type[Exception], ...] = (
    core.ServiceUnavailable,
    core.DeadlineExceeded,
    core.TooManyRequests,
    core.ResourceExhausted,
    core.InternalServerError,
    core.Aborted,
    core.Unknown,
    core.RetryError,
)


def translate(exc: Exception, *, what: str, name: str = "") -> Exception:
    """The exception to raise in place of `exc` (raise it `from exc`)."""
    if isinstance(exc, TaskAlreadyExistsError):
        return exc
    if isinstance(exc, core.AlreadyExists) and name:
        return TaskAlreadyExistsError(name)
    if isinstance(exc, (core.GoogleAPIError, core.RetryError)):
        message = getattr(exc, "message", None) or str(exc)
        return SendError(f"{what} failed: {type(exc).__name__}: {message}", retryable=isinstance(exc, RETRYABLE))
    return exc
