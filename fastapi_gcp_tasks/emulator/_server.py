"""One gRPC server for Cloud Tasks and Cloud Scheduler, plus the OIDC documents over plain HTTP.

The gRPC server is the synchronous `grpc.server`: a unary call costs noticeably less CPU there than on
grpc.aio, and task creation is the emulator's hot path. Cloud Tasks handlers run on its threads under
the service's lock; handlers written for grpc.aio (Cloud Scheduler's) are bridged onto the event loop.
Everything that waits (timers, deliveries) runs on the event loop that starts `EmulatorServer`;
`Emulator` (in `__init__.py`) runs it in a background thread or under `async with`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable, Iterable
from concurrent import futures
from typing import Any, NoReturn

import grpc

from fastapi_gcp_tasks.emulator._clock import SystemClock
from fastapi_gcp_tasks.emulator._delivery import AsyncASGIDeliverer, HttpDeliverer, RecordingDeliverer, logger
from fastapi_gcp_tasks.emulator._oidc import OIDCServer, TokenSigner
from fastapi_gcp_tasks.emulator._tasks import TasksService
from fastapi_gcp_tasks.emulator._types import Clock, Deliverer

__all__ = ["EmulatorServer", "is_loopback"]

_GRPC_THREADS = 8


class _AbortedError(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class _AbortContext:
    """The part of `grpc.aio.ServicerContext` that bridged handlers use: `abort()`."""

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> NoReturn:
        raise _AbortedError(code, details)


class _LoopBridge(grpc.GenericRpcHandler):  # type: ignore[misc, unused-ignore]
    """Serves grpc.aio-style unary handlers (coroutines) from a synchronous server, on `loop`."""

    def __init__(self, inner: grpc.GenericRpcHandler, loop: asyncio.AbstractEventLoop) -> None:
        self._inner = inner
        self._loop = loop
        self._cache: dict[str, grpc.RpcMethodHandler | None] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if method not in self._cache:
            handler = self._inner.service(handler_call_details)
            if handler is not None and asyncio.iscoroutinefunction(handler.unary_unary):
                handler = grpc.unary_unary_rpc_method_handler(
                    self._bridge(handler.unary_unary),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
            self._cache[method] = handler
        return self._cache[method]

    def _bridge(self, behaviour: Callable[..., Any]) -> Callable[[Any, grpc.ServicerContext], Any]:
        def run(request: Any, context: grpc.ServicerContext) -> Any:
            future = asyncio.run_coroutine_threadsafe(behaviour(request, _AbortContext()), self._loop)
            try:
                return future.result()
            except _AbortedError as exc:
                context.abort(exc.code, exc.details)

        return run


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the emulator reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", "[::]"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class EmulatorServer:
    """The gRPC server, both services and the OIDC document server, on the running event loop."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        http_port: int | None = None,
        clock: Clock | None = None,
        deliver_to: Any = None,
        deliverer: Deliverer | None = None,
        tombstone_seconds: float = 3600.0,
        queues: Iterable[str] = (),
        auto_create_queues: bool = False,
        keep_deliveries: int | None = 10_000,
        scheduler: bool = True,
    ) -> None:
        """See `Emulator` for the options; `deliverer` replaces the HTTP/ASGI deliverer entirely."""
        if deliver_to is not None and deliverer is not None:
            raise ValueError("give deliver_to (an ASGI app) or deliverer, not both")
        self.host = host
        self.requested_port = port
        self.requested_http_port = http_port
        self.clock: Clock = clock if clock is not None else SystemClock()
        inner: Deliverer
        if deliverer is not None:
            inner = deliverer
        elif deliver_to is not None:
            inner = AsyncASGIDeliverer(deliver_to)
        else:
            inner = HttpDeliverer()
        self.recorder = RecordingDeliverer(inner, self.clock, keep=keep_deliveries)
        self.signer = TokenSigner("http://127.0.0.1")
        self.tasks = TasksService(
            clock=self.clock,
            deliverer=self.recorder,
            signer=self.signer,
            tombstone_seconds=tombstone_seconds,
            auto_create_queues=auto_create_queues,
            queues=queues,
        )
        self.scheduler: Any = None
        if scheduler:
            from fastapi_gcp_tasks.emulator._scheduler import SchedulerService

            self.scheduler = SchedulerService(
                clock=self.clock, deliverer=self.recorder, oidc_signer=self._sign_for_scheduler
            )
        self._server: grpc.Server | None = None
        self._oidc = OIDCServer(self.signer)
        self.port = 0
        self.http_port = 0

    def _sign_for_scheduler(self, audience: str, email: str) -> str:
        return self.signer.token(audience=audience, email=email, now=self.clock.now())

    @property
    def services(self) -> list[Any]:
        """The Cloud Tasks service, then the Cloud Scheduler one when enabled."""
        return [self.tasks] if self.scheduler is None else [self.tasks, self.scheduler]

    @property
    def address(self) -> str:
        """`host:port` of the gRPC server, for the clients."""
        return f"{_url_host(self.host)}:{self.port}"

    @property
    def issuer(self) -> str:
        """The `iss` of the OIDC tokens, and the base URL of the discovery document."""
        return self.signer.issuer

    async def start(self) -> None:
        """Bind both ports and start the services."""
        loop = asyncio.get_running_loop()
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=_GRPC_THREADS, thread_name_prefix="emulator-grpc"),
            options=[("grpc.so_reuseport", 0)],
        )
        for service in self.services:
            server.add_generic_rpc_handlers(tuple(_LoopBridge(handler, loop) for handler in service.rpc_handlers()))
        try:
            self.port = server.add_insecure_port(f"{self.host}:{self.requested_port}")
        except RuntimeError as exc:
            raise OSError(f"the emulator cannot listen on {self.host}:{self.requested_port}: {exc}") from exc
        # start at once: a client connecting to a bound but unstarted server is reset, not queued
        server.start()
        self._server = server
        http_port = self.requested_http_port
        if http_port is None:
            http_port = self.port + 1 if self.requested_port else 0
        try:
            self.http_port = await self._oidc.start(self.host, http_port)
        except OSError as exc:
            raise OSError(
                f"the emulator cannot serve its OIDC documents on {self.host}:{http_port}: {exc}"
                " (choose another with http_port=... / --http-port)"
            ) from exc
        self.signer.issuer = f"http://{_url_host(self.host)}:{self.http_port}"
        for service in self.services:
            await service.start()

    async def stop(self, grace: float | None = 0.5) -> None:
        """Stop serving, cancel attempts in flight and close connections."""
        for service in self.services:
            await service.stop()
        if self._server is not None:
            server, self._server = self._server, None
            # bridged handlers need the loop to finish, so wait for the server off the loop
            await asyncio.to_thread(server.stop(grace).wait)
        await self._oidc.stop()
        await self.recorder.aclose()

    def reset(self) -> None:
        """Forget tasks, jobs, tombstones and deliveries (call on the server's loop)."""
        for service in self.services:
            service.reset()
        self.recorder.clear()

    def is_idle(self) -> bool:
        """No attempt in flight and nothing due now, in either service."""
        return all(service.is_idle() for service in self.services)

    async def wait_until_idle(self, timeout: float = 10.0) -> None:
        """Return once `is_idle()` holds twice in a row, a few milliseconds apart; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        calm = 0
        while calm < 2:
            await asyncio.sleep(0.002)
            calm = calm + 1 if self.is_idle() else 0
            if calm < 2 and time.monotonic() > deadline:
                raise TimeoutError(f"the emulator was still busy after {timeout:g} s")
        logger.debug("emulator idle")
