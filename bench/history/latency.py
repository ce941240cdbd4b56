"""Latency of a trivial task endpoint with history recording on and off: `.venv/bin/python bench/history/latency.py`.

Two copies of one worker app, identical but for `history=` on the route builder: a `DelayedRouteBuilder` route
behind `PrivateEndpoint` taking a path parameter and a small JSON body, doing nothing. Each request carries the
Cloud Tasks headers, so the recording side records one attempt per request (arguments validated, redacted and
queued for the writer thread) into a `TaskHistory` on SQLite (a temporary file; `--database URL` for another,
which must already be migrated or be migratable).

Requests go in-process through `httpx.ASGITransport` (no socket), one at a time, in interleaved blocks (off, on,
off, on, ...) so drift and machine load hit both sides alike. Two clocks per request:

* **server**: from the ASGI call to the last body message sent (what the caller waits for);
* **client**: around `client.post` (includes httpx and, with history on, the recording work done after the
  answer was sent, since ASGITransport waits for the app to return).

Prints p50 / p99 per side and the difference against the 5 % target at p50, then the writer's counters (every
request recorded, nothing dropped). The default run (`--requests 4000` per side) takes about 10-20 s.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import httpx
from fastapi import APIRouter, Depends, FastAPI
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fastapi_gcp_tasks.delayed_route import DelayedRouteBuilder  # noqa: E402
from fastapi_gcp_tasks.history import TaskHistory, migrate  # noqa: E402
from fastapi_gcp_tasks.receive import PrivateEndpoint  # noqa: E402

QUEUE = "projects/bench/locations/europe-west1/queues/latency"
TARGET = 0.05
Message = MutableMapping[str, Any]


class Email(BaseModel):
    to: str
    subject: str
    password: str


class ServerClock:
    """Outermost ASGI wrapper: seconds from the call to the last body message, per request."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.samples: list[float] = []

    async def __call__(
        self, scope: Message, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]
    ) -> None:
        start = time.perf_counter()

        async def timed(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.samples.append(time.perf_counter() - start)

        await self.app(scope, receive, timed)


def worker_app(history: TaskHistory | None) -> FastAPI:
    private = PrivateEndpoint("benchmark: called in-process only")
    builder = DelayedRouteBuilder(queue_path=QUEUE, callback_base_url="http://worker.bench", history=history)
    router = APIRouter(route_class=builder, dependencies=[Depends(private)])

    @router.post("/tasks/send/{user_id}")
    async def send(user_id: int, email: Email) -> None:
        return None

    app = FastAPI()
    app.include_router(router)
    return app


async def run_block(client: httpx.AsyncClient, first: int, count: int, samples: list[float]) -> None:
    body = {"to": "someone@example.com", "subject": "hello", "password": "hunter2"}
    for number in range(first, first + count):
        headers = {
            "x-cloudtasks-queuename": "latency",
            "x-cloudtasks-taskname": f"t-{number}",
            "x-cloudtasks-taskretrycount": "0",
            "x-cloudtasks-taskexecutioncount": "0",
        }
        start = time.perf_counter()
        response = await client.post(f"/tasks/send/{number}", json=body, headers=headers)
        samples.append(time.perf_counter() - start)
        if response.status_code != 200:
            raise RuntimeError(f"unexpected answer {response.status_code}: {response.text}")


def quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(requests: int, block: int, warmup: int, history: TaskHistory) -> dict[str, dict[str, list[float]]]:
    sides = {"off": ServerClock(worker_app(None)), "on": ServerClock(worker_app(history))}
    client_samples: dict[str, list[float]] = {"off": [], "on": []}
    clients = {
        name: httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://worker.bench")
        for name, app in sides.items()
    }
    try:
        for name, client in clients.items():  # warm-up: imports, caches, the writer thread's first batch
            await run_block(client, 10_000_000, warmup, [])
            sides[name].samples.clear()
        done = 0
        while done < requests:
            count = min(block, requests - done)
            for name in ("off", "on"):
                await run_block(clients[name], done, count, client_samples[name])
            done += count
    finally:
        for client in clients.values():
            await client.aclose()
    return {name: {"server": sides[name].samples, "client": client_samples[name]} for name in sides}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, help="requests per side (default 4000)")
    parser.add_argument("--block", type=int, default=200, help="requests per interleaved block (default 200)")
    parser.add_argument("--warmup", type=int, default=300, help="warm-up requests per side (default 300)")
    parser.add_argument("--database", help="SQLAlchemy URL of the history database (default: a temporary SQLite)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        database = args.database or f"sqlite:///{Path(folder) / 'history.db'}"
        migrate(database)
        with TaskHistory(database, redact=("password",)) as history:
            started = time.perf_counter()
            results = asyncio.run(measure(args.requests, args.block, args.warmup, history))
            elapsed = time.perf_counter() - started
            history.flush(30)
            stats = history.stats

    print(f"{args.requests} requests per side, interleaved blocks of {args.block}, {elapsed:.1f} s")
    print(f"{'clock':<8}{'history':<9}{'p50 (µs)':>10}{'p99 (µs)':>10}{'mean (µs)':>11}")
    for clock in ("server", "client"):
        for side in ("off", "on"):
            samples = results[side][clock]
            print(
                f"{clock:<8}{side:<9}{quantile(samples, 0.5) * 1e6:>10.0f}{quantile(samples, 0.99) * 1e6:>10.0f}"
                f"{statistics.fmean(samples) * 1e6:>11.0f}"
            )
    print()
    for clock in ("server", "client"):
        off, on = (quantile(results[side][clock], 0.5) for side in ("off", "on"))
        added = on / off - 1
        verdict = "within" if added <= TARGET else "OVER"
        print(f"{clock}: history adds {added * 100:+.1f} % at p50 ({verdict} the {TARGET * 100:.0f} % target)")
    print(f"history writer: recorded {stats.recorded}, dropped {stats.dropped}, write errors {stats.write_errors}")


if __name__ == "__main__":
    main()
