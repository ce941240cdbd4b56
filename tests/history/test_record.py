"""Worker-side recording: one `AttemptEvent` per authenticated attempt of a task route, with its final answer.

The history here is a `TaskHistory` whose recording methods keep the events in a list (no database), so each
test reads exactly what the route class handed over; `test_record_sqlite.py` checks the same path end to end.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Mapping
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request
from pydantic import BaseModel

from fastapi_gcp_tasks.delayed_route import DelayedRouteBuilder
from fastapi_gcp_tasks.exception import TaskArgumentError
from fastapi_gcp_tasks.history._history import TaskHistory
from fastapi_gcp_tasks.history._types import AttemptEvent, CreatedEvent
from fastapi_gcp_tasks.receive import Authenticator, PoisonPolicy, PrivateEndpoint, max_retries, poison_route_class
from fastapi_gcp_tasks.receive._letters import DeadLetter
from fastapi_gcp_tasks.scheduled_route import ScheduledRouteBuilder

QUEUE = "projects/p/locations/europe-west1/queues/mails"
LOCATION = "projects/p/locations/europe-west1"
PRIVATE = PrivateEndpoint("tests: the TestClient is the only caller")
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


class ListHistory(TaskHistory):
    """A `TaskHistory` that keeps what it is given in lists: the events exactly as the hooks built them."""

    def __init__(self, *, redact: tuple[str, ...] = (), store_arguments: bool = True) -> None:  # no database
        self._redact = frozenset(redact)
        self._store_arguments = store_arguments
        self._closed = True
        self.attempts: list[AttemptEvent] = []
        self.created: list[CreatedEvent] = []

    def __repr__(self) -> str:
        return "ListHistory()"

    def record_attempt(self, event: AttemptEvent) -> None:
        self.attempts.append(event)

    def record_attempt_later(self, build: Callable[[], AttemptEvent | None]) -> None:
        event = build()  # built at once here, where the writer thread would build it later
        if event is not None:
            self.attempts.append(event)

    def record_created(self, event: CreatedEvent) -> None:
        self.created.append(event)


class Client:
    """Synchronous requests into an app in-process; an exception escaping the app is the 500 a server sends."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://worker.test") as client:
                return await client.post(path, **kwargs)

        return asyncio.run(send())


class Email(BaseModel):
    to: str
    password: str
    subject: str = "hi"


class Refuser(Authenticator):
    """Accepts only requests carrying `x-test-token: good`."""

    async def check(self, request: Request) -> None:
        if request.headers.get("x-test-token") != "good":
            raise HTTPException(401, "who are you")


def task_headers(task: str = "t-1", retry: int = 0, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return {
        "x-cloudtasks-queuename": "mails",
        "x-cloudtasks-taskname": task,
        "x-cloudtasks-taskretrycount": str(retry),
        "x-cloudtasks-taskexecutioncount": str(retry),
        "traceparent": f"00-{TRACE}-00f067aa0ba902b7-01",
        **(extra or {}),
    }


def make_app(history: ListHistory, *, auth: Any = PRIVATE, poison: PoisonPolicy | None = None) -> FastAPI:
    route_class = DelayedRouteBuilder(
        queue_path=QUEUE, callback_base_url="http://worker.test", history=history, poison_policy=poison
    )
    dependencies = [] if auth is None else [Depends(auth)]
    router = APIRouter(route_class=route_class, dependencies=dependencies, prefix="/tasks")

    @router.post("/send/{user_id}")
    async def send(user_id: int, email: Email, lang: str = "en", x_tenant: Annotated[str, Header()] = "-") -> None:
        if email.subject == "boom":
            raise RuntimeError("smtp down")
        if email.subject == "teapot":
            raise HTTPException(418, "no")

    @router.post("/limited", dependencies=[Depends(max_retries(2))])
    async def limited() -> None:
        raise HTTPException(503, "busy")

    app = FastAPI()
    app.include_router(router, prefix="/api")
    return app


@pytest.fixture
def history() -> ListHistory:
    return ListHistory(redact=("password",))


@pytest.fixture
def client(history: ListHistory) -> Client:
    return Client(make_app(history))


BODY = {"to": "a@b.c", "password": "hunter2", "subject": "s"}


def test_a_successful_attempt_is_recorded_with_its_arguments_redacted(client: Client, history: ListHistory) -> None:
    response = client.post(
        "/api/tasks/send/7?lang=fr", json=BODY, headers=task_headers("t-1", retry=2, extra={"x-tenant": "acme"})
    )
    assert response.status_code == 200
    [event] = history.attempts
    assert event.task_name == f"{LOCATION}/queues/mails/tasks/t-1"
    assert (event.queue_name, event.endpoint, event.method) == ("mails", "/tasks/send/{user_id}", "POST")
    assert event.arguments == {
        "user_id": 7,
        "lang": "fr",
        "x_tenant": "acme",
        "email": {"to": "a@b.c", "password": "[redacted]", "subject": "s"},
    }
    assert (event.retry_count, event.execution_count, event.status_code, event.outcome) == (2, 2, 200, "succeeded")
    assert event.trace_id == TRACE
    assert event.started_at.tzinfo is not None
    assert dt.datetime.now(dt.UTC) - event.started_at < dt.timedelta(minutes=5)
    assert event.duration >= 0
    assert (event.error_type, event.error_message, event.job_name) == (None, None, None)


def test_an_exception_in_the_handler_is_a_failed_500_and_still_raised(client: Client, history: ListHistory) -> None:
    response = client.post("/api/tasks/send/7", json={**BODY, "subject": "boom"}, headers=task_headers())
    assert response.status_code == 500
    [event] = history.attempts
    assert (event.status_code, event.outcome) == (500, "failed")
    assert (event.error_type, event.error_message) == ("RuntimeError", "smtp down")
    assert event.arguments is not None
    assert event.arguments["user_id"] == 7


def test_an_http_exception_keeps_its_status(client: Client, history: ListHistory) -> None:
    response = client.post("/api/tasks/send/7", json={**BODY, "subject": "teapot"}, headers=task_headers())
    assert response.status_code == 418
    [event] = history.attempts
    assert (event.status_code, event.outcome) == (418, "failed")


def test_fastapis_422_is_recorded_without_arguments(client: Client, history: ListHistory) -> None:
    response = client.post("/api/tasks/send/7", json={"to": "a@b.c"}, headers=task_headers())
    assert response.status_code == 422
    [event] = history.attempts
    assert (event.status_code, event.outcome, event.arguments) == (422, "failed", None)


def test_a_poison_policys_acknowledgement_is_a_dead_letter(history: ListHistory) -> None:
    letters: list[DeadLetter] = []
    app = make_app(history, poison=PoisonPolicy(sink=letters.append))
    client = Client(app)
    response = client.post("/api/tasks/send/7", json={"to": 1}, headers=task_headers())
    assert response.status_code == 200
    assert len(letters) == 1
    [event] = history.attempts
    assert (event.status_code, event.outcome, event.arguments) == (200, "dead_letter", None)
    assert event.error_type == "RequestValidationError"
    assert event.error_message is not None
    assert "body.to" in event.error_message


def test_a_max_retries_give_up_is_recorded_as_gave_up(client: Client, history: ListHistory) -> None:
    assert client.post("/api/tasks/limited", headers=task_headers(retry=1)).status_code == 503
    assert client.post("/api/tasks/limited", headers=task_headers(retry=2)).status_code == 200
    assert [(e.status_code, e.outcome) for e in history.attempts] == [(503, "failed"), (200, "gave_up")]


def test_a_forged_request_writes_nothing(history: ListHistory) -> None:
    """Authentication first: a request the route's authenticator refuses is answered 401 and never recorded."""
    client = Client(make_app(history, auth=Refuser()))
    refused = client.post("/api/tasks/send/7", json=BODY, headers=task_headers())
    refused_invalid = client.post("/api/tasks/send/7", json={"to": 1}, headers=task_headers())
    accepted = client.post("/api/tasks/send/7", json=BODY, headers=task_headers("t-2", extra={"x-test-token": "good"}))
    assert (refused.status_code, refused_invalid.status_code, accepted.status_code) == (401, 401, 200)
    assert [e.task_name.rsplit("/", 1)[-1] for e in history.attempts] == ["t-2"]


def test_a_route_without_an_authenticator_records_nothing(
    history: ListHistory, caplog: pytest.LogCaptureFixture
) -> None:
    client = Client(make_app(history, auth=None))
    assert client.post("/api/tasks/send/7", json=BODY, headers=task_headers()).status_code == 200
    assert history.attempts == []
    assert any("history on POST" in record.getMessage() for record in caplog.records)


def test_a_request_that_is_not_a_delivery_is_not_recorded(client: Client, history: ListHistory) -> None:
    assert client.post("/api/tasks/send/7", json=BODY).status_code == 200
    assert history.attempts == []


def test_store_arguments_false_records_none(history: ListHistory) -> None:
    quiet = ListHistory(store_arguments=False)
    client = Client(make_app(quiet))
    assert client.post("/api/tasks/send/7", json=BODY, headers=task_headers()).status_code == 200
    [event] = quiet.attempts
    assert event.arguments is None


def test_a_google_trace_header_gives_the_trace_id(client: Client, history: ListHistory) -> None:
    headers = {k: v for k, v in task_headers().items() if k != "traceparent"}
    headers["x-cloud-trace-context"] = "105445aa7843bc8bf206b12000100000/1;o=1"
    client.post("/api/tasks/send/7", json=BODY, headers=headers)
    assert history.attempts[0].trace_id == "105445aa7843bc8bf206b12000100000"


def test_a_scheduler_run_is_recorded_under_its_job(history: ListHistory) -> None:
    route_class = ScheduledRouteBuilder(location_path=LOCATION, callback_base_url="http://w.test", history=history)
    router = APIRouter(route_class=route_class, dependencies=[Depends(PRIVATE)])

    @router.post("/nightly")
    async def nightly() -> None:
        return None

    app = FastAPI()
    app.include_router(router)
    headers = {"x-cloudscheduler": "true", "x-cloudscheduler-jobname": "nightly", "x-cloudscheduler-scheduletime": "T"}
    client = Client(app)
    assert client.post("/nightly", headers=headers).status_code == 200
    [event] = history.attempts
    assert (event.task_name, event.job_name, event.queue_name, event.arguments) == (
        "job:nightly@T",
        "nightly",
        None,
        {},
    )


@pytest.mark.parametrize("builder", [DelayedRouteBuilder, ScheduledRouteBuilder])
def test_history_must_be_a_task_history(builder: Any) -> None:
    where: Mapping[str, str] = {"queue_path": QUEUE} if builder is DelayedRouteBuilder else {"location_path": LOCATION}
    with pytest.raises(TaskArgumentError) as raised:
        builder(**where, callback_base_url="http://w.test", history="sqlite://")
    assert raised.value.param == "history"


def test_options_history_is_checked_where_called(history: ListHistory) -> None:
    router = APIRouter(route_class=DelayedRouteBuilder(queue_path=QUEUE, callback_base_url="http://w.test"))

    @router.post("/x")
    async def x() -> None:
        return None

    with pytest.raises(TaskArgumentError) as raised:
        x.options(history=object())  # type: ignore[attr-defined]
    assert raised.value.param == "history"
    x.options(history=history)  # type: ignore[attr-defined]


def test_a_builder_wrapped_by_poison_route_class_still_records_the_dead_letter(history: ListHistory) -> None:
    letters: list[DeadLetter] = []
    builder = DelayedRouteBuilder(queue_path=QUEUE, callback_base_url="http://worker.test", history=history)
    router = APIRouter(
        route_class=poison_route_class(builder, PoisonPolicy(sink=letters.append)), dependencies=[Depends(PRIVATE)]
    )

    @router.post("/wrapped")
    async def wrapped(email: Email) -> None:
        return None

    app = FastAPI()
    app.include_router(router)
    client = Client(app)
    assert client.post("/wrapped", json={"to": 1}, headers=task_headers()).status_code == 200
    assert client.post("/wrapped", json=BODY, headers=task_headers("t-2")).status_code == 200
    assert len(letters) == 1
    assert [(e.outcome, e.endpoint) for e in history.attempts] == [
        ("dead_letter", "/wrapped"),
        ("succeeded", "/wrapped"),
    ]
