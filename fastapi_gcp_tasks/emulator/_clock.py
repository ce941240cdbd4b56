"""The emulator's clocks: real time, and a manual clock that tests move forward instead of sleeping.

Besides the `Clock` contract both clocks offer `call_at(when, callback)`, which the dispatchers use to
wake at a precise moment without keeping a coroutine asleep per timer. Any other `Clock` still works
through `call_at(clock, ...)`, at the cost of one sleeping coroutine per timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import heapq
import itertools
import threading
from collections.abc import Callable
from typing import Protocol

from fastapi_gcp_tasks.emulator._types import Clock

__all__ = ["Cancellable", "ManualClock", "SystemClock", "call_at"]


class Cancellable(Protocol):
    """A pending timer."""

    def cancel(self) -> None:
        """Stop the timer; harmless when it already fired."""
        ...


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _call_threadsafe(loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
    # a loop that has been closed has nobody left to wake
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback)


class _Sleepers:
    """Futures of `sleep_until` calls, possibly on several loops, that `wake()` resolves early."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()

    def add(self, entry: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]) -> None:
        with self._lock:
            self._waiting.add(entry)

    def discard(self, entry: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]) -> None:
        with self._lock:
            self._waiting.discard(entry)

    def wake_all(self) -> None:
        with self._lock:
            waiting = list(self._waiting)
        for loop, future in waiting:
            _call_threadsafe(loop, lambda f=future: _resolve(f))  # type: ignore[misc]


class SystemClock:
    """Wall-clock time (UTC); timers run on the event loop that sets them."""

    def __init__(self) -> None:
        self._sleepers = _Sleepers()

    def now(self) -> dt.datetime:
        """The current time, tz-aware UTC."""
        return dt.datetime.now(dt.UTC)

    async def sleep_until(self, when: dt.datetime) -> None:
        """Return once `now() >= when`, or earlier when `wake()` is called."""
        delay = (when - self.now()).total_seconds()
        if delay <= 0:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (loop, future)
        self._sleepers.add(entry)
        handle = loop.call_later(delay, _resolve, future)
        try:
            await future
        finally:
            handle.cancel()
            self._sleepers.discard(entry)

    def wake(self) -> None:
        """Wake every `sleep_until` early; callers re-check the time."""
        self._sleepers.wake_all()

    def call_at(self, when: dt.datetime, callback: Callable[[], object]) -> Cancellable:
        """Run `callback` on the running loop once `when` has come."""
        delay = (when - self.now()).total_seconds()
        return asyncio.get_running_loop().call_later(max(delay, 0.0), callback)


class _ManualTimer:
    __slots__ = ("callback", "cancelled", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
        self.loop = loop
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock that only moves when told to, so tests of countdowns, retries and cron never sleep.

    `advance()` and `set()` may be called from any thread (for example a test driving an emulator
    that runs in a background thread); the callbacks that become due run on their own loops.
    """

    def __init__(self, start: dt.datetime | None = None) -> None:
        """Start at `start` (tz-aware), or at the current wall-clock time."""
        if start is None:
            start = dt.datetime.now(dt.UTC)
        elif start.tzinfo is None:
            raise ValueError("ManualClock(start=...) must be timezone-aware")
        self._now = start.astimezone(dt.UTC)
        self._lock = threading.Lock()
        self._timers: list[tuple[dt.datetime, int, _ManualTimer]] = []
        self._seq = itertools.count()
        self._sleepers = _Sleepers()

    def now(self) -> dt.datetime:
        """The clock's current time, tz-aware UTC."""
        return self._now

    def advance(self, seconds: float) -> dt.datetime:
        """Move the clock forward by `seconds` and fire what became due; returns the new time."""
        if seconds < 0:
            raise ValueError(f"ManualClock.advance(seconds={seconds}) cannot move time backwards")
        return self.set(self._now + dt.timedelta(seconds=seconds))

    def set(self, when: dt.datetime) -> dt.datetime:
        """Move the clock to `when` (tz-aware) and fire what became due; returns the new time."""
        if when.tzinfo is None:
            raise ValueError("ManualClock.set(when=...) must be timezone-aware")
        due: list[_ManualTimer] = []
        with self._lock:
            self._now = when.astimezone(dt.UTC)
            while self._timers and self._timers[0][0] <= self._now:
                due.append(heapq.heappop(self._timers)[2])
        for timer in due:
            if not timer.cancelled:
                _call_threadsafe(timer.loop, timer.callback)
        self._sleepers.wake_all()
        return self._now

    def call_at(self, when: dt.datetime, callback: Callable[[], object]) -> Cancellable:
        """Run `callback` on the running loop once the clock reaches `when`."""
        timer = _ManualTimer(asyncio.get_running_loop(), callback)
        with self._lock:
            if when > self._now:
                heapq.heappush(self._timers, (when, next(self._seq), timer))
                return timer
        timer.loop.call_soon(callback)
        return timer

    async def sleep_until(self, when: dt.datetime) -> None:
        """Return once the clock reaches `when`, or earlier when `wake()` is called."""
        if self._now >= when:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (loop, future)
        self._sleepers.add(entry)
        timer = self.call_at(when, lambda: _resolve(future))
        try:
            await future
        finally:
            timer.cancel()
            self._sleepers.discard(entry)

    def wake(self) -> None:
        """Wake every `sleep_until` early; callers re-check the time."""
        self._sleepers.wake_all()


class _SleepingTimer:
    def __init__(self, clock: Clock, when: dt.datetime, callback: Callable[[], object]) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(clock, when, callback))

    @staticmethod
    async def _run(clock: Clock, when: dt.datetime, callback: Callable[[], object]) -> None:
        while clock.now() < when:
            await clock.sleep_until(when)
        callback()

    def cancel(self) -> None:
        self._task.cancel()


def call_at(clock: Clock, when: dt.datetime, callback: Callable[[], object]) -> Cancellable:
    """Run `callback` on the running loop once `clock` reaches `when`, with any `Clock`."""
    if isinstance(clock, SystemClock | ManualClock):
        return clock.call_at(when, callback)
    return _SleepingTimer(clock, when, callback)
