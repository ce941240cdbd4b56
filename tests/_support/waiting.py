"""Waiting on a condition or an event with a generous deadline, failing with what was awaited."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

TIMEOUT = 30.0
"""Long enough for a loaded two-core machine; a passing test never waits it out."""

Describe = str | Callable[[], str]


def _describe(what: Describe) -> str:
    return what() if callable(what) else what


def _timed_out(what: Describe, timeout: float) -> AssertionError:
    return AssertionError(f"timed out after {timeout:g}s waiting for {_describe(what)}")


def wait_for(condition: Callable[[], object], what: Describe, *, timeout: float = TIMEOUT) -> None:
    """Poll `condition` until it is true; fail after `timeout` seconds naming `what` was awaited.

    `what` may be a callable, called only on timeout, to report the state seen instead.
    """
    deadline = time.monotonic() + timeout
    pause = 0.001
    while not condition():
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout)
        time.sleep(pause)
        pause = min(pause * 2, 0.02)


async def eventually(condition: Callable[[], object], what: Describe, *, timeout: float = TIMEOUT) -> None:
    """`wait_for` for a coroutine: polls without blocking the event loop."""
    deadline = time.monotonic() + timeout
    pause = 0.001
    while not condition():
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout)
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.02)


def wait_event(event: threading.Event, what: Describe, *, timeout: float = TIMEOUT) -> None:
    """Wait until `event` is set; fail after `timeout` seconds naming `what` was awaited."""
    if not event.wait(timeout):
        raise _timed_out(what, timeout)
