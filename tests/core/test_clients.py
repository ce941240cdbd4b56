"""Clients: created lazily, one per process (a forked child makes its own), one async client per event loop."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from typing import Any

from fastapi_gcp_tasks.transport._clients import AsyncClientSource, SyncClientSource


class Made:
    def __init__(self) -> None:
        self.pid = os.getpid()


def _child(source: SyncClientSource[Any], queue: Any) -> None:
    made = source.get()
    queue.put((made.pid, os.getpid()))


def test_a_forked_child_creates_its_own_client() -> None:
    created: list[Made] = []

    def factory() -> Made:
        created.append(Made())
        return created[-1]

    source: SyncClientSource[Made] = SyncClientSource(factory, factory)
    assert created == [], "nothing may be created before first use"
    parent_client = source.get()
    assert source.get() is parent_client
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=_child, args=(source, queue))
    process.start()
    client_pid, child_pid = queue.get(timeout=30)
    process.join(timeout=30)
    assert client_pid == child_pid != os.getpid()


def test_one_async_client_per_running_loop() -> None:
    source: AsyncClientSource[object] = AsyncClientSource(object, object)

    async def get_twice() -> tuple[object, object]:
        return source.get(), source.get()

    first_a, first_b = asyncio.run(get_twice())
    second_a, _ = asyncio.run(get_twice())
    assert first_a is first_b
    assert first_a is not second_a


def test_an_instance_is_used_as_given() -> None:
    instance = Made()
    assert SyncClientSource(instance, Made).get() is instance
