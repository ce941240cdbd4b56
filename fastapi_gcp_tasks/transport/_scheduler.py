"""The two runners of Cloud Scheduler flows: the only code that calls a Cloud Scheduler client.

`run_flow` calls the sync client, `run_flow_async` awaits the async one; everything else (what to
read, what a `NotFound` means, what to write next) is decided once, by the flow (see `_flows`). An
error the flow lets through is translated with `translate`, described by the call that failed.

Every call is bounded: it gets `timeout=` seconds, retries included, never the client's default of
600 s. The official clients are called with `retry=None` and the runner retries itself, with the
client's own policy (the reads and `delete_job`, on UNAVAILABLE and DEADLINE_EXCEEDED, backing off
from 0.1 s by 1.3x), but only while the call's time lasts; then the last error is raised. Inside
`deadline(seconds)` every call also ends by that deadline, so a command (the CLI's `--timeout`)
bounds all its calls together.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import time
from collections.abc import Iterator
from typing import Any, TypeVar

import grpc
from google.api_core import exceptions as core
from google.cloud import scheduler_v1

from fastapi_gcp_tasks.transport._errors import classify, translate
from fastapi_gcp_tasks.transport._flows import Flow, SchedulerCall

__all__ = ["RETRIED_RPCS", "deadline", "run_flow", "run_flow_async"]

T = TypeVar("T")

RETRIED_RPCS = frozenset({"list_jobs", "get_job", "delete_job"})
"""The calls the official client itself retries (the others are not idempotent, or not marked so)."""
_RETRIED_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
_INITIAL_BACKOFF = 0.1
_BACKOFF_MULTIPLIER = 1.3
_MAX_BACKOFF = 60.0

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("fastapi_gcp_tasks_deadline", default=None)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Make every Cloud Scheduler call run inside end within `seconds` from now, retries included.

    Nested deadlines keep the earliest. A call started after the deadline fails at once with
    DEADLINE_EXCEEDED (translated into a `SendError` like any other).
    """
    end = time.monotonic() + seconds
    outer = _DEADLINE.get()
    token = _DEADLINE.set(end if outer is None else min(end, outer))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


class _Attempts:
    """The time of one call and its retries: the `timeout=` of each attempt, and whether to retry after an error."""

    def __init__(self, call: SchedulerCall, timeout: float) -> None:
        self.call = call
        start = time.monotonic()
        outer = _DEADLINE.get()
        self.end = start + timeout if outer is None else min(start + timeout, outer)
        # the first attempt gets `timeout` itself unless a deadline comes sooner
        self.first: float | None = timeout if outer is None else min(timeout, outer - start)
        self.backoff = _INITIAL_BACKOFF

    def timeout(self) -> float:
        """The `timeout=` of the next attempt; raises DEADLINE_EXCEEDED when no time is left."""
        first, self.first = self.first, None
        remaining = first if first is not None else self.end - time.monotonic()
        if remaining <= 0:
            raise core.DeadlineExceeded(  # type: ignore[no-untyped-call]
                f"no time left for {self.call.what} (the deadline ran out)"
            )
        return remaining

    def delay(self, exc: Exception) -> float | None:
        """Seconds to wait before retrying after `exc`, or None to give up and raise it."""
        if self.call.rpc not in RETRIED_RPCS or classify(exc) not in _RETRIED_CODES:
            return None
        delay = self.backoff
        if time.monotonic() + delay >= self.end:
            return None
        self.backoff = min(self.backoff * _BACKOFF_MULTIPLIER, _MAX_BACKOFF)
        return delay


def _method(client: Any, call: SchedulerCall) -> tuple[Any, dict[str, Any]]:
    """The client method and its extra keywords: `retry=None` for the official clients (and any method declaring
    `retry`), so their default 600 s retry never runs; an imitation gets only `timeout=`, as it always did."""
    method = getattr(client, call.rpc)
    official = isinstance(client, (scheduler_v1.CloudSchedulerClient, scheduler_v1.CloudSchedulerAsyncClient))
    if not official:
        try:
            official = "retry" in inspect.signature(method).parameters
        except (TypeError, ValueError):
            official = False
    return method, {"retry": None} if official else {}


def _call(client: Any, call: SchedulerCall, timeout: float) -> Any:
    method, extra = _method(client, call)
    attempts = _Attempts(call, timeout)
    while True:
        try:
            return method(**call.arguments(), timeout=attempts.timeout(), **extra)
        except Exception as exc:
            delay = attempts.delay(exc)
            if delay is None:
                raise
            time.sleep(delay)


async def _call_async(client: Any, call: SchedulerCall, timeout: float) -> Any:
    method, extra = _method(client, call)
    attempts = _Attempts(call, timeout)
    while True:
        try:
            return await method(**call.arguments(), timeout=attempts.timeout(), **extra)
        except Exception as exc:
            delay = attempts.delay(exc)
            if delay is None:
                raise
            await asyncio.sleep(delay)


def run_flow(flow: Flow[T], client: scheduler_v1.CloudSchedulerClient, *, timeout: float) -> T:
    """Drive `flow` to its result with the sync client, each call limited to `timeout` seconds, retries included."""
    call: SchedulerCall | None = None
    try:
        call = next(flow)
        while True:
            try:
                result = _call(client, call, timeout)
            except Exception as exc:  # noqa: BLE001 - thrown into the flow, which decides; the rest is translated below
                call = flow.throw(exc)
            else:
                call = flow.send(result)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    except Exception as exc:
        translated = _translated(exc, call)
        if translated is exc:
            raise
        raise translated from exc


async def run_flow_async(flow: Flow[T], client: scheduler_v1.CloudSchedulerAsyncClient, *, timeout: float) -> T:
    """`run_flow` with the async client."""
    call: SchedulerCall | None = None
    try:
        call = next(flow)
        while True:
            try:
                result = await _call_async(client, call, timeout)
            except Exception as exc:  # noqa: BLE001 - thrown into the flow, which decides; the rest is translated below
                call = flow.throw(exc)
            else:
                call = flow.send(result)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    except Exception as exc:
        translated = _translated(exc, call)
        if translated is exc:
            raise
        raise translated from exc


def _translated(exc: Exception, call: SchedulerCall | None) -> Exception:
    return translate(exc, what=call.what if call is not None else "calling Cloud Scheduler")
