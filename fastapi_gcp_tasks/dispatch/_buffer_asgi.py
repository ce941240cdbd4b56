"""The ASGI side of the request buffer: watching a response on its way out, watching the app's exception
layer, and keeping track of flushes that outlive their request.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.middleware.exceptions import ExceptionMiddleware

Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]
Receive = Callable[[], Awaitable[Message]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = [
    "ASGIApp",
    "InFlight",
    "Message",
    "Receive",
    "RequestSeen",
    "ResponseWatch",
    "Scope",
    "Send",
    "current_request",
    "watch_exception_layer",
]

_MAX_LAYERS = 64
"""Middleware followed at most when looking for the app's exception layer (a cycle cannot make it loop)."""

_CANCEL_GRACE = 1.0
"""Seconds a flush cancelled at the end of the shutdown bound gets to record what it held."""


class ResponseWatch:
    """Wraps an ASGI `send` and `receive` to learn how the app answered.

    Records the status, whether the response was completed, whether the app answered again after that
    (a second `http.response.start`, or anything after the last message: a layer inside the buffer
    answering for an error that came after the response), and whether the client went away. With
    `hold_last` it keeps the message that completes the response until `release()`, so that work can
    happen before the client sees the end.
    """

    __slots__ = ("_hold_last", "_receive", "_send", "_trailers", "again", "complete", "disconnected", "held", "status")

    def __init__(self, send: Send, receive: Receive, *, hold_last: bool) -> None:
        self._send = send
        self._receive = receive
        self._hold_last = hold_last
        self._trailers = False
        self.status: int | None = None
        self.held: Message | None = None
        self.complete = False
        self.again = False
        self.disconnected = False

    async def receive(self) -> Message:
        message = await self._receive()
        if message.get("type") == "http.disconnect":
            self.disconnected = True
        return message

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.status is not None:
                self.again = True
            else:
                self.status = int(message["status"])
                self._trailers = bool(message.get("trailers", False))
        elif self.complete and kind.startswith("http.response."):
            self.again = True
        elif self._completes(kind, message):
            self.complete = True
            if self._hold_last:
                self.held = message
                return
        try:
            await self._send(message)
        except OSError:
            # ASGI 2.4 servers raise here once the client has gone (uvicorn's ClientDisconnected).
            self.disconnected = True
            raise

    def _completes(self, kind: str, message: Message) -> bool:
        if kind == "http.response.body":
            return not message.get("more_body", False) and not self._trailers
        if kind == "http.response.trailers":
            return not message.get("more_trailers", False)
        return kind in ("http.response.pathsend", "http.response.zerocopysend") and not message.get("more_body", False)

    async def release(self) -> None:
        """Send the held message, if any."""
        held, self.held = self.held, None
        if held is not None:
            await self._send(held)


@dataclass(slots=True)
class RequestSeen:
    """What the middleware learns about the request it is handling from deeper in the app."""

    owner: object
    """The TaskBufferMiddleware handling the request (a second one inside it steps aside)."""
    watch: ResponseWatch
    raised: BaseException | None = None
    """The first exception that escaped the app's exception layer."""
    raised_after_response: bool = False
    """Whether the response was complete when that exception escaped (a failed commit after the answer)."""


current_request: contextvars.ContextVar[RequestSeen | None] = contextvars.ContextVar(
    "fastapi_gcp_tasks_buffered_request", default=None
)


class _ExceptionProbe:
    """Wraps the app's exception layer: an exception escaping it is recorded for the request, then re-raised.

    An exception that gets that far was not turned into a response by an exception handler; if the
    buffer middleware does not see it come out of the app, a middleware between the two swallowed it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except BaseException as exc:
            seen = current_request.get()
            if seen is not None and seen.raised is None and scope.get("type") == "http":
                seen.raised = exc
                seen.raised_after_response = seen.watch.complete
            raise


def watch_exception_layer(app: object) -> bool:
    """Put a probe around the exception layer (Starlette's `ExceptionMiddleware`) under `app`, when other
    middleware sit between the two; returns whether the layer is watched (or needs no watching).

    Only middleware that keep the next app in `.app` (Starlette's and most pure ASGI middleware) can be
    followed; behind any other, exceptions swallowed there cannot be told apart from success.
    """
    parent: object | None = None
    layer = app
    for _ in range(_MAX_LAYERS):
        if isinstance(layer, _ExceptionProbe):
            return True
        if isinstance(layer, ExceptionMiddleware):
            if parent is not None:
                parent.app = _ExceptionProbe(layer)  # type: ignore[attr-defined]
            return True
        inner = getattr(layer, "app", None)
        if inner is None or not callable(inner):
            return False
        parent, layer = layer, inner
    return False


class Flushing(Protocol):
    """What `InFlight` needs of a buffer being flushed."""

    async def flush_async(self) -> object: ...

    def abandon(self, why: str) -> int: ...


class InFlight:
    """The flushes of one middleware that have not finished, so that a shutdown can finish or report them.

    A flush runs in a task of its own: when the request's ASGI call is cancelled (a server's graceful
    shutdown timing out, a client gone), the flush goes on; the lifespan shutdown then gives every
    flush still running up to `timeout` seconds, cancels the rest and reports their tasks by name.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._running: dict[asyncio.Task[object], Flushing] = {}
        self._detached: set[asyncio.Task[object]] = set()
        self._lock = threading.Lock()  # one middleware may serve several event loops (test clients)

    def start(self, buffer: Flushing) -> asyncio.Task[object]:
        task: asyncio.Task[object] = asyncio.ensure_future(buffer.flush_async())
        with self._lock:
            self._running[task] = buffer
        task.add_done_callback(self._forget)
        return task

    def detach(self, task: asyncio.Task[object]) -> None:
        """The request that started `task` is gone: nobody else will see how it ends."""
        with self._lock:
            if task in self._running:
                self._detached.add(task)

    def _forget(self, task: asyncio.Task[object]) -> None:
        with self._lock:
            self._running.pop(task, None)
            detached = task in self._detached
            self._detached.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None and detached:
            self._logger.error("a buffered flush whose request was gone failed", exc_info=error)

    def _here(self) -> list[tuple[asyncio.Task[object], Flushing]]:
        loop = asyncio.get_running_loop()
        with self._lock:
            running = list(self._running.items())
        return [(task, buffer) for task, buffer in running if task.get_loop() is loop and not task.done()]

    async def drain(self, timeout: float) -> None:
        """Let the running flushes finish within `timeout` seconds; cancel and report what is left."""
        running = self._here()
        if not running:
            return
        self._logger.info("shutdown: finishing %d buffered flush(es), for up to %gs", len(running), timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while running and (left := deadline - loop.time()) > 0:
            await asyncio.wait([task for task, _ in running], timeout=left)
            running = self._here()
        if not running:
            return
        why = f"the server shut down before its flush finished (shutdown_timeout={timeout:g}s)"
        for task, buffer in running:
            # Reported first, so that each task is named with this reason; the cancelled flush then finds
            # nothing left to report.
            buffer.abandon(why)
            task.cancel()
        await asyncio.wait([task for task, _ in running], timeout=_CANCEL_GRACE)
