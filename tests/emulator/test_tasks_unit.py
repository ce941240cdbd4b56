"""TasksService without gRPC, with a recording fake deliverer: what each attempt asks the deliverer for."""

from __future__ import annotations

import asyncio

import pytest
from google.cloud import tasks_v2

from fastapi_gcp_tasks.emulator import ManualClock
from fastapi_gcp_tasks.emulator._tasks_dispatch import backoff_seconds
from fastapi_gcp_tasks.emulator._tasks_service import TasksService
from fastapi_gcp_tasks.emulator._types import DeliveryRequest, DeliveryResult
from tests._support import eventually

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
    await eventually(lambda: service.is_idle() and deliverer.requests, "the attempt made and finished")
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


class RaisingThenHangingDeliverer(FakeDeliverer):
    """Breaks the Deliverer contract once (raises), then never answers."""

    async def deliver(self, request: DeliveryRequest) -> DeliveryResult:
        self.requests.append(request)
        if len(self.requests) == 1:
            raise RuntimeError("broken deliverer")
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_raising_deliverer_is_retried_and_the_deadline_runs_on_the_clock() -> None:
    deliverer = RaisingThenHangingDeliverer()
    clock = ManualClock()
    service = TasksService(clock=clock, deliverer=deliverer, queues=[QUEUE])
    await service.start()
    request = tasks_v2.CreateTaskRequest(parent=QUEUE, task=http_task(deadline=20))
    created = service.create_task(tasks_v2.CreateTaskRequest.pb(request))
    await eventually(lambda: service.is_idle() and deliverer.requests, "the first attempt made and finished")
    assert len(deliverer.requests) == 1
    task = service.get_task(tasks_v2.GetTaskRequest.pb(tasks_v2.GetTaskRequest(name=created.name)))
    assert task.last_attempt.response_status.code == 14  # UNAVAILABLE: kept and retried, not lost
    clock.advance(1)  # past the first backoff (0.1 s): the second attempt hangs
    await eventually(lambda: len(deliverer.requests) >= 2, "the second attempt")
    assert len(deliverer.requests) == 2
    clock.advance(20)  # the dispatch deadline, on the service's own clock
    await eventually(service.is_idle, "the hanging attempt ended by its deadline")
    task = service.get_task(tasks_v2.GetTaskRequest.pb(tasks_v2.GetTaskRequest(name=created.name)))
    assert task.last_attempt.response_status.code == 4  # DEADLINE_EXCEEDED
    await service.stop()
