"""A Cloud Scheduler service on a real gRPC port, the official clients, and a worker app that records calls."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from fastapi import FastAPI, Request, Response
from google.cloud import scheduler_v1
from google.cloud.scheduler_v1.services.cloud_scheduler.transports import (
    CloudSchedulerGrpcAsyncIOTransport,
    CloudSchedulerGrpcTransport,
)

from fastapi_gcp_tasks.emulator._clock import ManualClock
from fastapi_gcp_tasks.emulator._delivery import AsyncASGIDeliverer
from fastapi_gcp_tasks.emulator._grpc_server import GrpcServer
from fastapi_gcp_tasks.emulator._scheduler import SchedulerService

PARENT = "projects/test-project/locations/europe-west1"
START = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)


def job_name(job_id: str) -> str:
    return f"{PARENT}/jobs/{job_id}"


def fake_signer(audience: str, email: str) -> str:
    return f"jwt.{audience}.{email}"


@dataclass
class Worker:
    """A FastAPI app that records every request; `/status/{code}` answers with that code."""

    app: FastAPI = field(default_factory=FastAPI)
    calls: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    fail_first: int = 0
    """How many calls to `/flaky` answer 503 before it starts answering 200."""
    release: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    hang_count: int = 1
    """How many calls to `/hang` wait for `release`; later ones answer at once."""

    def __post_init__(self) -> None:
        @self.app.api_route("/status/{code}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
        async def status(code: int, request: Request) -> Response:
            await self._record(request)
            return Response(status_code=code)

        @self.app.post("/flaky")
        async def flaky(request: Request) -> Response:
            await self._record(request)
            failed = sum(1 for call in self.calls if call[1].endswith("/flaky")) <= self.fail_first
            return Response(status_code=503 if failed else 200)

        @self.app.post("/hang")
        async def hang(request: Request) -> Response:
            await self._record(request)
            if sum(1 for call in self.calls if call[1].endswith("/hang")) <= self.hang_count:
                self.arrived.set()
                await self.release.wait()
            return Response(status_code=200)

    async def _record(self, request: Request) -> None:
        self.calls.append((request.method, str(request.url), dict(request.headers), await request.body()))


@dataclass
class Harness:
    clock: ManualClock
    service: SchedulerService
    worker: Worker
    client: scheduler_v1.CloudSchedulerAsyncClient
    sync_client: scheduler_v1.CloudSchedulerClient
    address: str

    async def create(self, job_id: str, **fields: Any) -> scheduler_v1.Job:
        """Create an HTTP job on the worker; `fields` override the defaults (every 5 minutes, `/status/200`)."""
        body: dict[str, Any] = {
            "name": job_name(job_id),
            "schedule": "*/5 * * * *",
            "http_target": {"uri": "http://worker/status/200"},
        }
        body.update(fields)
        return await self.client.create_job(parent=PARENT, job=scheduler_v1.Job(body))

    def advance_to(self, when: dt.datetime) -> None:
        self.clock.set(when)


async def start_harness(*, service_started: bool = False) -> AsyncIterator[Harness]:
    clock = ManualClock(START)
    worker = Worker()
    deliverer = AsyncASGIDeliverer(worker.app)
    service = SchedulerService(clock=clock, deliverer=deliverer, oidc_signer=fake_signer)
    server = GrpcServer(service.rpc_handlers())
    port = await server.start("127.0.0.1", 0)
    address = f"127.0.0.1:{port}"
    channel = grpc.aio.insecure_channel(address)
    client = scheduler_v1.CloudSchedulerAsyncClient(transport=CloudSchedulerGrpcAsyncIOTransport(channel=channel))
    sync_channel = grpc.insecure_channel(address)
    sync_client = scheduler_v1.CloudSchedulerClient(transport=CloudSchedulerGrpcTransport(channel=sync_channel))
    if service_started:
        await service.start()
    try:
        yield Harness(clock, service, worker, client, sync_client, address)
    finally:
        worker.release.set()
        await service.stop()
        await channel.close()
        sync_channel.close()
        await server.stop()
        await deliverer.aclose()
