"""Fixtures: an emulator in its thread, on a manual clock, delivering into a scripted ASGI worker."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from google.cloud import tasks_v2

from fastapi_gcp_tasks.emulator import Emulator, ManualClock
from tests._support import TIMEOUT

from ._tasks_support import QUEUE, ScriptedWorker


@dataclass
class Env:
    emu: Emulator
    clock: ManualClock
    worker: ScriptedWorker
    client: tasks_v2.CloudTasksClient

    def settle(self, advance: float = 0.0) -> None:
        """Finish what is due, move the clock forward, and finish what became due."""
        if advance:
            self.emu.wait_until_idle(timeout=TIMEOUT)
            self.clock.advance(advance)
        self.emu.wait_until_idle(timeout=TIMEOUT)


@pytest.fixture
def env() -> Iterator[Env]:
    clock = ManualClock()
    worker = ScriptedWorker()
    with Emulator(clock=clock, deliver_to=worker, queues=[QUEUE]) as emu:
        yield Env(emu=emu, clock=clock, worker=worker, client=emu.tasks_client())
