"""The app `test_shutdown.py` runs under uvicorn in a subprocess, to be stopped with SIGTERM mid-flight.

`POST /delay?group=G&count=N` delays N tasks tagged with group G. Every line the test reads goes to stderr:

* `DELAYED G NAME` for each `.delay()`; `BLOCKED G` when an endpoint of group `a` waits forever;
* `GATE G NAME...` when a create call of group G waits at its gate (groups `b1`, `b2`);
* `FALLBACK NAME...` when the fallback takes tasks (group `b3`, refused by the client) and waits forever;
* `LOG LEVEL MESSAGE` for the library's log records; `STATS {...}` from the app's own lifespan shutdown.

Groups: `a` blocks in the endpoint; `b1` waits at a gate that opens when the middleware starts finishing
flushes on shutdown; `b2` waits at a gate that never opens; `b3` is refused by Cloud Tasks and held by a
fallback that never returns; `c` is created at once; `d` answers 500.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, FastAPI, Response
from google.api_core import exceptions as core

from fastapi_gcp_tasks.async_delayed_route import AsyncDelayedRouteBuilder
from fastapi_gcp_tasks.buffering import BufferStats, LostTask, RetryPolicy, TaskBufferMiddleware
from fastapi_gcp_tasks.utils import async_emulator_client

EMULATOR = os.environ["SHUTDOWN_EMULATOR"]
QUEUE = os.environ["SHUTDOWN_QUEUE"]
SHUTDOWN_TIMEOUT = float(os.environ["SHUTDOWN_TIMEOUT"])


def say(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


gates: dict[str, asyncio.Event] = {}


class Lines(logging.Handler):
    """The library's records as `LOG` lines; the start of the shutdown's flush bound opens gate b1."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        say(f"LOG {record.levelname} {message}")
        if message.startswith("shutdown: finishing") and "b1" in gates:
            gates["b1"].set()


library = logging.getLogger("fastapi_gcp_tasks")
library.addHandler(Lines())
library.setLevel(logging.INFO)
library.propagate = False


def group_of(request: Any) -> str:
    url = request.task.http_request.url
    group: str = parse_qs(urlsplit(url).query)["group"][0]
    return group


class GatedClient:
    """The emulator's client, with create calls held at the gate of their group."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def _pass(self, requests: Sequence[Any]) -> None:
        group = group_of(requests[0])
        if group == "b3":
            raise core.InvalidArgument("refused for the test")  # type: ignore[no-untyped-call]
        if group in gates:
            say(f"GATE {group} " + " ".join(request.task.name for request in requests))
            await gates[group].wait()

    async def create_task(self, *, request: Any, timeout: float) -> Any:
        await self._pass([request])
        return await self._client.create_task(request=request, timeout=timeout)

    async def batch_create_tasks(self, *, request: Any, timeout: float) -> Any:
        await self._pass(list(request.requests))
        return await self._client.batch_create_tasks(request=request, timeout=timeout)


tasks = APIRouter(
    route_class=AsyncDelayedRouteBuilder(
        queue_path=QUEUE,
        callback_base_url="http://127.0.0.1:9",
        client=lambda: GatedClient(async_emulator_client(host=EMULATOR)),  # type: ignore[arg-type,return-value]
        auto_create_queue=False,
    ),
    prefix="/tasks",
)


@tasks.post("/hello")
async def hello(group: str, n: int) -> None:
    pass


stats = BufferStats()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    gates.update(b1=asyncio.Event(), b2=asyncio.Event())
    say("READY")
    yield
    say("STATS " + json.dumps({**stats.snapshot(), "pending": stats.pending}))


app = FastAPI(lifespan=lifespan)
app.include_router(tasks)


@app.post("/delay")
async def delay(group: str, count: int) -> Response:
    for n in range(count):
        task = await hello.delay(group=group, n=n)  # type: ignore[attr-defined]
        say(f"DELAYED {group} {task.name}")
    if group == "a":
        say("BLOCKED a")
        await asyncio.Event().wait()
    return Response(status_code=500 if group == "d" else 200)


async def hold_forever(lost: Sequence[LostTask]) -> None:
    say("FALLBACK " + " ".join(item.name for item in lost))
    await asyncio.Event().wait()


app.add_middleware(
    TaskBufferMiddleware,
    stats=stats,
    fallback=hold_forever,
    retry=RetryPolicy(attempts=2, initial_backoff=0.01, max_backoff=0.02),
    shutdown_timeout=SHUTDOWN_TIMEOUT,
)
