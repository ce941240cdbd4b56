"""Typed replay of dead letters, on the emulator delivering into the app in-process, letters kept in SQLite.

A task whose body the endpoint refused is dead-lettered by a real poison policy into `DeadLetterStore`. Once the
endpoint is fixed, replaying the letter re-creates the task through the endpoint's current validation and the
handler runs; a letter that still does not fit is a `ReplayArgumentError` naming the parameter, and stays open.
"""

# No `from __future__ import annotations`: the endpoint's body model is chosen per test (`Env.app`), and FastAPI
# resolves string annotations in the module's globals, where that local name does not exist.
import decimal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, Depends, FastAPI
from google.cloud import tasks_v2
from pydantic import BaseModel

from fastapi_gcp_tasks.async_delayed_route import AsyncDelayedRouteBuilder
from fastapi_gcp_tasks.delayed_route import DelayedRouteBuilder
from fastapi_gcp_tasks.emulator import Emulator
from fastapi_gcp_tasks.exception import TaskArgumentError
from fastapi_gcp_tasks.history._history import TaskHistory
from fastapi_gcp_tasks.history._letters import DeadLetterStore
from fastapi_gcp_tasks.history._migrate import migrate
from fastapi_gcp_tasks.history._replay import ReplayArgumentError, replay_letter, replay_letter_async, replay_letters
from fastapi_gcp_tasks.receive import PoisonPolicy, PrivateEndpoint
from fastapi_gcp_tasks.testing import use_emulator
from tests._support import TIMEOUT

QUEUE = "projects/p/locations/europe-west1/queues/replay"
BASE = "http://worker.test"
PRIVATE = PrivateEndpoint("tests: the emulator delivers in-process")


class ChargeV1(BaseModel):
    amount: int


class ChargeV2(BaseModel):
    """The fix: amounts with cents are accepted."""

    amount: decimal.Decimal


class ChargeV3(BaseModel):
    """An incompatible change: the field was renamed."""

    cents: int


@dataclass
class Env:
    emu: Emulator
    history: TaskHistory
    holder: dict[str, FastAPI]
    handled: list[tuple[str, str, Any]] = field(default_factory=list)
    endpoint: Any = None
    """The endpoint function of the latest app."""

    @property
    def store(self) -> DeadLetterStore:
        return self.history.dead_letters

    def app(self, model: type[BaseModel], *, builder: Callable[..., Any] = DelayedRouteBuilder) -> FastAPI:
        """The worker app with `model` as the body of `/charge/{account}`; deliveries go to it from now on."""
        route_class = builder(
            queue_path=QUEUE,
            callback_base_url=BASE,
            client=self.emu.tasks_client() if builder is DelayedRouteBuilder else None,
            auto_create_queue=False,
            poison_policy=PoisonPolicy(sink=self.store),
        )
        router = APIRouter(route_class=route_class, dependencies=[Depends(PRIVATE)])

        @router.post("/charge/{account}")
        async def charge(account: str, payment: model, currency: str = "USD") -> None:  # type: ignore[valid-type]
            self.handled.append((account, currency, payment))

        self.endpoint = charge
        app = FastAPI()
        app.include_router(router)
        self.holder["app"] = app
        return app

    def send_raw(self, task_id: str, path: str, body: bytes) -> None:
        """A task created by an older sender, bypassing `.delay()`'s validation."""
        self.emu.tasks_client().create_task(
            parent=QUEUE,
            task=tasks_v2.Task(
                name=f"{QUEUE}/tasks/{task_id}",
                http_request=tasks_v2.HttpRequest(
                    http_method=tasks_v2.HttpMethod.POST,
                    url=f"{BASE}{path}",
                    body=body,
                    headers={"Content-Type": "application/json"},
                ),
            ),
        )
        self.emu.wait_until_idle(timeout=TIMEOUT)

    def idle(self) -> None:
        self.emu.wait_until_idle(timeout=TIMEOUT)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    database = f"sqlite:///{tmp_path / 'letters.db'}"
    migrate(database)
    holder: dict[str, FastAPI] = {}

    async def deliver_to(scope: Any, receive: Any, send: Any) -> None:
        await holder["app"](scope, receive, send)

    with TaskHistory(database, flush_interval=0.01) as history, Emulator(deliver_to=deliver_to, queues=[QUEUE]) as emu:
        yield Env(emu, history, holder)


def test_a_letter_replays_through_the_fixed_endpoint_and_runs(env: Env) -> None:
    env.app(ChargeV1)
    env.send_raw("old-sender", "/charge/acc-1?currency=EUR", b'{"amount": "12.50"}')
    [letter] = env.store.list().items
    assert (letter.reason, letter.endpoint, letter.status) == ("invalid_request", "/charge/acc-1?currency=EUR", "open")
    assert env.handled == []

    fixed = env.app(ChargeV2)
    task = replay_letter(fixed, env.store, letter.letter_id)
    env.idle()
    assert env.handled == [("acc-1", "EUR", ChargeV2(amount=decimal.Decimal("12.50")))]
    replayed = env.store.get(letter.letter_id)
    assert replayed is not None
    assert (replayed.status, replayed.replayed_as) == ("replayed", task.name)
    assert task.name != f"{QUEUE}/tasks/old-sender"
    with pytest.raises(TaskArgumentError) as again:
        replay_letter(fixed, env.store, letter.letter_id)
    assert again.value.param == "letter_id"


def test_a_letter_that_no_longer_fits_names_the_parameter_and_stays_open(env: Env) -> None:
    env.app(ChargeV1)
    env.send_raw("t-1", "/charge/acc-2", b'{"amount": "12.50"}')
    [letter] = env.store.list().items
    renamed = env.app(ChargeV3)
    with pytest.raises(ReplayArgumentError) as raised:
        replay_letter(renamed, env.store, letter.letter_id)
    assert raised.value.param == "payment"
    assert "cents" in str(raised.value)
    assert raised.value.letter_id == letter.letter_id
    still = env.store.get(letter.letter_id)
    assert still is not None
    assert still.status == "open"
    env.idle()
    assert env.handled == []


def test_a_letter_for_no_task_route_is_refused(env: Env) -> None:
    env.app(ChargeV1)
    env.send_raw("t-1", "/charge/acc-3", b"{}")
    [letter] = env.store.list().items
    elsewhere = FastAPI()
    with pytest.raises(ReplayArgumentError, match="no task route"):
        replay_letter(elsewhere, env.store, letter.letter_id)
    with pytest.raises(TaskArgumentError) as unknown:
        replay_letter(elsewhere, env.store, letter.letter_id + 100)
    assert unknown.value.param == "letter_id"


def test_replay_letters_replays_the_matching_letters_and_reports_the_rest(env: Env) -> None:
    env.app(ChargeV1)
    env.send_raw("a", "/charge/acc-a", b'{"amount": "1.5"}')
    env.send_raw("b", "/charge/acc-b", b'{"amount": "2.5"}')
    env.send_raw("c", "/charge/acc-c", b'{"amount": "no"}')
    assert env.store.count() == 3
    fixed = env.app(ChargeV2)

    only_b = replay_letters(fixed, env.store, endpoint="/charge/acc-b")
    assert [name for _, name in only_b.replayed]
    assert only_b.ok
    env.idle()
    assert [account for account, _, _ in env.handled] == ["acc-b"]

    rest = replay_letters(fixed, env.store, reason="invalid_request")
    env.idle()
    assert len(rest.replayed) == 1
    assert not rest.ok
    [(failed_id, error)] = rest.failed
    assert error.param == "payment"
    failed = env.store.get(failed_id)
    assert failed is not None
    assert failed.status == "open"
    assert failed.endpoint == "/charge/acc-c"
    assert sorted(account for account, _, _ in env.handled) == ["acc-a", "acc-b"]
    assert env.store.count() == 1


async def test_replay_letter_async_awaits_the_async_route(env: Env) -> None:
    env.app(ChargeV1, builder=AsyncDelayedRouteBuilder)
    env.send_raw("t-1", "/charge/acc-4", b'{"amount": "3.25"}')
    [letter] = env.store.list().items
    fixed = env.app(ChargeV2, builder=AsyncDelayedRouteBuilder)
    with pytest.raises(TaskArgumentError) as sync_refused:
        replay_letter(fixed, env.store, letter.letter_id)
    assert sync_refused.value.param == "app"
    with use_emulator(env.emu):
        task = await replay_letter_async(fixed, env.store, letter.letter_id)
    env.idle()
    assert env.handled == [("acc-4", "USD", ChargeV2(amount=decimal.Decimal("3.25")))]
    replayed = env.store.get(letter.letter_id)
    assert replayed is not None
    assert replayed.replayed_as == task.name


async def test_replay_letter_async_runs_a_sync_routes_delay_off_the_event_loop(env: Env) -> None:
    env.app(ChargeV1)
    env.send_raw("t-2", "/charge/acc-5", b'{"amount": "1.25"}')
    [letter] = env.store.list().items
    fixed = env.app(ChargeV2)
    endpoint = env.endpoint
    send = endpoint.delay
    threads: list[int] = []

    def delay(**values: Any) -> tasks_v2.Task:
        threads.append(threading.get_ident())
        task: tasks_v2.Task = send(**values)
        return task

    endpoint.delay = delay
    task = await replay_letter_async(fixed, env.store, letter.letter_id)
    env.idle()
    assert threads, "the route's .delay() was not called"
    assert threading.get_ident() not in threads, "a blocking .delay() ran on the event loop"
    assert env.handled == [("acc-5", "USD", ChargeV2(amount=decimal.Decimal("1.25")))]
    replayed = env.store.get(letter.letter_id)
    assert replayed is not None
    assert replayed.replayed_as == task.name
