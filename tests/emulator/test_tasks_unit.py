"""TasksService without gRPC, with a recording fake deliverer: what each attempt asks the deliverer for."""

from __future__ import annotations

import asyncio

import pytest
from google.cloud import tasks_v2

from fastapi_gcp_tasks.emulator import ManualClock
from fastapi_gcp_tasks.emulator._tasks import TasksService, backoff_seconds
from fastapi_gcp_tasks.emulator._types import DeliveryRequest, DeliveryResult

from ._tasks_support import QUEUE, http_task


class FakeDeliverer:
    def __init__(self) -> None:
        self.requests: list[DeliveryRequest] = []

    async def deliver(self, request: DeliveryRequest) -> DeliveryResult:
        self.requests.append(request)
        return DeliveryResult(200, 0.001)

    async def aclose(self) -> None:
        pass


async def test_each_attempt_carries_the_task_deadline_method_and_source() -> None:
    deliverer = FakeDeliverer()
    service = TasksService(clock=ManualClock(), deliverer=deliverer, queues=[QUEUE])
    await service.start()
    request = tasks_v2.CreateTaskRequest(parent=QUEUE, task=http_task(deadline=20, method=tasks_v2.HttpMethod.PUT))
    created = service.create_task(tasks_v2.CreateTaskRequest.pb(request))
    for _ in range(20):
        await asyncio.sleep(0)
        if service.is_idle() and deliverer.requests:
            break
    [attempt] = deliverer.requests
    assert attempt.deadline == 20
    assert attempt.method == "PUT"
    assert attempt.source == created.name
    assert attempt.attempt == 1
    await service.stop()


def test_backoff_doubles_then_grows_linearly_up_to_the_cap() -> None:
    retry = tasks_v2.RetryConfig.pb(
        tasks_v2.RetryConfig(min_backoff={"seconds": 10}, max_backoff={"seconds": 300}, max_doublings=3)
    )
    assert [backoff_seconds(retry, n) for n in range(8)] == [10, 20, 40, 80, 160, 240, 300, 300]


def test_construction_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="tombstone_seconds"):
        TasksService(clock=ManualClock(), deliverer=FakeDeliverer(), tombstone_seconds=-1)
    with pytest.raises(ValueError, match="queue path"):
        TasksService(clock=ManualClock(), deliverer=FakeDeliverer(), queues=["nope"])
