"""`schedules sync` of many jobs reports each write: `[3/40] created job nightly`.

The library's `Schedules.sync(progress=...)` / `sync_async` tell a callback after each write; the command line
shows it on stderr (one line per job when stderr is not a terminal). Against the emulator over real gRPC.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter
from google.cloud import scheduler_v1

from fastapi_gcp_tasks import ScheduledRouteBuilder
from fastapi_gcp_tasks.emulator import Emulator
from fastapi_gcp_tasks.exception import TaskArgumentError
from fastapi_gcp_tasks.schedules import Schedules

ROOT = Path(__file__).resolve().parents[2]
LOCATION = "projects/progress-project/locations/europe-west1"
PROG = "fastapi-gcp-tasks schedules"
JOBS = 12

APP = """
from fastapi import APIRouter, FastAPI
from fastapi_gcp_tasks import ScheduledRouteBuilder
from fastapi_gcp_tasks.schedules import Schedules

LOCATION = "{location}"
schedules = Schedules(prefix="many-", location_path=LOCATION)
cron = APIRouter(route_class=ScheduledRouteBuilder(location_path=LOCATION, callback_base_url="http://w.example"))


@cron.post("/tick")
def tick(n: int) -> None: ...


for n in range({jobs}):
    schedules.add(tick, name=f"job-{{n:02d}}", schedule="0 * * * *", args={{"n": n}})
"""


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


def sync(app_dir: Path, address: str, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FASTAPI_GCP_TASKS_")}
    environment.update(PYTHONPATH=str(ROOT), FASTAPI_GCP_TASKS_EMULATOR_HOST=address)
    return subprocess.run(
        [sys.executable, "-m", "fastapi_gcp_tasks", "schedules", "sync", "many_jobs:schedules", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**environment, "FASTAPI_GCP_TASKS_SCHEDULES_APP_DIR": str(app_dir)},
        check=False,
    )


def test_the_command_logs_one_line_per_job_written(emulator: Emulator, tmp_path: Path) -> None:
    (tmp_path / "many_jobs.py").write_text(APP.format(location=LOCATION, jobs=JOBS))

    dry = sync(tmp_path, emulator.address, "--dry-run")
    assert dry.returncode == 1, dry.stderr
    assert dry.stderr == ""  # nothing written, nothing reported

    first = sync(tmp_path, emulator.address)
    assert first.returncode == 0, first.stderr
    lines = first.stderr.splitlines()
    assert lines == [f"{PROG}: [{i}/{JOBS}] created job many-job-{i - 1:02d}" for i in range(1, JOBS + 1)]
    assert f"Synced: {JOBS} created, 0 updated, 0 deleted, 0 unchanged." in first.stdout

    client = emulator.scheduler_client()
    client.create_job(
        parent=LOCATION,
        job=scheduler_v1.Job(
            name=f"{LOCATION}/jobs/many-stale", schedule="* * * * *", http_target={"uri": "http://w.example/x"}
        ),
    )
    changed = client.get_job(name=f"{LOCATION}/jobs/many-job-03")
    changed.schedule = "5 * * * *"
    client.update_job(job=changed)

    second = sync(tmp_path, emulator.address, "--format", "json")
    assert second.returncode == 0, second.stderr
    assert second.stderr.splitlines() == [
        f"{PROG}: [1/2] updated job many-job-03",
        f"{PROG}: [2/2] deleted job many-stale",
    ]
    assert second.stdout.lstrip().startswith("{")  # the machine-readable result stays alone on stdout

    third = sync(tmp_path, emulator.address)
    assert third.returncode == 0, third.stderr
    assert third.stderr == ""


def _registry(prefix: str, **clients: Any) -> Schedules:
    schedules = Schedules(prefix=prefix, location_path=LOCATION, **clients)
    router = APIRouter(route_class=ScheduledRouteBuilder(location_path=LOCATION, callback_base_url="http://w.example"))

    @router.post(f"/{prefix}tick")
    def tick(n: int) -> None: ...

    for n in range(3):
        schedules.add(tick, name=f"job-{n}", schedule="0 * * * *", args={"n": n})
    return schedules


def test_sync_and_sync_async_tell_the_callback_after_each_write(emulator: Emulator) -> None:
    seen: list[tuple[int, int, str]] = []

    def progress(done: int, total: int, message: str) -> None:
        seen.append((done, total, message))

    schedules = _registry("sync-", client=emulator.scheduler_client)
    schedules.sync(progress=progress)
    assert seen == [(i, 3, f"[{i}/3] created job sync-job-{i - 1}") for i in (1, 2, 3)]

    seen.clear()
    emulator.scheduler_client().delete_job(name=f"{LOCATION}/jobs/sync-job-1")
    schedules.sync(dry_run=True, progress=progress)
    assert seen == []
    schedules.sync(progress=progress)
    assert seen == [(1, 1, "[1/1] created job sync-job-1")]

    seen.clear()
    other = _registry("async-", async_client=emulator.async_scheduler_client)
    asyncio.run(other.sync_async(progress=progress))
    assert seen == [(i, 3, f"[{i}/3] created job async-job-{i - 1}") for i in (1, 2, 3)]


def test_a_progress_that_is_not_callable_is_refused_at_the_call(emulator: Emulator) -> None:
    schedules = Schedules(prefix="bad-", location_path=LOCATION, client=emulator.scheduler_client)
    with pytest.raises(TaskArgumentError) as refused:
        schedules.sync(progress="yes")  # type: ignore[arg-type]
    assert refused.value.param == "progress"
