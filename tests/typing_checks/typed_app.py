"""Correct uses of the typed task protocols: `mypy --strict` must accept every line."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, NotRequired, TypedDict

from fastapi import APIRouter, BackgroundTasks, Depends, Request
from google.cloud import scheduler_v1, tasks_v2
from pydantic import BaseModel

from fastapi_gcp_tasks import (
    AsyncDelayedRouteBuilder,
    AsyncScheduledRouteBuilder,
    CloudTasksHeaders,
    DelayedRouteBuilder,
    ScheduledRouteBuilder,
    as_async_delayed_task,
    as_async_scheduled_task,
    as_delayed_task,
    as_scheduled_task,
    location_path,
    queue_path,
)

QUEUE = queue_path(project="p", location="l", queue="q")
router = APIRouter(route_class=DelayedRouteBuilder(queue_path=QUEUE, callback_base_url="http://w"))
async_router = APIRouter(route_class=AsyncDelayedRouteBuilder(queue_path=QUEUE, callback_base_url="http://w"))
cron = APIRouter(
    route_class=ScheduledRouteBuilder(
        location_path=location_path(project="p", location="l"), callback_base_url="http://w"
    )
)


async_cron = APIRouter(
    route_class=AsyncScheduledRouteBuilder(
        location_path=location_path(project="p", location="l"), callback_base_url="http://w"
    )
)


class Payload(BaseModel):
    n: int


@router.post("/t/{key}")
@as_delayed_task
def task(key: str, payload: Payload, retries: int = 0) -> None: ...


@async_router.post("/a")
@as_async_delayed_task
async def async_task(payload: Payload) -> None: ...


@cron.post("/c")
@as_scheduled_task
def job(region: str = "eu") -> None: ...


# --- endpoints with parameters FastAPI fills on the worker: the task's arguments are declared ---------------


class Settings(BaseModel):
    region: str = "eu"


def get_settings() -> Settings:
    return Settings()


class ReportArgs(TypedDict):
    key: str
    payload: Payload
    retries: NotRequired[int]


@as_delayed_task(args=ReportArgs)
@router.post("/r/{key}")
def report(
    key: str,
    payload: Payload,
    request: Request,
    background: BackgroundTasks,
    settings: Annotated[Settings, Depends(get_settings)],
    retries: int = 0,
) -> None: ...


def notify_args(*, payload: Payload, urgent: bool = False) -> None:
    """The task arguments of `notify`, declared as a function with keyword-only parameters."""


@as_async_delayed_task(args=notify_args)
@async_router.post("/n")
async def notify(
    payload: Payload, request: Request, meta: CloudTasksHeaders = Depends(), urgent: bool = False
) -> None: ...


class CleanupArgs(TypedDict, total=False):
    region: str


@as_scheduled_task(args=CleanupArgs)
@cron.post("/cleanup")
def cleanup(
    request: Request, background: BackgroundTasks, settings: Settings = Depends(get_settings), region: str = "eu"
) -> None: ...


class RollupArgs(TypedDict):
    day: str


@as_async_scheduled_task(args=RollupArgs)
@async_cron.post("/rollup/{day}")
async def rollup(day: str, request: Request, settings: Annotated[Settings, Depends(get_settings)]) -> None: ...


def use() -> None:
    created: tasks_v2.Task = task.delay(key="k", payload=Payload(n=1))
    task.delay(key="k", payload=Payload(n=1), retries=3)
    task.options(countdown=10, task_id="abc", dispatch_deadline=dt.timedelta(minutes=1)).delay(
        key="k", payload=Payload(n=2)
    )
    handle = job.scheduler(name="j", schedule="0 * * * *", time_zone="UTC")
    scheduled: scheduler_v1.Job = handle.schedule(region="us")
    deleted: bool = handle.delete()
    print(created, scheduled, deleted)


async def use_async() -> None:
    created: tasks_v2.Task = await async_task.delay(payload=Payload(n=1))
    await async_task.options(countdown=5).delay(payload=Payload(n=1))
    print(created)


def use_injected(request: Request, background: BackgroundTasks) -> None:
    created: tasks_v2.Task = report.delay(key="k", payload=Payload(n=1))
    report.delay(key="k", payload=Payload(n=1), retries=2)
    report.options(countdown=10, task_id="r-1").delay(key="k", payload=Payload(n=2))
    report("k", Payload(n=1), request, background, Settings())  # direct calls take the endpoint's parameters
    handle = cleanup.scheduler(name="cleanup", schedule="0 3 * * *", time_zone="Europe/Paris")
    scheduled: scheduler_v1.Job = handle.schedule(region="us")
    handle.schedule()
    print(created, scheduled)


async def use_injected_async(request: Request) -> None:
    created: tasks_v2.Task = await notify.delay(payload=Payload(n=1))
    await notify.options(countdown=5).delay(payload=Payload(n=1), urgent=True)
    await notify(Payload(n=1), request, CloudTasksHeaders())
    handle = rollup.scheduler(name="rollup", schedule="0 1 * * *")
    scheduled: scheduler_v1.Job = await handle.schedule(day="2026-01-01")
    deleted: bool = await handle.delete()
    print(created, scheduled, deleted)
