"""Where route builders get their Cloud Tasks and Cloud Scheduler clients.

Clients are created on first use, never at import or when a route is defined, so an app imports while
the service is down. A default client is shared by every builder of the process and re-created in a
forked child (gRPC channels must not cross `fork()`); an async client belongs to the event loop that
created it, so there is one per running loop, dropped with its loop.

With `FASTAPI_GCP_TASKS_EMULATOR_HOST=host:port` set, default clients talk to the emulator instead.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from google.cloud import scheduler_v1, tasks_v2

__all__ = [
    "EMULATOR_HOST_ENV",
    "AsyncClientSource",
    "SyncClientSource",
    "async_scheduler_source",
    "async_tasks_source",
    "sync_scheduler_source",
    "sync_tasks_source",
]

EMULATOR_HOST_ENV = "FASTAPI_GCP_TASKS_EMULATOR_HOST"

C = TypeVar("C")


class _ClientSource(Generic[C]):
    """A client given as an instance, a zero-argument factory, or None for the default factory."""

    def __init__(self, client: C | Callable[[], C] | None, default: Callable[[], C]) -> None:
        self._instance: C | None = None
        self._factory: Callable[[], C] = default
        if client is not None and callable(client) and not _is_client(client):
            self._factory = client
        elif client is not None:
            self._instance = client  # type: ignore[assignment]


class SyncClientSource(_ClientSource[C]):
    """One client per process: a forked child makes its own (gRPC channels must not cross `fork()`)."""

    def __init__(self, client: C | Callable[[], C] | None, default: Callable[[], C]) -> None:
        super().__init__(client, default)
        self._created: tuple[int, C] | None = None
        self._lock = threading.Lock()

    def get(self) -> C:
        """The client for this process, created on first use."""
        if self._instance is not None:
            return self._instance
        created = self._created
        pid = os.getpid()
        if created is None or created[0] != pid:
            with self._lock:
                created = self._created
                if created is None or created[0] != pid:
                    created = (pid, self._factory())
                    self._created = created
        return created[1]


class AsyncClientSource(_ClientSource[C]):
    """An async client per running event loop (a `grpc.aio` channel cannot move between loops)."""

    def __init__(self, client: C | Callable[[], C] | None, default: Callable[[], C]) -> None:
        super().__init__(client, default)
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, C] = weakref.WeakKeyDictionary()

    def get(self) -> C:
        """The client for the running loop, created on first use in that loop."""
        if self._instance is not None:
            return self._instance
        loop = asyncio.get_running_loop()
        client = self._per_loop.get(loop)
        if client is None:
            client = self._factory()
            self._per_loop[loop] = client
        return client


def _is_client(obj: Any) -> bool:
    return (
        isinstance(
            obj,
            (
                tasks_v2.CloudTasksClient,
                tasks_v2.CloudTasksAsyncClient,
                scheduler_v1.CloudSchedulerClient,
                scheduler_v1.CloudSchedulerAsyncClient,
            ),
        )
        or hasattr(obj, "create_task")
        or hasattr(obj, "create_job")
    )


def _emulator_host() -> str | None:
    return os.environ.get(EMULATOR_HOST_ENV) or None


def _default_tasks_client() -> tasks_v2.CloudTasksClient:
    from fastapi_gcp_tasks.utils import emulator_client

    host = _emulator_host()
    return emulator_client(host=host) if host else tasks_v2.CloudTasksClient()


def _default_async_tasks_client() -> tasks_v2.CloudTasksAsyncClient:
    from fastapi_gcp_tasks.utils import async_emulator_client

    host = _emulator_host()
    return async_emulator_client(host=host) if host else tasks_v2.CloudTasksAsyncClient()


def _default_scheduler_client() -> scheduler_v1.CloudSchedulerClient:
    from fastapi_gcp_tasks.utils import scheduler_emulator_client

    host = _emulator_host()
    return scheduler_emulator_client(host=host) if host else scheduler_v1.CloudSchedulerClient()


def _default_async_scheduler_client() -> scheduler_v1.CloudSchedulerAsyncClient:
    from fastapi_gcp_tasks.utils import async_scheduler_emulator_client

    host = _emulator_host()
    return async_scheduler_emulator_client(host=host) if host else scheduler_v1.CloudSchedulerAsyncClient()


_shared_tasks = SyncClientSource[tasks_v2.CloudTasksClient](None, _default_tasks_client)
_shared_async_tasks = AsyncClientSource[tasks_v2.CloudTasksAsyncClient](None, _default_async_tasks_client)
_shared_scheduler = SyncClientSource[scheduler_v1.CloudSchedulerClient](None, _default_scheduler_client)
_shared_async_scheduler = AsyncClientSource[scheduler_v1.CloudSchedulerAsyncClient](
    None, _default_async_scheduler_client
)


def sync_tasks_source(client: Any) -> SyncClientSource[tasks_v2.CloudTasksClient]:
    """The source for a sync builder's `client=` argument (None: the shared process default)."""
    return _shared_tasks if client is None else SyncClientSource(client, _default_tasks_client)


def async_tasks_source(client: Any) -> AsyncClientSource[tasks_v2.CloudTasksAsyncClient]:
    """The source for an async builder's `client=` argument (None: the shared per-loop default)."""
    return _shared_async_tasks if client is None else AsyncClientSource(client, _default_async_tasks_client)


def sync_scheduler_source(client: Any) -> SyncClientSource[scheduler_v1.CloudSchedulerClient]:
    """The source for a sync scheduled builder's `client=` argument."""
    return _shared_scheduler if client is None else SyncClientSource(client, _default_scheduler_client)


def async_scheduler_source(client: Any) -> AsyncClientSource[scheduler_v1.CloudSchedulerAsyncClient]:
    """The source for an async scheduled builder's `client=` argument."""
    return _shared_async_scheduler if client is None else AsyncClientSource(client, _default_async_scheduler_client)
