"""Cloud Tasks and Cloud Scheduler on two ports: gRPC, and HTTP/1.1 (REST transport and OIDC documents).

The gRPC server is our own (`_grpc_server.py`), on the event loop that starts `EmulatorServer`: a call
costs a fraction of the CPU grpcio's Python server spends on it, and task creation is the emulator's hot
path. The HTTP port (`_http_server.py`, uvicorn) serves the same `Method`s as REST on the same loop.
Everything runs on that loop: the handlers, timers and deliveries. `Emulator` (in `__init__.py`) runs it
in a background thread or under `async with`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Iterable
from typing import Any

from fastapi_gcp_tasks.emulator._clock import SystemClock
from fastapi_gcp_tasks.emulator._delivery import AsyncASGIDeliverer, HttpDeliverer, RecordingDeliverer, logger
from fastapi_gcp_tasks.emulator._grpc_server import GrpcServer
from fastapi_gcp_tasks.emulator._http_server import HttpServer
from fastapi_gcp_tasks.emulator._oidc import TokenSigner
from fastapi_gcp_tasks.emulator._rpc import Method, grpc_handlers
from fastapi_gcp_tasks.emulator._tasks_service import TasksService
from fastapi_gcp_tasks.emulator._types import Clock, Deliverer

__all__ = ["EmulatorServer", "is_loopback"]


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
    """The gRPC server, the HTTP server (REST and OIDC documents) and both services, on the running event loop."""

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
        queue_tombstone_seconds: float = 3600.0,
        queues: Iterable[str] = (),
        auto_create_queues: bool = False,
        keep_deliveries: int | None = 10_000,
        kept_body_bytes: int | None = None,
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
        self.recorder = RecordingDeliverer(inner, self.clock, keep=keep_deliveries, body_limit=kept_body_bytes)
        self.signer = TokenSigner("http://127.0.0.1")
        self.tasks = TasksService(
            clock=self.clock,
            deliverer=self.recorder,
            signer=self.signer,
            tombstone_seconds=tombstone_seconds,
            queue_tombstone_seconds=queue_tombstone_seconds,
            auto_create_queues=auto_create_queues,
            queues=queues,
        )
        self.scheduler: Any = None
        if scheduler:
            from fastapi_gcp_tasks.emulator._scheduler import SchedulerService

            self.scheduler = SchedulerService(
                clock=self.clock,
                deliverer=self.recorder,
                oidc_signer=self._sign_for_scheduler,
                keep_deliveries=keep_deliveries,
                body_limit=kept_body_bytes,
            )
        self._server: GrpcServer | None = None
        self.http = HttpServer(self.signer, self.methods)
        """The HTTP port's server; `http.mount(path, app)` adds an ASGI app (before `start()`)."""
        self.port = 0
        self.http_port = 0

    def _sign_for_scheduler(self, audience: str, email: str) -> str:
        return self.signer.token(audience=audience, email=email, now=self.clock.now())

    @property
    def services(self) -> list[Any]:
        """The Cloud Tasks service, then the Cloud Scheduler one when enabled."""
        return [self.tasks] if self.scheduler is None else [self.tasks, self.scheduler]

    @property
    def methods(self) -> list[Method]:
        """Every RPC of the enabled services: the one table that gRPC and REST both dispatch to."""
        return [method for service in self.services for method in service.methods()]

    @property
    def address(self) -> str:
        """`host:port` of the gRPC server, for the clients."""
        return f"{_url_host(self.host)}:{self.port}"

    @property
    def issuer(self) -> str:
        """The `iss` of the OIDC tokens, and the base URL of the discovery document."""
        return self.signer.issuer

    @property
    def http_url(self) -> str:
        """`http://host:port` of the HTTP port: the REST transport's endpoint and the OIDC issuer."""
        return f"http://{_url_host(self.host)}:{self.http_port}"

    async def start(self) -> None:
        """Bind both ports and start the services."""
        server = GrpcServer(grpc_handlers(self.methods))
        try:
            self.port = await server.start(self.host, self.requested_port)
        except OSError as exc:
            raise OSError(f"the emulator cannot listen on {self.host}:{self.requested_port}: {exc}") from exc
        self._server = server
        http_port = self.requested_http_port
        if http_port is None:
            http_port = self.port + 1 if self.requested_port else 0
        from fastapi_gcp_tasks.emulator._console import EmulatorConsole  # the console at "/", loopback clients only

        self.http.mount("/", EmulatorConsole(self))
        try:
            self.http_port = await self.http.start(self.host, http_port)
        except OSError as exc:
            raise OSError(
                f"the emulator cannot serve its OIDC documents on {self.host}:{http_port}: {exc} (the HTTP port,"
                " which serves the REST transport too; choose another with http_port=... / --http-port)"
            ) from exc
        self.signer.issuer = self.http_url
        for service in self.services:
            await service.start()

    async def stop(self, grace: float | None = 0.5) -> None:
        """Stop serving, cancel attempts in flight and close connections."""
        for service in self.services:
            await service.stop()
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop(grace)
        await self.http.stop(grace)
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
