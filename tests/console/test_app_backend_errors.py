"""`AppBackend` when Cloud Tasks fails: pages still render, actions become error messages, never a 500."""

from __future__ import annotations

import re
from typing import Any

import pytest
from google.api_core import exceptions as core

from fastapi_gcp_tasks.console import create_console
from fastapi_gcp_tasks.console._app_backend import AppBackend
from tests.console._client import csrf_of, local_client

QUEUE = "projects/p/locations/l/queues/q"


class DownClient:
    """A Cloud Tasks client whose every call fails as the service would when it is unreachable."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            raise core.ServiceUnavailable("connection refused")  # type: ignore[no-untyped-call]

        return call


class BuggyClient:
    def get_queue(self, **kwargs: Any) -> Any:
        raise KeyError("a bug, not a service error")


async def test_an_unreachable_service_shows_unknown_queues_and_error_flashes() -> None:
    client = DownClient()
    console = create_console(local_only=True, queues=[QUEUE], tasks_client=client)
    async with local_client(console) as http:
        page = await http.get("/queues")
        assert page.status_code == 200
        assert "UNKNOWN" in page.text
        assert (await http.get("/")).status_code == 200
        assert (await http.get("/tasks")).status_code == 503  # listing needs the service: a message, not a 500
        assert (await http.get(f"/tasks/{QUEUE}/tasks/t1")).status_code == 404
        # a task that cannot be read lands on the "not found" page, which shows the action's message
        for kind, target, action, status in (
            ("queue", QUEUE, "pause", 200),
            ("task", f"{QUEUE}/tasks/t1", "run", 404),
        ):
            response = await http.post(
                f"/actions/{kind}", data={"csrf_token": csrf_of(page.text), "target": target, "action": action}
            )
            assert response.status_code == status
            flash = re.search(r'class="flash flash-error" role="status">([^<]*)<', response.text)
            assert flash is not None
            assert "UNAVAILABLE" in flash.group(1)
    assert "pause_queue" in client.calls
    assert "run_task" in client.calls


async def test_a_bug_is_not_swallowed() -> None:
    backend = AppBackend(queues=[QUEUE], tasks_client=BuggyClient())
    with pytest.raises(KeyError):
        await backend.queues()


async def test_actions_outside_the_configured_queues_are_refused_before_any_call() -> None:
    client = DownClient()
    backend = AppBackend(queues=[QUEUE], tasks_client=client)
    from fastapi_gcp_tasks.console import ConsoleActionError

    with pytest.raises(ConsoleActionError, match="not one of"):
        await backend.queue_action("projects/p/locations/l/queues/other", "purge")
    with pytest.raises(ConsoleActionError, match="not a task of"):
        await backend.task_action("projects/p/locations/l/queues/other/tasks/t", "delete")
    with pytest.raises(ConsoleActionError, match="history"):
        await backend.letter_action("1", "discard")
    with pytest.raises(ConsoleActionError, match="schedules"):
        await backend.job_action("job", "run")
    with pytest.raises(ConsoleActionError, match="clock"):
        await backend.advance_clock(60)
    assert client.calls == []
    assert backend.features == frozenset()
