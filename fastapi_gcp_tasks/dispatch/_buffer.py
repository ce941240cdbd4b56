"""Request-scoped buffering: a request's tasks are created only once the request has succeeded.

`TaskBufferMiddleware` makes a fresh `TaskBuffer` current for every HTTP request. Each `.delay()` inside
the request (async and sync endpoints, dependencies, background tasks) is validated as usual, named, and
kept; it returns the task as it will be created, name included. When the app has finished with the
request (after yield-dependency teardown and background tasks), the kept tasks are

* discarded, and the number logged, if the app raised or the status matches `discard_on` (5xx by default);
* otherwise created, concurrently and bounded, with `batch_create_tasks` where one queue has several,
  retried with backoff on retryable errors, and finally handed to `fallback` if they still failed.

`task_buffer()` gives the same behaviour to scripts and jobs as a `with` / `async with` block, and
`require_buffer` is a sink for builders whose tasks must never be sent outside a buffer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, MutableMapping
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Literal

from google.cloud import tasks_v2

from fastapi_gcp_tasks.dispatch._buffer_asgi import ResponseWatch
from fastapi_gcp_tasks.dispatch._buffer_metrics import BufferCollector
from fastapi_gcp_tasks.dispatch._buffer_send import (
    BufferFallback,
    BufferStats,
    FlushReport,
    LostTask,
    RetryPolicy,
    SendConfig,
    hand_over,
    hand_over_async,
    send_all,
    send_all_async,
)
from fastapi_gcp_tasks.dispatch._sink import PreparedTask, TaskSink, current_sink, use_sink
from fastapi_gcp_tasks.exception import BufferRequiredError, TaskArgumentError

__all__ = [
    "BufferCollector",
    "BufferFallback",
    "BufferStats",
    "DiscardOn",
    "Flush",
    "FlushReport",
    "LostTask",
    "RetryPolicy",
    "TaskBuffer",
    "TaskBufferMiddleware",
    "require_buffer",
    "task_buffer",
]

logger = logging.getLogger("fastapi_gcp_tasks.dispatch._buffer")

Flush = Literal["after_response", "before_response"]
"""When the middleware creates a successful request's tasks: once the client has the whole response
(adds no latency), or just before the last body chunk (the client waits; needed where CPU is throttled
after the response, as on Cloud Run without "CPU always allocated")."""

DiscardOn = Literal["server_error", "error"] | Callable[[int], bool]
"""Which response statuses drop a request's tasks: `"server_error"` (5xx), `"error"` (4xx and 5xx), or a
predicate given the status. A request that raises always drops them."""

Scope = MutableMapping[str, Any]
Receive = Callable[[], Any]
Send = Callable[[MutableMapping[str, Any]], Any]
ASGIApp = Callable[[Scope, Receive, Send], Any]

_FLUSH_MODES = ("after_response", "before_response")
_NOTHING = FlushReport()


def _config(
    *,
    retry: RetryPolicy | None,
    fallback: BufferFallback | None,
    max_concurrency: int,
    batch_from: int,
    stats: BufferStats | None,
) -> SendConfig:
    return SendConfig(
        retry=RetryPolicy() if retry is None else retry,
        fallback=fallback,
        max_concurrency=max_concurrency,
        batch_from=batch_from,
        stats=BufferStats() if stats is None else stats,
        logger=logger,
    )


class TaskBuffer:
    """A `TaskSink` that keeps tasks until `flush()` / `flush_async()` or `discard()`.

    Use it through `task_buffer()` or `TaskBufferMiddleware`. Safe to fill from several threads. Once
    it has been flushed or discarded it is closed: a `.delay()` that still reaches it (a thread that
    outlived its request, say) is sent at once, with a warning, rather than kept where nobody flushes.
    """

    def __init__(self, config: SendConfig) -> None:
        self._config = config
        self._tasks: list[PreparedTask] = []
        self._lock = threading.Lock()
        self._closed = False
        self._scope: AbstractContextManager[None] | None = None
        self.report: FlushReport | None = None
        """What the last flush did; None until then."""

    @property
    def stats(self) -> BufferStats:
        """The counters this buffer adds to."""
        return self._config.stats

    @property
    def tasks(self) -> tuple[PreparedTask, ...]:
        """The tasks kept so far, in the order they were delayed."""
        with self._lock:
            return tuple(self._tasks)

    def _keep(self, task: PreparedTask) -> bool:
        with self._lock:
            if self._closed:
                return False
            self._tasks.append(task)
        self._config.stats.add(kept=1)
        return True

    def submit(self, task: PreparedTask) -> tasks_v2.Task:
        """Keep `task` (from synchronous code); returns the task as it will be created."""
        if self._keep(task):
            return task.placeholder()
        self._config.logger.warning("buffer already closed; creating task %s now", task.name)
        return task.sender.send(task.request, timeout=task.timeout)

    async def submit_async(self, task: PreparedTask) -> tasks_v2.Task:
        """Keep `task` (from a coroutine); returns the task as it will be created."""
        if self._keep(task):
            return task.placeholder()
        self._config.logger.warning("buffer already closed; creating task %s now", task.name)
        return await task.sender.send_async(task.request, timeout=task.timeout)

    def _take(self) -> list[PreparedTask]:
        with self._lock:
            self._closed = True
            tasks, self._tasks = self._tasks, []
        return tasks

    def discard(self, reason: str) -> int:
        """Close the buffer and drop what it kept, logging how many and their names; returns the count."""
        tasks = self._take()
        if tasks:
            self._config.stats.add(discarded=len(tasks))
            self._config.logger.warning("dropped %d buffered task(s): %s", len(tasks), reason)
            for task in tasks:
                self._config.logger.debug("dropped task %s", task.name)
        return len(tasks)

    async def flush_async(self) -> FlushReport:
        """Close the buffer and create what it kept from the running loop; failures go to the fallback."""
        tasks = self._take()
        if not tasks:
            self.report = _NOTHING
            return _NOTHING
        report = await send_all_async(tasks, self._config)
        await hand_over_async(report.failed, self._config)
        self.report = report
        return report

    def flush(self) -> FlushReport:
        """Close the buffer and create what it kept, blocking; failures go to the fallback."""
        tasks = self._take()
        if not tasks:
            self.report = _NOTHING
            return _NOTHING
        report = send_all(tasks, self._config)
        hand_over(report.failed, self._config)
        self.report = report
        return report

    def _enter(self) -> None:
        if self._scope is not None or self._closed:
            raise RuntimeError("a TaskBuffer can be entered only once")
        self._scope = use_sink(self)
        self._scope.__enter__()

    def _exit(self) -> None:
        if self._scope is not None:
            self._scope.__exit__(None, None, None)

    def __enter__(self) -> TaskBuffer:
        self._enter()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._exit()
        if exc_type is not None:
            self.discard(f"the block raised {exc_type.__name__}")
        else:
            self.flush()

    async def __aenter__(self) -> TaskBuffer:
        self._enter()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._exit()
        if exc_type is not None:
            self.discard(f"the block raised {exc_type.__name__}")
        else:
            await self.flush_async()


def task_buffer(
    *,
    retry: RetryPolicy | None = None,
    fallback: BufferFallback | None = None,
    max_concurrency: int = 16,
    batch_from: int = 3,
    stats: BufferStats | None = None,
) -> TaskBuffer:
    """A buffer for a `with` or `async with` block: every `.delay()` inside is kept and created at the end.

    If the block raises, the tasks are dropped (and counted). `async with` sends from the running loop,
    batching per queue; `with` blocks while it sends, one `create_task` per task in a thread pool.
    The buffer's `report` tells what the flush did.
    """
    return TaskBuffer(
        _config(retry=retry, fallback=fallback, max_concurrency=max_concurrency, batch_from=batch_from, stats=stats)
    )


class _RequireBuffer:
    """Forwards to the sink current in this context, and refuses when there is none."""

    def _sink(self) -> TaskSink:
        sink = current_sink()
        if sink is None or sink is self:
            raise BufferRequiredError(
                "this task may only be delayed inside a request handled by TaskBufferMiddleware or a "
                "task_buffer() block; it was not sent"
            )
        return sink

    def submit(self, task: PreparedTask) -> tasks_v2.Task:
        return self._sink().submit(task)

    async def submit_async(self, task: PreparedTask) -> tasks_v2.Task:
        return await self._sink().submit_async(task)

    def __repr__(self) -> str:
        return "require_buffer"


require_buffer: TaskSink = _RequireBuffer()
"""Pass as `sink=require_buffer` to a route builder (or `.options()`) whose tasks must never be sent
outside a buffer: `.delay()` then raises `BufferRequiredError` where no buffer (or other sink) is current,
instead of creating the task at once."""


def _discard_predicate(discard_on: DiscardOn) -> Callable[[int], bool]:
    if discard_on == "server_error":
        return lambda status: status >= 500
    if discard_on == "error":
        return lambda status: status >= 400
    if callable(discard_on):
        return discard_on
    raise TaskArgumentError(
        f"discard_on={discard_on!r} must be 'server_error', 'error' or a callable taking the status",
        param="discard_on",
    )


class TaskBufferMiddleware:
    """Pure ASGI middleware that buffers every HTTP request's tasks; see the module docs.

    Websocket and lifespan scopes pass through untouched (a `.delay()` there is not buffered).
    `stats` (created if not given) counts what every request's buffer did.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        flush: Flush = "after_response",
        discard_on: DiscardOn = "server_error",
        retry: RetryPolicy | None = None,
        fallback: BufferFallback | None = None,
        max_concurrency: int = 16,
        batch_from: int = 3,
        stats: BufferStats | None = None,
    ) -> None:
        if flush not in _FLUSH_MODES:
            raise TaskArgumentError(f"flush={flush!r} must be one of {_FLUSH_MODES}", param="flush")
        self.app = app
        self._before_response = flush == "before_response"
        self._discard = _discard_predicate(discard_on)
        self._config = _config(
            retry=retry, fallback=fallback, max_concurrency=max_concurrency, batch_from=batch_from, stats=stats
        )

    @property
    def stats(self) -> BufferStats:
        """The counters shared by every request's buffer."""
        return self._config.stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        buffer = TaskBuffer(self._config)
        watch = ResponseWatch(send, hold_last=self._before_response)
        try:
            with use_sink(buffer):
                await self.app(scope, receive, watch.send)
        except BaseException as exc:
            buffer.discard(f"{scope.get('method', '')} {scope.get('path', '')} raised {type(exc).__name__}")
            raise
        try:
            status = watch.status
            if status is None:
                buffer.discard(f"{scope.get('method', '')} {scope.get('path', '')} sent no response")
            elif self._discard(status):
                buffer.discard(f"{scope.get('method', '')} {scope.get('path', '')} answered {status}")
            else:
                await buffer.flush_async()
        finally:
            await watch.release()
