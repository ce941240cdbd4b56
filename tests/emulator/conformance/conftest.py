"""The conformance fixture: one emulator on a manual clock, a recording worker, and the clients of one transport."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from fastapi_gcp_tasks.emulator import Emulator, ManualClock
from tests._support import TIMEOUT, RecordingWorker

from ._api import TRANSPORTS, Api

LOCATION = "projects/conformance/locations/europe-west1"
QUEUE = f"{LOCATION}/queues/main"
START = dt.datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=dt.UTC)
"""A start with a fraction of a second, so truncations show."""


@dataclass
class Env:
    """What a conformance scenario works with."""

    api: Api
    emu: Emulator
    clock: ManualClock
    worker: RecordingWorker

    def settle(self, advance: float = 0.0) -> None:
        """Finish what is due, move the clock forward by `advance` seconds, and finish what became due."""
        self.emu.wait_until_idle(timeout=TIMEOUT)
        if advance:
            self.clock.advance(advance)
            self.emu.wait_until_idle(timeout=TIMEOUT)


@pytest.fixture(params=TRANSPORTS)
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    clock = ManualClock(START)
    with RecordingWorker() as worker, Emulator(clock=clock, queues=[QUEUE]) as emu:
        api = Api(request.param, emu)
        try:
            yield Env(api=api, emu=emu, clock=clock, worker=worker)
        finally:
            api.close()
