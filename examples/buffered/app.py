"""Buffered mode: a signup creates its welcome-mail task only once the signup has been committed.

`python -m examples.buffered --once` runs the whole demo on an embedded emulator. By hand, against the
emulator's command:

    fastapi-gcp-tasks emulator --queue projects/demo/locations/local/queues/mail &
    FASTAPI_GCP_TASKS_EMULATOR_HOST=127.0.0.1:8123 uvicorn examples.buffered.app:app --port 8000
    curl -X POST 'localhost:8000/signup?email=ada@example.com'   # 200: the task is created after the commit
    curl -X POST 'localhost:8000/signup?email=ada@example.com'   # 409: its task is dropped, never created
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from fastapi import APIRouter, Depends, FastAPI, HTTPException

from fastapi_gcp_tasks.async_delayed_route import AsyncDelayedRouteBuilder
from fastapi_gcp_tasks.buffering import TaskBufferMiddleware

QUEUE = os.environ.get("EXAMPLE_QUEUE", "projects/demo/locations/local/queues/mail")
BASE_URL = os.environ.get("EXAMPLE_BASE_URL", "http://127.0.0.1:8000")


class Database:
    """Stands in for your database: rows become visible on commit."""

    def __init__(self) -> None:
        self.users: list[str] = []
        self.mails_sent: list[str] = []


db = Database()


class Transaction:
    def __init__(self) -> None:
        self.pending: list[str] = []

    def add(self, email: str) -> None:
        self.pending.append(email)


def transaction() -> Iterator[Transaction]:
    """A `yield` dependency: it commits after the endpoint returns, before the buffered tasks are created."""
    tx = Transaction()
    yield tx
    db.users.extend(tx.pending)


tasks = APIRouter(
    route_class=AsyncDelayedRouteBuilder(queue_path=QUEUE, callback_base_url=BASE_URL),
    prefix="/tasks",
)


@tasks.post("/welcome")
async def send_welcome(email: str) -> None:
    """The task: by the time it runs, the user it greets is committed."""
    if email not in db.users:
        raise HTTPException(status_code=409, detail="user not committed yet")  # Cloud Tasks would retry
    db.mails_sent.append(email)


app = FastAPI()
app.include_router(tasks)
app.add_middleware(TaskBufferMiddleware, discard_on="error")


@app.post("/signup")
async def signup(email: str, tx: Transaction = Depends(transaction)) -> dict[str, str]:
    tx.add(email)
    task = await send_welcome.delay(email=email)  # type: ignore[attr-defined]
    if email in db.users:
        # Raising after `.delay()` is fine: with discard_on="error" a 4xx drops the request's tasks.
        raise HTTPException(status_code=409, detail="already signed up")
    return {"welcome_task": task.name}
