"""Cost of one `.delay()` without network: a path parameter and a pydantic body, into a client that does nothing.

Modes (run `python delay_cost.py MODE ...`; `run.sh` runs all of them and prints one table):
  floor  the same CreateTaskRequest built by hand (model_dump, json, proto-plus objects)
  ours     fastapi-gcp-tasks from this repository (a body whose types are proven at registration)
  checked  the same with a body whose types need the per-call round-trip check (a datetime field)
  peer   fastapi-gcp-tasks 0.3.4 from PyPI (run it from its own venv)
Prints one JSON line per mode: {"mode", "us_per_call", "rpcs_per_call"}.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import timeit
from typing import Any

from fastapi import APIRouter, FastAPI
from google.cloud import tasks_v2
from pydantic import BaseModel

QUEUE = "projects/p/locations/l/queues/q"
BASE = "https://worker.example.com"


class Address(BaseModel):
    street: str
    city: str


class Customer(BaseModel):
    name: str
    email: str
    vip: bool = False
    tags: list[str] = []
    address: Address


class StampedCustomer(Customer):
    """`Customer` with a datetime: its zone and offset are checked on every call (not provable)."""

    since: dt.datetime


CUSTOMER = Customer(
    name="Ada Lovelace",
    email="ada@example.com",
    vip=True,
    tags=["math", "engines"],
    address=Address(street="12 St James's Square", city="London"),
)


class NullClient(tasks_v2.CloudTasksClient):
    """A CloudTasksClient that sends nothing and counts calls."""

    def __init__(self) -> None:
        self.calls = 0

    def create_task(self, request: Any = None, **kwargs: Any) -> Any:
        self.calls += 1
        return request.task

    def create_queue(self, request: Any = None, **kwargs: Any) -> Any:
        return None


def floor(client: NullClient) -> Any:
    def delay() -> Any:
        body = json.dumps(CUSTOMER.model_dump(mode="json")).encode()
        request = tasks_v2.CreateTaskRequest(
            parent=QUEUE,
            task=tasks_v2.Task(
                http_request=tasks_v2.HttpRequest(
                    url=f"{BASE}/customers/{42}/welcome",
                    http_method=tasks_v2.HttpMethod.POST,
                    headers={"Content-Type": "application/json"},
                    body=body,
                )
            ),
        )
        return client.create_task(request=request, timeout=10.0)

    return delay


def library(client: NullClient, *, checked: bool = False) -> Any:
    from fastapi_gcp_tasks import DelayedRouteBuilder

    router = APIRouter(route_class=DelayedRouteBuilder(queue_path=QUEUE, base_url=BASE, client=client))

    if checked:
        stamped = StampedCustomer(**CUSTOMER.model_dump(), since=dt.datetime(2024, 5, 1, 9, 30, tzinfo=dt.UTC))

        @router.post("/customers/{customer_id}/welcome")
        def welcome_stamped(customer_id: int, customer: StampedCustomer) -> None: ...

        FastAPI().include_router(router)
        return lambda: welcome_stamped.delay(customer_id=42, customer=stamped)  # type: ignore[attr-defined]

    @router.post("/customers/{customer_id}/welcome")
    def welcome(customer_id: int, customer: Customer) -> None: ...

    FastAPI().include_router(router)
    return lambda: welcome.delay(customer_id=42, customer=CUSTOMER)  # type: ignore[attr-defined]


def measure(modes: list[str]) -> list[dict[str, Any]]:
    """Time the modes interleaved (round after round), so that load changes hit them alike; keep the best round."""
    calls: dict[str, Any] = {}
    clients: dict[str, NullClient] = {}
    for mode in modes:
        client = clients[mode] = NullClient()
        delay = floor(client) if mode == "floor" else library(client, checked=mode == "checked")
        task = delay()
        assert task.http_request.url.endswith("/customers/42/welcome"), task.http_request.url
        assert json.loads(task.http_request.body)["address"]["city"] == "London"
        client.calls = 0
        calls[mode] = delay
    number, rounds = 2000, 15
    best = dict.fromkeys(modes, float("inf"))
    for _ in range(rounds):
        for mode in modes:
            best[mode] = min(best[mode], timeit.timeit(calls[mode], number=number) / number * 1e6)
    return [
        {"mode": mode, "us_per_call": best[mode], "rpcs_per_call": clients[mode].calls / (number * rounds)}
        for mode in modes
    ]


if __name__ == "__main__":
    wanted = sys.argv[1:]
    for row in measure(["ours" if mode == "peer" else mode for mode in wanted]):
        print(json.dumps(row | {"mode": "peer" if wanted == ["peer"] else row["mode"]}))
