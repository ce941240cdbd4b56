"""Callback URLs under routers, prefixes and mounts; one endpoint, one task path; nothing at import."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import APIRouter, Depends, FastAPI
from pydantic import BaseModel

from fastapi_gcp_tasks import (
    AsyncDelayedRouteBuilder,
    DelayedRouteBuilder,
    RouteDefinitionError,
    ScheduledRouteBuilder,
    location_path,
    queue_path,
    task_default_options,
)
from tests.core._replay import Recorder, replay

QUEUE = queue_path(project="p", location="l", queue="q")


class Note(BaseModel):
    text: str


def test_nested_prefixes_and_a_mounted_sub_app_reach_the_endpoint() -> None:
    record = Recorder()
    inner = APIRouter(
        route_class=DelayedRouteBuilder(queue_path=QUEUE, callback_base_url="http://testserver/mnt/v1/outer"),
        prefix="/inner",
    )

    @inner.post("/notes/{note_id}")
    def save(note_id: int, note: Note) -> None:
        record(note_id=note_id, note=note)

    outer = APIRouter(prefix="/outer")
    outer.include_router(inner)
    sub = FastAPI()
    sub.include_router(outer, prefix="/v1")
    app = FastAPI()
    app.mount("/mnt", sub)

    request = save.options().request(note_id=7, note=Note(text="hi"))  # type: ignore[attr-defined]
    assert request.task.http_request.url == "http://testserver/mnt/v1/outer/inner/notes/7"
    response = replay(app, request)
    assert response.status_code == 200, response.text
    assert record.last == {"note_id": 7, "note": Note(text="hi")}


def test_the_callback_base_url_query_and_path_are_kept() -> None:
    router = APIRouter(route_class=DelayedRouteBuilder(queue_path=QUEUE, callback_base_url="https://h.example/app/"))

    @router.get("/ping")
    def ping(n: int = 0) -> None: ...

    url = ping.options().request(n=3).task.http_request.url  # type: ignore[attr-defined]
    assert url == "https://h.example/app/ping?n=3"


def test_one_endpoint_cannot_be_a_task_at_two_paths() -> None:
    router = APIRouter(route_class=DelayedRouteBuilder(queue_path=QUEUE, callback_base_url="http://w"))

    def job() -> None: ...

    router.add_api_route("/a", job, methods=["POST"])
    with pytest.raises(RouteDefinitionError, match="already a task at '/a'"):
        router.add_api_route("/b", job, methods=["POST"])


def test_including_a_router_twice_keeps_the_first_registration() -> None:
    router = APIRouter(route_class=DelayedRouteBuilder(queue_path=QUEUE, callback_base_url="http://w/api"))

    @router.post("/x")
    def x() -> None: ...

    app = FastAPI()
    app.include_router(router, prefix="/api")
    app.include_router(router, prefix="/api")
    assert x.options().request().task.http_request.url == "http://w/api/x"  # type: ignore[attr-defined]


def test_building_routes_makes_no_client_and_no_call(monkeypatch: pytest.MonkeyPatch) -> None:
    from google.cloud import scheduler_v1, tasks_v2

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a client was created while routes were being defined")

    for cls in (
        tasks_v2.CloudTasksClient,
        tasks_v2.CloudTasksAsyncClient,
        scheduler_v1.CloudSchedulerClient,
        scheduler_v1.CloudSchedulerAsyncClient,
    ):
        monkeypatch.setattr(cls, "__init__", refuse)
    router = APIRouter(route_class=DelayedRouteBuilder(queue_path=QUEUE, callback_base_url="http://w"))
    arouter = APIRouter(route_class=AsyncDelayedRouteBuilder(queue_path=QUEUE, callback_base_url="http://w"))
    srouter = APIRouter(
        route_class=ScheduledRouteBuilder(
            location_path=location_path(project="p", location="l"), callback_base_url="http://w"
        )
    )

    @router.post("/s")
    def s() -> None: ...

    @arouter.post("/a")
    async def a() -> None: ...

    @srouter.post("/j")
    def j() -> None: ...

    app = FastAPI()
    for r in (router, arouter, srouter):
        app.include_router(r)
    assert s.options().request().task.http_request.url == "http://w/s"  # type: ignore[attr-defined]


def test_task_default_options_and_per_call_overrides() -> None:
    router = APIRouter(route_class=DelayedRouteBuilder(queue_path=QUEUE, callback_base_url="http://w"))

    @router.post("/d")
    @task_default_options(dispatch_deadline=60, headers={"X-Team": "core"})
    def defaults() -> None: ...

    request = defaults.options().request()  # type: ignore[attr-defined]
    assert request.task.dispatch_deadline.total_seconds() == 60
    assert request.task.http_request.headers["X-Team"] == "core"
    other = queue_path(project="p", location="l", queue="other")
    request = defaults.options(  # type: ignore[attr-defined]
        dispatch_deadline=120, queue_path=other, callback_base_url="https://elsewhere", task_id="t-1"
    ).request()
    assert request.task.dispatch_deadline.total_seconds() == 120
    assert request.parent == other
    assert request.task.name == f"{other}/tasks/t-1"
    assert request.task.http_request.url == "https://elsewhere/d"


def test_a_poison_policy_on_the_builder_acknowledges_invalid_payloads() -> None:
    import httpx

    from fastapi_gcp_tasks import DeadLetter, PoisonPolicy, PrivateEndpoint

    dead: list[DeadLetter] = []
    router = APIRouter(
        route_class=DelayedRouteBuilder(
            queue_path=QUEUE,
            callback_base_url="http://testserver",
            poison_policy=PoisonPolicy(sink=dead.append),
        ),
        dependencies=[Depends(PrivateEndpoint("tests: reached in-process only"))],
    )
    record = Recorder()

    @router.post("/strict")
    def strict(note: Note) -> None:
        record(note=note)

    app = FastAPI()
    app.include_router(router)
    good = replay(app, strict.options().request(note=Note(text="ok")))  # type: ignore[attr-defined]
    assert good.status_code == 200
    assert record.calls == [{"note": Note(text="ok")}]

    import asyncio

    async def send_garbage() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.post(
                "/strict",
                content=b'{"wrong": 1}',
                headers={
                    "Content-Type": "application/json",
                    "X-CloudTasks-TaskName": "t1",
                    "X-CloudTasks-QueueName": "q",
                },
            )

    response = asyncio.run(send_garbage())
    assert response.status_code == 200
    assert len(dead) == 1
    assert len(record.calls) == 1
