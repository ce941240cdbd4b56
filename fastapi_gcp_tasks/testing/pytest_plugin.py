"""pytest plugin (entry point `fastapi_gcp_tasks`): fixtures running the Cloud Tasks / Cloud Scheduler emulator.

* `gcp_tasks_emulator`: a fresh `Emulator` per test, on an ephemeral port, in a background thread.
* `gcp_tasks_emulator_session`: one `Emulator` for the whole session; call `reset()` between tests
  when they must not see each other's tasks.

Both deliver over real HTTP to the tasks' URLs. To deliver into an app without sockets, or to control
time, build your own fixture around `Emulator(deliver_to=app, clock=ManualClock())`. The plugin imports
nothing heavy until a fixture is used, and needs no async pytest plugin.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from fastapi_gcp_tasks.emulator import Emulator

__all__ = ["gcp_tasks_emulator", "gcp_tasks_emulator_session"]


@pytest.fixture
def gcp_tasks_emulator() -> Iterator[Emulator]:
    """A running emulator for one test (ephemeral ports, real HTTP delivery, real time)."""
    from fastapi_gcp_tasks.emulator import Emulator

    with Emulator(port=0) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def gcp_tasks_emulator_session() -> Iterator[Emulator]:
    """A running emulator shared by the whole test session."""
    from fastapi_gcp_tasks.emulator import Emulator

    with Emulator(port=0) as emulator:
        yield emulator
