"""A scriptable ASGI worker that records what the emulator delivers, and small Cloud Tasks helpers."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.cloud import tasks_v2
from google.protobuf import duration_pb2, timestamp_pb2

from tests._support import Received

LOCATION = "projects/test-project/locations/europe-west1"
QUEUE = f"{LOCATION}/queues/default"
URL = "http://worker.test/work"


@contextlib.contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve `handler` on a free loopback port in a thread; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@dataclass
class ScriptedWorker:
    """An ASGI app: records each request; answers from `script[path]` (statuses, popped in order) or 200.

    `/hang` never answers until `release` is set; `answer_headers[path]` adds response headers.
    """

    script: dict[str, list[int]] = field(default_factory=dict)
    answer_headers: dict[str, dict[str, str]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    release: asyncio.Event | None = None
    slow: float = 0.0

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
        path = scope["path"]
        self.received.append(Received(scope["method"], path, headers, body))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if path == "/hang":
                if self.release is None:
                    self.release = asyncio.Event()
                await self.release.wait()
            if self.slow:
                await asyncio.sleep(self.slow)
        finally:
            self.in_flight -= 1
        statuses = self.script.get(path)
        status = statuses.pop(0) if statuses else 200
        extra = [(k.encode(), v.encode()) for k, v in self.answer_headers.get(path, {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": extra})
        await send({"type": "http.response.body", "body": b"ok"})

    def paths(self) -> list[str]:
        return [request.path for request in self.received]


def http_task(
    url: str = URL,
    *,
    name: str = "",
    body: bytes = b"",
    method: int = tasks_v2.HttpMethod.POST,
    headers: dict[str, str] | None = None,
    schedule_time: dt.datetime | None = None,
    deadline: float | None = None,
    oidc: tasks_v2.OidcToken | None = None,
) -> tasks_v2.Task:
    task = tasks_v2.Task(
        name=name,
        http_request=tasks_v2.HttpRequest(url=url, http_method=method, body=body, headers=headers or {}),
    )
    if oidc is not None:
        task.http_request.oidc_token = oidc
    if schedule_time is not None:
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(schedule_time)
        task.schedule_time = stamp
    if deadline is not None:
        task.dispatch_deadline = duration_pb2.Duration(seconds=int(deadline), nanos=int((deadline % 1) * 1e9))
    return task


def task_name(task_id: str, queue: str = QUEUE) -> str:
    return f"{queue}/tasks/{task_id}"
