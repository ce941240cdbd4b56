"""Dead letters: the task requests a worker acknowledges without handling them, kept for inspection and replay.

A letter is built from the request as received (body and headers, credentials redacted), handed to a
sink (any callable, sync or async), and written once per task even when Cloud Tasks delivers the task
again because the acknowledgement was lost (`LetterLedger`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import inspect
import logging
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import quote, urlencode

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from fastapi_gcp_tasks.receive import _headers as h

__all__ = [
    "DeadLetter",
    "DeadLetterReason",
    "DeadLetterSink",
    "LetterLedger",
    "deliver",
    "letter_from_request",
    "log_dead_letter",
]

logger = logging.getLogger("fastapi_gcp_tasks.dead_letter")

DeadLetterReason = Literal["invalid_request", "max_retries", "handler_error"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A task request that the worker acknowledged without handling it, with everything needed to replay it.

    `headers` are the request's headers, lower-cased; the value of every header that may carry a
    credential (`Authorization`, `X-Forwarded-Authorization`, `X-Goog-IAP-JWT-Assertion`, cookies,
    signatures, API keys) is replaced by `"[redacted]"`.
    """

    reason: DeadLetterReason
    """`"invalid_request"` (the payload failed validation), `"max_retries"` (given up by `max_retries`) or
    `"handler_error"` (the handler kept raising, under `PoisonPolicy(handler_errors_after=...)`)."""
    method: str
    path: str
    """The request's path as received, with its query string when it had one (replay needs both)."""
    body: bytes
    headers: Mapping[str, str]
    errors: Sequence[Mapping[str, Any]] = ()
    """The validation errors, JSON-compatible; the exception for `handler_error`; empty for `max_retries`."""
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

    @property
    def key(self) -> str | None:
        """The same for every delivery of one task, different for any other; None for other callers.

        `"<queue>/<task>"` for Cloud Tasks, `"<job>@<schedule time>"` for one run of a Cloud Scheduler job.
        A sink that stores letters should keep this unique (an upsert), so that a task whose
        acknowledgement was lost, and which Cloud Tasks therefore delivers again, is stored once.
        """
        if self.task_name is not None:
            return f"{self.queue_name or ''}/{self.task_name}"
        if self.job_name is not None:
            return f"{self.job_name}@{h.text(self.headers.get(h.SCHEDULER_SCHEDULE_TIME)) or ''}"
        return None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible summary; the body as text when it is UTF-8, else as a list of byte values."""
        try:
            body: Any = self.body.decode()
        except UnicodeDecodeError:
            body = list(self.body)
        return {
            "reason": self.reason,
            "key": self.key,
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
    """Build a dead letter from the request being handled, without reading its stream a second time."""
    body, headers = await _raw_body(request)
    query = request.url.query
    path = f"{request.url.path}?{query}" if query else request.url.path
    return DeadLetter(reason=reason, method=request.method, path=path, body=body, headers=headers, errors=tuple(errors))


async def _raw_body(request: Request) -> tuple[bytes, dict[str, str]]:
    """The request's body and its safe headers.

    Worker routes keep the raw body before FastAPI parses it (`WorkerRoute`); on a plain `APIRoute`,
    FastAPI consumes the stream when it parses a form, and the parsed form is written out again.
    """
    headers = h.safe_headers(request.headers)
    body = getattr(request, "_body", None)  # what Starlette has read, kept by `Request.body()`
    if isinstance(body, bytes):
        return body, headers
    form = getattr(request, "_form", None)
    if form is not None:
        body, headers["content-type"] = await _encode_form(form)
        return body, headers
    try:
        return await request.body(), headers
    except RuntimeError:  # someone else consumed the stream: say so in the letter rather than fail to write it
        logger.warning("the body of %s %s was consumed before it could be kept", request.method, request.url.path)
        return b"", {**headers, "x-fastapi-gcp-tasks-body": "not kept"}


async def _encode_form(form: FormData) -> tuple[bytes, str]:
    """A parsed form as a body again: URL-encoded when it holds only text, multipart with its files otherwise."""
    items = form.multi_items()
    if all(isinstance(value, str) for _, value in items):
        return urlencode(items).encode(), "application/x-www-form-urlencoded"
    boundary = secrets.token_hex(16)
    chunks: list[bytes] = []
    for name, value in items:
        field_name = quote(name, safe=" ")
        if isinstance(value, str):
            head, data = f'Content-Disposition: form-data; name="{field_name}"', value.encode()
        else:
            await value.seek(0)
            data = await value.read()
            filename = quote(value.filename or "", safe=" ")
            content_type = value.content_type or "application/octet-stream"
            head = (
                f'Content-Disposition: form-data; name="{field_name}"; filename="{filename}"\r\n'
                f"Content-Type: {content_type}"
            )
        chunks.append(f"--{boundary}\r\n{head}\r\n\r\n".encode() + data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


class LetterLedger:
    """Hands each task's dead letter to a sink once per process, however often the task is delivered.

    When the worker's answer to a given-up task is lost (it timed out, the connection broke), Cloud
    Tasks delivers the task again, possibly while the first letter is still being written. A delivery
    of a task whose letter is being written waits for that write; one whose letter was written is
    acknowledged without calling the sink again. If the write failed, the next delivery writes it.
    Across processes, only the sink can tell: key its storage on `DeadLetter.key`.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._written: OrderedDict[str, None] = OrderedDict()
        self._writing: dict[str, asyncio.Future[None]] = {}

    async def deliver(self, sink: DeadLetterSink, letter: DeadLetter) -> bool:
        """Hand `letter` to `sink` unless its task's letter was already written; True when the sink ran."""
        key = letter.key
        if key is None:
            await deliver(sink, letter)
            return True
        loop = asyncio.get_running_loop()
        while True:
            if key in self._written:
                return False
            writing = self._writing.get(key)
            if writing is None or writing.get_loop() is not loop:
                break
            await asyncio.shield(writing)  # another delivery of this task is writing its letter
        done = self._writing[key] = loop.create_future()
        try:
            await deliver(sink, letter)
            self._written[key] = None
            if len(self._written) > self._capacity:
                self._written.popitem(last=False)
        finally:
            self._writing.pop(key, None)
            done.set_result(None)
        return True
