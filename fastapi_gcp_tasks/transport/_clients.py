"""The client table (Cloud Tasks and Cloud Scheduler, sync and async) and where builders get their clients.

Clients are created on first use, never at import or when a route is defined, so an app imports while
the service is down. A default client is shared by every builder of the process and re-created in a
forked child (gRPC channels must not cross `fork()`); an async client belongs to the event loop that
created it, so there is one per running loop, dropped with its loop.

With `FASTAPI_GCP_TASKS_EMULATOR_HOST=host:port` set, default clients talk to the emulator instead. The
variable is read when a default client is created; `reset_clients()` closes and forgets the default clients
(the next use reads the variable again) and makes every builder forget the queues it created, for tests that
switch emulators or reset one. `use_tasks_client()` puts one Cloud Tasks client in place of every builder's
(the testing package's eager mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

import grpc
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.auth.exceptions import DefaultCredentialsError
from google.cloud import scheduler_v1, tasks_v2
from google.cloud.scheduler_v1.services.cloud_scheduler import transports as scheduler_transports
from google.cloud.tasks_v2.services.cloud_tasks import transports as tasks_transports

from fastapi_gcp_tasks.exception import SendError

__all__ = [
    "ASYNC_SCHEDULER",
    "ASYNC_TASKS",
    "CLIENT_KINDS",
    "DEFAULT_EMULATOR_HOST",
    "EMULATOR_HOST_ENV",
    "FAST_RECONNECT",
    "SCHEDULER",
    "TASKS",
    "AsyncClientSource",
    "ClientKind",
    "SyncClientSource",
    "async_emulator_client",
    "async_scheduler_emulator_client",
    "async_scheduler_source",
    "async_tasks_source",
    "emulator_client",
    "forget_created_queues",
    "per_client_memory",
    "reset_clients",
    "scheduler_emulator_client",
    "sync_scheduler_source",
    "sync_tasks_source",
    "use_tasks_client",
]

EMULATOR_HOST_ENV = "FASTAPI_GCP_TASKS_EMULATOR_HOST"
DEFAULT_EMULATOR_HOST = "localhost:8123"

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

    tasks = False
    """Whether this source gives Cloud Tasks clients (those `use_tasks_client()` replaces)."""


class SyncClientSource(_ClientSource[C]):
    """One client per process: a forked child makes its own (gRPC channels must not cross `fork()`)."""

    def __init__(self, client: C | Callable[[], C] | None, default: Callable[[], C]) -> None:
        super().__init__(client, default)
        self._created: tuple[int, C] | None = None
        self._lock = threading.Lock()

    def get(self) -> C:
        """The client for this process, created on first use."""
        if self.tasks and _replacement.sync is not None:
            return _replacement.sync  # type: ignore[no-any-return]
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

    def forget(self) -> C | None:
        """Drop the client created for this process (None if there was none); the next `get()` makes a new one."""
        with self._lock:
            created, self._created = self._created, None
        return created[1] if created is not None and created[0] == os.getpid() else None


class AsyncClientSource(_ClientSource[C]):
    """An async client per running event loop (a `grpc.aio` channel cannot move between loops)."""

    def __init__(self, client: C | Callable[[], C] | None, default: Callable[[], C]) -> None:
        super().__init__(client, default)
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, C] = weakref.WeakKeyDictionary()

    def get(self) -> C:
        """The client for the running loop, created on first use in that loop."""
        if self.tasks and _replacement.aio is not None:
            return _replacement.aio  # type: ignore[no-any-return]
        if self._instance is not None:
            return self._instance
        loop = asyncio.get_running_loop()
        client = self._per_loop.get(loop)
        if client is None:
            client = self._factory()
            self._per_loop[loop] = client
        return client

    def forget(self) -> None:
        """Drop the clients of every loop; each loop makes a new one on its next `get()`."""
        self._per_loop.clear()


@dataclasses.dataclass(frozen=True, slots=True)
class ClientKind(Generic[C]):
    """One cell of the client table: a service's official client class and its gRPC transport."""

    client: Callable[..., C]
    grpc_transport: Callable[..., Any]
    aio: bool

    def connect(self, host: str, *, options: Sequence[tuple[str, Any]] = ()) -> C:
        """A client talking plain gRPC (no credentials) to `host`: the emulator."""
        channel_module: Any = grpc.aio if self.aio else grpc
        channel = channel_module.insecure_channel(host, options=[*EMULATOR_CHANNEL, *options])
        return self.client(transport=self.grpc_transport(channel=channel))

    def connect_rest(self, url: str) -> C:
        """A client talking HTTP/1.1 + JSON (`transport="rest"`, no credentials) to the emulator's HTTP port at `url`.

        The official clients offer REST in their sync classes only.
        """
        if self.aio:
            raise ValueError(f"{getattr(self.client, '__name__', 'this client')} has no REST transport: use gRPC")
        return self.client(
            transport="rest",
            client_options=ClientOptions(api_endpoint=url),
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call, unused-ignore]
        )

    def default(self) -> C:
        """The emulator's client when `FASTAPI_GCP_TASKS_EMULATOR_HOST` is set, else Google's (default credentials).

        Without credentials this raises `SendError` (not retryable; google-auth's error is the `__cause__`)
        naming the ways to provide them, the emulator's variable among them.
        """
        host = os.environ.get(EMULATOR_HOST_ENV)
        if host:
            return self.connect(host)
        try:
            return self.client()
        except DefaultCredentialsError as exc:
            raise SendError(
                f"no Google credentials for {getattr(self.client, '__name__', 'the client')} ({exc}). Run "
                "`gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS; for the local "
                f"emulator, set {EMULATOR_HOST_ENV}=host:port",
                retryable=False,
            ) from exc


TASKS: ClientKind[tasks_v2.CloudTasksClient] = ClientKind(
    tasks_v2.CloudTasksClient, tasks_transports.CloudTasksGrpcTransport, aio=False
)
ASYNC_TASKS: ClientKind[tasks_v2.CloudTasksAsyncClient] = ClientKind(
    tasks_v2.CloudTasksAsyncClient, tasks_transports.CloudTasksGrpcAsyncIOTransport, aio=True
)
SCHEDULER: ClientKind[scheduler_v1.CloudSchedulerClient] = ClientKind(
    scheduler_v1.CloudSchedulerClient, scheduler_transports.CloudSchedulerGrpcTransport, aio=False
)
ASYNC_SCHEDULER: ClientKind[scheduler_v1.CloudSchedulerAsyncClient] = ClientKind(
    scheduler_v1.CloudSchedulerAsyncClient, scheduler_transports.CloudSchedulerGrpcAsyncIOTransport, aio=True
)
CLIENT_KINDS: tuple[ClientKind[Any], ...] = (TASKS, ASYNC_TASKS, SCHEDULER, ASYNC_SCHEDULER)
"""The (service x sync/async) client table; the emulator and the relay build their clients from it too."""

EMULATOR_CHANNEL: tuple[tuple[str, Any], ...] = (("grpc.max_receive_message_length", -1),)
"""Channel options of every emulator client: no receive limit, so that a `list_tasks` with the FULL view
(bodies of up to 1 MB each) is never cut at gRPC's 4 MB default; the emulator bounds what it sends itself."""

FAST_RECONNECT: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
)
"""Channel options for a local emulator that may restart: reconnect within seconds, not gRPC's minutes."""


def _is_client(obj: Any) -> bool:
    return (
        isinstance(obj, tuple(kind.client for kind in CLIENT_KINDS if isinstance(kind.client, type)))
        or hasattr(obj, "create_task")
        or hasattr(obj, "create_job")
    )


def emulator_client(*, host: str = DEFAULT_EMULATOR_HOST) -> tasks_v2.CloudTasksClient:
    """A `CloudTasksClient` talking to the emulator at `host` (plain gRPC, no credentials)."""
    return TASKS.connect(host)


def async_emulator_client(*, host: str = DEFAULT_EMULATOR_HOST) -> tasks_v2.CloudTasksAsyncClient:
    """A `CloudTasksAsyncClient` for the emulator; create it inside the event loop that will use it."""
    return ASYNC_TASKS.connect(host)


def scheduler_emulator_client(*, host: str = DEFAULT_EMULATOR_HOST) -> scheduler_v1.CloudSchedulerClient:
    """A `CloudSchedulerClient` talking to the emulator at `host`."""
    return SCHEDULER.connect(host)


def async_scheduler_emulator_client(*, host: str = DEFAULT_EMULATOR_HOST) -> scheduler_v1.CloudSchedulerAsyncClient:
    """A `CloudSchedulerAsyncClient` for the emulator; create it inside the loop that will use it."""
    return ASYNC_SCHEDULER.connect(host)


_shared_tasks = SyncClientSource(None, TASKS.default)
_shared_async_tasks = AsyncClientSource(None, ASYNC_TASKS.default)
_shared_scheduler = SyncClientSource(None, SCHEDULER.default)
_shared_async_scheduler = AsyncClientSource(None, ASYNC_SCHEDULER.default)


_shared_tasks.tasks = _shared_async_tasks.tasks = True


def sync_tasks_source(client: Any) -> SyncClientSource[tasks_v2.CloudTasksClient]:
    """The source for a sync builder's `client=` argument (None: the shared process default)."""
    if client is None:
        return _shared_tasks
    source = SyncClientSource(client, TASKS.default)
    source.tasks = True
    return source


def async_tasks_source(client: Any) -> AsyncClientSource[tasks_v2.CloudTasksAsyncClient]:
    """The source for an async builder's `client=` argument (None: the shared per-loop default)."""
    if client is None:
        return _shared_async_tasks
    source = AsyncClientSource(client, ASYNC_TASKS.default)
    source.tasks = True
    return source


def sync_scheduler_source(client: Any) -> SyncClientSource[scheduler_v1.CloudSchedulerClient]:
    """The source for a sync scheduled builder's `client=` argument."""
    return _shared_scheduler if client is None else SyncClientSource(client, SCHEDULER.default)


def async_scheduler_source(client: Any) -> AsyncClientSource[scheduler_v1.CloudSchedulerAsyncClient]:
    """The source for an async scheduled builder's `client=` argument."""
    return _shared_async_scheduler if client is None else AsyncClientSource(client, ASYNC_SCHEDULER.default)


class _Replacement:
    """The Cloud Tasks clients `use_tasks_client()` put in place of every builder's (None: no replacement)."""

    sync: Any = None
    aio: Any = None


_replacement = _Replacement()
_memories: weakref.WeakValueDictionary[int, set[Any]] = weakref.WeakValueDictionary()
_memory_ids = itertools.count()
_memories_lock = threading.Lock()


def per_client_memory() -> set[Any]:
    """A new empty set that `forget_created_queues()` empties: where a builder remembers the queues it created."""
    memory: set[Any] = set()
    with _memories_lock:
        _memories[next(_memory_ids)] = memory
    return memory


def forget_created_queues() -> None:
    """Make every builder of the process forget the queues it created, so that it creates them again when used.

    Needed after the queues were dropped behind the builders' backs (`Emulator.reset()`, another emulator).
    """
    with _memories_lock:
        memories = list(_memories.values())
    for memory in memories:
        memory.clear()


def reset_clients() -> None:
    """Close and forget the default clients, and make every builder forget the queues it created.

    The next `.delay()` / `.schedule()` creates its default client again, reading
    `FASTAPI_GCP_TASKS_EMULATOR_HOST` at that moment. Clients passed to a builder (`client=`) are kept. The
    async default clients are dropped unclosed: each belongs to its own event loop, which may be gone.
    """
    for sync_source in (_shared_tasks, _shared_scheduler):
        client = sync_source.forget()
        transport = getattr(client, "transport", None)
        if transport is not None:
            transport.close()
    _shared_async_tasks.forget()
    _shared_async_scheduler.forget()
    forget_created_queues()


@contextlib.contextmanager
def use_tasks_client(sync: Any, aio: Any) -> Iterator[None]:
    """Within the block, every Cloud Tasks builder sends through `sync` / `aio` (given or default clients alike).

    Not nestable: a second block while one is active raises `RuntimeError`.
    """
    with _memories_lock:
        if _replacement.sync is not None or _replacement.aio is not None:
            raise RuntimeError("another block already replaces the Cloud Tasks clients (eager mode is not nestable)")
        _replacement.sync, _replacement.aio = sync, aio
    forget_created_queues()
    try:
        yield
    finally:
        _replacement.sync = _replacement.aio = None
        forget_created_queues()
