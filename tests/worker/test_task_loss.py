"""Task loss, end to end: no task a worker gives up on disappears without a dead letter (or a documented retry).

Tasks are created with the official client on our emulator and delivered over real HTTP into a real
uvicorn worker. The emulator runs on a `ManualClock`, so retries and dispatch deadlines happen when a
test moves time, never by waiting for it; every wait below is on a condition, with a generous timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, FastAPI, Form, HTTPException, Request, UploadFile
from fastapi.routing import APIRoute
from google.api_core import exceptions
from google.cloud import tasks_v2
from google.protobuf import duration_pb2
from pydantic import BaseModel
from starlette.datastructures import UploadFile as StarletteUploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastapi_gcp_tasks.async_delayed_route import AsyncDelayedRouteBuilder
from fastapi_gcp_tasks.delayed_route import DelayedRouteBuilder
from fastapi_gcp_tasks.emulator import Emulator, ManualClock
from fastapi_gcp_tasks.receive import (
    CloudTasksHeaders,
    DeadLetter,
    OIDCVerifier,
    PoisonPolicy,
    PrivateEndpoint,
    WorkerRoute,
    max_retries,
    poison_route_class,
)
from tests._support import wait_for

from ._support import serve_app

QUEUE_ID = "loss"
QUEUE = f"projects/test-project/locations/europe-west1/queues/{QUEUE_ID}"
AUDIENCE = "https://worker.example.com"
ACCOUNT = "tasks@test-project.iam.gserviceaccount.com"
WAIT = 60.0
"""Seconds any condition may take to come true on a busy machine before the test fails."""

BOUNDARY = "loss-boundary-7f3a"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
FORM = "application/x-www-form-urlencoded"


class Charge(BaseModel):
    order: str
    cents: int


def multipart_body(fields: dict[str, str], file: tuple[str, str, str, bytes]) -> bytes:
    """A multipart body with text `fields` and one `(field, filename, content type, data)` file."""
    chunks = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    name, filename, content_type, data = file
    chunks.append(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    chunks.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(chunks)


# A file whose bytes are not UTF-8 and hold CRLFs and something that looks like a boundary.
FILE_DATA = b"\x00\xff\xfe\r\n--not-the-boundary\r\n\x80 end"


def parsed_form(body: bytes, content_type: str) -> list[tuple[str, Any]]:
    """The form a server parses from `body`: text values, and files as `(filename, content type, data)`."""

    async def parse() -> list[tuple[str, Any]]:
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        scope = {"type": "http", "method": "POST", "headers": [(b"content-type", content_type.encode())]}
        request = Request(scope, receive)
        items: list[tuple[str, Any]] = []
        async with request.form() as form:
            for key, value in form.multi_items():
                if isinstance(value, StarletteUploadFile):
                    items.append((key, (value.filename, value.content_type, await value.read())))
                else:
                    items.append((key, value))
        return items

    return asyncio.run(parse())


# -- the harness -------------------------------------------------------------------------------------------------


@dataclass
class Seen:
    """What the worker's handlers and sinks saw (written from the worker's threads)."""

    letters: list[DeadLetter] = field(default_factory=list)
    handled: list[int] = field(default_factory=list)
    """The retry count of every handler run."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, letter: DeadLetter) -> None:
        with self.lock:
            self.letters.append(letter)

    def handle(self, meta: CloudTasksHeaders) -> None:
        with self.lock:
            self.handled.append(meta.retry_count)


@dataclass
class Env:
    emu: Emulator
    clock: ManualClock
    seen: Seen
    stack: contextlib.ExitStack

    @property
    def client(self) -> tasks_v2.CloudTasksClient:
        return self.emu.tasks_client()

    def serve(self, app: ASGIApp) -> str:
        """Serve `app` with uvicorn on loopback until the test ends; returns its base URL."""
        return self.stack.enter_context(serve_app(app))

    def create(
        self,
        url: str,
        task_id: str,
        body: bytes,
        content_type: str | None,
        *,
        oidc: bool = False,
        deadline: int | None = None,
    ) -> str:
        """Create a task with this exact body and content type; returns its full name."""
        name = f"{QUEUE}/tasks/{task_id}"
        request = tasks_v2.HttpRequest(
            url=url,
            http_method=tasks_v2.HttpMethod.POST,
            headers={"Content-Type": content_type} if content_type is not None else {},
            body=body,
        )
        if oidc:
            request.oidc_token = tasks_v2.OidcToken(service_account_email=ACCOUNT, audience=AUDIENCE)
        task = tasks_v2.Task(name=name, http_request=request)
        if deadline is not None:
            task.dispatch_deadline = duration_pb2.Duration(seconds=deadline)
        self.client.create_task(parent=QUEUE, task=task)
        return name

    def settle(self, rounds: int = 0, advance: float = 5.0) -> None:
        """Let the due attempts finish, then `rounds` times move time past the next retry and let it finish."""
        self.emu.wait_until_idle(timeout=WAIT)
        for _ in range(rounds):
            self.clock.advance(advance)
            self.emu.wait_until_idle(timeout=WAIT)

    def statuses(self, name: str) -> list[int | None]:
        return [record.status for record in self.emu.deliveries if record.source == name]

    def is_gone(self, name: str) -> bool:
        try:
            self.client.get_task(name=name)
        except exceptions.NotFound:
            return True
        return False


@pytest.fixture
def env() -> Iterator[Env]:
    # OIDC tokens are stamped with the emulator's clock and checked against the real one: start near now.
    clock = ManualClock(dt.datetime.now(dt.UTC))
    with contextlib.ExitStack() as stack:
        emu = stack.enter_context(Emulator(clock=clock, queues=[QUEUE]))
        yield Env(emu, clock, Seen(), stack)


private = PrivateEndpoint("test worker on loopback: only the emulator calls it")


# -- 1. invalid bodies: one letter with the exact bytes, acknowledged --------------------------------------------


def poison_app(emu: Emulator, seen: Seen) -> FastAPI:
    """Endpoints that take JSON, a form and a multipart upload, behind the emulator's OIDC tokens."""
    verify = OIDCVerifier(
        audience=AUDIENCE, service_accounts=ACCOUNT, issuers=emu.issuer, jwks_url=emu.jwks_url, leeway=120
    )
    router = APIRouter(
        route_class=poison_route_class(APIRoute, PoisonPolicy(sink=seen.record)), dependencies=[Depends(verify)]
    )

    @router.post("/json")
    async def take_json(payload: Charge, meta: CloudTasksHeaders = Depends()) -> None:
        seen.handle(meta)

    @router.post("/form")
    async def take_form(
        order: Annotated[str, Form()], cents: Annotated[int, Form()], meta: CloudTasksHeaders = Depends()
    ) -> None:
        seen.handle(meta)

    @router.post("/upload")
    async def take_upload(
        order: Annotated[str, Form()],
        cents: Annotated[int, Form()],
        file: UploadFile,
        meta: CloudTasksHeaders = Depends(),
    ) -> None:
        seen.handle(meta)

    app = FastAPI()
    app.include_router(router)
    return app


INVALID_BODIES = [
    pytest.param("/json", "application/json", b'{"order": "o-1", "cents": "a lot"}', id="json-invalid-field"),
    pytest.param("/json", "application/json", b'{"order": "o-1", "cents": 1', id="json-malformed"),
    pytest.param("/json", "text/plain; charset=utf-8", b'{"order": "o-1", "cents": 1}', id="raw-text"),
    # The validation error quotes this non-UTF-8 body: encoding it must not fail (it used to answer 500).
    pytest.param("/json", "application/octet-stream", b"\x00\xff\xfe raw \r\n\x80", id="raw-binary"),
    pytest.param("/json", None, b"not json at all", id="raw-no-content-type"),
    # `%2D` and `+` are spelled differently from how a parsed form would be encoded again.
    pytest.param("/form", FORM, b"order=o%2D1&cents=a+lot&note=%E2%9C%93", id="form-urlencoded"),
    pytest.param(
        "/upload",
        MULTIPART,
        multipart_body({"order": "o-1", "cents": "many"}, ("file", "r.bin", "application/x-raw", FILE_DATA)),
        id="multipart-with-file",
    ),
]


@pytest.mark.parametrize(("path", "content_type", "body"), INVALID_BODIES)
def test_an_invalid_body_gives_one_letter_with_the_delivered_bytes(
    env: Env, path: str, content_type: str | None, body: bytes
) -> None:
    base_url = env.serve(poison_app(env.emu, env.seen))
    name = env.create(f"{base_url}{path}", "bad-body", body, content_type, oidc=True)
    env.settle(rounds=3)

    [delivered] = [record for record in env.emu.deliveries if record.source == name]
    assert delivered.status == 200
    assert delivered.body == body
    assert env.seen.handled == []
    [letter] = env.seen.letters
    assert letter.reason == "invalid_request"
    assert letter.body == delivered.body
    assert letter.key == f"{QUEUE_ID}/bad-body"
    assert letter.path == path
    assert letter.headers.get("content-type") == content_type
    assert letter.headers["authorization"] == "[redacted]"
    assert letter.errors
    assert env.is_gone(name)


def test_an_invalid_body_without_a_valid_token_is_refused_not_dead_lettered(env: Env) -> None:
    """Authentication first: a forged task (no token) gets 401 and keeps being retried; no letter is written."""
    base_url = env.serve(poison_app(env.emu, env.seen))
    name = env.create(f"{base_url}/json", "forged", b'{"cents": "x"}', "application/json", oidc=False)
    env.settle(rounds=3)
    assert env.statuses(name) == [401, 401, 401, 401]
    assert env.seen.letters == []
    assert not env.is_gone(name)


# -- 2. max_retries gives up a form task: one letter holding the original form -----------------------------------


def failing_form_app(seen: Seen, route_class: type[APIRoute]) -> FastAPI:
    router = APIRouter(route_class=route_class, dependencies=[Depends(private)])
    give_up = Depends(max_retries(2, on_give_up=seen.record))

    @router.post("/form", dependencies=[give_up])
    async def take_form(
        order: Annotated[str, Form()], note: Annotated[str, Form()], meta: CloudTasksHeaders = Depends()
    ) -> None:
        seen.handle(meta)
        raise HTTPException(500, "downstream is down")

    @router.post("/upload", dependencies=[give_up])
    async def take_upload(order: Annotated[str, Form()], file: UploadFile, meta: CloudTasksHeaders = Depends()) -> None:
        seen.handle(meta)
        raise HTTPException(500, "downstream is down")

    app = FastAPI()
    app.include_router(router)
    return app


FORM_BODIES = [
    pytest.param("/form", FORM, b"order=o%2D7&note=caf%C3%A9+%26+more&note=second", id="urlencoded"),
    pytest.param(
        "/upload",
        MULTIPART,
        multipart_body({"order": "o-7"}, ("file", "receipt.bin", "application/x-raw", FILE_DATA)),
        id="multipart",
    ),
]


@pytest.mark.parametrize(("path", "content_type", "body"), FORM_BODIES)
@pytest.mark.parametrize("route_class", [APIRoute, WorkerRoute], ids=["plain-route", "worker-route"])
def test_max_retries_gives_up_a_form_task_into_one_letter_with_its_form(
    env: Env, route_class: type[APIRoute], path: str, content_type: str, body: bytes
) -> None:
    base_url = env.serve(failing_form_app(env.seen, route_class))
    name = env.create(f"{base_url}{path}", "form-task", body, content_type)
    env.settle(rounds=6)

    assert env.statuses(name) == [500, 500, 200]
    assert env.seen.handled == [0, 1]
    [letter] = env.seen.letters
    assert letter.reason == "max_retries"
    assert letter.retry_count == 2
    assert letter.key == f"{QUEUE_ID}/form-task"
    letter_type = letter.headers["content-type"]
    # The form a replay of the letter would carry is the form Cloud Tasks delivered.
    assert parsed_form(letter.body, letter_type) == parsed_form(body, content_type)
    if route_class is WorkerRoute:  # a worker route keeps the raw body: the very bytes
        assert letter.body == body
        assert letter_type == content_type
    assert env.is_gone(name)


# -- 3. a handler that always raises -----------------------------------------------------------------------------


def raising_app(seen: Seen, policy: PoisonPolicy, error: Exception) -> FastAPI:
    router = APIRouter(route_class=poison_route_class(APIRoute, policy), dependencies=[Depends(private)])

    @router.post("/charge")
    async def charge(payload: Charge, meta: CloudTasksHeaders = Depends()) -> None:
        seen.handle(meta)
        raise error

    app = FastAPI()
    app.include_router(router)
    return app


@pytest.mark.parametrize(
    ("handler_errors_after", "error"),
    [
        pytest.param(None, RuntimeError("provider crashed"), id="default-policy"),
        pytest.param(0, HTTPException(500, "provider down"), id="http-exception-answers-as-usual"),
    ],
)
def test_a_failing_handler_is_retried_by_default_without_a_letter(
    env: Env, handler_errors_after: int | None, error: Exception
) -> None:
    """The documented retry: a 500 each time, Cloud Tasks keeps the task and tries again; nothing dead-lettered."""
    policy = PoisonPolicy(sink=env.seen.record, handler_errors_after=handler_errors_after)
    base_url = env.serve(raising_app(env.seen, policy, error))
    name = env.create(f"{base_url}/charge", "keeps-failing", b'{"order": "o-3", "cents": 1}', "application/json")
    env.settle(rounds=5)

    assert env.statuses(name) == [500] * 6
    assert env.seen.handled == [0, 1, 2, 3, 4, 5]
    assert env.seen.letters == []
    task = env.client.get_task(name=name)
    assert task.dispatch_count == 6


def test_handler_errors_after_dead_letters_once_on_that_retry_and_stops(env: Env) -> None:
    policy = PoisonPolicy(sink=env.seen.record, handler_errors_after=2, status_code=202)
    base_url = env.serve(raising_app(env.seen, policy, RuntimeError("provider crashed")))
    body = b'{"order": "o-3", "cents": 1}'
    name = env.create(f"{base_url}/charge", "gives-up", body, "application/json")
    env.settle(rounds=6)

    assert env.statuses(name) == [500, 500, 202]
    assert env.seen.handled == [0, 1, 2]
    [letter] = env.seen.letters
    assert letter.reason == "handler_error"
    assert letter.retry_count == 2
    assert letter.body == body
    assert [error["type"] for error in letter.errors] == ["RuntimeError"]
    assert env.is_gone(name)


# -- 4. the give-up answer times out while the letter is being written -------------------------------------------


class LogSignal(logging.Handler):
    """Sets `event` once `times` records containing `needle` were logged."""

    def __init__(self, needle: str, times: int) -> None:
        super().__init__(logging.DEBUG)
        self.needle = needle
        self.times = times
        self.count = 0
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.needle in record.getMessage():
            self.count += 1
            if self.count >= self.times:
                self.event.set()


class BodyReadSignal:
    """ASGI middleware: sets `event` once a delivery with retry count >= `retry` has read its whole body.

    On a route whose dependencies are all async and never wait (`PrivateEndpoint`), nothing between
    that point and the dead-letter ledger lets the event loop run anything else: once the event is set,
    the delivery is waiting for the letter in flight before the first write can finish.
    """

    def __init__(self, app: ASGIApp, retry: int) -> None:
        self.app = app
        self.retry = retry
        self.event = threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or [])
        retry = int(headers.get(b"x-cloudtasks-taskretrycount", b"0"))
        if scope["type"] != "http" or retry < self.retry:
            await self.app(scope, receive, send)
            return

        async def watched() -> Message:
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                self.event.set()
            return message

        await self.app(scope, watched, send)


@dataclass
class BlockingSink:
    """A synchronous sink that blocks (in the worker's thread pool) until `release` is set."""

    seen: Seen
    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    calls: int = 0

    def __call__(self, letter: DeadLetter) -> None:
        with self.seen.lock:
            self.calls += 1
        self.entered.set()
        if not self.release.wait(timeout=2 * WAIT):
            raise RuntimeError("the test never released the sink")
        self.seen.record(letter)


def timed_out_app(flavour: str, sink: BlockingSink) -> tuple[ASGIApp, threading.Event, bytes, list[int | None]]:
    """The app, the event set once the redelivery waits on the letter, the task body, the expected statuses."""
    seen = sink.seen
    body = b'{"order": "o-4", "cents": 4}'
    app = FastAPI()
    if flavour == "max_retries":
        router = APIRouter(dependencies=[Depends(private), Depends(max_retries(1, on_give_up=sink))])

        @router.post("/task")
        async def give_up(payload: Charge, meta: CloudTasksHeaders = Depends()) -> None:
            seen.handle(meta)
            raise HTTPException(500, "downstream is down")

        app.include_router(router)
        signal = LogSignal("giving up task", times=2)
        logging.getLogger("fastapi_gcp_tasks.worker").addHandler(signal)
        return app, signal.event, body, [500, None, 200]
    if flavour == "handler_error":
        policy = PoisonPolicy(sink=sink, handler_errors_after=1)
        router = APIRouter(route_class=poison_route_class(APIRoute, policy), dependencies=[Depends(private)])

        @router.post("/task")
        async def crash(payload: Charge, meta: CloudTasksHeaders = Depends()) -> None:
            seen.handle(meta)
            raise RuntimeError("provider crashed")

        app.include_router(router)
        signal = LogSignal("dead-lettering", times=2)
        logging.getLogger("fastapi_gcp_tasks.dead_letter").addHandler(signal)
        return app, signal.event, body, [500, None, 200]
    assert flavour == "invalid_request"
    router = APIRouter(
        route_class=poison_route_class(APIRoute, PoisonPolicy(sink=sink)), dependencies=[Depends(private)]
    )

    # No sync dependency here: FastAPI would run it in a thread pool, a wait between the body and the ledger.
    @router.post("/task")
    async def never(payload: Charge) -> None:
        with seen.lock:
            seen.handled.append(-1)

    app.include_router(router)
    watcher = BodyReadSignal(app, retry=1)
    return watcher, watcher.event, b'{"order": "o-4", "cents": "four"}', [None, 200]


@pytest.fixture
def quiet_signals() -> Iterator[None]:
    """Remove the `LogSignal`s a test adds to the library's loggers."""
    yield
    for name in ("fastapi_gcp_tasks.worker", "fastapi_gcp_tasks.dead_letter"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if isinstance(handler, LogSignal):
                logger.removeHandler(handler)


@pytest.mark.usefixtures("quiet_signals")
@pytest.mark.parametrize("flavour", ["max_retries", "handler_error", "invalid_request"])
def test_a_give_up_answer_that_times_out_still_writes_one_letter(env: Env, flavour: str) -> None:
    sink = BlockingSink(env.seen)
    app, redelivery_waits, body, expected = timed_out_app(flavour, sink)
    base_url = env.serve(app)
    try:
        name = env.create(f"{base_url}/task", "slow-letter", body, "application/json", deadline=15)
        if expected[0] == 500:  # the first attempt fails; the retry gives up
            env.settle()
            env.clock.advance(1)
        assert sink.entered.wait(WAIT), "the sink was never called"
        # The sink blocks past the 15 s dispatch deadline: the emulator gives up on the attempt ...
        env.clock.advance(15)
        wait_for(lambda: None in env.statuses(name), "the attempt to time out", timeout=WAIT)
        # ... and delivers the task again while the first letter is still being written.
        env.clock.advance(1)
        assert redelivery_waits.wait(WAIT), "the task was not delivered again"
        assert sink.calls == 1
        assert env.seen.letters == []
    finally:
        sink.release.set()
    env.settle(rounds=3)

    assert env.statuses(name) == expected
    assert sink.calls == 1
    [letter] = env.seen.letters
    assert letter.reason == flavour
    assert letter.body == body
    assert letter.key == f"{QUEUE_ID}/slow-letter"
    assert env.is_gone(name)


# -- 5. the sender warns when the queue would drop a task before max_retries gives it up -------------------------


def budget_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "fastapi_gcp_tasks"
        and record.levelno == logging.WARNING
        and "max_retries(5)" in record.getMessage()
    ]


def make_queue(env: Env, max_attempts: int) -> str:
    path = f"projects/test-project/locations/europe-west1/queues/budget-{max_attempts + 1}"
    env.client.create_queue(
        parent="projects/test-project/locations/europe-west1",
        queue=tasks_v2.Queue(name=path, retry_config=tasks_v2.RetryConfig(max_attempts=max_attempts)),
    )
    env.client.pause_queue(name=path)  # nothing to deliver: only the sending side is under test
    return path


def budget_router(route_class: type[APIRoute]) -> Any:
    router = APIRouter(route_class=route_class, dependencies=[Depends(private)])

    @router.post("/tasks/budget", dependencies=[Depends(max_retries(5))])
    async def budget(payload: Charge) -> None:
        return None

    return budget


@pytest.mark.parametrize(
    ("max_attempts", "warns"),
    [(3, True), (5, True), (6, False), (10, False), (-1, False)],
    ids=["3-attempts", "5-attempts", "6-attempts", "10-attempts", "unlimited"],
)
def test_the_first_delay_warns_once_when_the_queue_gives_up_first(
    env: Env, caplog: pytest.LogCaptureFixture, max_attempts: int, warns: bool
) -> None:
    caplog.set_level(logging.WARNING, logger="fastapi_gcp_tasks")
    queue = make_queue(env, max_attempts)
    endpoint = budget_router(
        DelayedRouteBuilder(
            queue_path=queue, callback_base_url="http://worker.test", client=env.client, auto_create_queue=False
        )
    )
    endpoint.delay(payload=Charge(order="o-5", cents=5))
    first = budget_warnings(caplog)
    caplog.clear()
    endpoint.delay(payload=Charge(order="o-6", cents=6))
    second = budget_warnings(caplog)

    assert len(first) == (1 if warns else 0)
    if warns:
        assert queue in first[0]
        assert f"allows {max_attempts} attempts" in first[0]
    assert second == []
    assert len(list(env.client.list_tasks(parent=queue))) == 2


@pytest.mark.parametrize(("max_attempts", "warns"), [(3, True), (10, False)], ids=["3-attempts", "10-attempts"])
async def test_the_first_async_delay_warns_once_when_the_queue_gives_up_first(
    env: Env, caplog: pytest.LogCaptureFixture, max_attempts: int, warns: bool
) -> None:
    caplog.set_level(logging.WARNING, logger="fastapi_gcp_tasks")
    queue = make_queue(env, max_attempts)
    endpoint = budget_router(
        AsyncDelayedRouteBuilder(
            queue_path=queue,
            callback_base_url="http://worker.test",
            client=env.emu.async_tasks_client,
            auto_create_queue=False,
        )
    )
    await endpoint.delay(payload=Charge(order="o-5", cents=5))
    first = budget_warnings(caplog)
    caplog.clear()
    await endpoint.delay(payload=Charge(order="o-6", cents=6))
    second = budget_warnings(caplog)

    assert len(first) == (1 if warns else 0)
    assert second == []
