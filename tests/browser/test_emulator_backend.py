"""The emulator's console backend against a running emulator (no browser): what it reports and what its actions do."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI, Response
from google.cloud import scheduler_v1, tasks_v2

from fastapi_gcp_tasks.console import ConsoleActionError, ConsoleBackend
from fastapi_gcp_tasks.emulator import Emulator, ManualClock
from fastapi_gcp_tasks.emulator._console import EmulatorBackend
from tests._support import wait_for

QUEUE = "projects/p/locations/l/queues/work"
LOCATION = "projects/p/locations/l"
START = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)


def worker() -> FastAPI:
    app = FastAPI()
    calls: dict[str, int] = {}

    @app.post("/ok")
    def ok() -> dict[str, str]:
        return {"ok": "yes"}

    @app.post("/flaky")
    def flaky(response: Response) -> dict[str, str]:
        calls["flaky"] = calls.get("flaky", 0) + 1
        response.status_code = 500 if calls["flaky"] == 1 else 200
        return {}

    @app.post("/cron")
    def cron() -> None:
        return None

    return app


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(queues=[QUEUE], clock=ManualClock(START), deliver_to=worker()) as emu:
        yield emu


def create(emu: Emulator, path: str, *, delay: float = 0.0) -> str:
    task = tasks_v2.Task(http_request=tasks_v2.HttpRequest(url=f"http://worker{path}", body=b'{"n": 1}'))
    if delay:
        task.schedule_time = START + dt.timedelta(seconds=delay)
    return str(emu.tasks_client().create_task(parent=QUEUE, task=task).name)


def test_it_is_a_console_backend_with_the_clock_and_schedules(emulator: Emulator) -> None:
    backend = EmulatorBackend(emulator.server)
    assert isinstance(backend, ConsoleBackend)
    assert backend.features == {"schedules", "clock"}


def test_tasks_show_pending_then_their_attempts_after_they_finish(emulator: Emulator) -> None:
    backend = EmulatorBackend(emulator.server)
    later = create(emulator, "/ok", delay=60)
    flaky = create(emulator, "/flaky")
    wait_for(lambda: any(r.status == 500 for r in emulator.deliveries), "the first, failed attempt")
    page = asyncio.run(backend.tasks())
    statuses = {view.name: view.status for view in page.items}
    assert statuses[later] == "pending"
    assert statuses[flaky] == "retrying"
    token = asyncio.run(backend.change_token())
    emulator.clock.advance(120)  # type: ignore[attr-defined]
    emulator.wait_until_idle()
    assert asyncio.run(backend.change_token()) != token
    detail = asyncio.run(backend.task(flaky))
    assert detail is not None
    assert detail.view.status == "succeeded"
    assert [a.status_code for a in detail.attempts] == [500, 200]
    assert [a.outcome for a in detail.attempts] == ["failed", "succeeded"]
    assert detail.arguments == {"n": 1}
    assert detail.actions == frozenset()
    assert asyncio.run(backend.tasks(status="succeeded")).items
    overview = asyncio.run(backend.overview())
    rates = {stats.endpoint: stats.failure_rate for stats in overview.endpoints}
    assert rates == {"/flaky": 0.5, "/ok": 0.0}
    assert sum(point.failed for point in overview.chart) == 1


def test_run_now_and_delete_act_on_stored_tasks(emulator: Emulator) -> None:
    backend = EmulatorBackend(emulator.server)
    first = create(emulator, "/ok", delay=600)
    second = create(emulator, "/ok", delay=600)
    detail = asyncio.run(backend.task(first.rpartition("/")[2]))
    assert detail is not None
    assert detail.actions == {"run", "delete"}
    assert "started" in asyncio.run(backend.task_action(first, "run"))
    emulator.wait_until_idle()
    assert [r.source for r in emulator.deliveries] == [first]
    assert "deleted" in asyncio.run(backend.task_action(second, "delete"))
    gone = asyncio.run(backend.task(second))
    assert gone is not None
    assert (gone.view.status, gone.attempts, gone.actions) == ("deleted", [], frozenset())
    with pytest.raises(ConsoleActionError, match="not stored"):
        asyncio.run(backend.task_action(second, "run"))
    with pytest.raises(ConsoleActionError, match="no dead letters"):
        asyncio.run(backend.task_action(first, "replay"))


def test_queue_pause_resume_and_purge(emulator: Emulator) -> None:
    backend = EmulatorBackend(emulator.server)
    assert "paused" in asyncio.run(backend.queue_action("work", "pause"))
    create(emulator, "/ok")
    emulator.wait_until_idle()
    [queue] = asyncio.run(backend.queues())
    assert (queue.state, queue.tasks) == ("PAUSED", 1)
    assert "resumed" in asyncio.run(backend.queue_action(QUEUE, "resume"))
    wait_for(lambda: len(emulator.deliveries) == 1, "the task to run once the queue resumed")
    create(emulator, "/ok", delay=600)
    assert "purged" in asyncio.run(backend.queue_action("work", "purge"))
    assert asyncio.run(backend.queues())[0].tasks == 0
    with pytest.raises(ConsoleActionError, match="no queue"):
        asyncio.run(backend.queue_action("nope", "pause"))


def test_jobs_run_pause_resume_and_their_runs_are_listed(emulator: Emulator) -> None:
    backend = EmulatorBackend(emulator.server)
    job = scheduler_v1.Job(
        name=f"{LOCATION}/jobs/nightly", schedule="0 3 * * *", http_target=scheduler_v1.HttpTarget(uri="http://w/cron")
    )
    emulator.scheduler_client().create_job(parent=LOCATION, job=job)
    [view] = asyncio.run(backend.schedules())
    assert (view.short_name, view.state, view.next_run) == ("nightly", "ENABLED", START.replace(day=6, hour=3))
    assert "started" in asyncio.run(backend.job_action("nightly", "run"))
    wait_for(lambda: len(emulator.server.scheduler.deliveries) == 1, "the job run")
    runs = asyncio.run(backend.tasks(search="job:nightly"))
    assert [(run.status, run.endpoint) for run in runs.items] == [("succeeded", "/cron")]
    assert asyncio.run(backend.schedules())[0].last_attempt_status == "200"
    assert "paused" in asyncio.run(backend.job_action("nightly", "pause"))
    with pytest.raises(ConsoleActionError, match="not ENABLED"):
        asyncio.run(backend.job_action("nightly", "pause"))
    assert "resumed" in asyncio.run(backend.job_action(view.name, "resume"))


def test_advancing_the_clock_fires_what_became_due(emulator: Emulator) -> None:
    backend = EmulatorBackend(emulator.server)
    create(emulator, "/ok", delay=30)
    message = asyncio.run(backend.advance_clock(30))
    assert "09:00:30" in message
    emulator.wait_until_idle()
    assert [r.status for r in emulator.deliveries] == [200]
    with pytest.raises(ConsoleActionError, match="positive"):
        asyncio.run(backend.advance_clock(0))


def test_the_system_clock_cannot_be_advanced() -> None:
    with Emulator() as emu:
        backend = EmulatorBackend(emu.server)
        assert "clock" not in backend.features
        with pytest.raises(ConsoleActionError, match="system clock"):
            asyncio.run(backend.advance_clock(5))


def test_without_kept_deliveries_a_finished_task_is_only_known_to_have_ended() -> None:
    with Emulator(queues=[QUEUE], deliver_to=worker(), keep_deliveries=0) as emu:
        backend = EmulatorBackend(emu.server)
        name = create(emu, "/ok")
        emu.wait_until_idle()
        [view] = asyncio.run(backend.tasks()).items
        assert (view.name, view.status, view.attempts) == (name, "ended", 0)


def test_the_emulator_serves_its_console_at_the_root_of_its_http_port(emulator: Emulator) -> None:
    page = httpx.get(f"{emulator.server.http_url}/queues")
    assert page.status_code == 200
    assert "work" in page.text
    assert httpx.get(f"{emulator.server.http_url}/.well-known/openid-configuration").json()["issuer"]
    remote = httpx.get(f"{emulator.server.http_url}/", headers={"host": "emulator.example.com"})
    assert remote.status_code == 403


def test_without_jinja2_the_console_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fastapi_gcp_tasks.console._app", None)
    with Emulator() as emu:
        response = httpx.get(f"{emu.server.http_url}/")
    assert response.status_code == 501
    assert "pip install 'fastapi-gcp-tasks[console]'" in response.text
