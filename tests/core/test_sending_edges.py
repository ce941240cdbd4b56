"""Edge cases of sending, with small fakes beside the emulator tests: permissions and racing creators."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from google.api_core import exceptions as core
from google.cloud import scheduler_v1, tasks_v2

from fastapi_gcp_tasks import DelayedRouteBuilder, ScheduledRouteBuilder, location_path, queue_path

QUEUE = queue_path(project="p", location="l", queue="q")


class EnqueuerOnlyClient(tasks_v2.CloudTasksClient):
    """What a service account with roles/cloudtasks.enqueuer sees: queues cannot be created."""

    def __init__(self) -> None:
        self.created: list[Any] = []

    def create_queue(self, request: Any = None, **kwargs: Any) -> Any:
        raise core.PermissionDenied("cloudtasks.queues.create denied")  # type: ignore[no-untyped-call]

    def create_task(self, request: Any = None, **kwargs: Any) -> Any:
        self.created.append(request)
        return request.task


def test_a_caller_that_may_not_create_queues_still_creates_tasks() -> None:
    client = EnqueuerOnlyClient()
    router = APIRouter(route_class=DelayedRouteBuilder(queue_path=QUEUE, callback_base_url="http://w", client=client))

    @router.post("/t")
    def task() -> None: ...

    FastAPI().include_router(router)
    task.delay()  # type: ignore[attr-defined]
    task.delay()  # type: ignore[attr-defined]
    assert len(client.created) == 2


class RacingSchedulerClient(scheduler_v1.CloudSchedulerClient):
    """Another process creates the job between our GetJob and CreateJob."""

    def __init__(self) -> None:
        self.stored: scheduler_v1.Job | None = None
        self.pending: scheduler_v1.Job | None = None
        self.updates = 0

    def get_job(self, name: str = "", **kwargs: Any) -> Any:  # type: ignore[override]
        if self.stored is None:
            self.stored = self.pending
            raise core.NotFound(name)  # type: ignore[no-untyped-call]
        return self.stored

    def create_job(self, parent: str = "", job: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
        raise core.AlreadyExists(job.name)  # type: ignore[no-untyped-call]

    def update_job(self, job: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
        self.updates += 1
        return job


def test_schedule_losing_a_creation_race_compares_with_the_winner() -> None:
    client = RacingSchedulerClient()
    router = APIRouter(
        route_class=ScheduledRouteBuilder(
            location_path=location_path(project="p", location="l"), callback_base_url="http://w", client=client
        )
    )

    @router.post("/job")
    def job() -> None: ...

    FastAPI().include_router(router)
    handle = job.scheduler(name="nightly", schedule="0 3 * * *")  # type: ignore[attr-defined]
    client.pending = handle.job()
    result = handle.schedule()
    assert result.name.endswith("/jobs/nightly")
    assert client.updates == 0
