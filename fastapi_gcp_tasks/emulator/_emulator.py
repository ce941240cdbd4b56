"""`Emulator`: both services on local gRPC and REST ports, run in a background thread or on the caller's loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from fastapi_gcp_tasks.emulator._server import EmulatorServer
from fastapi_gcp_tasks.emulator._types import Clock, DeliveryRecord
from fastapi_gcp_tasks.transport._clients import (
    ASYNC_SCHEDULER,
    ASYNC_TASKS,
    SCHEDULER,
    TASKS,
    forget_created_queues,
)

if TYPE_CHECKING:
    from google.cloud import scheduler_v1, tasks_v2

__all__ = ["Emulator", "Transport"]

Transport = Literal["grpc", "rest"]
"""How an official sync client talks to the emulator: gRPC (HTTP/2), or REST (HTTP/1.1 + JSON)."""
_TRANSPORTS = ("grpc", "rest")


class Emulator:
    """Cloud Tasks and Cloud Scheduler on a local gRPC port and REST port, delivering over HTTP or into an ASGI app."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        http_port: int | None = None,
        clock: Clock | None = None,
        deliver_to: Any = None,
        tombstone_seconds: float = 3600.0,
        queue_tombstone_seconds: float = 3600.0,
        queues: Iterable[str] = (),
        auto_create_queues: bool = False,
        keep_deliveries: int | None = 10_000,
    ) -> None:
        """Configure the emulator; nothing is bound until it is entered.

        Args:
            host: address to bind; keep the loopback default unless you know who can reach it.
            port: gRPC port, 0 for any free one (see `address`).
            http_port: HTTP port of the REST transport and of the OIDC discovery document and JWKS; by
                default `port + 1`, or any free one when `port` is 0 (see `http_url`).
            clock: a `ManualClock` to move time by hand in tests; real time by default.
            deliver_to: an ASGI app (a FastAPI instance) to deliver into without sockets; by default
                tasks and jobs are delivered over HTTP to their URLs.
            tombstone_seconds: how long the name of a finished or deleted task stays taken.
            queue_tombstone_seconds: how long a deleted queue's name cannot be used again
                (FAILED_PRECONDITION; Google documents up to 3 days); 0 frees it at once.
            queues: full queue paths to create at start (and again after `reset()`).
            auto_create_queues: create a missing queue on its first task instead of answering NOT_FOUND
                (the real service never does this).
            keep_deliveries: how many delivery records `deliveries` keeps (None: all).
        """
        self._server = EmulatorServer(
            host=host,
            port=port,
            http_port=http_port,
            clock=clock,
            deliver_to=deliver_to,
            tombstone_seconds=tombstone_seconds,
            queue_tombstone_seconds=queue_tombstone_seconds,
            queues=queues,
            auto_create_queues=auto_create_queues,
            keep_deliveries=keep_deliveries,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = False
        self._tasks_clients: dict[str, tasks_v2.CloudTasksClient] = {}
        self._scheduler_clients: dict[str, scheduler_v1.CloudSchedulerClient] = {}

    # running -----------------------------------------------------------------------------------------------------

    def __enter__(self) -> Emulator:
        """Start in a background thread with its own event loop."""
        self._check_not_started()
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._server.start())
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread, which raises it
                failure.append(exc)
                loop.run_until_complete(self._server.stop(grace=None))
                loop.close()
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
                loop.run_until_complete(self._server.stop())
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

        self._thread = threading.Thread(target=main, name="fastapi-gcp-tasks-emulator", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        self._started = True
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the server and its thread."""
        self._close_clients()
        if self._thread is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._thread = None
        self._started = False

    async def __aenter__(self) -> Emulator:
        """Start on the running event loop."""
        self._check_not_started()
        await self._server.start()
        self._loop = asyncio.get_running_loop()
        self._started = True
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the server."""
        self._close_clients()
        await self._server.stop()
        self._started = False

    def _check_not_started(self) -> None:
        if self._started:
            raise RuntimeError("this Emulator is already running; create another one")

    def _check_started(self) -> None:
        if not self._started:
            raise RuntimeError("the Emulator is not running: use `with Emulator() as emu:` or `async with`")

    # where it is -------------------------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """`host:port` of the gRPC server (for `emulator_client(host=...)`)."""
        self._check_started()
        return self._server.address

    @property
    def port(self) -> int:
        """The gRPC port."""
        self._check_started()
        return self._server.port

    @property
    def http_url(self) -> str:
        """`http://host:port` of the HTTP port: the REST endpoint (`ClientOptions(api_endpoint=...)`), the issuer."""
        self._check_started()
        return self._server.http_url

    @property
    def issuer(self) -> str:
        """The `iss` claim of the OIDC tokens the emulator signs (its discovery base URL)."""
        self._check_started()
        return self._server.issuer

    @property
    def jwks_url(self) -> str:
        """Where a worker fetches the emulator's signing keys."""
        return f"{self.issuer}/jwks"

    @property
    def clock(self) -> Clock:
        """The emulator's clock (a `ManualClock` when one was given)."""
        return self._server.clock

    # clients -----------------------------------------------------------------------------------------------------

    def tasks_client(self, transport: Transport = "grpc") -> tasks_v2.CloudTasksClient:
        """The official sync Cloud Tasks client for this emulator (one per emulator and transport, closed with it).

        `transport="rest"` speaks HTTP/1.1 + JSON to `http_url`, as the client's `transport="rest"` does.
        """
        self._refuse_sync_client_on_own_loop("tasks_client")
        client = self._tasks_clients.get(_check_transport(transport))
        if client is None:
            client = self._tasks_clients[transport] = self._connect(TASKS, transport)
        return client

    def scheduler_client(self, transport: Transport = "grpc") -> scheduler_v1.CloudSchedulerClient:
        """The official sync Cloud Scheduler client for this emulator (one per emulator and transport, closed with it).

        `transport="rest"` speaks HTTP/1.1 + JSON to `http_url`, as the client's `transport="rest"` does.
        """
        self._refuse_sync_client_on_own_loop("scheduler_client")
        client = self._scheduler_clients.get(_check_transport(transport))
        if client is None:
            client = self._scheduler_clients[transport] = self._connect(SCHEDULER, transport)
        return client

    def _connect(self, kind: Any, transport: str) -> Any:
        return kind.connect_rest(self.http_url) if transport == "rest" else kind.connect(self.address)

    def async_tasks_client(self) -> tasks_v2.CloudTasksAsyncClient:
        """A new official async Cloud Tasks client, bound to the calling event loop."""
        return ASYNC_TASKS.connect(self.address)

    def async_scheduler_client(self) -> scheduler_v1.CloudSchedulerAsyncClient:
        """A new official async Cloud Scheduler client, bound to the calling event loop."""
        return ASYNC_SCHEDULER.connect(self.address)

    def _refuse_sync_client_on_own_loop(self, method: str) -> None:
        """Under `async with`, the emulator answers on the caller's loop, which a synchronous call would block."""
        if self._thread is not None or self._loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return
        if running is self._loop:
            raise RuntimeError(
                f"{method}() would hang here: this emulator runs on the calling event loop (`async with`), and a"
                f" synchronous call blocks that loop before it can answer; use async_{method}(), or start it with"
                " `with Emulator()` (its own thread)"
            )

    def _close_clients(self) -> None:
        clients: list[Any] = [*self._tasks_clients.values(), *self._scheduler_clients.values()]
        self._tasks_clients.clear()
        self._scheduler_clients.clear()
        for client in clients:
            client.transport.close()

    # inspection --------------------------------------------------------------------------------------------------

    @property
    def deliveries(self) -> list[DeliveryRecord]:
        """Every HTTP attempt made for tasks and jobs (the latest `keep_deliveries`), oldest first."""
        return list(self._server.recorder.records)

    @property
    def server(self) -> EmulatorServer:
        """The running server and its services, for what the Emulator itself does not expose."""
        return self._server

    def reset(self) -> None:
        """Forget every task, job, tombstone and delivery; keep only the queues given at construction.

        The builders of this process forget the queues they created too, and create them again on their
        next `.delay()` (`fastapi_gcp_tasks.testing.reset_clients` does the same).
        """
        self._check_started()
        self._call_on_loop(self._server.reset)
        forget_created_queues()

    def queue_names(self) -> list[str]:
        """The full paths of the Cloud Tasks queues that exist now."""
        self._check_started()
        return list(self._call_on_loop(lambda: list(self._server.tasks._queues)))

    def is_idle(self) -> bool:
        """No attempt in flight and nothing due now (tasks and jobs scheduled later do not count)."""
        self._check_started()
        return bool(self._call_on_loop(self._server.is_idle))

    def wait_until_idle(self, timeout: float = 10.0) -> None:
        """Block until nothing is in flight or due now; raises TimeoutError after `timeout` seconds.

        Only for an emulator running in its thread (`with Emulator()`); under `async with`, await
        `wait_until_idle_async()` instead.
        """
        self._check_started()
        if self._thread is None or self._loop is None:
            raise RuntimeError("this Emulator runs on your event loop: use `await emu.wait_until_idle_async()`")
        asyncio.run_coroutine_threadsafe(self._server.wait_until_idle(timeout), self._loop).result()

    async def wait_until_idle_async(self, timeout: float = 10.0) -> None:
        """Wait until nothing is in flight or due now; raises TimeoutError after `timeout` seconds."""
        self._check_started()
        if self._thread is None:
            await self._server.wait_until_idle(timeout)
            return
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(self._server.wait_until_idle(timeout), self._loop)
        await asyncio.wrap_future(future)

    def _call_on_loop(self, function: Any) -> Any:
        if self._thread is None or self._loop is None:
            return function()

        async def call() -> Any:
            return function()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result()


def _check_transport(transport: str) -> str:
    if transport not in _TRANSPORTS:
        raise ValueError(f"transport must be 'grpc' or 'rest', got {transport!r}")
    return transport
