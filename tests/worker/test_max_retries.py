"""`max_retries` through a real FastAPI app."""

from __future__ import annotations

import threading

import httpx
import pytest
from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel

from fastapi_gcp_tasks.dependencies import CloudTasksHeaders, PrivateEndpoint, max_retries
from fastapi_gcp_tasks.exception import WorkerConfigError
from fastapi_gcp_tasks.poison import DeadLetter

from ._support import client_for

PRIVATE = PrivateEndpoint("tests: reached in-process only")


class Payload(BaseModel):
    n: int


def make_app(count: int, on_give_up: object = None) -> tuple[FastAPI, list[int]]:
    app = FastAPI(dependencies=[Depends(PRIVATE)])
    runs: list[int] = []

    @app.post("/work", dependencies=[Depends(max_retries(count, on_give_up=on_give_up))])  # type: ignore[arg-type]
    async def work(p: Payload, meta: CloudTasksHeaders = Depends()) -> None:
        runs.append(meta.retry_count)
        raise HTTPException(500, "always fails")

    return app, runs


def task_headers(retry: int) -> dict[str, str]:
    return {"X-CloudTasks-TaskName": "t1", "X-CloudTasks-QueueName": "q", "X-CloudTasks-TaskRetryCount": str(retry)}


async def test_acknowledges_once_retry_count_reaches_count() -> None:
    app, runs = make_app(3)
    async with client_for(app) as client:
        statuses = [(await client.post("/work", json={"n": 1}, headers=task_headers(r))).status_code for r in range(5)]
    assert statuses == [500, 500, 500, 200, 200]
    assert runs == [0, 1, 2]


async def test_default_count_is_20_as_in_0_3() -> None:
    app = FastAPI(dependencies=[Depends(PRIVATE)])

    @app.post("/work", dependencies=[Depends(max_retries())])
    async def work() -> dict[str, bool]:
        return {"ran": True}

    async with client_for(app) as client:
        assert (await client.post("/work", headers=task_headers(19))).json() == {"ran": True}
        given_up = await client.post("/work", headers=task_headers(20))
    assert given_up.status_code == 200
    assert "gave up" in given_up.json()["detail"]


async def test_async_callback_receives_the_dead_letter() -> None:
    letters: list[DeadLetter] = []

    async def record(letter: DeadLetter) -> None:
        letters.append(letter)

    app, _ = make_app(1, record)
    async with client_for(app) as client:
        await client.post("/work", json={"n": 0}, headers=task_headers(0))
        response = await client.post(
            "/work", json={"n": 7}, headers={**task_headers(1), "Authorization": "Bearer secret"}
        )
    assert response.status_code == 200
    assert len(letters) == 1
    letter = letters[0]
    assert letter.reason == "max_retries"
    assert (letter.task_name, letter.queue_name, letter.retry_count) == ("t1", "q", 1)
    assert letter.body == b'{"n":7}'
    assert letter.headers["authorization"] == "[redacted]"
    assert letter.to_dict()["body"] == '{"n":7}'


async def test_sync_callback_runs_off_the_event_loop() -> None:
    threads: list[int] = []
    app, _ = make_app(1, lambda letter: threads.append(threading.get_ident()))
    async with client_for(app) as client:
        assert (await client.post("/work", json={"n": 0}, headers=task_headers(2))).status_code == 200
    assert threads
    assert threads[0] != threading.get_ident()


async def test_failing_callback_is_not_acknowledged() -> None:
    def broken(letter: DeadLetter) -> None:
        raise RuntimeError("dead-letter store down")

    app, runs = make_app(1, broken)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        response = await client.post("/work", json={"n": 0}, headers=task_headers(1))
    assert response.status_code == 500
    assert runs == []


@pytest.mark.parametrize("count", [0, -1, True, 2.5, "3"])
def test_bad_count_fails_at_the_call_site(count: object) -> None:
    with pytest.raises(WorkerConfigError, match="count") as caught:
        max_retries(count)  # type: ignore[arg-type]
    assert caught.value.param == "count"


def test_bad_callback_fails_at_the_call_site() -> None:
    with pytest.raises(WorkerConfigError) as caught:
        max_retries(3, on_give_up="log")  # type: ignore[arg-type]
    assert caught.value.param == "on_give_up"
