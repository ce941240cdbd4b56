"""Replaying a built task into the app in-process, the way Cloud Tasks would deliver it."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI
from google.cloud import tasks_v2


def replay(app: FastAPI, request: tasks_v2.CreateTaskRequest) -> httpx.Response:
    """Send the task's HTTP request into `app` (no sockets) and return the response."""
    http = request.task.http_request
    method = tasks_v2.HttpMethod(http.http_method).name
    transport = httpx.ASGITransport(app=app)
    import asyncio

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.request(method, http.url, headers=dict(http.headers), content=http.body or None)

    return asyncio.run(go())


class Recorder:
    """Keeps what an endpoint received."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **values: Any) -> None:
        self.calls.append(values)

    @property
    def last(self) -> dict[str, Any]:
        assert self.calls, "the endpoint was not called"
        return self.calls[-1]
