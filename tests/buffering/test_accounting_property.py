"""The accounting invariant over random request outcomes: every task that entered a buffer ends in exactly
one of created, already existed, discarded, handed to the fallback or lost, found by its name in the
sender, the fallback or the log, and the counters add up to those names.

Requests answer 2xx, 3xx, 4xx or 5xx, raise before or after their response, send none, lose their
client, or are cancelled; threads and asyncio tasks delay after their request; `discard_on` may raise;
Cloud Tasks (an in-memory sender) fails each task in a drawn way. Everything runs in one event loop,
concurrently, and every wait is on a positive signal.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fastapi_gcp_tasks.buffering import BufferStats, LostTask, RetryPolicy, TaskBufferMiddleware
from fastapi_gcp_tasks.dispatch._sink import TaskSink, current_sink
from fastapi_gcp_tasks.exception import FastAPIGCPTasksError, SendError, TaskAlreadyExistsError

from ._fakes import RecordingSender, prepared

Message = MutableMapping[str, Any]
ATTEMPTS = 3
RETRY = RetryPolicy(attempts=ATTEMPTS, initial_backoff=0.0005, max_backoff=0.001)
DEADLINE = 30.0

STATUS_OUTCOMES = ("200", "201", "302", "404", "418", "500", "503")
OTHER_OUTCOMES = ("raise", "raise_after_response", "no_response", "disconnect_finish", "disconnect_raise", "cancel")
FAILURES = ("unavailable", "refused", "exists")


@dataclass(frozen=True)
class RequestPlan:
    outcome: str
    failures: tuple[tuple[str, ...], ...]
    """Per task delayed by the request: what Cloud Tasks answers its attempts, in order (then success)."""
    late: tuple[str, ...]
    """Delays made after the request is over, from a "thread" or a "task"."""


@dataclass(frozen=True)
class Plan:
    flush: str
    discard_on: str
    raising_on: frozenset[int]
    fallback: str
    batch_from: int
    requests: tuple[RequestPlan, ...]


requests = st.builds(
    RequestPlan,
    outcome=st.sampled_from(STATUS_OUTCOMES + OTHER_OUTCOMES),
    failures=st.lists(st.lists(st.sampled_from(FAILURES), max_size=3).map(tuple), max_size=4).map(tuple),
    late=st.lists(st.sampled_from(("thread", "task")), max_size=2).map(tuple),
)
plans = st.builds(
    Plan,
    flush=st.sampled_from(("after_response", "before_response")),
    discard_on=st.sampled_from(("server_error", "error", "raising")),
    raising_on=st.frozensets(st.sampled_from((200, 302, 404, 500))),
    fallback=st.sampled_from(("none", "accept", "raise")),
    batch_from=st.integers(min_value=2, max_value=4),
    requests=st.lists(requests, min_size=1, max_size=6).map(tuple),
)


def error(kind: str, name: str) -> FastAPIGCPTasksError:
    if kind == "unavailable":
        return SendError("create_task failed: UNAVAILABLE", retryable=True)
    if kind == "refused":
        return SendError("create_task failed: INVALID_ARGUMENT", retryable=False)
    return TaskAlreadyExistsError(name)


def expected_when_sent(failures: Sequence[str], fallback: str) -> str:
    """The outcome of a task the buffer sends, from what Cloud Tasks answers its attempts."""
    for attempt in range(ATTEMPTS):
        answer = failures[attempt] if attempt < len(failures) else "ok"
        if answer == "ok":
            return "created"
        if answer == "exists":
            return "already_existed"
        if answer == "refused":
            break
    return {"none": "lost", "accept": "failed", "raise": "lost"}[fallback]


def status_of(outcome: str) -> int | None:
    if outcome in STATUS_OUTCOMES:
        return int(outcome)
    return 200 if outcome == "disconnect_finish" else None


def discards(plan: Plan, outcome: str) -> bool:
    status = status_of(outcome)
    if status is None:
        return True
    if plan.discard_on == "raising" and status in plan.raising_on:
        return True  # a predicate that raises drops the tasks
    return status >= (400 if plan.discard_on == "error" else 500)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def naming(self, name: str) -> list[logging.LogRecord]:
        return [record for record in self.records if name in record.getMessage()]


@dataclass
class Request:
    plan: RequestPlan
    kept: list[str] = field(default_factory=list)
    late: list[str] = field(default_factory=list)
    waiting: asyncio.Event = field(default_factory=asyncio.Event)
    outliving: list[Any] = field(default_factory=list)


class Client:
    def __init__(self, disconnect: bool) -> None:
        self.disconnect = disconnect
        self.read = False

    async def receive(self) -> Message:
        if not self.read:
            self.read = True
            return {"type": "http.request", "body": b"", "more_body": False}
        if self.disconnect:
            return {"type": "http.disconnect"}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(self, message: Message) -> None:
        pass


def make_app(sender: RecordingSender, requests: list[Request], release: threading.Event, later: asyncio.Event) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            for _ in range(2):
                await send({"type": (await receive())["type"] + ".complete"})
            return
        request = requests[int(scope["path"].strip("/"))]
        plan = request.plan
        sink = current_sink()
        assert sink is not None
        for answers in plan.failures:
            task = prepared(sender)
            sender.failures[task.name] = [error(kind, task.name) for kind in answers]
            request.kept.append((await sink.submit_async(task)).name)
        for where in plan.late:
            start_late(sink, where, request, sender, release, later)
        outcome = plan.outcome
        if outcome == "raise":
            raise RuntimeError("the endpoint failed")
        if outcome == "no_response":
            return
        if outcome == "cancel":
            request.waiting.set()
            await asyncio.Event().wait()
        status = status_of(outcome) or 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        if outcome.startswith("disconnect"):
            await send({"type": "http.response.body", "body": b"part", "more_body": True})
            await receive()
            assert (await receive())["type"] == "http.disconnect"
            if outcome == "disconnect_raise":
                raise OSError("client gone")
            return
        await send({"type": "http.response.body", "body": b"done"})
        if outcome == "raise_after_response":
            raise RuntimeError("the commit failed after the response")

    return app


def start_late(
    sink: TaskSink,
    where: str,
    request: Request,
    sender: RecordingSender,
    release: threading.Event,
    later: asyncio.Event,
) -> None:
    task = prepared(sender)
    request.late.append(task.name)
    if where == "thread":

        def in_thread() -> None:
            assert release.wait(DEADLINE)
            sink.submit(task)

        thread = threading.Thread(target=contextvars.copy_context().run, args=(in_thread,))
        thread.start()
        request.outliving.append(thread)
    else:

        async def in_task() -> None:
            await later.wait()
            await sink.submit_async(task)

        request.outliving.append(asyncio.create_task(in_task()))


async def lifespan_shutdown(middleware: TaskBufferMiddleware) -> None:
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> Message:
        return next(messages)

    async def send(message: Message) -> None:
        pass

    await middleware({"type": "lifespan"}, receive, send)


async def run(plan: Plan) -> tuple[list[Request], RecordingSender, BufferStats, list[str]]:
    sender = RecordingSender()
    stats = BufferStats()
    taken: list[str] = []
    requests = [Request(request_plan) for request_plan in plan.requests]
    release = threading.Event()
    later = asyncio.Event()

    def predicate(status: int) -> bool:
        if status in plan.raising_on:
            raise LookupError(status)
        return status >= 500

    def accept(lost: Sequence[LostTask]) -> None:
        taken.extend(item.name for item in lost)

    async def refuse(lost: Sequence[LostTask]) -> None:
        raise OSError("the fallback's store is down")

    fallbacks: dict[str, Callable[..., Any] | None] = {"none": None, "accept": accept, "raise": refuse}
    discard_on: Any = predicate if plan.discard_on == "raising" else plan.discard_on
    middleware = TaskBufferMiddleware(
        make_app(sender, requests, release, later),
        flush=plan.flush,  # type: ignore[arg-type]
        discard_on=discard_on,
        retry=RETRY,
        fallback=fallbacks[plan.fallback],
        batch_from=plan.batch_from,
        stats=stats,
    )

    async def one(index: int, request: Request) -> None:
        client = Client(disconnect=request.plan.outcome.startswith("disconnect"))
        call = asyncio.create_task(middleware({"type": "http", "path": f"/{index}"}, client.receive, client.send))
        if request.plan.outcome == "cancel":
            await asyncio.wait_for(request.waiting.wait(), DEADLINE)
            call.cancel()
        try:
            await call
        except (asyncio.CancelledError, RuntimeError, OSError):
            assert request.plan.outcome in ("cancel", "raise", "raise_after_response", "disconnect_raise")

    await asyncio.gather(*(one(index, request) for index, request in enumerate(requests)))
    release.set()
    later.set()
    for request in requests:
        for outliving in request.outliving:
            if isinstance(outliving, threading.Thread):
                await asyncio.to_thread(outliving.join, DEADLINE)
                assert not outliving.is_alive()
            else:
                await outliving
    await lifespan_shutdown(middleware)
    return requests, sender, stats, taken


def outcomes(name: str, sender: RecordingSender, taken: list[str], records: Records) -> list[str]:
    found = ["created"] if name in sender.created else []
    found += ["failed"] * taken.count(name)
    for record in records.naming(name):
        message = record.getMessage()
        if record.levelno == logging.INFO and "already existed; not created again" in message:
            found.append("already_existed")
        elif record.levelno == logging.WARNING and ("dropped" in message):
            found.append("discarded")
        elif record.levelno == logging.ERROR and message.startswith(f"task {name} was not created"):
            found.append("lost")
    return found


@settings(max_examples=50, deadline=None)
@given(plan=plans)
def test_every_kept_task_ends_in_exactly_one_outcome(plan: Plan) -> None:
    records = Records()
    logger = logging.getLogger("fastapi_gcp_tasks.dispatch._buffer")
    level = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    try:
        requests, sender, stats, taken = asyncio.run(run(plan))
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)

    counted = dict.fromkeys(("created", "already_existed", "discarded", "failed", "lost"), 0)
    kept = 0
    for request in requests:
        discarded = discards(plan, request.plan.outcome)
        for name, answers in zip(request.kept, request.plan.failures, strict=True):
            (outcome,) = outcomes(name, sender, taken, records)
            assert outcome == ("discarded" if discarded else expected_when_sent(answers, plan.fallback)), name
            counted[outcome] += 1
            kept += 1
        for name in request.late:
            if discarded:
                assert outcomes(name, sender, taken, records) == ["discarded"]
                counted["discarded"] += 1
                kept += 1
            else:
                assert name in sender.created, "a delay after a flushed request is sent at once"
        if discarded:
            sent = {name for _, names in sender.calls for name in names}
            assert not sent & set(request.kept + request.late), "a discarded request's tasks are never sent"
    snapshot = stats.snapshot()
    assert {key: snapshot[key] for key in counted} == counted
    assert snapshot["kept"] == kept
    assert stats.pending == 0
