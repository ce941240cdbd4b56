"""`wait_for_tasks` covers a buffered flush still running after the response; the assertion helpers read tasks
back typed, from the emulator (delivered and still queued); `reset_clients` makes clients and builders start over."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any, cast

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from google.cloud import tasks_v2
from pydantic import BaseModel

from fastapi_gcp_tasks import DelayedRouteBuilder, as_delayed_task
from fastapi_gcp_tasks.buffering import TaskBufferMiddleware
from fastapi_gcp_tasks.emulator import Emulator
from fastapi_gcp_tasks.testing import assert_task_created, created_tasks, reset_clients, wait_for_tasks
from fastapi_gcp_tasks.testing._wait import buffered_pending
from fastapi_gcp_tasks.transport import _clients
from tests._support import listening_socket, serve_asgi
from tests._support.ports import url_of

QUEUE = "projects/p/locations/l/queues/wait"
RELEASE_AFTER = 0.3
"""Seconds a held flush waits before it may create its task: long enough that a wait ignoring it would return."""


class Item(BaseModel):
    sku: str
    tags: set[str]


class HeldClient:
    """The emulator's client, whose task creations wait until `release` is set (a slow Cloud Tasks)."""

    def __init__(self, inner: tasks_v2.CloudTasksClient, release: threading.Event) -> None:
        self._inner = inner
        self._release = release

    def create_task(self, **kwargs: Any) -> tasks_v2.Task:
        assert self._release.wait(30), "never released"
        return self._inner.create_task(**kwargs)

    def batch_create_tasks(self, **kwargs: Any) -> Any:
        assert self._release.wait(30), "never released"
        return self._inner.batch_create_tasks(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.fixture
def held_app(gcp_tasks_emulator: Emulator) -> Iterator[tuple[str, list[str], threading.Event]]:
    release = threading.Event()
    sock = listening_socket()
    done: list[str] = []
    client = HeldClient(gcp_tasks_emulator.tasks_client(), release)
    router = APIRouter(
        route_class=DelayedRouteBuilder(queue_path=QUEUE, base_url=url_of(sock), client=cast(Any, client))
    )

    @router.post("/note")
    @as_delayed_task
    def note(text: str) -> None:
        done.append(text)

    app = FastAPI()
    app.include_router(router)
    app.add_middleware(TaskBufferMiddleware)

    @app.post("/go")
    def go(text: str) -> None:
        note.delay(text=text)

    with serve_asgi(app, sock) as url:
        yield url, done, release
        release.set()


def test_wait_for_tasks_waits_for_a_flush_that_runs_after_the_response(
    gcp_tasks_emulator: Emulator, held_app: tuple[str, list[str], threading.Event]
) -> None:
    url, done, release = held_app
    assert httpx.post(f"{url}/go", params={"text": "hi"}).status_code == 200
    assert buffered_pending() == 1  # the response came; the task is not created yet
    threading.Timer(RELEASE_AFTER, release.set).start()
    wait_for_tasks(gcp_tasks_emulator)
    assert done == ["hi"]
    assert [record.status for record in gcp_tasks_emulator.deliveries] == [200]


def test_wait_for_tasks_refuses_a_bad_timeout_and_times_out_naming_what_is_left(
    gcp_tasks_emulator: Emulator, held_app: tuple[str, list[str], threading.Event]
) -> None:
    with pytest.raises(ValueError, match="timeout"):
        wait_for_tasks(gcp_tasks_emulator, timeout=0)
    url, _, _ = held_app
    assert httpx.post(f"{url}/go", params={"text": "stuck"}).status_code == 200
    with pytest.raises(TimeoutError, match="1 buffered task"):
        wait_for_tasks(gcp_tasks_emulator, timeout=0.2)


@pytest.fixture
def catalog(gcp_tasks_emulator: Emulator) -> Iterator[tuple[Any, list[Any]]]:
    sock = listening_socket()
    seen: list[Any] = []
    router = APIRouter(route_class=DelayedRouteBuilder(queue_path=QUEUE, base_url=url_of(sock)), prefix="/v1")

    @router.put("/items/{item_id}")
    @as_delayed_task
    def store(item_id: int, item: Item, at: dt.datetime, dry_run: bool = False) -> None:
        seen.append((item_id, item, at, dry_run))

    app = FastAPI()
    app.include_router(router)
    with serve_asgi(app, sock):
        yield store, seen


def test_created_tasks_are_read_back_typed_delivered_and_still_queued(
    gcp_tasks_emulator: Emulator, catalog: tuple[Any, list[Any]]
) -> None:
    store, seen = catalog
    at = dt.datetime(2026, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
    store.delay(item_id=1, item=Item(sku="a", tags={"x", "y"}), at=at)
    store.options(countdown=3600).delay(item_id=2, item=Item(sku="b", tags=set()), at=at, dry_run=True)
    wait_for_tasks(gcp_tasks_emulator)
    assert len(seen) == 1
    tasks = created_tasks(gcp_tasks_emulator, store)
    assert [task.arguments for task in tasks] == [
        {"item_id": 1, "item": Item(sku="a", tags={"x", "y"}), "at": at, "dry_run": False},
        {"item_id": 2, "item": Item(sku="b", tags=set()), "at": at, "dry_run": True},
    ]
    assert tasks[1].method == "PUT"
    assert tasks[1].queue == QUEUE
    assert assert_task_created(gcp_tasks_emulator, store, item_id=2, dry_run=True) is not None
    with pytest.raises(AssertionError, match=r"no task for .*store with \{'item_id': 3\}[\s\S]*'item_id': 1"):
        assert_task_created(gcp_tasks_emulator, store, item_id=3)


def test_assertion_helpers_refuse_a_function_that_is_not_a_task(gcp_tasks_emulator: Emulator) -> None:
    def plain() -> None: ...

    with pytest.raises(TypeError, match="endpoint must be a task endpoint"):
        created_tasks(gcp_tasks_emulator, plain)


def test_reset_clients_makes_a_new_default_client_and_builders_forget_their_queues(
    gcp_tasks_emulator: Emulator, catalog: tuple[Any, list[Any]]
) -> None:
    store, seen = catalog
    store.delay(item_id=1, item=Item(sku="a", tags=set()), at=dt.datetime.now(dt.UTC))
    wait_for_tasks(gcp_tasks_emulator)
    first = _clients._shared_tasks.get()
    gcp_tasks_emulator.server.reset()  # behind the builders' backs: the queue is gone, they do not know
    with pytest.raises(Exception, match="NOT_FOUND"):
        store.delay(item_id=2, item=Item(sku="a", tags=set()), at=dt.datetime.now(dt.UTC))
    reset_clients()
    assert _clients._shared_tasks.get() is not first
    store.delay(item_id=3, item=Item(sku="a", tags=set()), at=dt.datetime.now(dt.UTC))
    wait_for_tasks(gcp_tasks_emulator)
    assert [item_id for item_id, *_ in seen] == [1, 3]


def test_a_builder_with_its_own_client_creates_its_queue_again_after_a_reset(gcp_tasks_emulator: Emulator) -> None:
    router = APIRouter(
        route_class=DelayedRouteBuilder(
            queue_path=QUEUE, base_url="http://127.0.0.1:9", client=gcp_tasks_emulator.tasks_client()
        )
    )

    @router.post("/later")
    @as_delayed_task
    def later(n: int) -> None: ...

    later.options(countdown=3600).delay(n=1)
    gcp_tasks_emulator.reset()
    later.options(countdown=3600).delay(n=2)  # NOT_FOUND if the builder still believed its queue existed
    assert [task.arguments for task in created_tasks(gcp_tasks_emulator, later)] == [{"n": 2}]
