"""Poison-message policy through a real FastAPI app."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

from fastapi_gcp_tasks.exception import WorkerConfigError
from fastapi_gcp_tasks.poison import DeadLetter, PoisonPolicy, poison_route_class
from fastapi_gcp_tasks.receive import PrivateEndpoint

from ._support import client_for

PRIVATE = PrivateEndpoint("tests: reached in-process only")
TASK = {"X-CloudTasks-TaskName": "t-9", "X-CloudTasks-QueueName": "emails", "Content-Type": "application/json"}


class Email(BaseModel):
    to: str
    attempts: int


def make_app(policy: PoisonPolicy | None, base: type[APIRoute] = APIRoute) -> tuple[FastAPI, list[Email]]:
    handled: list[Email] = []
    router = APIRouter(route_class=poison_route_class(base, policy), dependencies=[Depends(PRIVATE)])

    @router.post("/send")
    async def send(email: Email) -> dict[str, str]:
        handled.append(email)
        return {"sent": email.to}

    app = FastAPI()
    app.include_router(router)
    return app, handled


async def test_invalid_task_is_dead_lettered_and_acknowledged() -> None:
    letters: list[DeadLetter] = []
    app, handled = make_app(PoisonPolicy(sink=letters.append))
    async with client_for(app) as client:
        response = await client.post(
            "/send", content=b'{"to": "a@b.c", "attempts": "many"}', headers={**TASK, "Authorization": "Bearer x"}
        )
        ok = await client.post("/send", json={"to": "a@b.c", "attempts": 1}, headers=TASK)
    assert response.status_code == 200
    assert response.json()["errors"][0]["loc"] == ["body", "attempts"]
    assert ok.json() == {"sent": "a@b.c"}
    assert len(handled) == 1
    [letter] = letters
    assert letter.reason == "invalid_request"
    assert (letter.task_name, letter.queue_name, letter.method, letter.path) == ("t-9", "emails", "POST", "/send")
    assert letter.body == b'{"to": "a@b.c", "attempts": "many"}'
    assert letter.errors[0]["type"] == "int_parsing"
    assert letter.headers["authorization"] == "[redacted]"


async def test_malformed_json_is_dead_lettered() -> None:
    letters: list[DeadLetter] = []
    app, _ = make_app(PoisonPolicy(sink=letters.append, status_code=202))
    async with client_for(app) as client:
        response = await client.post("/send", content=b"{not json", headers=TASK)
    assert response.status_code == 202
    assert letters[0].body == b"{not json"
    assert letters[0].errors[0]["type"] == "json_invalid"


async def test_requests_not_from_a_task_keep_their_422() -> None:
    letters: list[DeadLetter] = []
    app, _ = make_app(PoisonPolicy(sink=letters.append))
    async with client_for(app) as client:
        response = await client.post("/send", json={"to": "a@b.c"})
        scheduler = await client.post("/send", json={"to": "a@b.c"}, headers={"X-CloudScheduler": "true"})
    assert response.status_code == 422
    assert scheduler.status_code == 200
    assert len(letters) == 1


async def test_every_request_when_not_limited_to_tasks() -> None:
    letters: list[DeadLetter] = []
    app, _ = make_app(PoisonPolicy(sink=letters.append, only_task_requests=False))
    async with client_for(app) as client:
        response = await client.post("/send", json={"to": "a@b.c"})
    assert response.status_code == 200
    assert len(letters) == 1


async def test_first_retries_fail_before_dead_lettering() -> None:
    letters: list[DeadLetter] = []
    app, _ = make_app(PoisonPolicy(sink=letters.append, dead_letter_after_retries=2))
    async with client_for(app) as client:
        statuses = [
            (
                await client.post("/send", json={"to": 1}, headers={**TASK, "X-CloudTasks-TaskRetryCount": str(r)})
            ).status_code
            for r in range(4)
        ]
    assert statuses == [422, 422, 200, 200]
    # Retry 3 is the same task again (its acknowledgement was lost): acknowledged, not lettered twice.
    assert [letter.retry_count for letter in letters] == [2]


async def test_async_sink() -> None:
    letters: list[DeadLetter] = []

    async def sink(letter: DeadLetter) -> None:
        letters.append(letter)

    app, _ = make_app(PoisonPolicy(sink=sink))
    async with client_for(app) as client:
        assert (await client.post("/send", json={}, headers=TASK)).status_code == 200
    assert len(letters) == 1


async def test_failing_sink_keeps_the_422_so_the_task_is_retried(caplog: pytest.LogCaptureFixture) -> None:
    def broken(letter: DeadLetter) -> None:
        raise OSError("disk full")

    app, _ = make_app(PoisonPolicy(sink=broken))
    async with client_for(app) as client:
        response = await client.post("/send", json={}, headers=TASK)
    assert response.status_code == 422
    assert "dead-letter sink failed" in caplog.text


async def test_default_sink_logs_the_whole_letter(caplog: pytest.LogCaptureFixture) -> None:
    app, _ = make_app(None)
    with caplog.at_level(logging.ERROR, logger="fastapi_gcp_tasks.dead_letter"):
        async with client_for(app) as client:
            response = await client.post("/send", json={"to": "x"}, headers=TASK)
    assert response.status_code == 200
    [record] = [r for r in caplog.records if r.name == "fastapi_gcp_tasks.dead_letter"]
    summary: dict[str, Any] = record.dead_letter  # type: ignore[attr-defined]
    assert summary["task_name"] == "t-9"
    assert summary["body"] == '{"to":"x"}'
    assert "t-9" in record.getMessage()


async def test_custom_base_route_class_still_runs() -> None:
    class Timed(APIRoute):
        def get_route_handler(self) -> Any:
            original = super().get_route_handler()

            async def handler(request: Request) -> Response:
                response: Response = await original(request)
                response.headers["X-Timed"] = "1"
                return response

            return handler

    app, _ = make_app(PoisonPolicy(sink=lambda letter: None), base=Timed)
    async with client_for(app) as client:
        ok = await client.post("/send", json={"to": "a", "attempts": 1}, headers=TASK)
        poisoned = await client.post("/send", json={}, headers=TASK)
    assert ok.headers["X-Timed"] == "1"
    assert poisoned.status_code == 200


async def test_handler_errors_are_not_swallowed() -> None:
    router = APIRouter(
        route_class=poison_route_class(APIRoute, PoisonPolicy(sink=lambda letter: None)),
        dependencies=[Depends(PRIVATE)],
    )

    @router.post("/boom")
    async def boom() -> None:
        raise ValueError("bug in the handler")

    app = FastAPI()
    app.include_router(router)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        assert (await client.post("/boom", headers=TASK)).status_code == 500


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"status_code": 422}, "status_code"),
        ({"status_code": 204}, "status_code"),
        ({"status_code": "200"}, "status_code"),
        ({"dead_letter_after_retries": -1}, "dead_letter_after_retries"),
        ({"sink": "log"}, "sink"),
    ],
)
def test_bad_policy_fails_at_the_call_site(kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(WorkerConfigError) as caught:
        PoisonPolicy(**kwargs)
    assert caught.value.param == param


def test_bad_route_class_arguments() -> None:
    with pytest.raises(WorkerConfigError) as caught:
        poison_route_class(dict)  # type: ignore[arg-type]
    assert caught.value.param == "base"
    with pytest.raises(WorkerConfigError) as caught:
        poison_route_class(APIRoute, {"sink": print})  # type: ignore[arg-type]
    assert caught.value.param == "policy"
