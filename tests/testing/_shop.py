"""The small app of docs/testing.md: an order delays a receipt task; a signup (buffered) a welcome task.

`make_shop(base_url)` builds a fresh app whose tasks are delivered back to `base_url`, with a sync builder
(`send_receipt`, `charge`: 402 for a negative amount) and an async one (`send_welcome`). With `buffered`,
every request's tasks are created after its response (`TaskBufferMiddleware`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException

from fastapi_gcp_tasks import AsyncDelayedRouteBuilder, DelayedRouteBuilder, as_async_delayed_task, as_delayed_task
from fastapi_gcp_tasks.buffering import TaskBufferMiddleware

QUEUE = "projects/shop/locations/local/queues/mail"


@dataclasses.dataclass
class Shop:
    app: FastAPI
    receipts: list[tuple[int, str]]
    welcomes: list[str]
    send_receipt: Any
    send_welcome: Any
    charge: Any


def make_shop(base_url: str, *, buffered: bool = False) -> Shop:
    receipts: list[tuple[int, str]] = []
    welcomes: list[str] = []
    tasks = APIRouter(route_class=DelayedRouteBuilder(queue_path=QUEUE, base_url=base_url), prefix="/tasks")
    async_tasks = APIRouter(route_class=AsyncDelayedRouteBuilder(queue_path=QUEUE, base_url=base_url), prefix="/atasks")

    @tasks.post("/receipt/{order_id}")
    @as_delayed_task
    def send_receipt(order_id: int, email: str) -> None:
        receipts.append((order_id, email))

    @tasks.post("/charge")
    @as_delayed_task
    def charge(amount: int) -> None:
        if amount < 0:
            raise HTTPException(status_code=402, detail="negative amount")

    @async_tasks.post("/welcome")
    @as_async_delayed_task
    async def send_welcome(email: str) -> None:
        welcomes.append(email)

    app = FastAPI()
    app.include_router(tasks)
    app.include_router(async_tasks)
    if buffered:
        app.add_middleware(TaskBufferMiddleware)

    @app.post("/order/{order_id}")
    def order(order_id: int, email: str) -> dict[str, str]:
        task = send_receipt.delay(order_id=order_id, email=email)
        return {"task": task.name}

    @app.post("/signup")
    async def signup(email: str) -> dict[str, str]:
        task = await send_welcome.delay(email=email)
        return {"task": task.name}

    return Shop(app, receipts, welcomes, send_receipt, send_welcome, charge)
