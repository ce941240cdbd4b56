"""Request-scoped buffering: a request's tasks are created only once the request has succeeded.

`TaskBufferMiddleware` makes a fresh `TaskBuffer` current for every HTTP request. Each `.delay()` inside
the request (async and sync endpoints, dependencies, background tasks) is validated as usual, named, and
kept; it returns the task as it will be created, name included. When the app has finished with the
request (after yield-dependency teardown and background tasks), the kept tasks are

* discarded, with the reason and their names logged, if the app raised (also where a middleware inside
  the buffer swallowed the exception, when it can be seen), answered again after its response, did not
  finish its response, or answered a status `discard_on` matches (5xx by default);
* otherwise created, concurrently and bounded, with `batch_create_tasks` where one queue has several,
  retried with backoff on retryable errors, and finally handed to `fallback` if they still failed.

Every kept task ends in exactly one outcome, counted in `BufferStats` (see `_buffer_send.py`). A flush
runs in a task of its own that the middleware tracks: a cancelled request does not cut it short, and
the lifespan shutdown gives the flushes still running `shutdown_timeout` seconds, then reports the rest.

`task_buffer()` gives the same behaviour to scripts and jobs as a `with` / `async with` block (inside
another buffer, it joins it), and `require_buffer` is a sink for builders whose tasks must never be sent
outside a buffer.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Literal

from google.cloud import tasks_v2

from fastapi_gcp_tasks.build._reach import bind_scope_app
from fastapi_gcp_tasks.dispatch._buffer_asgi import (
    ASGIApp,
    InFlight,
    Message,
    Receive,
    RequestSeen,
    ResponseWatch,
    Scope,
    Send,
    current_request,
    watch_exception_layer,
)
from fastapi_gcp_tasks.dispatch._buffer_metrics import BufferCollector
from fastapi_gcp_tasks.dispatch._buffer_send import (
    BufferFallback,
    BufferStats,
    FlushReport,
    Ledger,
    LostTask,
    RetryPolicy,
    SendConfig,
    flush_tasks,
    flush_tasks_async,
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


class _State(enum.Enum):
    OPEN = "open"
    FLUSHED = "flushed"
    DISCARDED = "discarded"


class TaskBuffer:
    """A `TaskSink` that keeps tasks until `flush()` / `flush_async()` or `discard()`.

    Use it through `task_buffer()` or `TaskBufferMiddleware`. Safe to fill from several threads. Once
    it has been flushed or discarded it is closed. A `.delay()` that still reaches it (a thread or an
    asyncio task that outlived its request) is dropped, with a warning naming it, if the buffer was
    discarded; if it was flushed, the task is sent at once, with a warning, as an immediate `.delay()`
    would (the caller gets its errors).

    A buffer entered while another one is current joins it: its tasks go to the enclosing buffer and
    are created (or dropped) with that buffer's; if the inner block raises, its own tasks are dropped.
    """

    def __init__(self, config: SendConfig) -> None:
        self._config = config
        self._tasks: list[PreparedTask] = []
        self._lock = threading.Lock()
        self._state = _State.OPEN
        self._closed_because = ""
        self._scope: AbstractContextManager[None] | None = None
        self._entered = False
        self._parent: TaskBuffer | None = None
        self._joined: list[PreparedTask] = []
        self._ledger: Ledger | None = None
        self.report: FlushReport | None = None
        """What the flush did; None until then, and for a block that joined an enclosing buffer."""

    @property
    def stats(self) -> BufferStats:
        """The counters this buffer adds to."""
        return self._config.stats

    @property
    def tasks(self) -> tuple[PreparedTask, ...]:
        """The tasks kept so far, in the order they were delayed."""
        with self._lock:
            return tuple(self._tasks if self._parent is None else self._joined)

    def _keep(self, task: PreparedTask) -> _State:
        with self._lock:
            state = self._state
            if state is _State.OPEN:
                self._tasks.append(task)
        if state is _State.OPEN:
            self._config.count(kept=1)
        elif state is _State.DISCARDED:
            self._config.count(kept=1, discarded=1)
            self._config.logger.warning(
                "task %s reached a buffer that was already discarded (%s); dropped", task.name, self._closed_because
            )
        return state

    def _join(self, task: PreparedTask) -> bool:
        if self._parent is None:  # the usual case, read without the lock: set before any task arrives
            return False
        with self._lock:
            if self._parent is None:
                return False
            self._joined.append(task)
        return True

    def submit(self, task: PreparedTask) -> tasks_v2.Task:
        """Keep `task` (from synchronous code); returns the task as it will be created."""
        if self._join(task):
            assert self._parent is not None
            return self._parent.submit(task)
        if self._keep(task) is not _State.FLUSHED:
            return task.placeholder()
        self._config.logger.warning("buffer already flushed; creating task %s now", task.name)
        return task.sender.send(task.request, timeout=task.timeout)

    async def submit_async(self, task: PreparedTask) -> tasks_v2.Task:
        """Keep `task` (from a coroutine); returns the task as it will be created."""
        if self._join(task):
            assert self._parent is not None
            return await self._parent.submit_async(task)
        if self._keep(task) is not _State.FLUSHED:
            return task.placeholder()
        self._config.logger.warning("buffer already flushed; creating task %s now", task.name)
        return await task.sender.send_async(task.request, timeout=task.timeout)

    def _take(self, state: _State, why: str = "") -> list[PreparedTask]:
        with self._lock:
            if self._state is _State.OPEN:
                self._state = state
                self._closed_because = why
            tasks, self._tasks = self._tasks, []
        return tasks

    def _drop(self, tasks: Sequence[PreparedTask], reason: str) -> None:
        if tasks:
            self._config.count(discarded=len(tasks))
            names = ", ".join(task.name for task in tasks)
            self._config.logger.warning("dropped %d buffered task(s) (%s): %s", len(tasks), reason, names)

    def discard(self, reason: str) -> int:
        """Close the buffer and drop what it kept, logging the reason and their names; returns the count."""
        tasks = self._take(_State.DISCARDED, reason)
        self._drop(tasks, reason)
        return len(tasks)

    def _withdraw(self, tasks: Sequence[PreparedTask], reason: str) -> None:
        """Drop `tasks` (a nested block's) if they are still here; what is gone was decided with the rest."""
        gone = {id(task) for task in tasks}
        if self._parent is not None:
            with self._lock:
                self._joined = [task for task in self._joined if id(task) not in gone]
            self._parent._withdraw(tasks, reason)
            return
        with self._lock:
            dropped = [task for task in self._tasks if id(task) in gone]
            self._tasks = [task for task in self._tasks if id(task) not in gone]
        self._drop(dropped, reason)

    def abandon(self, why: str) -> int:
        """Report as lost, by name, every task of a flush that will not finish; returns how many."""
        ledger = self._ledger
        return 0 if ledger is None else ledger.abandon(why)

    async def flush_async(self) -> FlushReport:
        """Close the buffer and create what it kept from the running loop; failures go to the fallback."""
        tasks = self._take(_State.FLUSHED)
        if not tasks:
            self.report = _NOTHING
            return _NOTHING
        self._ledger = Ledger(tasks, self._config)
        self.report = await flush_tasks_async(self._ledger)
        return self.report

    def flush(self) -> FlushReport:
        """Close the buffer and create what it kept, blocking; failures go to the fallback."""
        tasks = self._take(_State.FLUSHED)
        if not tasks:
            self.report = _NOTHING
            return _NOTHING
        self._ledger = Ledger(tasks, self._config)
        self.report = flush_tasks(self._ledger)
        return self.report

    def _enter(self) -> None:
        if self._entered or self._state is not _State.OPEN:
            raise RuntimeError("a TaskBuffer can be entered only once")
        self._entered = True
        outer = current_sink()
        if isinstance(outer, TaskBuffer):
            self._parent = outer
        self._scope = use_sink(self)
        self._scope.__enter__()

    def _exit(self, exc_type: type[BaseException] | None) -> bool:
        """Leave the block; returns whether the buffer still has to flush (or discard) by itself."""
        if self._scope is not None:
            self._scope.__exit__(None, None, None)
        if self._parent is None:
            return True
        if exc_type is not None:
            reason = f"a nested task_buffer() block raised {exc_type.__name__}"
            with self._lock:
                parent, self._parent = self._parent, None
                joined, self._joined = self._joined, []
                self._state = _State.DISCARDED
                self._closed_because = reason
            parent._withdraw(joined, reason)
        return False

    def __enter__(self) -> TaskBuffer:
        self._enter()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._exit(exc_type):
            return
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
        if not self._exit(exc_type):
            return
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

    Add it last (`app.add_middleware(TaskBufferMiddleware, ...)` after every other), so that it is the
    outermost of your middleware and sees the status the client gets and every exception. Websocket
    scopes pass through untouched (a `.delay()` there is not buffered); on the lifespan shutdown it
    gives the flushes still running up to `shutdown_timeout` seconds before the app's own shutdown
    runs, then reports the tasks of the rest as lost, by name. `stats` (created if not given) counts
    what every request's buffer did.
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
        shutdown_timeout: float = 5.0,
    ) -> None:
        if flush not in _FLUSH_MODES:
            raise TaskArgumentError(f"flush={flush!r} must be one of {_FLUSH_MODES}", param="flush")
        if not isinstance(shutdown_timeout, int | float) or isinstance(shutdown_timeout, bool) or shutdown_timeout < 0:
            raise TaskArgumentError(
                f"shutdown_timeout={shutdown_timeout!r} must be a number of seconds >= 0", param="shutdown_timeout"
            )
        self.app = app
        self._before_response = flush == "before_response"
        self._discard = _discard_predicate(discard_on)
        self._config = _config(
            retry=retry, fallback=fallback, max_concurrency=max_concurrency, batch_from=batch_from, stats=stats
        )
        self._shutdown_timeout = float(shutdown_timeout)
        self._in_flight = InFlight(logger)
        self._warned_twice = False
        if not watch_exception_layer(app):
            logger.debug("TaskBufferMiddleware cannot follow the middleware inside it to the app's exception layer")

    @property
    def stats(self) -> BufferStats:
        """The counters shared by every request's buffer."""
        return self._config.stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        bind_scope_app(scope, self.app)  # task routes' callback URLs get their prefix (lifespan startup too)
        kind = scope["type"]
        if kind == "lifespan":
            await self.app(scope, self._lifespan_receive(receive), send)
            return
        if kind != "http":
            await self.app(scope, receive, send)
            return
        outer = current_request.get()
        if outer is not None:
            self._step_aside(outer)
            await self.app(scope, receive, send)
            return
        where = f"{scope.get('method', '')} {scope.get('path', '')}"
        buffer = TaskBuffer(self._config)
        watch = ResponseWatch(send, receive, hold_last=self._before_response)
        seen = RequestSeen(owner=self, watch=watch)
        token = current_request.set(seen)
        try:
            with use_sink(buffer):
                await self.app(scope, watch.receive, watch.send)
        except BaseException as exc:
            what = "was cancelled" if isinstance(exc, asyncio.CancelledError) else f"raised {type(exc).__name__}"
            buffer.discard(f"{where} {what}")
            raise
        finally:
            current_request.reset(token)
        reason, release = self._verdict(where, watch, seen)
        try:
            if reason is not None:
                buffer.discard(reason)
            elif buffer.tasks:
                await self._flush(buffer, where)
            else:
                await buffer.flush_async()
        finally:
            if release:
                await watch.release()

    def _verdict(self, where: str, watch: ResponseWatch, seen: RequestSeen) -> tuple[str | None, bool]:
        """Why the request's tasks are dropped (None: they are created), and whether a held last message
        may still go out."""
        if seen.raised is not None:
            return (
                f"{where} raised {type(seen.raised).__name__}, which a middleware inside TaskBufferMiddleware "
                "caught; add TaskBufferMiddleware last, outside every middleware that handles errors",
                not seen.raised_after_response,
            )
        if watch.again:
            return f"{where} answered again after its response: a layer inside the buffer answered an error", False
        status = watch.status
        if status is None:
            return f"{where} sent no response", True
        if not watch.complete and not watch.disconnected:
            return f"{where} returned before finishing its response", True
        try:
            drop = self._discard(status)
        except Exception as exc:
            logger.error("discard_on raised for %s answering %d; dropping its tasks", where, status, exc_info=exc)
            return f"discard_on raised {type(exc).__name__} for {where} answering {status}", True
        return (f"{where} answered {status}" if drop else None), True

    async def _flush(self, buffer: TaskBuffer, where: str) -> None:
        # The flush runs in a task of its own: if this call is cancelled (a graceful shutdown timing out,
        # a server cancelling on disconnect), the flush goes on and the lifespan shutdown finishes it.
        flushing = self._in_flight.start(buffer)
        try:
            await asyncio.shield(flushing)
        except asyncio.CancelledError:
            if not flushing.done():
                self._in_flight.detach(flushing)
                logger.info("%s was cancelled while its tasks were being created; the flush goes on", where)
            raise

    def _lifespan_receive(self, receive: Receive) -> Receive:
        async def shutdown_after_flushes() -> Message:
            message = await receive()
            if message.get("type") == "lifespan.shutdown":
                # Before the app's own shutdown, which may close the clients the flushes need.
                await self._in_flight.drain(self._shutdown_timeout)
            return message

        return shutdown_after_flushes

    def _step_aside(self, outer: RequestSeen) -> None:
        if outer.owner is not self and not self._warned_twice:
            self._warned_twice = True
            logger.warning(
                "TaskBufferMiddleware is registered twice on the path of a request; the inner one steps aside "
                "and the outer one buffers the request's tasks: remove one of them"
            )
