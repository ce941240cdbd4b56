"""The benchmark's reference: fastapi-gcp-tasks 0.3.4 from PyPI, immediate `.delay()` from `def` endpoints.

Runs only in `bench/.venv-peer` (created by run.py): that package has the same import name as ours.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from _timing import Timing
from fastapi import APIRouter, FastAPI

from fastapi_gcp_tasks import DelayedRouteBuilder
from fastapi_gcp_tasks.utils import emulator_client

EMULATOR = os.environ["BENCH_EMULATOR"]
QUEUE = os.environ["BENCH_QUEUE"]

tasks = APIRouter(
    route_class=DelayedRouteBuilder(
        queue_path=QUEUE,
        base_url="http://127.0.0.1:9",
        client=emulator_client(host=EMULATOR),
        auto_create_queue=False,
    )
)


@tasks.post("/hello")
def hello(i: int) -> None:
    pass


app = FastAPI()


def sync_route(n: int) -> Callable[[], None]:
    def route() -> None:
        for i in range(n):
            hello.delay(i=i)

    return route


for count in (0, 1, 10):
    app.add_api_route(f"/d{count}", sync_route(count), methods=["POST"])
app.include_router(tasks)


@app.post("/timings")
def take_timings() -> dict[str, list[float]]:
    return timing.take()


timing = Timing(app)


@app.get("/stats")
def read_stats() -> dict[str, int]:
    return {}
