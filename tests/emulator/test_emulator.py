"""The Emulator as a whole: both services on one port, the sync and async ways to run it, inspection."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from google.api_core import exceptions
from google.cloud import scheduler_v1, tasks_v2

from fastapi_gcp_tasks.emulator import Emulator, ManualClock
from tests._support import TIMEOUT

from ._tasks_support import LOCATION, QUEUE, ScriptedWorker, http_task


def test_cloud_scheduler_is_served_on_the_same_port() -> None:
    worker = ScriptedWorker()
    with Emulator(deliver_to=worker, clock=ManualClock(), queues=[QUEUE]) as emu:
        client = emu.scheduler_client()
        job = scheduler_v1.Job(
            name=f"{LOCATION}/jobs/nightly",
            schedule="0 3 * * *",
            time_zone="Europe/Berlin",
            http_target=scheduler_v1.HttpTarget(
                uri="http://worker.test/cron", http_method=scheduler_v1.HttpMethod.POST
            ),
        )
        created = client.create_job(parent=LOCATION, job=job)
        assert created.state == scheduler_v1.Job.State.ENABLED
        with pytest.raises(exceptions.AlreadyExists):
            client.create_job(parent=LOCATION, job=job)
        with pytest.raises(exceptions.InvalidArgument):
            client.create_job(parent=LOCATION, job=scheduler_v1.Job(name=f"{LOCATION}/jobs/bad", schedule="nope"))
        client.run_job(name=job.name)
        emu.tasks_client().create_task(parent=QUEUE, task=http_task())
        emu.wait_until_idle(timeout=TIMEOUT)
        assert sorted(worker.paths()) == ["/cron", "/work"]
        sources = sorted(record.source for record in emu.deliveries)
        assert sources[0] == job.name
        assert "/tasks/" in sources[1]
        assert worker.received[0].headers.get("x-cloudscheduler") or worker.received[1].headers.get("x-cloudscheduler")


def test_reset_clears_deliveries_and_jobs() -> None:
    with Emulator(deliver_to=ScriptedWorker(), queues=[QUEUE]) as emu:
        emu.tasks_client().create_task(parent=QUEUE, task=http_task())
        emu.wait_until_idle(timeout=TIMEOUT)
        assert len(emu.deliveries) == 1
        emu.reset()
        assert emu.deliveries == []
        assert list(emu.scheduler_client().list_jobs(parent=LOCATION)) == []


def test_using_it_before_it_runs_or_twice_is_an_error() -> None:
    emu = Emulator()
    with pytest.raises(RuntimeError, match="not running"):
        _ = emu.address
    with emu, pytest.raises(RuntimeError, match="already running"):
        emu.__enter__()


async def test_async_with_runs_on_the_current_loop() -> None:
    worker = ScriptedWorker()
    async with Emulator(deliver_to=worker, queues=[QUEUE]) as emu:
        client = emu.async_tasks_client()
        await client.create_task(parent=QUEUE, task=http_task())
        with pytest.raises(RuntimeError, match="wait_until_idle_async"):
            emu.wait_until_idle(timeout=TIMEOUT)
        await emu.wait_until_idle_async()
        assert [record.status for record in emu.deliveries] == [200]
        assert emu.is_idle()
        await client.transport.close()  # type: ignore[no-untyped-call, unused-ignore]
        # a synchronous client on this loop would block the loop that has to answer it
        for method in (emu.tasks_client, emu.scheduler_client):
            with pytest.raises(RuntimeError, match="would hang here"):
                method()
        # from another thread it is fine
        sync_client = await asyncio.to_thread(emu.tasks_client)
        queue = await asyncio.to_thread(sync_client.get_queue, name=QUEUE)
        assert queue.name == QUEUE


def test_a_port_in_use_is_reported() -> None:
    with Emulator() as first, pytest.raises(OSError, match="cannot listen"), Emulator(port=first.port):
        pass


def test_tasks_client_is_the_official_client() -> None:
    with Emulator() as emu:
        assert isinstance(emu.tasks_client(), tasks_v2.CloudTasksClient)
        assert emu.tasks_client() is emu.tasks_client()
        assert emu.jwks_url == f"{emu.issuer}/jwks"


def test_importing_the_emulator_without_its_extra_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['hpack'] = None\n"
        "try:\n"
        "    import fastapi_gcp_tasks.emulator\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    raise SystemExit('imported without hpack')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert 'pip install "fastapi-gcp-tasks[emulator]"' in done.stdout
