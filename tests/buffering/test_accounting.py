"""Every buffered task ends in exactly one outcome, through cancellation, shutdown and errors in the buffer's path.

In-process and deterministic: gates are asyncio events, and every wait is on a positive signal.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import AsyncIterator, Iterator, MutableMapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import Depends, FastAPI, HTTPException

from fastapi_gcp_tasks.buffering import BufferStats, LostTask, RetryPolicy, TaskBufferMiddleware, task_buffer
from fastapi_gcp_tasks.dispatch._sink import PreparedTask, current_sink
from fastapi_gcp_tasks.exception import SendError, TaskArgumentError
from tests._support import eventually

from ._fakes import RecordingSender, prepared

Message = MutableMapping[str, Any]
FAST_RETRY = RetryPolicy(attempts=3, initial_backoff=0.001, max_backoff=0.002)
BUFFER_LOGGER = "fastapi_gcp_tasks.dispatch._buffer"
DEADLINE = 30.0


class GatedSender(RecordingSender):
    """A sender whose calls wait at a gate; `entered` is set once a call is waiting there."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.waited: list[str] = []

    async def send_async(self, request: Any, *, timeout: float) -> Any:
        self.waited.append(request.task.name)
        self.entered.set()
        await self.gate.wait()
        return await super().send_async(request, timeout=timeout)

    async def send_batch_async(self, requests: Sequence[Any], *, timeout: float) -> Any:
        self.waited.extend(request.task.name for request in requests)
        self.entered.set()
        await self.gate.wait()
        return await super().send_batch_async(requests, timeout=timeout)


def assert_adds_up(stats: BufferStats) -> None:
    counts = stats.snapshot()
    ended = sum(counts[key] for key in ("created", "already_existed", "discarded", "failed", "lost"))
    assert counts["kept"] == ended, counts
    assert stats.pending == 0


def named(caplog: pytest.LogCaptureFixture, name: str, level: int) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == level and name in record.getMessage()]


def http_scope(path: str = "/work") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 1234),
        "server": ("test", 80),
    }


class Client:
    """The server side of one ASGI call: what the app sent, and a receive that can report a disconnect."""

    def __init__(self, *, disconnect: bool = False) -> None:
        self.sent: list[Message] = []
        self._disconnect = disconnect
        self._read = False

    async def receive(self) -> Message:
        if not self._read:
            self._read = True
            return {"type": "http.request", "body": b"", "more_body": False}
        if self._disconnect:
            return {"type": "http.disconnect"}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def statuses(self) -> list[int]:
        return [message["status"] for message in self.sent if message["type"] == "http.response.start"]

    @property
    def finished(self) -> bool:
        return any(m["type"] == "http.response.body" and not m.get("more_body", False) for m in self.sent)


async def call(app: Any, client: Client | None = None, path: str = "/work") -> Client:
    client = client or Client()
    await app(http_scope(path), client.receive, client.send)
    return client


async def lifespan(app: Any, *, after_startup: Any = None) -> list[str]:
    """Run the app's lifespan: startup, then (once `after_startup` returns) shutdown."""
    sent: list[str] = []
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    started = asyncio.Event()

    async def receive() -> Message:
        message = next(messages)
        if message["type"] == "lifespan.shutdown":
            await started.wait()
            if after_startup is not None:
                await after_startup()
        return message

    async def send(message: Message) -> None:
        sent.append(message["type"])
        if message["type"] == "lifespan.startup.complete":
            started.set()

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    return sent


async def serve_lifespan(receive: Any, send: Any) -> None:
    while True:
        kind = (await receive())["type"]
        await send({"type": f"{kind}.complete"})
        if kind == "lifespan.shutdown":
            return


def delaying(sender: RecordingSender, *, status: int = 200, tasks: int = 2) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        sink = current_sink()
        assert sink is not None
        for _ in range(tasks):
            await sink.submit_async(prepared(sender))
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    return app


# Cancellation and shutdown


async def test_a_cancelled_request_does_not_cut_its_flush_short() -> None:
    sender = GatedSender()
    stats = BufferStats()
    middleware = TaskBufferMiddleware(delaying(sender), stats=stats)
    request = asyncio.create_task(call(middleware))
    await asyncio.wait_for(sender.entered.wait(), DEADLINE)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    assert stats.pending == 2
    sender.gate.set()
    await asyncio.wait_for(lifespan(middleware), DEADLINE)  # the shutdown waits for the flush
    assert len(sender.created) == 2
    assert stats.created == 2
    assert_adds_up(stats)


async def test_the_lifespan_shutdown_reports_by_name_what_it_could_not_finish(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sender = GatedSender()
    stats = BufferStats()
    order: list[str] = []

    @asynccontextmanager
    async def app_lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        order.append(f"app shutdown, pending={stats.pending}")

    app = FastAPI(lifespan=app_lifespan)

    @app.post("/work")
    async def work() -> None:
        sink = current_sink()
        assert sink is not None
        for _ in range(3):
            await sink.submit_async(prepared(sender))

    app.add_middleware(TaskBufferMiddleware, stats=stats, shutdown_timeout=0.05)
    request = asyncio.create_task(call(app))
    await asyncio.wait_for(sender.entered.wait(), DEADLINE)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    sent = await asyncio.wait_for(lifespan(app), DEADLINE)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert order == ["app shutdown, pending=0"], "the flushes are settled before the app's own shutdown"
    assert sender.created == []
    assert stats.lost == 3
    assert_adds_up(stats)
    assert len(sender.waited) == 3
    for name in sender.waited:
        (line,) = named(caplog, name, logging.ERROR)
        assert "the server shut down before its flush finished" in line


async def test_a_cancelled_async_fallback_reports_every_task_it_held(caplog: pytest.LogCaptureFixture) -> None:
    sender = RecordingSender()
    tasks = [prepared(sender) for _ in range(3)]
    for task in tasks:
        sender.failures[task.name] = [SendError("refused", retryable=False)]
    holding = asyncio.Event()
    stats = BufferStats()

    async def fallback(lost: Sequence[LostTask]) -> None:
        holding.set()
        await asyncio.Event().wait()

    async def job() -> None:
        async with task_buffer(fallback=fallback, stats=stats) as buffer:
            for task in tasks:
                await buffer.submit_async(task)

    running = asyncio.create_task(job())
    await asyncio.wait_for(holding.wait(), DEADLINE)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert (stats.failed, stats.lost) == (0, 3)
    assert_adds_up(stats)
    for task in tasks:
        (line,) = named(caplog, task.name, logging.ERROR)
        assert "the flush was cancelled while the fallback held it" in line
        assert "refused" in line, "the task's own error is kept"


async def test_a_cancelled_flush_counts_what_it_created_and_names_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    sender = GatedSender()
    early = RecordingSender()
    stats = BufferStats()

    async def job() -> None:
        async with task_buffer(stats=stats, batch_from=3) as buffer:
            await buffer.submit_async(prepared(early))
            for _ in range(3):
                await buffer.submit_async(prepared(sender))

    running = asyncio.create_task(job())
    await asyncio.wait_for(sender.entered.wait(), DEADLINE)
    await eventually(lambda: early.created, "the early task created", timeout=DEADLINE)  # it skips the gate
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert (stats.created, stats.lost) == (1, 3)
    assert_adds_up(stats)
    assert len(sender.waited) == 3
    for name in sender.waited:
        (line,) = named(caplog, name, logging.ERROR)
        assert "the flush was cancelled" in line


async def test_a_raising_fallback_counts_its_tasks_as_lost_not_failed(caplog: pytest.LogCaptureFixture) -> None:
    sender = RecordingSender()
    task = prepared(sender)
    sender.failures[task.name] = [SendError("refused", retryable=False)]

    def fallback(lost: Sequence[LostTask]) -> None:
        raise OSError("outbox unreachable")

    async with task_buffer(fallback=fallback) as buffer:
        await buffer.submit_async(task)
    assert (buffer.stats.failed, buffer.stats.lost) == (0, 1)
    assert_adds_up(buffer.stats)
    (line,) = named(caplog, task.name, logging.ERROR)
    assert "the fallback raised" in line


async def test_a_fallback_that_returns_counts_as_failed_only() -> None:
    sender = RecordingSender()
    task = prepared(sender)
    sender.failures[task.name] = [SendError("refused", retryable=False)]
    taken: list[str] = []

    async with task_buffer(fallback=lambda lost: taken.extend(item.name for item in lost)) as buffer:
        await buffer.submit_async(task)
    assert taken == [task.name]
    assert (buffer.stats.failed, buffer.stats.lost) == (1, 0)
    assert_adds_up(buffer.stats)


def test_shutdown_timeout_is_checked() -> None:
    with pytest.raises(TaskArgumentError) as caught:
        TaskBufferMiddleware(delaying(RecordingSender()), shutdown_timeout=-1)
    assert caught.value.param == "shutdown_timeout"


# Discard means discard


@pytest.mark.parametrize("status", [500, 200])
async def test_a_late_delay_from_a_thread_or_a_task(status: int, caplog: pytest.LogCaptureFixture) -> None:
    """Dropped, with a warning naming it, after a discarded request; created at once after a flushed one."""
    sender = RecordingSender()
    stats = BufferStats()
    release_thread = threading.Event()
    release_task = asyncio.Event()
    late: dict[str, PreparedTask] = {}
    outliving: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        sink = current_sink()
        assert sink is not None

        def in_thread() -> None:
            release_thread.wait(DEADLINE)
            late["thread"] = prepared(sender)
            sink.submit(late["thread"])

        async def in_task() -> None:
            await release_task.wait()
            late["task"] = prepared(sender)
            await sink.submit_async(late["task"])

        thread = threading.Thread(target=contextvars.copy_context().run, args=(in_thread,))
        thread.start()
        outliving.extend([thread, asyncio.create_task(in_task())])
        await sink.submit_async(prepared(sender))
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    await call(TaskBufferMiddleware(app, stats=stats))
    release_thread.set()
    release_task.set()
    thread, task = outliving
    await asyncio.to_thread(thread.join, DEADLINE)
    await task
    if status == 500:
        assert sender.calls == []
        assert (stats.kept, stats.discarded) == (3, 3)
        for where in ("thread", "task"):
            (line,) = named(caplog, late[where].name, logging.WARNING)
            assert "already discarded (POST /work answered 500); dropped" in line
    else:
        assert sorted(sender.created[1:]) == sorted(task.name for task in late.values())
        assert (stats.kept, stats.created) == (1, 1)
    assert_adds_up(stats)


async def test_a_raising_discard_predicate_discards_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    sender = RecordingSender()
    stats = BufferStats()

    def broken(status: int) -> bool:
        raise KeyError(status)

    client = await call(TaskBufferMiddleware(delaying(sender), discard_on=broken, stats=stats))
    assert client.finished
    assert sender.calls == []
    assert stats.discarded == 2
    assert_adds_up(stats)
    assert any(
        "discard_on raised" in r.getMessage() and r.exc_info for r in caplog.records if r.levelno == logging.ERROR
    )
    assert any("discard_on raised KeyError" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


async def test_an_app_that_answers_again_after_its_response_is_discarded() -> None:
    sender = RecordingSender()
    stats = BufferStats()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await current_sink().submit_async(prepared(sender))  # type: ignore[union-attr]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        # what a layer that caught a later error does: answer it
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": b"error"})

    await call(TaskBufferMiddleware(app, stats=stats))
    assert sender.calls == []
    assert stats.discarded == 1


@pytest.mark.parametrize("disconnected", [False, True])
async def test_an_unfinished_response_discards_unless_the_client_left(disconnected: bool) -> None:
    sender = RecordingSender()
    stats = BufferStats()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await current_sink().submit_async(prepared(sender))  # type: ignore[union-attr]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        if disconnected:
            assert (await receive())["type"] == "http.disconnect"

    await call(TaskBufferMiddleware(app, stats=stats), Client(disconnect=disconnected))
    assert (len(sender.created), stats.discarded) == ((1, 0) if disconnected else (0, 1))


def swallowing_app(sender: RecordingSender, stats: BufferStats, *, flush: Any = "after_response") -> FastAPI:
    """A FastAPI app with a middleware inside the buffer that swallows every exception."""

    def commit() -> Iterator[None]:
        yield
        raise RuntimeError("commit failed")

    app = FastAPI()

    async def delay() -> None:
        await current_sink().submit_async(prepared(sender))  # type: ignore[union-attr]

    @app.post("/commit-fails")
    async def commit_fails(_: None = Depends(commit)) -> dict[str, str]:
        await delay()
        return {"ok": "yes"}

    @app.post("/raises")
    async def raises() -> None:
        await delay()
        raise ValueError("endpoint failed")

    @app.post("/not-found")
    async def not_found() -> None:
        await delay()
        raise HTTPException(404)

    class Swallow:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            try:
                await self.app(scope, receive, send)
            except Exception:  # noqa: BLE001 - the point: a middleware that hides errors
                if scope["path"] == "/raises":
                    await send({"type": "http.response.start", "status": 200, "headers": []})
                    await send({"type": "http.response.body", "body": b"all good"})

    app.add_middleware(Swallow)
    app.add_middleware(TaskBufferMiddleware, stats=stats, flush=flush)
    return app


@pytest.mark.parametrize("flush", ["after_response", "before_response"])
async def test_an_exception_swallowed_inside_the_buffer_still_discards(
    flush: str, caplog: pytest.LogCaptureFixture
) -> None:
    sender = RecordingSender()
    stats = BufferStats()
    app = swallowing_app(sender, stats, flush=flush)
    failed_commit = await call(app, path="/commit-fails")
    raised = await call(app, path="/raises")
    not_found = await call(app, path="/not-found")
    assert (failed_commit.statuses, raised.statuses, not_found.statuses) == ([200], [200], [404])
    # The failed commit came after a complete answer: before the response, its end is held back.
    assert failed_commit.finished == (flush == "after_response")
    assert raised.finished
    assert len(sender.created) == 1, "the handled HTTPException answers 404, whose tasks are created"
    assert (stats.discarded, stats.created) == (2, 1)
    assert_adds_up(stats)
    reasons = [r.getMessage() for r in caplog.records if "dropped 1 buffered task(s)" in r.getMessage()]
    assert len(reasons) == 2
    assert all("which a middleware inside TaskBufferMiddleware caught" in reason for reason in reasons)


async def test_a_second_registration_steps_aside_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    sender = RecordingSender()
    outer, inner = BufferStats(), BufferStats()
    app = FastAPI()

    @app.post("/work")
    async def work() -> None:
        await current_sink().submit_async(prepared(sender))  # type: ignore[union-attr]

    app.add_middleware(TaskBufferMiddleware, stats=inner, flush="before_response")
    app.add_middleware(TaskBufferMiddleware, stats=outer)
    for _ in range(2):
        assert (await call(app)).statuses == [200]
    assert len(sender.created) == 2
    assert (outer.kept, outer.created, inner.kept) == (2, 2, 0)
    warnings = [r for r in caplog.records if "registered twice" in r.getMessage()]
    assert len(warnings) == 1


# Nested task_buffer() blocks join the enclosing buffer


async def test_a_nested_block_joins_the_request_and_drops_only_its_own_tasks_when_it_raises() -> None:
    sender = RecordingSender()
    stats = BufferStats()
    names: dict[str, list[str]] = {"request": [], "kept": [], "dropped": []}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        sink = current_sink()
        assert sink is not None
        names["request"].append((await sink.submit_async(prepared(sender))).name)
        async with task_buffer() as nested:
            names["kept"].append((await nested.submit_async(prepared(sender))).name)
        assert sender.calls == [], "a nested block inside a request does not send"
        assert nested.report is None
        try:
            async with task_buffer() as failing:
                names["dropped"].append((await failing.submit_async(prepared(sender))).name)
                raise RuntimeError("inner step failed")
        except RuntimeError:
            pass  # the app carries on
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    await call(TaskBufferMiddleware(app, stats=stats))
    assert sorted(sender.created) == sorted(names["request"] + names["kept"])
    assert (stats.kept, stats.created, stats.discarded) == (3, 2, 1)
    assert_adds_up(stats)


async def test_a_nested_block_in_a_failed_request_is_dropped_with_it() -> None:
    sender = RecordingSender()
    stats = BufferStats()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        with task_buffer() as nested:  # sync block, joined: no blocking send here
            nested.submit(prepared(sender))
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    await call(TaskBufferMiddleware(app, stats=stats))
    assert sender.calls == []
    assert (stats.kept, stats.discarded) == (1, 1)


# Errors of the batch path


async def test_an_unexpected_batch_error_names_each_task_once(caplog: pytest.LogCaptureFixture) -> None:
    sender = RecordingSender()
    sender.batch_error.append(ZeroDivisionError("bug"))
    tasks = [prepared(sender) for _ in range(3)]
    async with task_buffer(batch_from=3) as buffer:
        for task in tasks:
            await buffer.submit_async(task)
    (unexpected,) = [r for r in caplog.records if "unexpected error" in r.getMessage()]
    assert unexpected.exc_info is not None
    for task in tasks:
        assert unexpected.getMessage().count(task.name) == 1
        (lost,) = named(caplog, task.name, logging.ERROR)[1:]
        assert "was not created" in lost
    assert buffer.stats.lost == 3
    assert_adds_up(buffer.stats)
