"""End to end: tasks created with the official client on our emulator, delivered into a real worker app.

The emulator signs OIDC tokens with its own key and serves its JWKS over HTTP; the worker verifies
them with `OIDCVerifier`, exactly as it would verify Google's.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException
from fastapi.routing import APIRoute
from google.cloud import scheduler_v1, tasks_v2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel

from fastapi_gcp_tasks.delayed_route import DelayedRouteBuilder
from fastapi_gcp_tasks.dependencies import CloudSchedulerHeaders, CloudTasksHeaders, max_retries
from fastapi_gcp_tasks.emulator import Emulator, ManualClock
from fastapi_gcp_tasks.hooks import oidc_delayed_hook
from fastapi_gcp_tasks.oidc import OIDCVerifier
from fastapi_gcp_tasks.poison import DeadLetter, PoisonPolicy, poison_route_class
from tests._support import TIMEOUT, listening_socket, serve_asgi, wait_for
from tests._support.ports import url_of

QUEUE = "projects/test-project/locations/europe-west1/queues/worker"
BASE_URL = "http://worker.test"
AUDIENCE = "https://worker.example.com"
ACCOUNT = "tasks@test-project.iam.gserviceaccount.com"
INTRUDER = "intruder@other-project.iam.gserviceaccount.com"


class Charge(BaseModel):
    order: str
    cents: int


@dataclass
class Worker:
    """What the worker's handlers saw."""

    handled: list[tuple[str, int, str | None]] = field(default_factory=list)
    """(order, retry_count, idempotency_key) of every handler run."""
    effects: set[str] = field(default_factory=set)
    """Idempotency keys whose effect was applied."""
    letters: list[DeadLetter] = field(default_factory=list)
    fail: set[str] = field(default_factory=set)
    """Orders whose handler answers 500 every time."""
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Env:
    emu: Emulator
    clock: ManualClock
    app: FastAPI
    worker: Worker
    exporter: InMemorySpanExporter
    provider: TracerProvider
    endpoints: dict[str, Any]

    def settle(self, rounds: int = 1, advance: float = 2.0) -> None:
        """Let every due attempt finish, then move time past the next retry, `rounds` times."""
        for _ in range(rounds):
            self.emu.wait_until_idle(timeout=TIMEOUT)
            self.clock.advance(advance)
        self.emu.wait_until_idle(timeout=TIMEOUT)

    def statuses(self, order: str) -> list[int | None]:
        return [d.status for d in self.emu.deliveries if f'"order":"{order}"' in d.body.decode()]


def make_app(
    emu: Emulator, worker: Worker, provider: TracerProvider, base_url: str = BASE_URL
) -> tuple[FastAPI, dict[str, Any]]:
    verify = OIDCVerifier(
        audience=AUDIENCE, service_accounts=ACCOUNT, issuers=emu.issuer, jwks_url=emu.jwks_url, leeway=60
    )

    async def record(letter: DeadLetter) -> None:
        with worker.lock:
            worker.letters.append(letter)

    def builder(account: str | None) -> type[APIRoute]:
        hook = None
        if account is not None:
            hook = oidc_delayed_hook(tasks_v2.OidcToken(service_account_email=account, audience=AUDIENCE))
        return DelayedRouteBuilder(
            queue_path=QUEUE,
            callback_base_url=base_url,
            client=emu.tasks_client(),
            auto_create_queue=False,
            pre_create_hook=hook,
        )

    def make_charge() -> Any:
        async def charge(
            payload: Charge, meta: CloudTasksHeaders = Depends(), _: Any = Depends(max_retries(3, on_give_up=record))
        ) -> dict[str, str]:
            key = meta.idempotency_key
            with worker.lock:
                worker.handled.append((payload.order, meta.retry_count, key))
                if payload.order in worker.fail:
                    raise HTTPException(500, "payment provider down")
                if key is not None:
                    worker.effects.add(key)
            return {"charged": payload.order}

        return charge

    # Three senders that differ only in the token they ask for; the worker verifies all of them the same way.
    policy = PoisonPolicy(sink=record)
    app = FastAPI(telemetry={"tracer_provider": provider, "metrics": False, "logs": False})
    endpoints = {}
    for name, account in (("trusted", ACCOUNT), ("intruder", INTRUDER), ("anonymous", None)):
        router = APIRouter(route_class=poison_route_class(builder(account), policy), dependencies=[Depends(verify)])
        endpoints[name] = router.post(f"/tasks/{name}/charge")(make_charge())
        app.include_router(router)
    return app, endpoints


@pytest.fixture
def env() -> Iterator[Env]:
    clock = ManualClock()
    worker = Worker()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    holder: dict[str, FastAPI] = {}

    async def deliver_to(scope: Any, receive: Any, send: Any) -> None:
        await holder["app"](scope, receive, send)

    with Emulator(clock=clock, deliver_to=deliver_to, queues=[QUEUE]) as emu:
        app, endpoints = make_app(emu, worker, provider)
        holder["app"] = app
        yield Env(emu, clock, app, worker, exporter, provider, endpoints)
    provider.shutdown()


def test_a_token_signed_by_the_emulator_passes_verification(env: Env) -> None:
    env.endpoints["trusted"].delay(payload=Charge(order="o-1", cents=100))
    env.settle()
    assert env.statuses("o-1") == [200]
    assert [(order, retry) for order, retry, _ in env.worker.handled] == [("o-1", 0)]
    delivered = env.emu.deliveries[0]
    assert delivered.headers["Authorization"].startswith("Bearer ")


def test_another_service_account_is_refused_with_403(env: Env) -> None:
    env.endpoints["intruder"].delay(payload=Charge(order="o-2", cents=100))
    env.settle(rounds=2)
    statuses = env.statuses("o-2")
    assert len(statuses) >= 2
    assert set(statuses) == {403}
    assert env.worker.handled == []


def test_a_task_without_a_token_is_refused_with_401(env: Env) -> None:
    env.endpoints["anonymous"].delay(payload=Charge(order="o-3", cents=100))
    env.settle()
    assert env.statuses("o-3")[0] == 401
    assert env.worker.handled == []


def test_max_retries_stops_the_emulators_retries(env: Env) -> None:
    env.worker.fail.add("o-4")
    env.endpoints["trusted"].delay(payload=Charge(order="o-4", cents=100))
    env.settle(rounds=8)
    assert env.statuses("o-4") == [500, 500, 500, 200]
    assert [retry for order, retry, _ in env.worker.handled if order == "o-4"] == [0, 1, 2]
    [letter] = env.worker.letters
    assert letter.reason == "max_retries"
    assert letter.retry_count == 3
    assert letter.queue_name == "worker"
    task = env.emu.tasks_client().list_tasks(parent=QUEUE)
    assert list(task) == []


def test_the_idempotency_key_is_stable_across_retries(env: Env) -> None:
    env.worker.fail.add("o-5")
    env.endpoints["trusted"].delay(payload=Charge(order="o-5", cents=1))
    env.endpoints["trusted"].delay(payload=Charge(order="o-6", cents=1))
    env.settle(rounds=2)
    keys_5 = {key for order, _, key in env.worker.handled if order == "o-5"}
    keys_6 = {key for order, _, key in env.worker.handled if order == "o-6"}
    assert len([1 for order, _, _ in env.worker.handled if order == "o-5"]) >= 2
    assert len(keys_5) == 1
    assert len(keys_6) == 1
    assert keys_5 != keys_6
    [key] = keys_6
    assert key is not None
    assert key.startswith("worker/")


def test_an_invalid_payload_is_dead_lettered_and_not_retried(env: Env) -> None:
    client = env.emu.tasks_client()
    client.create_task(
        parent=QUEUE,
        task=tasks_v2.Task(
            http_request=tasks_v2.HttpRequest(
                url=f"{BASE_URL}/tasks/trusted/charge",
                http_method=tasks_v2.HttpMethod.POST,
                headers={"Content-Type": "application/json"},
                body=b'{"order": "o-7", "cents": "a lot"}',
                oidc_token=tasks_v2.OidcToken(service_account_email=ACCOUNT, audience=AUDIENCE),
            )
        ),
    )
    env.settle(rounds=2)
    assert [d.status for d in env.emu.deliveries] == [200]
    [letter] = env.worker.letters
    assert letter.reason == "invalid_request"
    assert letter.body == b'{"order": "o-7", "cents": "a lot"}'
    assert letter.task_name is not None
    assert letter.headers["authorization"] == "[redacted]"
    assert env.worker.handled == []


def test_delay_carries_the_trace_into_the_worker(env: Env) -> None:
    with env.provider.get_tracer("sender").start_as_current_span("checkout") as span:
        env.endpoints["trusted"].delay(payload=Charge(order="o-8", cents=1))
    env.settle()
    assert env.statuses("o-8") == [200]
    assert "traceparent" in env.emu.deliveries[0].headers
    trace_id = span.get_span_context().trace_id
    server = [s for s in env.exporter.get_finished_spans() if s.name.startswith("POST /tasks/trusted")]
    assert len(server) == 1
    assert server[0].context.trace_id == trace_id
    assert server[0].parent is not None
    assert server[0].parent.span_id == span.get_span_context().span_id


def test_over_real_http_into_uvicorn() -> None:
    """The same worker served by uvicorn on loopback, the emulator delivering over sockets in real time."""
    worker = Worker(fail={"o-9"})
    provider = TracerProvider()
    listener = listening_socket()
    with Emulator(queues=[QUEUE]) as emu:
        app, endpoints = make_app(emu, worker, provider, base_url=url_of(listener))
        with serve_asgi(app, listener):
            endpoints["trusted"].delay(payload=Charge(order="o-8", cents=1))
            endpoints["intruder"].delay(payload=Charge(order="o-8b", cents=1))
            endpoints["trusted"].delay(payload=Charge(order="o-9", cents=1))
            wait_for(lambda: len([d for d in emu.deliveries if b"o-9" in d.body]) >= 4, "four attempts of o-9")
            emu.wait_until_idle(timeout=TIMEOUT)
            statuses = {
                order: [d.status for d in emu.deliveries if f'"{order}"'.encode() in d.body]
                for order in ("o-8", "o-8b", "o-9")
            }
    provider.shutdown()
    assert statuses["o-8"] == [200]
    assert statuses["o-8b"][0] == 403
    assert statuses["o-9"] == [500, 500, 500, 200]
    assert [letter.reason for letter in worker.letters] == ["max_retries"]


def test_scheduler_headers_and_token_from_the_emulators_scheduler() -> None:
    # Tokens are stamped with the emulator's clock and checked against the real one: stay near now.
    start = dt.datetime.now(dt.UTC).replace(second=30, microsecond=0)
    clock = ManualClock(start)
    seen: list[CloudSchedulerHeaders] = []
    holder: dict[str, FastAPI] = {}

    async def deliver_to(scope: Any, receive: Any, send: Any) -> None:
        await holder["app"](scope, receive, send)

    with Emulator(clock=clock, deliver_to=deliver_to) as emu:
        verify = OIDCVerifier(
            audience=AUDIENCE, service_accounts=ACCOUNT, issuers=emu.issuer, jwks_url=emu.jwks_url, leeway=120
        )
        app = FastAPI()

        @app.post("/cron/nightly", dependencies=[Depends(verify)])
        async def nightly(meta: CloudSchedulerHeaders = Depends()) -> None:
            seen.append(meta)

        holder["app"] = app
        emu.scheduler_client().create_job(
            parent="projects/test-project/locations/europe-west1",
            job=scheduler_v1.Job(
                name="projects/test-project/locations/europe-west1/jobs/nightly",
                schedule="* * * * *",
                time_zone="UTC",
                http_target=scheduler_v1.HttpTarget(
                    uri=f"{BASE_URL}/cron/nightly",
                    http_method=scheduler_v1.HttpMethod.POST,
                    oidc_token=scheduler_v1.OidcToken(service_account_email=ACCOUNT, audience=AUDIENCE),
                ),
            ),
        )
        clock.advance(31)
        emu.wait_until_idle(timeout=15)
        statuses = [d.status for d in emu.deliveries]
    assert statuses == [200]
    [meta] = seen
    assert meta.from_scheduler is True
    assert meta.job_name == "nightly"
    assert meta.schedule_time == start.replace(second=0) + dt.timedelta(minutes=1)
