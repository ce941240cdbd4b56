"""The console mounted in an app, in a real browser: task history on SQLite, the emulator delivering into the app.

A manual clock holds each retry until the test moves time, so the page is seen before and after an attempt, and
what changes arrives by a live update (the window keeps a mark that a reload would drop).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from fastapi_gcp_tasks import (
    CloudTasksHeaders,
    DelayedRouteBuilder,
    PrivateEndpoint,
    as_delayed_task,
    max_retries,
    queue_path,
)
from fastapi_gcp_tasks.console import create_console
from fastapi_gcp_tasks.emulator import Emulator, ManualClock
from fastapi_gcp_tasks.history import TaskHistory, migrate
from fastapi_gcp_tasks.testing._env import use_emulator
from tests._support import listening_socket, serve_asgi, wait_for
from tests._support.ports import url_of
from tests.browser._pages import click, flash, main_text, open_page, still_same_page, wait_for_text, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]

QUEUE = queue_path(project="demo", location="here", queue="console-test")


@dataclass
class Console:
    url: str
    emulator: Emulator
    clock: ManualClock
    history: TaskHistory
    broken: dict[str, bool]
    tasks: dict[str, Any]

    def settle(self, seconds: float = 1.0) -> None:
        """Move time past the queue's backoff and wait for what became due, then for history to be written."""
        self.clock.advance(seconds)
        self.emulator.wait_until_idle()
        assert self.history.flush()


def build_app(history: TaskHistory, broken: dict[str, bool], base_url: str) -> tuple[FastAPI, dict[str, Any]]:
    router = APIRouter(
        route_class=DelayedRouteBuilder(queue_path=QUEUE, callback_base_url=base_url, history=history),
        prefix="/tasks",
        dependencies=[Depends(PrivateEndpoint("the test's emulator is the only caller"))],
    )

    @router.post("/flaky")
    @as_delayed_task
    def flaky(order: str, meta: CloudTasksHeaders = Depends()) -> None:
        if meta.retry_count == 0:
            raise HTTPException(503, "try again")

    @router.post("/feed", dependencies=[Depends(max_retries(1, on_give_up=history.dead_letters))])
    @as_delayed_task
    def feed(url: str) -> None:
        if broken["feed"]:
            raise HTTPException(502, f"cannot read {url}")

    @router.post("/plain")
    @as_delayed_task
    def plain(n: int) -> None:
        return None

    app = FastAPI()
    app.include_router(router)
    app.mount("/console", create_console(local_only=True, history=history, queues=[QUEUE], app=app, title="Test"))
    return app, {"flaky": flaky, "feed": feed, "plain": plain}


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    database = f"sqlite:///{tmp_path / 'history.db'}"
    migrate(database)
    history = TaskHistory(database, flush_interval=0.05)
    broken = {"feed": True}
    clock = ManualClock()
    sock = listening_socket()  # the app's URL must be known before its routes are built
    app, tasks = build_app(history, broken, url_of(sock))
    with (
        Emulator(deliver_to=app, clock=clock, auto_create_queues=True) as emulator,
        use_emulator(emulator),
        serve_asgi(app, sock) as url,
    ):
        yield Console(f"{url}/console", emulator, clock, history, broken, tasks)
    history.close()


def test_a_task_shows_as_created_then_its_failed_and_successful_attempts(browser: WebDriver, console: Console) -> None:
    open_page(browser, f"{console.url}/tasks")
    task = console.tasks["flaky"].delay(order="A-1")
    short = task.name.rpartition("/")[2]
    wait_for_text(browser, short)
    assert still_same_page(browser), "the new task appeared by a reload, not a live update"
    browser.find_element(By.LINK_TEXT, short).click()
    console.settle()  # the first attempt: 503
    wait_for_text(browser, "503")
    open_page(browser, browser.current_url)
    console.settle()  # the retry: 200
    wait_until(browser, lambda _: "succeeded" in main_text(browser), "the retry to succeed")
    assert still_same_page(browser), "the second attempt appeared by a reload, not a live update"
    rows = browser.find_elements(By.CSS_SELECTOR, "table.attempts tbody tr")
    assert [row.find_elements(By.TAG_NAME, "td")[3].text for row in rows] == ["503", "200"]
    assert '"order": "A-1"' in main_text(browser)


def test_a_dead_letter_is_replayed_and_runs(browser: WebDriver, console: Console) -> None:
    console.tasks["feed"].delay(url="https://example.com/feed.xml")
    console.settle()  # attempt 1 fails
    console.settle()  # retry 1: max_retries(1) gives it up into the dead-letter store
    wait_for(lambda: console.history.dead_letters.count() == 1, "the dead letter")
    open_page(browser, f"{console.url}/dead-letters")
    wait_for_text(browser, "max_retries")
    console.broken["feed"] = False  # the bug is fixed: the replay will succeed
    click(browser, "Replay", near="/tasks/feed")
    assert "eplay" in flash(browser), flash(browser)
    wait_for_text(browser, "replayed")
    console.settle()  # the replayed task runs
    replayed = browser.find_element(By.CSS_SELECTOR, "table.letters tbody tr td:nth-child(6) a")
    replayed.click()
    wait_until(browser, lambda _: "succeeded" in main_text(browser), "the replayed task to succeed")


def test_a_queue_paused_then_resumed(browser: WebDriver, console: Console) -> None:
    console.tasks["plain"].delay(n=1)  # creates the queue
    console.settle()
    open_page(browser, f"{console.url}/queues")
    click(browser, "Pause", near="console-test")
    assert "pause" in flash(browser).lower(), flash(browser)
    wait_for_text(browser, "PAUSED")
    console.tasks["plain"].delay(n=2)
    console.settle()
    assert len(console.emulator.deliveries) == 1, "a paused queue dispatched a task"
    click(browser, "Resume", near="console-test")
    assert "resume" in flash(browser).lower(), flash(browser)
    wait_for_text(browser, "RUNNING")
    console.settle()
    assert [record.status for record in console.emulator.deliveries] == [200, 200]
