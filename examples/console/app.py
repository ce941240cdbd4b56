"""An app with task history and the console mounted at `/console`, and tasks that do not all go well.

- `thumbnail` always succeeds;
- `charge` fails its first attempt (the payment provider answers 503 once), then succeeds on the retry;
- `import_feed` always fails, and after two retries `max_retries` gives it up into the dead-letter store,
  from which the console can replay it.

`POST /demo` delays a few of each. History and dead letters go to SQLite (`CONSOLE_DATABASE_URL`, a file in
the temporary folder by default), whose tables `fastapi-gcp-tasks history migrate` creates (`python -m
examples.console` migrates a fresh database itself). The task routes trust their callers (`PrivateEndpoint`)
because this example runs on loopback, fed by the local emulator; a deployed worker verifies OIDC tokens.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, HTTPException
from pydantic import BaseModel

from fastapi_gcp_tasks import (
    CloudTasksHeaders,
    DelayedRouteBuilder,
    PrivateEndpoint,
    as_delayed_task,
    max_retries,
    queue_path,
)
from fastapi_gcp_tasks.console import create_console
from fastapi_gcp_tasks.history import TaskHistory

logger = logging.getLogger("examples.console")

PROJECT = os.environ.get("GCP_PROJECT", "demo-project")
LOCATION = os.environ.get("GCP_LOCATION", "europe-west1")
QUEUE = queue_path(project=PROJECT, location=LOCATION, queue="console-demo")
BASE_URL = os.environ.get("APP_URL", "http://127.0.0.1:8000")
DATABASE_URL = os.environ.get(
    "CONSOLE_DATABASE_URL", f"sqlite:///{Path(tempfile.gettempdir()) / 'fastapi-gcp-tasks-console-example.db'}"
)

history = TaskHistory(DATABASE_URL, redact=["card_token"])
letters = history.dead_letters
private = PrivateEndpoint("the example runs on loopback and only the local emulator calls it")

tasks = APIRouter(
    route_class=DelayedRouteBuilder(queue_path=QUEUE, callback_base_url=BASE_URL, history=history),
    prefix="/tasks",
    dependencies=[Depends(private)],
)


class Order(BaseModel):
    order_id: str
    amount_cents: int
    card_token: str


@tasks.post("/thumbnail/{image_id}")
@as_delayed_task
def thumbnail(image_id: int, width: int = 640) -> dict[str, str]:
    """Always succeeds."""
    return {"thumbnail": f"/thumbs/{image_id}-{width}.jpg"}


@tasks.post("/charge")
@as_delayed_task
def charge(order: Order, meta: CloudTasksHeaders = Depends()) -> dict[str, str]:
    """Fails its first attempt (a 503 from the provider), succeeds on the retry."""
    if meta.retry_count == 0:
        raise HTTPException(503, "payment provider unavailable, try again")
    return {"charged": order.order_id}


@tasks.post("/import-feed", dependencies=[Depends(max_retries(2, on_give_up=letters))])
@as_delayed_task
def import_feed(feed_url: str) -> None:
    """Always fails; given up into the dead-letter store after two retries."""
    raise RuntimeError(f"cannot parse the feed at {feed_url}: unexpected end of document")


app = FastAPI(title="fastapi-gcp-tasks console example")


@app.post("/demo")
def demo() -> dict[str, list[str]]:
    """Delay the example's tasks: three thumbnails, two charges, one feed import."""
    created = [thumbnail.delay(image_id=image_id, width=320) for image_id in (101, 102, 103)]
    created += [
        charge.delay(order=Order(order_id=order_id, amount_cents=1999, card_token="tok_visa"))
        for order_id in ("A-1001", "A-1002")
    ]
    created.append(import_feed.delay(feed_url="https://example.com/feed.xml"))
    return {"tasks": [task.name for task in created]}


app.include_router(tasks)
app.mount(
    "/console", create_console(local_only=True, history=history, queues=[QUEUE], app=app, title="Console example")
)
