"""The middleware's decisions, driving it with raw ASGI messages and an in-memory sender."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import pytest

from fastapi_gcp_tasks.buffering import BufferStats, TaskBufferMiddleware
from fastapi_gcp_tasks.dispatch._sink import current_sink
from fastapi_gcp_tasks.exception import TaskArgumentError

from ._fakes import RecordingSender, prepared

Message = MutableMapping[str, Any]


class Recorder:
    """The server side: collects what the middleware sends, and what the sender created at that moment."""

    def __init__(self, sender: RecordingSender) -> None:
        self.sender = sender
        self.events: list[tuple[str, int]] = []

    async def send(self, message: Message) -> None:
        self.events.append((message["type"], len(self.sender.created)))

    async def receive(self) -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}


def http_scope() -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": "/work", "headers": []}


def app_delaying(sender: RecordingSender, *, status: int = 200, chunks: int = 1, raise_after: bool = False) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        sink = current_sink()
        assert sink is not None
        await sink.submit_async(prepared(sender))
        await send({"type": "http.response.start", "status": status, "headers": []})
        for i in range(chunks):
            sink.submit(prepared(sender))
            await send({"type": "http.response.body", "body": b"x", "more_body": i < chunks - 1})
        if raise_after:
            raise RuntimeError("teardown failed")

    return app


async def run(middleware: TaskBufferMiddleware, recorder: Recorder) -> None:
    await middleware(http_scope(), recorder.receive, recorder.send)


async def test_after_response_creates_tasks_once_the_last_chunk_is_out() -> None:
    sender = RecordingSender()
    recorder = Recorder(sender)
    await run(TaskBufferMiddleware(app_delaying(sender, chunks=3)), recorder)
    assert recorder.events[-1] == ("http.response.body", 0)
    assert len(sender.created) == 4


async def test_before_response_holds_the_last_chunk_until_tasks_are_created() -> None:
    sender = RecordingSender()
    recorder = Recorder(sender)
    await run(TaskBufferMiddleware(app_delaying(sender, chunks=3), flush="before_response"), recorder)
    assert recorder.events == [
        ("http.response.start", 0),
        ("http.response.body", 0),
        ("http.response.body", 0),
        ("http.response.body", 4),
    ]


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_discard(status: int) -> None:
    sender = RecordingSender()
    stats = BufferStats()
    await run(TaskBufferMiddleware(app_delaying(sender, status=status), stats=stats), Recorder(sender))
    assert sender.calls == []
    assert stats.discarded == 2


async def test_client_errors_are_sent_by_default_and_discarded_on_request() -> None:
    sender = RecordingSender()
    await run(TaskBufferMiddleware(app_delaying(sender, status=404)), Recorder(sender))
    assert len(sender.created) == 2
    sender = RecordingSender()
    await run(TaskBufferMiddleware(app_delaying(sender, status=404), discard_on="error"), Recorder(sender))
    assert sender.calls == []


async def test_a_predicate_decides() -> None:
    sender = RecordingSender()
    await run(TaskBufferMiddleware(app_delaying(sender, status=202), discard_on=lambda s: s == 202), Recorder(sender))
    assert sender.calls == []


@pytest.mark.parametrize("flush", ["after_response", "before_response"])
async def test_raising_after_the_response_discards(flush: Any) -> None:
    sender = RecordingSender()
    recorder = Recorder(sender)
    with pytest.raises(RuntimeError, match="teardown failed"):
        await run(TaskBufferMiddleware(app_delaying(sender, raise_after=True), flush=flush), recorder)
    assert sender.calls == []
    if flush == "before_response":
        assert recorder.events == [("http.response.start", 0)]


async def test_no_response_discards() -> None:
    sender = RecordingSender()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await current_sink().submit_async(prepared(sender))  # type: ignore[union-attr]

    await run(TaskBufferMiddleware(app), Recorder(sender))
    assert sender.calls == []


@pytest.mark.parametrize("kind", ["websocket", "lifespan"])
async def test_other_scopes_are_not_buffered(kind: str) -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send, current_sink()))
        seen.append(await receive())

    scope = {"type": kind}

    async def receive() -> Message:
        return {"type": "lifespan.shutdown"}

    async def send(message: Message) -> None:
        pass

    await TaskBufferMiddleware(app)(scope, receive, send)
    (got_scope, got_receive, got_send, sink), message = seen
    assert (got_scope, got_send, sink, message) == (scope, send, None, {"type": "lifespan.shutdown"})
    # Websockets pass untouched; the lifespan's receive is wrapped to finish flushes before the shutdown.
    assert (got_receive is receive) == (kind == "websocket")


def test_bad_options_name_the_parameter() -> None:
    with pytest.raises(TaskArgumentError) as caught:
        TaskBufferMiddleware(app_delaying(RecordingSender()), flush="later")  # type: ignore[arg-type]
    assert caught.value.param == "flush"
    with pytest.raises(TaskArgumentError) as caught:
        TaskBufferMiddleware(app_delaying(RecordingSender()), discard_on="4xx")  # type: ignore[arg-type]
    assert caught.value.param == "discard_on"
