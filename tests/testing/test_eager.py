"""Eager mode: `.delay()` runs the endpoint in-process through the app, with a real delivery's headers, no emulator."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException
from pydantic import BaseModel

from fastapi_gcp_tasks import (
    AsyncDelayedRouteBuilder,
    CloudTasksHeaders,
    DelayedRouteBuilder,
    as_async_delayed_task,
    as_delayed_task,
)
from fastapi_gcp_tasks.buffering import TaskBufferMiddleware
from fastapi_gcp_tasks.exception import TaskArgumentError
from fastapi_gcp_tasks.testing import (
    EagerTaskError,
    assert_task_created,
    created_tasks,
    eager_tasks,
    reset_clients,
)
from fastapi_gcp_tasks.transport._clients import EMULATOR_HOST_ENV

QUEUE = "projects/p/locations/l/queues/eager"
BASE = "https://worker.example.com"


class Line(BaseModel):
    sku: str
    quantity: int


class App:
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        tasks = APIRouter(route_class=DelayedRouteBuilder(queue_path=QUEUE, base_url=BASE), prefix="/tasks")
        async_tasks = APIRouter(route_class=AsyncDelayedRouteBuilder(queue_path=QUEUE, base_url=BASE))

        @tasks.post("/ship/{order_id}")
        def ship(
            order_id: int,
            line: Line,
            when: dt.datetime,
            headers: Annotated[CloudTasksHeaders, Depends()],
        ) -> None:
            self.seen.append({"order_id": order_id, "line": line, "when": when, "headers": headers})

        @tasks.post("/refund")
        @as_delayed_task
        def refund(amount: int) -> None:
            if amount < 0:
                raise HTTPException(status_code=402, detail="cannot refund a negative amount")
            if amount == 0:
                raise ZeroDivisionError("refund of nothing")
            self.seen.append({"amount": amount})

        @async_tasks.post("/notify")
        @as_async_delayed_task
        async def notify(email: str) -> None:
            self.seen.append({"email": email})

        @tasks.post("/chain")
        @as_delayed_task
        def chain(count: int) -> None:
            self.seen.append({"chain": count})
            if count > 0:
                chain.delay(count=count - 1)

        self.app = FastAPI()
        self.app.include_router(tasks)
        self.app.include_router(async_tasks)
        self.ship: Any = ship  # its `headers` dependency is no task argument: typed as a plain endpoint
        self.refund, self.notify, self.chain = refund, notify, chain

        @self.app.post("/checkout")
        async def checkout(email: str) -> dict[str, str]:
            task = await notify.delay(email=email)
            return {"task": task.name}


@pytest.fixture
def shop(monkeypatch: pytest.MonkeyPatch) -> App:
    # Eager mode needs neither an emulator nor Google credentials: no default client is ever created.
    monkeypatch.delenv(EMULATOR_HOST_ENV, raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/credentials.json")
    reset_clients()
    return App()


def test_delay_runs_the_endpoint_at_once_with_typed_arguments_and_task_headers(shop: App) -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    with eager_tasks(shop.app) as eager:
        task = shop.ship.delay(order_id=7, line=Line(sku="A-1", quantity=2), when=when)
    assert len(shop.seen) == 1
    seen = shop.seen[0]
    assert (seen["order_id"], seen["line"], seen["when"]) == (7, Line(sku="A-1", quantity=2), when)
    headers: CloudTasksHeaders = seen["headers"]
    assert headers.queue_name == "eager"
    assert headers.task_name == task.name.rpartition("/")[2]
    assert (headers.retry_count, headers.execution_count) == (0, 0)
    delivery = eager.deliveries[0]
    assert delivery.ok
    assert delivery.status == 200
    assert delivery.task.headers["User-Agent"] == "Google-Cloud-Tasks"
    created = assert_task_created(eager, shop.ship, order_id=7, line=Line(sku="A-1", quantity=2))
    assert created.arguments["when"] == when
    assert created.queue == QUEUE


def test_a_refusal_at_the_call_site_runs_nothing(shop: App) -> None:
    with eager_tasks(shop.app) as eager, pytest.raises(TaskArgumentError, match="order_id"):
        shop.ship.delay(order_id="not a number", line=Line(sku="A", quantity=1), when=dt.datetime.now(dt.UTC))
    assert eager.deliveries == []
    assert shop.seen == []


def test_the_endpoints_exception_and_a_non_2xx_reach_the_caller(shop: App) -> None:
    with eager_tasks(shop.app):
        with pytest.raises(ZeroDivisionError, match="refund of nothing"):
            shop.refund.delay(amount=0)
        with pytest.raises(EagerTaskError, match="402") as raised:
            shop.refund.delay(amount=-1)
    assert raised.value.delivery.status == 402
    assert "negative amount" in raised.value.delivery.response_text


def test_without_raise_errors_failures_are_recorded(shop: App) -> None:
    with eager_tasks(shop.app, raise_errors=False) as eager:
        shop.refund.delay(amount=-1)
        shop.refund.delay(amount=0)
        shop.refund.delay(amount=5)
    assert [delivery.status for delivery in eager.deliveries] == [402, 500, 200]
    assert [delivery.status for delivery in eager.failures] == [402, 500]
    assert [task.arguments["amount"] for task in created_tasks(eager, shop.refund)] == [-1, 0, 5]


async def test_an_async_builder_runs_eagerly_on_the_running_loop(shop: App) -> None:
    with eager_tasks(shop.app) as eager:
        await shop.notify.delay(email="ada@example.com")
    assert shop.seen == [{"email": "ada@example.com"}]
    assert_task_created(eager, shop.notify, email="ada@example.com")


def test_a_task_delaying_a_task_runs_the_chain(shop: App) -> None:
    with eager_tasks(shop.app) as eager:
        shop.chain.delay(count=2)
    assert shop.seen == [{"chain": 2}, {"chain": 1}, {"chain": 0}]
    assert [task.arguments["count"] for task in created_tasks(eager, shop.chain)] == [0, 1, 2]  # innermost first


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shop")


async def test_a_request_through_the_app_runs_its_tasks(shop: App) -> None:
    with eager_tasks(shop.app) as eager:
        async with _client(shop.app) as client:
            assert (await client.post("/checkout", params={"email": "bo@example.com"})).status_code == 200
    assert shop.seen == [{"email": "bo@example.com"}]
    assert len(eager.deliveries) == 1


async def test_buffered_tasks_run_after_the_response_and_a_failure_is_raised_when_the_block_ends(shop: App) -> None:
    shop.app.add_middleware(TaskBufferMiddleware)

    @shop.app.post("/refunds")
    def refunds(amount: int) -> dict[str, int]:
        shop.refund.delay(amount=amount)
        return {"kept": 1}

    async def two_requests() -> None:
        async with _client(shop.app) as client:
            assert (await client.post("/refunds", params={"amount": 3})).status_code == 200
            assert shop.seen == [{"amount": 3}]
            assert (await client.post("/refunds", params={"amount": -3})).status_code == 200  # the task ran later

    with pytest.raises(EagerTaskError, match="402"), eager_tasks(shop.app) as eager:
        await two_requests()
    assert [delivery.status for delivery in eager.deliveries] == [200, 402]


def test_eager_blocks_do_not_nest_and_end_cleanly(shop: App) -> None:
    with eager_tasks(shop.app), pytest.raises(RuntimeError, match="not nestable"), eager_tasks(shop.app):
        pass
    with eager_tasks(shop.app) as eager:
        shop.refund.delay(amount=1)
    assert len(eager.deliveries) == 1
