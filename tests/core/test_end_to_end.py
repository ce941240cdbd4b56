"""The core against the emulator over real gRPC, with the official clients, and the README's example."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from google.cloud import scheduler_v1
from pydantic import BaseModel

from fastapi_gcp_tasks import (
    AsyncDelayedRouteBuilder,
    AsyncScheduledRouteBuilder,
    DelayedRouteBuilder,
    ScheduledRouteBuilder,
    TaskAlreadyExistsError,
    async_emulator_client,
    async_scheduler_emulator_client,
    emulator_client,
    location_path,
    queue_path,
    scheduler_emulator_client,
)
from fastapi_gcp_tasks.emulator import Emulator, ManualClock
from fastapi_gcp_tasks.testing import assert_task_created, wait_for_tasks
from tests._support import free_port, listening_socket, serve_asgi
from tests._support.ports import url_of
from tests.core._replay import Recorder

ROOT = Path(__file__).resolve().parents[2]
LOCATION = location_path(project="p", location="l")
QUEUE = queue_path(project="p", location="l", queue="e2e")


class Order(BaseModel):
    sku: str
    quantity: int


def build_app(emulator_address: str, record: Recorder) -> tuple[FastAPI, Any, Any, Any]:
    tasks = APIRouter(
        route_class=DelayedRouteBuilder(
            queue_path=QUEUE,
            callback_base_url="http://testserver",
            client=lambda: emulator_client(host=emulator_address),
        )
    )
    async_tasks = APIRouter(
        route_class=AsyncDelayedRouteBuilder(
            queue_path=QUEUE,
            callback_base_url="http://testserver",
            client=lambda: async_emulator_client(host=emulator_address),
        )
    )
    jobs = APIRouter(
        route_class=ScheduledRouteBuilder(
            location_path=LOCATION,
            callback_base_url="http://testserver",
            client=lambda: scheduler_emulator_client(host=emulator_address),
        )
    )

    @tasks.post("/orders/{shop}")
    def place(shop: str, order: Order) -> None:
        record(kind="sync", shop=shop, order=order)

    @async_tasks.post("/async-orders/{shop}")
    async def place_async(shop: str, order: Order) -> None:
        record(kind="async", shop=shop, order=order)

    @jobs.post("/report")
    def report(region: str = "eu") -> None:
        record(kind="job", region=region)

    app = FastAPI()
    for router in (tasks, async_tasks, jobs):
        app.include_router(router)
    return app, place, place_async, report


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def world(clock: ManualClock) -> Iterator[tuple[Emulator, Recorder, Any, Any, Any]]:
    record = Recorder()
    holder: dict[str, FastAPI] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await holder["app"](scope, receive, send)

    with Emulator(clock=clock, deliver_to=app, queues=[QUEUE]) as emulator:
        holder["app"], place, place_async, report = build_app(emulator.address, record)
        yield emulator, record, place, place_async, report


def test_sync_delay_creates_and_delivers(world: tuple[Emulator, Recorder, Any, Any, Any]) -> None:
    emulator, record, place, _, _ = world
    task = place.delay(shop="north", order=Order(sku="A-1", quantity=2))
    assert task.name.startswith(QUEUE + "/tasks/")
    assert task.create_time is not None
    emulator.wait_until_idle(timeout=10)
    assert record.calls == [{"kind": "sync", "shop": "north", "order": Order(sku="A-1", quantity=2)}]
    (delivery,) = emulator.deliveries
    assert delivery.status == 200
    assert delivery.headers["X-CloudTasks-TaskName"] == task.name.rsplit("/", 1)[1]


def test_async_delay_works_from_several_event_loops(world: tuple[Emulator, Recorder, Any, Any, Any]) -> None:
    emulator, record, _, place_async, _ = world
    for n in range(3):  # each asyncio.run() is a new loop: each gets its own grpc.aio client
        asyncio.run(place_async.delay(shop=f"s{n}", order=Order(sku="B", quantity=n)))
    emulator.wait_until_idle(timeout=10)
    assert sorted(c["shop"] for c in record.calls) == ["s0", "s1", "s2"]


def test_countdown_waits_for_the_clock(world: tuple[Emulator, Recorder, Any, Any, Any], clock: ManualClock) -> None:
    emulator, record, place, _, _ = world
    task = place.options(countdown=120).delay(shop="later", order=Order(sku="C", quantity=1))
    assert task.schedule_time.timestamp() > dt.datetime.now(dt.UTC).timestamp() + 100
    clock.advance(60)
    emulator.wait_until_idle(timeout=5)
    assert record.calls == []
    clock.advance(61)
    emulator.wait_until_idle(timeout=10)
    assert [c["shop"] for c in record.calls] == ["later"]


def test_duplicate_task_id_raises_one_catchable_error(world: tuple[Emulator, Recorder, Any, Any, Any]) -> None:
    _, _, place, _, _ = world
    first = place.options(task_id="order-42").delay(shop="x", order=Order(sku="D", quantity=1))
    assert first.name == f"{QUEUE}/tasks/order-42"
    with pytest.raises(TaskAlreadyExistsError) as info:
        place.options(task_id="order-42").delay(shop="x", order=Order(sku="D", quantity=1))
    assert info.value.task_name == first.name


def test_schedule_creates_updates_in_place_and_skips_no_op_writes(
    world: tuple[Emulator, Recorder, Any, Any, Any], clock: ManualClock
) -> None:
    emulator, record, _, _, report = world
    handle = report.scheduler(name="daily-report", schedule="0 7 * * *", time_zone="Europe/Paris")
    created = handle.schedule(region="eu")
    assert created.name == f"{LOCATION}/jobs/daily-report"
    again = handle.schedule(region="eu")
    assert again.user_update_time == created.user_update_time, "an identical schedule must not write"
    clock.advance(1)
    changed = report.scheduler(name="daily-report", schedule="0 8 * * *", time_zone="Europe/Paris").schedule(
        region="us"
    )
    assert changed.schedule == "0 8 * * *"
    assert changed.http_target.uri == "http://testserver/report?region=us"
    assert changed.user_update_time != created.user_update_time

    scheduler = emulator.scheduler_client()
    scheduler.run_job(name=changed.name)
    emulator.wait_until_idle(timeout=10)
    assert record.calls == [{"kind": "job", "region": "us"}]
    job_delivery = [d for d in emulator.deliveries if d.source.endswith("/jobs/daily-report")][-1]
    assert job_delivery.headers["X-CloudScheduler"] == "true"

    assert handle.delete() is True
    assert handle.delete() is False


def test_a_scheduled_job_fires_on_its_cron(world: tuple[Emulator, Recorder, Any, Any, Any], clock: ManualClock) -> None:
    emulator, record, _, _, report = world
    report.scheduler(name="every-minute", schedule="* * * * *").schedule(region="apac")
    clock.advance(61)
    emulator.wait_until_idle(timeout=10)
    assert {"kind": "job", "region": "apac"} in record.calls


def test_async_scheduler(world: tuple[Emulator, Recorder, Any, Any, Any]) -> None:
    emulator, _, _, _, _ = world
    router = APIRouter(
        route_class=AsyncScheduledRouteBuilder(
            location_path=LOCATION,
            callback_base_url="http://testserver",
            client=lambda: async_scheduler_emulator_client(host=emulator.address),
        )
    )

    @router.get("/async-job")
    async def async_job() -> None: ...

    async def run() -> tuple[scheduler_v1.Job, bool, bool]:
        handle = async_job.scheduler(name="async-job", schedule="*/5 * * * *")  # type: ignore[attr-defined]
        job = await handle.schedule()
        return job, await handle.delete(), await handle.delete()

    job, deleted, deleted_again = asyncio.run(run())
    assert job.schedule == "*/5 * * * *"
    assert (deleted, deleted_again) == (True, False)


@pytest.fixture
def quickstart(gcp_tasks_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModuleType, str]]:
    """examples/simple served over real HTTP, its tasks created on the plugin's emulator."""
    sock = listening_socket()
    monkeypatch.setenv("APP_URL", url_of(sock))
    monkeypatch.syspath_prepend(str(ROOT))
    sys.modules.pop("examples.simple.app", None)
    module = importlib.import_module("examples.simple.app")
    try:
        with serve_asgi(module.app, sock) as url:
            yield module, url
    finally:
        sys.modules.pop("examples.simple.app", None)


def test_the_quickstart_trigger_creates_a_hello_task_that_is_delivered(
    quickstart: tuple[ModuleType, str], gcp_tasks_emulator: Emulator
) -> None:
    module, url = quickstart
    response = httpx.post(f"{url}/trigger", params={"name": "Ada", "lang": "fr"})
    assert response.status_code == 200, response.text
    wait_for_tasks(gcp_tasks_emulator)
    assert [delivery.status for delivery in gcp_tasks_emulator.deliveries] == [200]
    task = assert_task_created(gcp_tasks_emulator, module.hello, lang="fr")
    assert task.arguments["greeting"] == module.Greeting(name="Ada", excited=True)
    assert task.name == response.json()["task"]


def test_the_readme_quickstart_runs_and_a_task_visibly_executes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "examples.simple", "--once", "--port", str(free_port())],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "hello task executing: Hello, Ada!" in output
    assert "hello task executing: Bonjour, Grace!" in output
    assert "2 hello tasks delivered, statuses [200, 200]" in output


def test_a_partial_retry_config_compares_equal_to_what_the_service_stores(
    world: tuple[Emulator, Recorder, Any, Any, Any],
) -> None:
    _, _, _, _, report = world
    handle = report.scheduler(
        name="partial-retry", schedule="0 1 * * *", retry_config=scheduler_v1.RetryConfig(retry_count=3)
    )
    first = handle.schedule()
    assert handle.schedule().user_update_time == first.user_update_time
