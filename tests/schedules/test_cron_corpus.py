"""One cron grammar: the library accepts exactly the schedules the emulator's CreateJob accepts.

Each expression of the corpus goes to the emulator over gRPC (CreateJob with the official client) and
through the library's two doors (`endpoint.scheduler(...).schedule()` and `Schedules.add`). A valid
one is written by both; an invalid one is refused by the emulator with INVALID_ARGUMENT, and by the
library at the call site with `TaskLimitError` naming `schedule`, before any request is made.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from google.api_core import exceptions as core
from google.cloud import scheduler_v1

from fastapi_gcp_tasks import ScheduledRouteBuilder
from fastapi_gcp_tasks.emulator import Emulator, ManualClock
from fastapi_gcp_tasks.exception import TaskLimitError
from fastapi_gcp_tasks.schedules import Schedules

PARENT = "projects/corpus/locations/europe-west1"

VALID = [
    "* * * * *",
    "0 * * * *",
    "0 0 * * *",
    "30 6 * * *",
    "59 23 31 12 *",
    "0 0 1 1 *",
    "0 0 * * 0",
    "0 0 * * 7",
    "*/5 * * * *",
    "*/15 */2 * * *",
    "*/59 * * * *",
    "0 */23 * * *",
    "0-59/10 * * * *",
    "10-20/5 * * * *",
    "0 9-17 * * 1-5",
    "0 0-23/6 * * *",
    "5,10,15 * * * *",
    "5,10-12 * * * *",
    "0 0,12 1,15 * *",
    "0 0 1-7 * 1",
    "0 0 * JAN *",
    "0 0 * jan,Mar-may *",
    "0 0 * JAN-DEC/3 *",
    "0 0 * * MON-FRI",
    "0 0 * * sun,sat",
    "0 0 * * 6-7",
    "0 0 * * 5-7",
    "0 0 1 * MON",
    "0 0 29 2 *",
    "0 0 * 1-12/2 0-6/2",
    "0 0 5-5 * *",
    "  0   0 1 * *  ",
    "00 07 01 01 *",
]
"""Ranges, steps, lists, names (any case, also as range ends), both Sunday numbers, extra spaces."""

INVALID = [
    "",
    "   ",
    "* * * *",
    "* * * * * *",
    "0 0 * * * 2026",
    "@hourly",
    "@daily",
    "@reboot",
    "every 5 minutes",
    "60 * * * *",
    "* 24 * * *",
    "* * 0 * *",
    "* * 32 * *",
    "* * * 0 *",
    "* * * 13 *",
    "* * * * 8",
    "-1 * * * *",
    "0 0 L * *",
    "0 0 * * 5L",
    "0 0 * * L5",
    "0 0 15W * *",
    "0 0 LW * *",
    "0 0 * * 5#3",
    "0 0 * * MON#1",
    "0 0 ? * MON",
    "0 0 1 * ?",
    "5-1 * * * *",
    "0 23-1 * * *",
    "0 0 * DEC-JAN *",
    "0 0 * * FRI-MON",
    "0 0 * * SAT-SUN",
    "0 0 * * 6-1",
    "*/0 * * * *",
    "*/61 * * * *",
    "5/10 * * * *",
    "1,,2 * * * *",
    "1, * * * *",
    "1-2-3 * * * *",
    "* * * FOO *",
    "* * * * MONDAY",
    "* * * JANUARY *",
    "H * * * *",
    "R * * * *",
    "0 0 * * \uff15",
    "1.5 * * * *",
]
"""Quartz and croniter extensions (`L`, `W`, `#`, `?`, `H`, `R`, seconds or year fields, macros),
reversed ranges (names too), values out of range, bad steps and lists, and not five fields."""


def test_the_corpus_is_large_and_has_no_duplicates() -> None:
    assert len(VALID) + len(INVALID) >= 60
    assert len(set(VALID + INVALID)) == len(VALID) + len(INVALID)


_ids = itertools.count()


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(clock=ManualClock()) as emu:  # a manual clock: no job ever fires
        yield emu


@pytest.fixture(scope="module")
def client(emulator: Emulator) -> scheduler_v1.CloudSchedulerClient:
    return emulator.scheduler_client()


@pytest.fixture(scope="module")
def tick(client: scheduler_v1.CloudSchedulerClient) -> Any:
    router = APIRouter(
        route_class=ScheduledRouteBuilder(
            location_path=PARENT, callback_base_url="http://worker.example", client=client
        )
    )

    @router.post("/tick")
    def tick() -> None: ...

    FastAPI().include_router(router)
    return tick


def emulator_accepts(client: scheduler_v1.CloudSchedulerClient, schedule: str) -> bool:
    name = f"{PARENT}/jobs/emulator-{next(_ids)}"
    job = scheduler_v1.Job(name=name, schedule=schedule, http_target={"uri": "http://worker.example/tick"})
    try:
        client.create_job(parent=PARENT, job=job)
    except core.InvalidArgument:
        return False
    client.delete_job(name=name)
    return True


def library_writes(client: scheduler_v1.CloudSchedulerClient, tick: Any, schedule: str) -> None:
    """Both doors take `schedule` unchanged, and `.schedule()` writes it to the emulator."""
    entry = Schedules(prefix="corpus-", location_path=PARENT).add(tick, name=f"d-{next(_ids)}", schedule=schedule)
    assert entry.job.schedule == schedule
    handle = tick.scheduler(name=f"route-{next(_ids)}", schedule=schedule)
    written = handle.schedule()
    assert written.schedule == schedule
    assert client.get_job(name=written.name).schedule == schedule
    assert handle.delete() is True


def library_refuses(tick: Any, schedule: str) -> None:
    """Both doors refuse `schedule` where they are called, naming the parameter; nothing is sent."""
    name = f"route-{next(_ids)}"
    with pytest.raises(TaskLimitError) as info:
        tick.scheduler(name=name, schedule=schedule)
    assert info.value.param == "schedule"
    assert str(info.value).startswith(f"job {name!r}: schedule={schedule!r}")  # names the job, then the field
    with pytest.raises(TaskLimitError) as info:
        Schedules(prefix="corpus-", location_path=PARENT).add(tick, name=f"d-{next(_ids)}", schedule=schedule)
    assert info.value.param == "schedule"


@pytest.mark.parametrize(("schedule", "valid"), [*((s, True) for s in VALID), *((s, False) for s in INVALID)], ids=repr)
def test_the_library_and_the_emulator_agree(
    client: scheduler_v1.CloudSchedulerClient, tick: Any, schedule: str, valid: bool
) -> None:
    assert emulator_accepts(client, schedule) is valid
    if valid:
        library_writes(client, tick, schedule)
    else:
        library_refuses(tick, schedule)
