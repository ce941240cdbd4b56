"""Poison messages: task requests the endpoint can never accept.

A task whose payload fails the endpoint's validation gets a 422, and Cloud Tasks retries it (100
times with the default queue settings) although every attempt will fail the same way. A
`PoisonPolicy` acknowledges such a request with a 2xx instead, after handing it to a dead-letter
sink, so it is kept for inspection and replay rather than retried or silently lost:

```python
router = APIRouter(route_class=poison_route_class(APIRoute, PoisonPolicy(sink=my_sink)))
```

The sink is any callable, sync or async, that takes one `DeadLetter`. If the sink fails, the request
is *not* acknowledged: the original 422 goes back and Cloud Tasks retries, so a dead letter is never
dropped. `max_retries(..., on_give_up=sink)` hands the tasks it gives up to the same kind of sink.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from fastapi import Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from fastapi_gcp_tasks import _worker_headers as h
from fastapi_gcp_tasks.exception import WorkerConfigError

__all__ = ["DeadLetter", "DeadLetterSink", "PoisonPolicy", "log_dead_letter", "poison_route_class"]

logger = logging.getLogger("fastapi_gcp_tasks.dead_letter")

DeadLetterReason = Literal["invalid_request", "max_retries"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A task request that the worker acknowledged without handling it, with everything needed to replay it.

    `headers` are the request's headers, lower-cased, without credentials (`Authorization`, cookies).
    """

    reason: DeadLetterReason
    """`"invalid_request"` (the payload failed validation) or `"max_retries"` (given up by `max_retries`)."""
    method: str
    path: str
    body: bytes
    headers: Mapping[str, str]
    errors: Sequence[Mapping[str, Any]] = ()
    """The validation errors, JSON-compatible; empty for `max_retries`."""
    received_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    @property
    def task_name(self) -> str | None:
        """The short task id (`X-CloudTasks-TaskName`), or None when Cloud Tasks did not send the request."""
        return h.text(self.headers.get(h.TASK_NAME))

    @property
    def queue_name(self) -> str | None:
        """The short queue id (`X-CloudTasks-QueueName`)."""
        return h.text(self.headers.get(h.QUEUE_NAME))

    @property
    def retry_count(self) -> int:
        """`X-CloudTasks-TaskRetryCount`, 0 when absent."""
        return h.integer(self.headers.get(h.RETRY_COUNT)) or 0

    @property
    def execution_count(self) -> int:
        """`X-CloudTasks-TaskExecutionCount`, 0 when absent."""
        return h.integer(self.headers.get(h.EXECUTION_COUNT)) or 0

    @property
    def job_name(self) -> str | None:
        """`X-CloudScheduler-JobName`, when Cloud Scheduler sent the request."""
        return h.text(self.headers.get(h.SCHEDULER_JOB_NAME))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible summary; the body as text when it is UTF-8, else as a list of byte values."""
        try:
            body: Any = self.body.decode()
        except UnicodeDecodeError:
            body = list(self.body)
        return {
            "reason": self.reason,
            "task_name": self.task_name,
            "queue_name": self.queue_name,
            "job_name": self.job_name,
            "retry_count": self.retry_count,
            "execution_count": self.execution_count,
            "method": self.method,
            "path": self.path,
            "errors": list(self.errors),
            "headers": dict(self.headers),
            "body": body,
            "received_at": self.received_at.isoformat(),
        }


class DeadLetterSink(Protocol):
    """Keeps a dead letter: a plain function or a coroutine function taking one `DeadLetter`.

    Sync sinks run in the thread pool, so they may block (write a file, a database row). A sink
    that raises makes the worker answer with an error status, so Cloud Tasks delivers the task again.
    """

    def __call__(self, letter: DeadLetter, /) -> Awaitable[None] | None: ...


def log_dead_letter(letter: DeadLetter) -> None:
    """The default sink: one ERROR record on the `fastapi_gcp_tasks.dead_letter` logger, body included.

    The record's `dead_letter` attribute holds `letter.to_dict()` for structured log handlers.
    Payloads may be large or hold personal data: give a sink of your own in that case.
    """
    summary = letter.to_dict()
    logger.error(
        "dead letter (%s): %s %s task=%s queue=%s retry_count=%d errors=%s body=%r",
        letter.reason,
        letter.method,
        letter.path,
        letter.task_name,
        letter.queue_name,
        letter.retry_count,
        summary["errors"],
        summary["body"],
        extra={"dead_letter": summary},
    )


def _is_async_callable(obj: object) -> bool:
    while isinstance(obj, functools.partial):
        obj = obj.func
    return inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(getattr(obj, "__call__", None))  # noqa: B004


async def deliver(sink: DeadLetterSink, letter: DeadLetter) -> None:
    """Hand `letter` to `sink`, off the event loop when the sink is synchronous."""
    if _is_async_callable(sink):
        await sink(letter)  # type: ignore[misc]
        return
    result = await run_in_threadpool(sink, letter)
    if inspect.isawaitable(result):
        await result


async def letter_from_request(
    request: Request, reason: DeadLetterReason, errors: Sequence[Mapping[str, Any]] = ()
) -> DeadLetter:
    """Build a dead letter from the request being handled (its body is cached by Starlette)."""
    return DeadLetter(
        reason=reason,
        method=request.method,
        path=request.url.path,
        body=await request.body(),
        headers=h.safe_headers(request.headers),
        errors=tuple(errors),
    )


@dataclass(frozen=True, slots=True)
class PoisonPolicy:
    """What to do with a task request that fails the endpoint's request validation.

    * `sink` receives the `DeadLetter` before the request is acknowledged (default: `log_dead_letter`).
    * `status_code` is the 2xx the worker answers with, so Cloud Tasks stops retrying (default 200).
    * `dead_letter_after_retries` lets the first N retries fail with the usual 422 before giving up;
      useful during a rolling deploy, when a new sender may reach an old worker for a while.
    * `only_task_requests`: apply the policy only to requests carrying `X-CloudTasks-TaskName` or
      `X-CloudScheduler` (default), so other callers of the endpoint still get their 422.
      These headers prove nothing about the caller: protect the endpoint with `OIDCVerifier`.
    """

    sink: DeadLetterSink = log_dead_letter
    status_code: int = 200
    dead_letter_after_retries: int = 0
    only_task_requests: bool = True

    def __post_init__(self) -> None:
        if not callable(self.sink):
            raise WorkerConfigError(f"sink must be callable, got {self.sink!r}", param="sink")
        if isinstance(self.status_code, bool) or not isinstance(self.status_code, int):
            raise WorkerConfigError(f"status_code must be an int, got {self.status_code!r}", param="status_code")
        if not 200 <= self.status_code <= 299 or self.status_code in (204, 205):
            raise WorkerConfigError(
                f"status_code must be a 2xx with a body (Cloud Tasks retries anything else), got {self.status_code}",
                param="status_code",
            )
        retries = self.dead_letter_after_retries
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise WorkerConfigError(
                f"dead_letter_after_retries must be an int >= 0, got {retries!r}", param="dead_letter_after_retries"
            )

    def applies_to(self, request: Request) -> bool:
        """Whether a validation failure of `request` should be dead-lettered now rather than answered with 422."""
        headers = request.headers
        if (
            self.only_task_requests
            and h.text(headers.get(h.TASK_NAME)) is None
            and not h.flag(headers.get(h.SCHEDULER))
        ):
            return False
        return (h.integer(headers.get(h.RETRY_COUNT)) or 0) >= self.dead_letter_after_retries

    async def acknowledge(self, request: Request, error: RequestValidationError) -> Response | None:
        """Dead-letter `request` and return the acknowledging response; None when the policy does not apply.

        Raises whatever the sink raises: the caller then lets the original error through.
        """
        if not self.applies_to(request):
            return None
        errors = jsonable_encoder(error.errors())
        letter = await letter_from_request(request, "invalid_request", errors)
        await deliver(self.sink, letter)
        return JSONResponse(
            {"detail": "dead-lettered: the request failed validation", "errors": errors}, self.status_code
        )


def poison_route_class(base: type[APIRoute] = APIRoute, policy: PoisonPolicy | None = None) -> type[APIRoute]:
    """A subclass of `base` whose endpoints apply `policy` (default `PoisonPolicy()`) to validation failures.

    Use it as `APIRouter(route_class=poison_route_class(APIRoute, policy))` or as `route_class_override`
    of a route builder. `base` may itself be a custom route class; its handler runs unchanged.
    """
    if not (isinstance(base, type) and issubclass(base, APIRoute)):
        raise WorkerConfigError(f"base must be a subclass of fastapi.routing.APIRoute, got {base!r}", param="base")
    if policy is None:
        policy = PoisonPolicy()
    elif not isinstance(policy, PoisonPolicy):
        raise WorkerConfigError(f"policy must be a PoisonPolicy, got {policy!r}", param="policy")
    chosen = policy

    class PoisonAwareRoute(base):  # type: ignore[valid-type,misc]
        poison_policy = chosen

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler: Callable[[Request], Coroutine[Any, Any, Response]] = super().get_route_handler()

            async def handle(request: Request) -> Response:
                try:
                    return await handler(request)
                except RequestValidationError as error:
                    try:
                        response = await chosen.acknowledge(request, error)
                    except Exception:
                        logger.exception("dead-letter sink failed; answering 422 so the task is delivered again")
                        raise error from None
                    if response is None:
                        raise
                    return response

            return handle

    PoisonAwareRoute.__name__ = PoisonAwareRoute.__qualname__ = f"PoisonAware{base.__name__}"
    return PoisonAwareRoute
