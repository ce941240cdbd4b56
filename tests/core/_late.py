"""Endpoints whose types are defined after them, or only inside a factory (`from __future__ import annotations`)."""

from __future__ import annotations

import enum
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query
from pydantic import BaseModel

from fastapi_gcp_tasks import DelayedRouteBuilder, ScheduledRouteBuilder, location_path, queue_path
from tests.core._replay import Recorder

record = Recorder()
tasks = APIRouter(
    route_class=DelayedRouteBuilder(
        queue_path=queue_path(project="p", location="l", queue="q"), callback_base_url="http://testserver"
    )
)
jobs = APIRouter(
    route_class=ScheduledRouteBuilder(
        location_path=location_path(project="p", location="l"), callback_base_url="http://testserver"
    )
)


@tasks.post("/late/{kind}")
def late(kind: Kind, item: LaterItem, tags: Tags = ()) -> None:
    record(kind=kind, item=item, tags=tags)


@jobs.post("/late-job")
def late_job(item: LaterItem) -> None:
    record(item=item)


class Kind(enum.Enum):
    A = "a"
    B = "b"


class LaterItem(BaseModel):
    name: str
    parts: list[Part] = []


class Part(BaseModel):
    n: int


Tags = Annotated[tuple[str, ...], Query()]


def factory(*, export: bool) -> tuple[FastAPI, Any, Any]:
    """An app factory defining its model inside; `export` makes it visible at module level, as FastAPI needs."""

    class Local(BaseModel):
        value: int

    router = APIRouter(
        route_class=DelayedRouteBuilder(
            queue_path=queue_path(project="p", location="l", queue="q"), callback_base_url="http://testserver"
        )
    )

    @router.post("/local")
    def local(item: Local) -> None:
        record(item=item)

    if export:
        globals()["Local"] = Local
    app = FastAPI()
    app.include_router(router)
    return app, local, Local


app = FastAPI()
app.include_router(tasks)
app.include_router(jobs)
