"""Correct uses of the typed task protocols: `mypy --strict` must accept every line."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter
from google.cloud import scheduler_v1, tasks_v2
from pydantic import BaseModel

from fastapi_gcp_tasks import (
    AsyncDelayedRouteBuilder,
    DelayedRouteBuilder,
    ScheduledRouteBuilder,
    as_async_delayed_task,
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
