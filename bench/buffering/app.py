"""The server side of the benchmark: one endpoint per number of delays, in the mode named by BENCH_MODE.

Modes: immediate_sync (sync builder, `def` endpoints), immediate_async (async builder, `async def`
endpoints), buffered_after / buffered_before (async builder behind TaskBufferMiddleware).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

from _timing import Timing
from fastapi import APIRouter, FastAPI

from fastapi_gcp_tasks.async_delayed_route import AsyncDelayedRouteBuilder
from fastapi_gcp_tasks.buffering import BufferStats, TaskBufferMiddleware
from fastapi_gcp_tasks.delayed_route import DelayedRouteBuilder
from fastapi_gcp_tasks.utils import async_emulator_client, emulator_client

MODE = os.environ["BENCH_MODE"]
EMULATOR = os.environ["BENCH_EMULATOR"]
QUEUE = os.environ["BENCH_QUEUE"]
BASE_URL = "http://127.0.0.1:9"  # never called: the queue is paused

stats = BufferStats()
app = FastAPI()

if MODE == "immediate_sync":
    tasks = APIRouter(
        route_class=DelayedRouteBuilder(
            queue_path=QUEUE,
            callback_base_url=BASE_URL,
            client=lambda: emulator_client(host=EMULATOR),
            auto_create_queue=False,
        )
    )

    @tasks.post("/hello")
    def hello(i: int) -> None:
        pass

    def sync_route(n: int) -> Callable[[], None]:
        def route() -> None:
            for i in range(n):
                hello.delay(i=i)  # type: ignore[attr-defined]

        return route

    for count in (0, 1, 10):
        app.add_api_route(f"/d{count}", sync_route(count), methods=["POST"])
else:
    tasks = APIRouter(
        route_class=AsyncDelayedRouteBuilder(
            queue_path=QUEUE,
            callback_base_url=BASE_URL,
            client=lambda: async_emulator_client(host=EMULATOR),
            auto_create_queue=False,
        )
    )

    @tasks.post("/hello")
    async def ahello(i: int) -> None:
        pass

    def async_route(n: int) -> Callable[[], Awaitable[None]]:
        async def route() -> None:
            for i in range(n):
                await ahello.delay(i=i)  # type: ignore[attr-defined]

        return route

    for count in (0, 1, 10):
        app.add_api_route(f"/d{count}", async_route(count), methods=["POST"])
    if MODE == "buffered_after":
        app.add_middleware(TaskBufferMiddleware, flush="after_response", stats=stats)
    elif MODE == "buffered_before":
        app.add_middleware(TaskBufferMiddleware, flush="before_response", stats=stats)
    elif MODE != "immediate_async":
        raise SystemExit(f"unknown BENCH_MODE {MODE!r}")

app.include_router(tasks)


@app.post("/timings")
def take_timings() -> dict[str, list[float]]:
    return timing.take()


timing = Timing(app)


@app.get("/stats")
def read_stats() -> dict[str, int]:
    return stats.snapshot()
