"""The clocks: a manual clock fires timers and wakes sleepers when moved; the system clock follows real time."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time

import pytest

from fastapi_gcp_tasks.emulator import ManualClock, SystemClock
from fastapi_gcp_tasks.emulator._clock import call_at
from tests._support import TIMEOUT, eventually

START = dt.datetime(2026, 3, 29, 0, 30, tzinfo=dt.UTC)


async def test_manual_clock_fires_timers_in_order_when_advanced() -> None:
    clock = ManualClock(START)
    fired: list[str] = []
    clock.call_at(START + dt.timedelta(seconds=10), lambda: fired.append("b"))
    clock.call_at(START + dt.timedelta(seconds=5), lambda: fired.append("a"))
    cancelled = clock.call_at(START + dt.timedelta(seconds=7), lambda: fired.append("never"))
    cancelled.cancel()
    clock.advance(6)
    await asyncio.sleep(0)
    assert fired == ["a"]
    clock.set(START + dt.timedelta(seconds=60))
    await asyncio.sleep(0)
    assert fired == ["a", "b"]
    assert clock.now() == START + dt.timedelta(seconds=60)


async def test_manual_clock_wakes_sleepers_from_another_thread() -> None:
    clock = ManualClock(START)
    sleeper = asyncio.ensure_future(clock.sleep_until(START + dt.timedelta(hours=1)))
    await asyncio.sleep(0)
    threading.Thread(target=clock.advance, args=(3600,)).start()
    await asyncio.wait_for(sleeper, TIMEOUT)
    early = asyncio.ensure_future(clock.sleep_until(START + dt.timedelta(hours=5)))
    await asyncio.sleep(0)
    clock.wake()
    await asyncio.wait_for(early, TIMEOUT)
    assert clock.now() == START + dt.timedelta(hours=1)


async def test_a_past_deadline_fires_at_once() -> None:
    clock = ManualClock(START)
    fired = asyncio.Event()
    clock.call_at(START - dt.timedelta(seconds=1), fired.set)
    await asyncio.wait_for(fired.wait(), 1)
    await clock.sleep_until(START)


def test_manual_clock_rejects_naive_times_and_going_backwards_by_advance() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ManualClock(dt.datetime(2026, 1, 1))
    clock = ManualClock(START)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="timezone-aware"):
        clock.set(dt.datetime(2026, 1, 1))


async def test_system_clock_sleeps_and_wakes_early() -> None:
    clock = SystemClock()
    assert abs((clock.now() - dt.datetime.now(dt.UTC)).total_seconds()) < 1
    started = time.perf_counter()
    await clock.sleep_until(clock.now() + dt.timedelta(seconds=0.05))
    assert time.perf_counter() - started >= 0.04
    sleeper = asyncio.ensure_future(clock.sleep_until(clock.now() + dt.timedelta(hours=1)))
    await asyncio.sleep(0)
    clock.wake()
    await asyncio.wait_for(sleeper, 1)
    fired = asyncio.Event()
    clock.call_at(clock.now() + dt.timedelta(seconds=0.01), fired.set)
    await asyncio.wait_for(fired.wait(), 1)


async def test_call_at_works_with_any_clock() -> None:
    class Slow:
        def __init__(self) -> None:
            self.inner = ManualClock(START)
            self.sleeps = 0

        def now(self) -> dt.datetime:
            return self.inner.now()

        async def sleep_until(self, when: dt.datetime) -> None:
            self.sleeps += 1
            await self.inner.sleep_until(when)

        def wake(self) -> None:
            self.inner.wake()

    clock = Slow()
    fired = asyncio.Event()
    call_at(clock, START + dt.timedelta(seconds=3), fired.set)
    await eventually(lambda: clock.sleeps == 1, "call_at asleep on the clock")
    clock.wake()
    await eventually(lambda: clock.sleeps == 2, "call_at asleep again after an early wake-up")
    assert not fired.is_set()
    clock.inner.advance(3)
    await asyncio.wait_for(fired.wait(), TIMEOUT)
