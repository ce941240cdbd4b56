"""Websocket and lifespan scopes are not buffered: a `.delay()` there creates the task at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, WebSocket

from fastapi_gcp_tasks.async_delayed_route import AsyncDelayedRouteBuilder
from fastapi_gcp_tasks.buffering import BufferStats, TaskBufferMiddleware
from fastapi_gcp_tasks.emulator import Emulator
from fastapi_gcp_tasks.utils import async_emulator_client

QUEUE = "projects/test/locations/here/queues/passthrough"


async def drive_lifespan_then_websocket(app: FastAPI) -> list[str]:
    """Play the server's side of a lifespan startup and one websocket session (raw ASGI messages)."""
    sent: list[str] = []

    startup = iter([{"type": "lifespan.startup"}])
    startup_done = asyncio.Event()
    sessions_done = asyncio.Event()

    async def lifespan_receive() -> dict[str, Any]:
        message = next(startup, None)
        if message is not None:
            return message
        await sessions_done.wait()
        return {"type": "lifespan.shutdown"}

    async def lifespan_send(message: MutableMapping[str, Any]) -> None:
        sent.append(message["type"])
        if message["type"] == "lifespan.startup.complete":
            startup_done.set()

    lifespan_run = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}}, lifespan_receive, lifespan_send)
    )
    await startup_done.wait()

    incoming = iter([{"type": "websocket.connect"}])
    closed = asyncio.Event()

    async def ws_receive() -> dict[str, Any]:
        message = next(incoming, None)
        if message is not None:
            return message
        await closed.wait()
        return {"type": "websocket.disconnect", "code": 1000}

    async def ws_send(message: MutableMapping[str, Any]) -> None:
        sent.append(message["type"])
        if message["type"] == "websocket.close":
            closed.set()

    scope = {
        "type": "websocket",
        "path": "/ws",
        "raw_path": b"/ws",
        "query_string": b"",
        "headers": [],
        "subprotocols": [],
        "asgi": {"version": "3.0"},
    }
    await app(scope, ws_receive, ws_send)
    sessions_done.set()
    await lifespan_run
    return sent


def test_websocket_and_lifespan_delays_are_sent_immediately() -> None:
    with Emulator(queues=[QUEUE]) as emu:
        client = emu.tasks_client()
        client.pause_queue(name=QUEUE)
        address = emu.address
        tasks = APIRouter(
            route_class=AsyncDelayedRouteBuilder(
                queue_path=QUEUE,
                callback_base_url="http://127.0.0.1:9",
                client=lambda: async_emulator_client(host=address),
                auto_create_queue=False,
            )
        )

        @tasks.post("/hello")
        async def hello(where: str) -> None:
            pass

        existing: dict[str, bool] = {}

        def exists(name: str) -> bool:
            return any(task.name == name for task in client.list_tasks(parent=QUEUE))

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            name = (await hello.delay(where="startup")).name  # type: ignore[attr-defined]
            existing["startup"] = exists(name)
            yield

        app = FastAPI(lifespan=lifespan)
        app.include_router(tasks)
        stats = BufferStats()
        app.add_middleware(TaskBufferMiddleware, stats=stats)

        @app.websocket("/ws")
        async def socket(websocket: WebSocket) -> None:
            await websocket.accept()
            name = (await hello.delay(where="websocket")).name  # type: ignore[attr-defined]
            existing["websocket"] = exists(name)
            await websocket.send_text(name)
            await websocket.close()

        sent = asyncio.run(drive_lifespan_then_websocket(app))
        assert "websocket.send" in sent
        assert existing == {"startup": True, "websocket": True}
        assert stats.kept == 0
        assert len(list(client.list_tasks(parent=QUEUE))) == 2
