"""The app the buffering integration tests drive: tasks delayed from every place a request can reach."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from fastapi_gcp_tasks.async_delayed_route import AsyncDelayedRouteBuilder
from fastapi_gcp_tasks.buffering import BufferStats, Flush, LostTask, TaskBufferMiddleware, require_buffer
from fastapi_gcp_tasks.delayed_route import DelayedRouteBuilder
from fastapi_gcp_tasks.utils import async_emulator_client, emulator_client

QUEUE = "projects/test/locations/here/queues/buffered"
MISSING_QUEUE = "projects/test/locations/here/queues/missing"


@dataclass
class Recorded:
    """What the worker side received, and what the request side saw."""

    received: list[tuple[str, str]] = field(default_factory=list)
    """(payload, X-CloudTasks-TaskName) of every delivery."""
    names: dict[str, list[str]] = field(default_factory=dict)
    """payload -> names returned by `.delay()` inside requests."""
    lost: list[LostTask] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    stats: BufferStats = field(default_factory=BufferStats)
    release_stream: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    required: Any = None
    """The task endpoint whose builder has `sink=require_buffer`."""

    def delivered(self, payload: str) -> list[str]:
        with self.lock:
            return [name for got, name in self.received if got == payload]

    def remember(self, payload: str, name: str) -> str:
        with self.lock:
            self.names.setdefault(payload, []).append(name)
        return name


def make_app(
    *, base_url: str, emulator_address: str, flush: Flush, recorded: Recorded, database: Any = None, probe: Any = None
) -> FastAPI:
    """Build the app.

    `database()` opens a DB-API connection for the `transaction` dependency of `/commit`, which commits it
    in its teardown and then calls `probe(payload)`.
    """
    sync_tasks = APIRouter(
        route_class=DelayedRouteBuilder(
            queue_path=QUEUE,
            callback_base_url=base_url,
            client=lambda: emulator_client(host=emulator_address),
            auto_create_queue=False,
        ),
        prefix="/tasks",
    )
    async_tasks = APIRouter(
        route_class=AsyncDelayedRouteBuilder(
            queue_path=QUEUE,
            callback_base_url=base_url,
            client=lambda: async_emulator_client(host=emulator_address),
            auto_create_queue=False,
        ),
        prefix="/atasks",
    )
    doomed_tasks = APIRouter(
        route_class=AsyncDelayedRouteBuilder(
            queue_path=MISSING_QUEUE,
            callback_base_url=base_url,
            client=lambda: async_emulator_client(host=emulator_address),
            auto_create_queue=False,
        ),
        prefix="/doomed",
    )

    required_tasks = APIRouter(
        route_class=AsyncDelayedRouteBuilder(
            queue_path=QUEUE,
            callback_base_url=base_url,
            client=lambda: async_emulator_client(host=emulator_address),
            auto_create_queue=False,
            sink=require_buffer,
        ),
        prefix="/required",
    )

    @required_tasks.post("/hello")
    async def required(payload: str) -> None:
        with recorded.lock:
            recorded.received.append((payload, "required"))

    @sync_tasks.post("/hello")
    def hello(payload: str, x_cloudtasks_taskname: str = Header("")) -> None:
        with recorded.lock:
            recorded.received.append((payload, x_cloudtasks_taskname))

    @async_tasks.post("/ahello")
    async def ahello(payload: str, x_cloudtasks_taskname: str = Header("")) -> None:
        with recorded.lock:
            recorded.received.append((payload, x_cloudtasks_taskname))

    @doomed_tasks.post("/never")
    async def never(payload: str) -> None:
        raise AssertionError("a task of a missing queue was delivered")

    def transaction(payload: str) -> Iterator[Any]:
        connection = database()
        try:
            yield connection
            connection.commit()
            recorded.events.append(f"commit {payload}")
            probe(payload)
        finally:
            connection.close()

    async def delaying_dependency(payload: str) -> str:
        return recorded.remember(payload, (await ahello.delay(payload=payload + "-dep")).name)  # type: ignore[attr-defined]

    app = FastAPI()

    @app.post("/async")
    async def from_async(payload: str) -> dict[str, str]:
        return {"name": recorded.remember(payload, (await ahello.delay(payload=payload)).name)}  # type: ignore[attr-defined]

    @app.post("/sync")
    def from_sync(payload: str) -> dict[str, str]:
        return {"name": recorded.remember(payload, hello.delay(payload=payload).name)}  # type: ignore[attr-defined]

    @app.post("/sync-route-in-async")
    async def sync_route_in_async(payload: str) -> dict[str, str]:
        return {"name": recorded.remember(payload, hello.delay(payload=payload).name)}  # type: ignore[attr-defined]

    @app.post("/raise")
    async def raising(payload: str) -> None:
        recorded.remember(payload, (await ahello.delay(payload=payload)).name)  # type: ignore[attr-defined]
        raise RuntimeError("the request failed after delaying")

    @app.post("/status/{code}")
    async def with_status(code: int, payload: str) -> Response:
        recorded.remember(payload, (await ahello.delay(payload=payload)).name)  # type: ignore[attr-defined]
        if code == 404:
            raise HTTPException(status_code=404)
        return JSONResponse({}, status_code=code)

    @app.post("/commit")
    def committed(payload: str, connection: Any = Depends(transaction)) -> dict[str, str]:
        connection.execute("INSERT INTO buffering_commits (payload) VALUES (%s)", (payload,))
        return {"name": recorded.remember(payload, hello.delay(payload=payload).name)}  # type: ignore[attr-defined]

    @app.post("/dependency")
    async def with_dependency(name: str = Depends(delaying_dependency)) -> dict[str, str]:
        return {"name": name}

    @app.post("/background")
    async def with_background(payload: str, background: BackgroundTasks) -> None:
        async def later() -> None:
            recorded.remember(payload, (await ahello.delay(payload=payload)).name)  # type: ignore[attr-defined]

        def later_sync() -> None:
            recorded.remember(payload, hello.delay(payload=payload + "-sync").name)  # type: ignore[attr-defined]

        background.add_task(later)
        background.add_task(later_sync)

    @app.post("/stream")
    async def stream(payload: str, chunks: int = 3) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            for i in range(chunks):
                recorded.remember(payload, (await ahello.delay(payload=f"{payload}-{i}")).name)  # type: ignore[attr-defined]
                yield f"chunk {i}\n".encode()

        return StreamingResponse(body())

    @app.post("/stream-until-released")
    async def stream_until_released(payload: str) -> StreamingResponse:
        recorded.remember(payload, (await ahello.delay(payload=payload + "-before")).name)  # type: ignore[attr-defined]

        async def body() -> AsyncIterator[bytes]:
            try:
                yield b"first\n"
                await asyncio.to_thread(recorded.release_stream.wait, 30)
                recorded.remember(payload, (await ahello.delay(payload=payload + "-after")).name)  # type: ignore[attr-defined]
                yield b"second\n"
            finally:
                recorded.events.append(f"stream ended {payload}")  # by the end, or cancelled by a disconnect

        return StreamingResponse(body())

    @app.post("/required")
    async def delay_required(payload: str) -> dict[str, str]:
        return {"name": recorded.remember(payload, (await required.delay(payload=payload)).name)}  # type: ignore[attr-defined]

    @app.post("/doomed")
    async def doomed(payload: str) -> dict[str, str]:
        return {"name": recorded.remember(payload, (await never.delay(payload=payload)).name)}  # type: ignore[attr-defined]

    class Passthrough(BaseHTTPMiddleware):
        async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
            return await call_next(request)

    sub = FastAPI()

    @sub.post("/inner")
    async def mounted(payload: str) -> dict[str, str]:
        return {"name": recorded.remember(payload, (await ahello.delay(payload=payload)).name)}  # type: ignore[attr-defined]

    app.include_router(sync_tasks)
    app.include_router(async_tasks)
    app.include_router(doomed_tasks)
    app.include_router(required_tasks)
    recorded.required = required
    app.mount("/sub", sub)

    async def record_lost(lost: Sequence[LostTask]) -> None:
        recorded.lost.extend(lost)

    # Starlette wraps middleware added later around earlier ones: one BaseHTTPMiddleware inside the
    # buffer and one outside it.
    app.add_middleware(Passthrough)
    app.add_middleware(TaskBufferMiddleware, flush=flush, stats=recorded.stats, fallback=record_lost)
    app.add_middleware(Passthrough)
    return app
