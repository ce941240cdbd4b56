"""Waiting until the tasks a request caused are created and delivered, buffered ones included.

A buffered `.delay()` counts its task in `PROCESS_BUFFER_STATS` while the request runs, before the response
is sent, and the count drops only once the task is created (or discarded or lost). So once a test has the
response, "no buffered task pending in this process and the emulator idle" means the request's tasks were
created and delivered, even though a buffered flush runs after the response (a server such as uvicorn in a
thread of the test process). The two conditions are checked in turn until both hold together: a delivered
task's endpoint may keep tasks of its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from fastapi_gcp_tasks.dispatch._buffer_send import PROCESS_BUFFER_STATS

if TYPE_CHECKING:
    from fastapi_gcp_tasks.emulator import Emulator

__all__ = ["POLL_SECONDS", "buffered_pending", "wait_for_tasks", "wait_for_tasks_async"]

POLL_SECONDS = 0.002
"""How often the buffered count is read while waiting (the emulator's own idle check uses the same pace)."""


def buffered_pending() -> int:
    """Buffered tasks of this process that have not been created, discarded or lost yet."""
    return PROCESS_BUFFER_STATS.pending


def _timeout_error(timeout: float, emulator: Emulator) -> TimeoutError:
    return TimeoutError(
        f"after {timeout:g} s, {buffered_pending()} buffered task(s) were still waiting to be created and the"
        f" emulator was {'idle' if emulator.is_idle() else 'still delivering'}"
    )


def _check_timeout(timeout: float) -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")


@dataclasses.dataclass(frozen=True, slots=True)
class _UntilIdle:
    """A step of `_waiting`: wait until the emulator is idle, at most `timeout` seconds."""

    timeout: float


def _waiting(emulator: Emulator, timeout: float) -> Iterator[float | _UntilIdle]:
    """The wait, written once: yields a pause (seconds) or an `_UntilIdle`; the runners do the waiting."""
    _check_timeout(timeout)
    deadline = time.monotonic() + timeout
    while True:
        while buffered_pending():
            if time.monotonic() > deadline:
                raise _timeout_error(timeout, emulator)
            yield POLL_SECONDS
        yield _UntilIdle(max(deadline - time.monotonic(), POLL_SECONDS))
        if not buffered_pending() and emulator.is_idle():
            return


def wait_for_tasks(emulator: Emulator, *, timeout: float = 10.0) -> None:
    """Block until every task this process has delayed is created and the emulator has delivered all that is due.

    Covers immediate and buffered `.delay()` (also when the buffer creates tasks after the response) and the
    tasks that delivered tasks delay in turn. Tasks scheduled later (`countdown`) are created but not waited
    for. Raises TimeoutError after `timeout` seconds. For an emulator started with `with Emulator()` (the
    plugin's fixtures); from a coroutine, await `wait_for_tasks_async` instead, so the event loop keeps running.
    """
    try:
        for step in _waiting(emulator, timeout):
            if isinstance(step, _UntilIdle):
                emulator.wait_until_idle(timeout=step.timeout)
            else:
                time.sleep(step)
    except TimeoutError:
        raise _timeout_error(timeout, emulator) from None


async def wait_for_tasks_async(emulator: Emulator, *, timeout: float = 10.0) -> None:
    """`wait_for_tasks` from a coroutine: the app may be running on this event loop."""
    try:
        for step in _waiting(emulator, timeout):
            if isinstance(step, _UntilIdle):
                await emulator.wait_until_idle_async(timeout=step.timeout)
            else:
                await asyncio.sleep(step)
    except TimeoutError:
        raise _timeout_error(timeout, emulator) from None
