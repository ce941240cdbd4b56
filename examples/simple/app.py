"""The quickstart app: `POST /trigger` delays a `hello` task, which Cloud Tasks delivers back to `/tasks/hello`.

Nothing here knows about the emulator: with `FASTAPI_GCP_TASKS_EMULATOR_HOST` set (as `python -m
examples.simple` does) the default client talks to it; without it, to Cloud Tasks.
"""

from __future__ import annotations

import logging
import os

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel

from fastapi_gcp_tasks import (
    DelayedRouteBuilder,
    ScheduledRouteBuilder,
    as_delayed_task,
    as_scheduled_task,
    location_path,
    queue_path,
)

logger = logging.getLogger("examples.simple")

PROJECT = os.environ.get("GCP_PROJECT", "demo-project")
LOCATION = os.environ.get("GCP_LOCATION", "europe-west1")
QUEUE = queue_path(project=PROJECT, location=LOCATION, queue="default")
BASE_URL = os.environ.get("APP_URL", "http://127.0.0.1:8000")

task_router = APIRouter(route_class=DelayedRouteBuilder(queue_path=QUEUE, callback_base_url=BASE_URL), prefix="/tasks")
cron_router = APIRouter(
    route_class=ScheduledRouteBuilder(
        location_path=location_path(project=PROJECT, location=LOCATION), callback_base_url=BASE_URL
    ),
    prefix="/cron",
)


class Greeting(BaseModel):
    name: str
    excited: bool = False


@task_router.post("/hello/{lang}")
@as_delayed_task
def hello(lang: str, greeting: Greeting) -> dict[str, str]:
    """The task: runs when Cloud Tasks calls it."""
    words = {"en": "Hello", "fr": "Bonjour", "de": "Hallo"}.get(lang, "Hello")
    text = f"{words}, {greeting.name}{'!' if greeting.excited else '.'}"
    logger.info("hello task executing: %s", text)
    return {"said": text}


@cron_router.post("/tick")
@as_scheduled_task
def tick() -> None:
    """A cron job: runs when Cloud Scheduler calls it."""
    logger.info("tick job executing")


app = FastAPI(title="fastapi-gcp-tasks quickstart")


@app.post("/trigger")
def trigger(name: str = "world", lang: str = "en", countdown: int = 0) -> dict[str, str]:
    """Delay the `hello` task; it runs after this request, in a separate call."""
    task = hello.options(countdown=countdown).delay(lang=lang, greeting=Greeting(name=name, excited=True))
    return {"task": task.name}


app.include_router(task_router)
app.include_router(cron_router)
