"""Cloud Scheduler end to end through `Emulator`: official client, OIDC verified by the worker, real HTTP."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from typing import Any

from fastapi import Depends, FastAPI, Request
from google.cloud import scheduler_v1

from fastapi_gcp_tasks.dependencies import CloudSchedulerHeaders
from fastapi_gcp_tasks.emulator import Emulator, ManualClock
from fastapi_gcp_tasks.oidc import OIDCClaims, OIDCVerifier
from tests._support import TIMEOUT, serve_asgi, wait_event, wait_for

from ._scheduler_support import PARENT, job_name

ACCOUNT = "cron@test-project.iam.gserviceaccount.com"


class Worker:
    """An app whose endpoint needs a valid token; the verifier is made once the emulator's issuer is known."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.verify: OIDCVerifier | None = None
        self.app = FastAPI()

        async def verified(request: Request) -> OIDCClaims:
            assert self.verify is not None
            return await self.verify(request)

        @self.app.post("/tick")
        def tick(meta: CloudSchedulerHeaders = Depends(), claims: OIDCClaims = Depends(verified)) -> None:
            self.calls.append({"job": meta.job_name, "scheduled": meta.schedule_time, "email": claims.email})

    def trust(self, emu: Emulator) -> None:
        # the manual clock may run up to a minute ahead of real time: allow for it in `iat`
        self.verify = OIDCVerifier(
            audience="https://worker.example",
            service_accounts=ACCOUNT,
            issuers=emu.issuer,
            jwks_url=emu.jwks_url,
            leeway=120,
        )


def test_jobs_fire_into_the_app_with_a_token_the_worker_verifies() -> None:
    worker = Worker()
    calls = worker.calls
    clock = ManualClock(dt.datetime.now(dt.UTC).replace(second=0, microsecond=0))
    with Emulator(clock=clock, deliver_to=worker.app) as emu:
        worker.trust(emu)
        client = emu.scheduler_client()
        job = client.create_job(
            parent=PARENT,
            job=scheduler_v1.Job(
                name=job_name("tick"),
                schedule="* * * * *",
                http_target={
                    "uri": "http://testserver/tick",
                    "oidc_token": {"service_account_email": ACCOUNT, "audience": "https://worker.example"},
                },
            ),
        )
        client.run_job(name=job.name)
        emu.wait_until_idle(timeout=TIMEOUT)
        clock.set(job.schedule_time)
        emu.wait_until_idle(timeout=TIMEOUT)

        assert [call["scheduled"] for call in calls] == [clock.now() - dt.timedelta(minutes=1), job.schedule_time]
        assert {call["job"] for call in calls} == {"tick"}
        assert {call["email"] for call in calls} == {ACCOUNT}
        assert [record.status for record in emu.deliveries] == [200, 200]
        assert client.get_job(name=job.name).schedule_time == job.schedule_time + dt.timedelta(minutes=1)


def test_over_real_http_in_real_time() -> None:
    calls: list[dict[str, str]] = []
    app = FastAPI()

    @app.put("/cron/{name}")
    def cron(name: str, meta: CloudSchedulerHeaders = Depends()) -> None:
        calls.append({"name": name, "job": meta.job_name or ""})

    with serve_asgi(app) as url, Emulator() as emu:
        client = emu.scheduler_client()
        client.create_job(
            parent=PARENT,
            job=scheduler_v1.Job(
                name=job_name("real"),
                schedule="0 0 1 1 *",
                http_target={"uri": f"{url}/cron/x", "http_method": "PUT", "body": b"{}"},
            ),
        )
        client.run_job(name=job_name("real"))
        wait_for(lambda: emu.deliveries, "the job's delivery")
        emu.wait_until_idle(timeout=TIMEOUT)
        assert calls == [{"name": "x", "job": "real"}]
        (record,) = emu.deliveries
        assert (record.method, record.status) == ("PUT", 200)
        assert client.get_job(name=job_name("real")).status.code == 0


def test_records_number_retries_and_a_deadline_on_the_manual_clock_is_deadline_exceeded() -> None:
    """Through `Emulator` (whose recorder also enforces deadlines on a manual clock): attempts 1, 2, 3 of a
    failing job, and DEADLINE_EXCEEDED, not UNAVAILABLE, for a job whose worker never answers."""
    app = FastAPI()

    @app.post("/fail", status_code=500)
    def fail() -> None:
        return None

    cancelled: list[bool] = []
    hanging_started = threading.Event()

    @app.post("/hang")
    async def hang_forever() -> None:
        hanging_started.set()
        try:
            await asyncio.sleep(3600)  # cancelled when the attempt's deadline passes on the manual clock
        except asyncio.CancelledError:
            cancelled.append(True)  # what docs/emulator-scheduler.md says of deliver_to=app
            raise

    clock = ManualClock(dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.UTC))
    with Emulator(clock=clock, deliver_to=app) as emu:
        client = emu.scheduler_client()
        failing = client.create_job(
            parent=PARENT,
            job=scheduler_v1.Job(
                name=job_name("fails"),
                schedule="0 0 1 1 *",
                http_target={"uri": "http://testserver/fail"},
                retry_config={"retry_count": 2, "min_backoff_duration": {"seconds": 5}},
            ),
        )
        client.run_job(name=failing.name)
        for _ in range(3):
            emu.wait_until_idle(timeout=TIMEOUT)
            clock.advance(30)
        emu.wait_until_idle(timeout=TIMEOUT)
        assert [(record.attempt, record.status) for record in emu.deliveries] == [(1, 500), (2, 500), (3, 500)]

        hanging = client.create_job(
            parent=PARENT,
            job=scheduler_v1.Job(
                name=job_name("hangs"),
                schedule="0 0 1 1 *",
                http_target={"uri": "http://testserver/hang"},
                attempt_deadline={"seconds": 15},
            ),
        )
        client.run_job(name=hanging.name)
        wait_event(hanging_started, "the hanging attempt to reach the worker")
        clock.advance(16)
        emu.wait_until_idle(timeout=TIMEOUT)
        status = client.get_job(name=hanging.name).status
        assert status.code == 4, status  # DEADLINE_EXCEEDED
        assert emu.deliveries[-1].status is None
        assert cancelled == [True]
