"""`create_console` end to end: task history on SQLite, the emulator as Cloud Tasks, and a real app's task routes.

Tasks are created by `.delay()` and delivered by the emulator into the app in-process; the console reads what
both sides recorded and its actions go through the Cloud Tasks client to the emulator.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException
from google.api_core.exceptions import NotFound
from google.cloud import tasks_v2
from pydantic import BaseModel

from fastapi_gcp_tasks.console import ConsoleConfigError, create_console
from fastapi_gcp_tasks.delayed_route import DelayedRouteBuilder
from fastapi_gcp_tasks.emulator import Emulator
from fastapi_gcp_tasks.history import TaskHistory, migrate
from fastapi_gcp_tasks.receive import DeadLetter, PrivateEndpoint
from tests._support import TIMEOUT, eventually
from tests.console._client import csrf_of, local_client

QUEUE = "projects/p/locations/europe-west1/queues/console"
OTHER = "projects/p/locations/europe-west1/queues/other"
PRIVATE = PrivateEndpoint("tests: the emulator delivers in-process")

pytestmark = pytest.mark.slow


class Order(BaseModel):
    item: str
    note: str = ""


@dataclass
class Env:
    emu: Emulator
    history: TaskHistory
    ship: Any
    flaky: Any
    app: FastAPI
    client: httpx.AsyncClient
    handled: list[str] = field(default_factory=list)

    async def settle(self) -> None:
        await self.emu.wait_until_idle_async(timeout=TIMEOUT)
        assert await asyncio.to_thread(self.history.flush, TIMEOUT)

    async def act(self, kind: str, target: str, action: str, **extra: str) -> str:
        token = csrf_of((await self.client.get("/queues")).text)
        response = await self.client.post(
            f"/actions/{kind}", data={"csrf_token": token, "target": target, "action": action, **extra}
        )
        assert response.status_code == 200, response.text
        flash = re.search(r'<p class="flash flash-(ok|error)" role="status">([^<]*)</p>', response.text)
        assert flash is not None, "no flash message"
        return f"{flash.group(1)}: {flash.group(2)}"


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    database = f"sqlite:///{tmp_path / 'history.db'}"
    migrate(database)
    holder: dict[str, FastAPI] = {}

    async def deliver_to(scope: Any, receive: Any, send: Any) -> None:
        await holder["app"](scope, receive, send)

    with (
        TaskHistory(database, flush_interval=0.01) as history,
        Emulator(deliver_to=deliver_to, queues=[QUEUE, OTHER]) as emu,
    ):
        builder = DelayedRouteBuilder(
            queue_path=QUEUE,
            callback_base_url="http://worker.test",
            client=emu.tasks_client(),
            auto_create_queue=False,
            history=history,
        )
        router = APIRouter(route_class=builder, dependencies=[Depends(PRIVATE)])
        handled: list[str] = []
        failures: set[str] = set()

        @router.post("/orders/{shop}")
        def ship(shop: str, order: Order) -> None:
            handled.append(f"{shop}:{order.item}")

        @router.post("/flaky/{key}")
        def flaky(key: str) -> None:
            if key not in failures:  # fails once, then succeeds
                failures.add(key)
                raise HTTPException(500, "<b>first try fails</b>")
            handled.append(f"flaky:{key}")

        app = FastAPI()
        app.include_router(router)
        holder["app"] = app
        console = create_console(
            local_only=True, history=history, queues=[QUEUE, OTHER], tasks_client=emu.tasks_client(), app=app
        )
        async with local_client(console) as client:
            yield Env(emu, history, ship, flaky, app, client, handled)


async def test_every_page_shows_the_recorded_tasks(env: Env) -> None:
    done = await asyncio.to_thread(env.ship.delay, shop="north", order=Order(item="<script>tea</script>"))
    retried = await asyncio.to_thread(env.flaky.delay, key="k1")
    pending = await asyncio.to_thread(env.ship.options(countdown=3600).delay, shop="later", order=Order(item="x"))
    # the retry comes after the queue's backoff, while the emulator looks idle: wait for it by name
    await eventually(lambda: "flaky:k1" in env.handled, "the flaky task's second attempt")
    await env.settle()

    overview = (await env.client.get("/")).text
    assert "/orders/{shop}" in overview
    assert "/flaky/{key}" in overview
    assert "<svg" in overview
    assert "console" in overview
    assert "RUNNING" in overview

    listing = (await env.client.get("/tasks")).text
    for task in (done, retried, pending):
        assert task.name.rsplit("/", 1)[-1] in listing
    assert "<script>tea" not in (await env.client.get(f"/tasks/{done.name}")).text

    flaky_page = (await env.client.get(f"/tasks/{retried.name}")).text
    assert flaky_page.count('class="status status-failed"') == 1
    assert flaky_page.count('class="status status-succeeded"') >= 2  # the task and its second attempt
    assert 'value="run"' not in flaky_page  # finished: nothing to run or delete

    pending_page = (await env.client.get(f"/tasks/{pending.name}")).text
    assert 'value="run"' in pending_page
    assert 'value="delete"' in pending_page
    assert "status-pending" in pending_page

    failed_only = (await env.client.get("/tasks?status=succeeded&endpoint=/flaky/{key}")).text
    assert retried.name.rsplit("/", 1)[-1] in failed_only
    assert done.name.rsplit("/", 1)[-1] not in failed_only
    for path in ("/queues", f"/queues/purge?queue={QUEUE}", "/dead-letters"):
        assert (await env.client.get(path)).status_code == 200
    assert (await env.client.get("/schedules")).status_code == 404  # no schedules given


async def test_run_now_and_delete_act_on_pending_tasks(env: Env) -> None:
    later = env.ship.options(countdown=3600)
    first = await asyncio.to_thread(later.delay, shop="a", order=Order(item="run-me"))
    second = await asyncio.to_thread(later.delay, shop="b", order=Order(item="delete-me"))
    await env.settle()
    assert (await env.act("task", first.name, "run")).startswith("ok: ")
    assert (await env.act("task", second.name, "delete")).startswith("ok: ")
    await env.settle()
    assert env.handled == ["a:run-me"]
    with pytest.raises(NotFound):
        await asyncio.to_thread(env.emu.tasks_client().get_task, name=second.name)
    record = env.history.get(first.name)
    assert record is not None
    assert record.summary.status == "succeeded"
    # a task that is gone: the action is a flash message, not a 500
    assert (await env.act("task", second.name, "delete")).startswith("error: ")


async def test_queues_pause_resume_and_purge(env: Env) -> None:
    client = env.emu.tasks_client()
    assert (await env.act("queue", QUEUE, "pause")).startswith("ok: ")
    queue = await asyncio.to_thread(client.get_queue, name=QUEUE)
    assert queue.state == tasks_v2.Queue.State.PAUSED
    assert "PAUSED" in (await env.client.get("/queues")).text
    assert (await env.act("queue", QUEUE, "resume")).startswith("ok: ")
    queue = await asyncio.to_thread(client.get_queue, name=QUEUE)
    assert queue.state == tasks_v2.Queue.State.RUNNING

    await asyncio.to_thread(env.ship.options(countdown=3600).delay, shop="p", order=Order(item="purged"))
    assert (await env.act("queue", QUEUE, "purge", confirm="yes")).startswith("ok: ")
    assert list(await asyncio.to_thread(lambda: list(client.list_tasks(parent=QUEUE)))) == []

    elsewhere = "projects/p/locations/europe-west1/queues/not-mine"
    assert (await env.act("queue", elsewhere, "pause")).startswith("error: ")


async def test_a_dead_letter_is_replayed_through_the_route_and_runs(env: Env) -> None:
    letters = env.history.dead_letters
    letter = DeadLetter(
        reason="invalid_request",
        method="POST",
        path="/orders/west",
        body=b'{"item": "replayed"}',
        headers={"content-type": "application/json", "x-cloudtasks-taskname": "dead1"},
    )
    await asyncio.to_thread(letters, letter)
    stale = DeadLetter(
        reason="invalid_request",
        method="POST",
        path="/orders/west",
        body=b'{"wrong": 1}',
        headers={"content-type": "application/json", "x-cloudtasks-taskname": "dead2"},
    )
    await asyncio.to_thread(letters, stale)
    page = (await env.client.get("/dead-letters")).text
    ids = re.findall(r'name="target" value="(\d+)">\s*<input type="hidden" name="action" value="replay">', page)
    assert len(ids) == 2
    by_name = {
        stored.task_name: stored.letter_id for stored in (await asyncio.to_thread(letters.list, status="open")).items
    }
    good, bad = by_name["dead1"], by_name["dead2"]

    flash = await env.act("letter", str(good), "replay")
    assert flash.startswith("ok: "), flash
    await env.settle()
    assert env.handled == ["west:replayed"]
    stored = await asyncio.to_thread(letters.get, good)
    assert stored is not None
    assert stored.status == "replayed"

    flash = await env.act("letter", str(bad), "replay")
    assert flash.startswith("error: "), flash
    assert "order" in flash  # names the parameter that no longer fits
    assert (await env.act("letter", str(bad), "discard")).startswith("ok: ")
    assert (await asyncio.to_thread(letters.count, "open")) == 0
    assert "replayed" in (await env.client.get("/dead-letters")).text


async def test_without_history_the_task_list_is_what_cloud_tasks_holds(env: Env) -> None:
    pending = await asyncio.to_thread(env.ship.options(countdown=3600).delay, shop="q", order=Order(item="wait"))
    console = create_console(
        local_only=True, queues=["projects/p/locations/europe-west1"], tasks_client=env.emu.tasks_client()
    )
    async with local_client(console) as client:
        overview = (await client.get("/")).text
        assert "other" in overview
        assert "Dead letters" not in overview
        listing = (await client.get("/tasks")).text
        assert pending.name.rsplit("/", 1)[-1] in listing
        page = (await client.get(f"/tasks/{pending.name}")).text
        assert "/orders/q" in page
        assert "wait" in page  # the body, shown when no history policy applies
        assert (await client.get("/tasks?status=succeeded")).status_code == 200


def test_create_console_checks_its_arguments() -> None:
    with pytest.raises(ConsoleConfigError) as caught:
        create_console(local_only=True, queues="projects/p/locations/l/queues/q")
    assert caught.value.param == "queues"
    with pytest.raises(ConsoleConfigError) as caught:
        create_console(local_only=True, queues=["queue-1"])
    assert caught.value.param == "queues"
    with pytest.raises(ConsoleConfigError) as caught:
        create_console(local_only=True, app=FastAPI())
    assert caught.value.param == "app"
    with pytest.raises(ConsoleConfigError) as caught:
        create_console(local_only=True, outbox=object())
    assert caught.value.param == "outbox"


async def test_schedules_show_the_plan_against_what_is_deployed_and_act(env: Env) -> None:
    from fastapi_gcp_tasks import ScheduledRouteBuilder
    from fastapi_gcp_tasks.schedules import Schedules

    location = "projects/p/locations/europe-west1"
    scheduler = env.emu.scheduler_client()
    schedules = Schedules(prefix="console-", location_path=location, client=scheduler)
    cron = APIRouter(
        route_class=ScheduledRouteBuilder(
            location_path=location, callback_base_url="http://worker.test", client=scheduler
        ),
        dependencies=[Depends(PRIVATE)],
    )
    runs: list[str] = []

    @cron.post("/cron/nightly")
    def nightly() -> None:
        runs.append("nightly")

    @cron.post("/cron/hourly")
    def hourly() -> None:
        runs.append("hourly")

    env.app.include_router(cron)
    schedules.add(nightly, name="nightly", schedule="0 3 * * *")
    await asyncio.to_thread(schedules.sync)
    schedules.add(hourly, name="hourly", schedule="0 * * * *")  # declared after the sync: not deployed

    console = create_console(local_only=True, queues=[QUEUE], tasks_client=env.emu.tasks_client(), schedules=schedules)
    async with local_client(console) as client:
        page = (await client.get("/schedules")).text
        assert "console-nightly" in page
        assert "console-hourly" in page
        assert "declared, not deployed" in page
        assert "ENABLED" in page
        assert "console-nightly" in (await client.get("/")).text  # next runs on the overview
        token = csrf_of(page)

        async def act(target: str, action: str) -> str:
            response = await client.post("/actions/job", data={"csrf_token": token, "target": target, "action": action})
            found = re.search(r'class="flash flash-(ok|error)" role="status">([^<]*)<', response.text)
            assert found is not None
            return found.group(1)

        assert await act("console-nightly", "pause") == "ok"
        assert "PAUSED" in (await client.get("/schedules")).text
        assert await act("console-nightly", "resume") == "ok"
        assert await act("console-nightly", "run") == "ok"
        await env.emu.wait_until_idle_async(timeout=TIMEOUT)
        assert runs == ["nightly"]
        assert await act("someone-elses-job", "pause") == "error"


async def test_the_overview_shows_the_outbox_backlog(env: Env) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from fastapi_gcp_tasks.outbox import OutboxStore, use_outbox

    engine = create_engine(str(env.history.engine.url))
    try:
        console = create_console(
            local_only=True, queues=[QUEUE], tasks_client=env.emu.tasks_client(), outbox=OutboxStore(engine)
        )
        async with local_client(console) as client:

            async def backlog() -> str:
                html = (await client.get("/")).text
                found = re.search(r'Outbox backlog</span><span class="value">(\d+)<', html)
                assert found is not None
                return found.group(1)

            assert await backlog() == "0"

            def commit_two() -> None:
                with Session(engine) as session, session.begin(), use_outbox(session):
                    env.ship.delay(shop="o", order=Order(item="one"))
                    env.ship.delay(shop="o", order=Order(item="two"))

            await asyncio.to_thread(commit_two)
            assert await backlog() == "2"
    finally:
        engine.dispose()
