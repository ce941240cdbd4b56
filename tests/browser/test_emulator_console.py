"""The emulator's own console, at the root of its HTTP port, in a real browser: its live state and actions."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from fastapi import FastAPI, Response
from google.cloud import scheduler_v1, tasks_v2
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from fastapi_gcp_tasks.emulator import Emulator, ManualClock
from tests.browser._pages import click, flash, main_text, open_page, still_same_page, wait_for_text, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]

QUEUE = "projects/demo/locations/here/queues/work"
LOCATION = "projects/demo/locations/here"
START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


def worker() -> FastAPI:
    """A worker whose `/flaky` fails its first attempt of each task, and whose other routes succeed."""
    app = FastAPI()
    seen: set[str] = set()

    @app.post("/flaky/{key}")
    def flaky(key: str, response: Response) -> dict[str, str]:
        if key not in seen:
            seen.add(key)
            response.status_code = 503
            return {"detail": "first attempt fails"}
        return {"ok": key}

    @app.post("/ok/{key}")
    def ok(key: str) -> dict[str, str]:
        return {"ok": key}

    @app.post("/nightly")
    def nightly() -> None:
        return None

    return app


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(queues=[QUEUE], clock=ManualClock(START), deliver_to=worker()) as emu:
        yield emu


def console(emulator: Emulator) -> str:
    return emulator.server.http_url


def manual_clock(emulator: Emulator) -> ManualClock:
    clock = emulator.clock
    assert isinstance(clock, ManualClock)
    return clock


def create(emulator: Emulator, path: str, *, after: float = 0.0) -> str:
    task = tasks_v2.Task(
        http_request=tasks_v2.HttpRequest(url=f"http://worker{path}", body=b'{"order": 7}'),
        schedule_time=emulator.clock.now() + dt.timedelta(seconds=after),
    )
    return str(emulator.tasks_client().create_task(parent=QUEUE, task=task).name.rpartition("/")[2])


def test_a_task_appears_then_its_failed_and_successful_attempts_show_live(
    browser: WebDriver, emulator: Emulator
) -> None:
    open_page(browser, f"{console(emulator)}/tasks")
    wait_for_text(browser, "No tasks match")
    task_id = create(emulator, "/flaky/a")
    wait_until(browser, lambda _: task_id in main_text(browser) and "retrying" in main_text(browser), "a retrying task")
    assert still_same_page(browser)
    browser.find_element(By.LINK_TEXT, task_id).click()
    wait_for_text(browser, "503")
    open_page(browser, browser.current_url)
    manual_clock(emulator).advance(5)  # the retry's backoff passes
    wait_until(browser, lambda _: "succeeded" in main_text(browser), "the task to succeed on its retry")
    rows = browser.find_elements(By.CSS_SELECTOR, "table.attempts tbody tr")
    assert [row.find_elements(By.TAG_NAME, "td")[3].text for row in rows] == ["503", "200"]
    assert still_same_page(browser), "the attempts appeared by a reload, not a live update"
    assert '"order": 7' in main_text(browser)


def test_run_now_and_delete_a_pending_task(browser: WebDriver, emulator: Emulator) -> None:
    later = create(emulator, "/ok/later", after=3600)
    doomed = create(emulator, "/ok/doomed", after=3600)
    open_page(browser, f"{console(emulator)}/tasks/{QUEUE}/tasks/{later}")
    wait_for_text(browser, "pending")
    click(browser, "Run now")
    assert flash(browser) == f"Task {later} started."
    wait_until(browser, lambda _: "succeeded" in main_text(browser), "the task run now to succeed")
    open_page(browser, f"{console(emulator)}/tasks/{QUEUE}/tasks/{doomed}")
    click(browser, "Delete")
    assert flash(browser) == f"Task {doomed} deleted."
    wait_for_text(browser, "deleted")
    assert [record.url for record in emulator.deliveries] == ["http://worker/ok/later"]


def test_a_queue_paused_holds_its_tasks_until_resumed(browser: WebDriver, emulator: Emulator) -> None:
    open_page(browser, f"{console(emulator)}/queues")
    click(browser, "Pause", near="work")
    assert flash(browser) == "Queue work paused."
    wait_for_text(browser, "PAUSED")
    create(emulator, "/ok/held")
    emulator.wait_until_idle()

    def cells() -> list[str]:
        return [str(td.text) for td in browser.find_elements(By.CSS_SELECTOR, "main tbody tr td")]

    wait_until(browser, lambda _: cells()[5] == "1", "the held task counted on the queue, live")
    assert emulator.deliveries == []
    click(browser, "Resume", near="work")
    assert flash(browser) == "Queue work resumed."
    wait_until(browser, lambda _: "RUNNING" in main_text(browser) and cells()[5] == "0", "the queue to drain")
    assert [record.status for record in emulator.deliveries] == [200]


def test_a_job_run_now_and_the_clock_moved_forward(browser: WebDriver, emulator: Emulator) -> None:
    job = scheduler_v1.Job(
        name=f"{LOCATION}/jobs/nightly",
        schedule="*/5 * * * *",
        http_target=scheduler_v1.HttpTarget(uri="http://worker/nightly"),
    )
    emulator.scheduler_client().create_job(parent=LOCATION, job=job)
    open_page(browser, f"{console(emulator)}/schedules")
    wait_for_text(browser, "2026-03-02 09:05:00")
    click(browser, "Run now", near="nightly")
    assert flash(browser) == "Job nightly started."
    wait_for_text(browser, "200")  # the run's status, live
    task_id = create(emulator, "/ok/soon", after=30)
    open_page(browser, f"{console(emulator)}/")
    wait_for_text(browser, "Throughput")
    click(browser, "Advance +10 min")
    assert flash(browser).startswith("Clock advanced by 600 s to 2026-03-02 09:10:00")
    emulator.wait_until_idle()
    open_page(browser, f"{console(emulator)}/tasks")
    wait_until(
        browser,
        lambda _: task_id in main_text(browser) and main_text(browser).count("job:nightly@") == 2,
        "the task due in 30 s and the 09:05 job run, after the clock moved",
    )
    statuses = [
        row.find_elements(By.TAG_NAME, "td")[3].text
        for row in browser.find_elements(By.CSS_SELECTOR, "table.tasks tbody tr")
    ]
    assert statuses == ["succeeded"] * 3
