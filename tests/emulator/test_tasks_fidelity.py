"""Emulator fidelity through the official clients over real gRPC (issue #14).

Each test pins one documented behaviour of Cloud Tasks / Cloud Scheduler: requests are checked whole before
anything changes, queue settings are checked as they will be stored, `schedule_time` / `create_time` /
`dispatch_deadline` follow the proto comments, and the inspection records stay bounded.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import grpc
import pytest
from fastapi import FastAPI, Response
from google.api_core import exceptions
from google.cloud import scheduler_v1, tasks_v2
from google.cloud.scheduler_v1.services.cloud_scheduler.transports import CloudSchedulerGrpcAsyncIOTransport
from google.protobuf import duration_pb2, timestamp_pb2

from fastapi_gcp_tasks.emulator import Emulator, ManualClock, _rpc, _tasks_service, _tasks_validation
from fastapi_gcp_tasks.emulator._clock import ManualClock as RawManualClock
from fastapi_gcp_tasks.emulator._delivery import AsyncASGIDeliverer
from fastapi_gcp_tasks.emulator._grpc_server import GrpcServer
from fastapi_gcp_tasks.emulator._scheduler import SchedulerService
from fastapi_gcp_tasks.emulator._tasks_dispatch import backoff_seconds
from tests._support import TIMEOUT

from ._scheduler_support import PARENT, job_name
from ._tasks_support import LOCATION, QUEUE, ScriptedWorker, http_task, task_name

START = dt.datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=dt.UTC)
"""A clock start with a fraction of a second, so truncation to the second shows."""

MISSING = f"{LOCATION}/queues/missing"


@pytest.fixture
def auto() -> Iterator[tuple[Emulator, tasks_v2.CloudTasksClient]]:
    """An emulator that creates missing queues on their first task, on a manual clock, with no queue yet."""
    with Emulator(clock=ManualClock(START), deliver_to=ScriptedWorker(), auto_create_queues=True) as emu:
        yield emu, emu.tasks_client()


@pytest.fixture
def env() -> Iterator[tuple[Emulator, ManualClock, ScriptedWorker, tasks_v2.CloudTasksClient]]:
    clock = ManualClock(START)
    worker = ScriptedWorker()
    with Emulator(clock=clock, deliver_to=worker, queues=[QUEUE]) as emu:
        yield emu, clock, worker, emu.tasks_client()


def queue_names(client: tasks_v2.CloudTasksClient) -> list[str]:
    return [queue.name for queue in client.list_queues(parent=LOCATION)]


# 1. every mutating RPC checks its whole request before it changes state ---------------------------------------


def test_invalid_update_of_a_missing_queue_creates_nothing(auto: tuple[Emulator, tasks_v2.CloudTasksClient]) -> None:
    _, client = auto
    queue = tasks_v2.Queue(
        name=MISSING,
        retry_config=tasks_v2.RetryConfig(
            min_backoff=duration_pb2.Duration(seconds=60), max_backoff=duration_pb2.Duration(seconds=10)
        ),
    )
    with pytest.raises(exceptions.InvalidArgument, match="min_backoff"):
        client.update_queue(queue=queue)
    with pytest.raises(exceptions.NotFound):
        client.get_queue(name=MISSING)
    assert queue_names(client) == []
    # the same update made valid creates the queue (as UpdateQueue does on the real service)
    queue.retry_config.max_backoff = duration_pb2.Duration(seconds=600)
    assert client.update_queue(queue=queue).retry_config.min_backoff.total_seconds() == 60
    assert queue_names(client) == [MISSING]


def test_invalid_task_does_not_auto_create_its_queue(auto: tuple[Emulator, tasks_v2.CloudTasksClient]) -> None:
    _, client = auto
    with pytest.raises(exceptions.InvalidArgument, match="url"):
        client.create_task(parent=MISSING, task=http_task(url="not a url"))
    with pytest.raises(exceptions.InvalidArgument, match="task id"):
        client.create_task(parent=MISSING, task=http_task(name=task_name("bad id!", MISSING)))
    with pytest.raises(exceptions.InvalidArgument, match="30 days"):
        client.create_task(parent=MISSING, task=http_task(schedule_time=START + dt.timedelta(days=31)))
    assert queue_names(client) == []
    created = client.create_task(parent=MISSING, task=http_task(name=task_name("ok", MISSING)))
    assert created.name == task_name("ok", MISSING)
    assert queue_names(client) == [MISSING]


def test_batch_of_invalid_tasks_does_not_auto_create_its_queue(
    auto: tuple[Emulator, tasks_v2.CloudTasksClient],
) -> None:
    _, client = auto
    requests = [
        tasks_v2.CreateTaskRequest(parent=MISSING, task=http_task(url="not a url")),
        tasks_v2.CreateTaskRequest(parent=MISSING, task=tasks_v2.Task()),
    ]
    operation = client.batch_create_tasks(request=tasks_v2.BatchCreateTasksRequest(parent=MISSING, requests=requests))
    metadata = operation.metadata
    assert metadata.state == tasks_v2.BatchCreateTasksMetadata.State.FAILED
    invalid_argument = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert {index: status.code for index, status in metadata.failed_requests.items()} == {
        0: invalid_argument,
        1: invalid_argument,
    }
    assert queue_names(client) == []
    requests.append(tasks_v2.CreateTaskRequest(parent=MISSING, task=http_task(name=task_name("ok", MISSING))))
    operation = client.batch_create_tasks(request=tasks_v2.BatchCreateTasksRequest(parent=MISSING, requests=requests))
    assert operation.metadata.state == tasks_v2.BatchCreateTasksMetadata.State.PARTIALLY_SUCCEEDED
    assert queue_names(client) == [MISSING]
    response = operation.result(timeout=TIMEOUT)  # type: ignore[no-untyped-call, unused-ignore]
    assert [task.name for task in response.tasks] == [task_name("ok", MISSING)]


# 2. queue settings are checked as they will be stored ---------------------------------------------------------


def test_min_backoff_above_the_default_max_backoff_is_refused(
    env: tuple[Emulator, ManualClock, ScriptedWorker, tasks_v2.CloudTasksClient],
) -> None:
    _, _, _, client = env
    name = f"{LOCATION}/queues/slow"
    queue = tasks_v2.Queue(
        name=name, retry_config=tasks_v2.RetryConfig(min_backoff=duration_pb2.Duration(seconds=4000))
    )
    with pytest.raises(exceptions.InvalidArgument, match=r"min_backoff \(4000 s\).*3600 s, the default"):
        client.create_queue(parent=LOCATION, queue=queue)
    with pytest.raises(exceptions.InvalidArgument, match="min_backoff"):
        client.update_queue(queue=queue)
    assert queue_names(client) == [QUEUE]


@pytest.mark.parametrize("ratio", [-0.1, 1.5, float("nan")])
def test_sampling_ratio_outside_zero_to_one_is_refused(
    env: tuple[Emulator, ManualClock, ScriptedWorker, tasks_v2.CloudTasksClient], ratio: float
) -> None:
    _, _, _, client = env
    name = f"{LOCATION}/queues/logged"
    queue = tasks_v2.Queue(
        name=name, stackdriver_logging_config=tasks_v2.StackdriverLoggingConfig(sampling_ratio=ratio)
    )
    with pytest.raises(exceptions.InvalidArgument, match="sampling_ratio"):
        client.create_queue(parent=LOCATION, queue=queue)
    update = tasks_v2.Queue(
        name=QUEUE, stackdriver_logging_config=tasks_v2.StackdriverLoggingConfig(sampling_ratio=ratio)
    )
    with pytest.raises(exceptions.InvalidArgument, match="sampling_ratio"):
        client.update_queue(queue=update, update_mask={"paths": ["stackdriver_logging_config.sampling_ratio"]})
    assert queue_names(client) == [QUEUE]
    assert client.get_queue(name=QUEUE).stackdriver_logging_config.sampling_ratio == 0.0
    queue.stackdriver_logging_config.sampling_ratio = 1.0
    assert client.create_queue(parent=LOCATION, queue=queue).stackdriver_logging_config.sampling_ratio == 1.0


# 3. schedule_time, create_time and dispatch_deadline as the proto comments say --------------------------------


def test_a_schedule_time_in_the_past_is_set_to_now_and_runs_at_once(
    env: tuple[Emulator, ManualClock, ScriptedWorker, tasks_v2.CloudTasksClient],
) -> None:
    emu, clock, worker, client = env
    client.pause_queue(name=QUEUE)
    task = client.create_task(parent=QUEUE, task=http_task(schedule_time=START - dt.timedelta(hours=1)))
    assert task.schedule_time == START
    assert client.get_task(name=task.name).schedule_time == START
    client.resume_queue(name=QUEUE)
    emu.wait_until_idle(timeout=TIMEOUT)
    assert len(worker.received) == 1
    assert worker.received[0].headers["x-cloudtasks-tasketa"] == f"{START.timestamp():.6f}"
    assert clock.now() == START


def test_schedule_time_is_truncated_to_the_microsecond(
    env: tuple[Emulator, ManualClock, ScriptedWorker, tasks_v2.CloudTasksClient],
) -> None:
    _, _, _, client = env
    client.pause_queue(name=QUEUE)
    task = http_task()
    later = int(START.timestamp()) + 60
    task.schedule_time = timestamp_pb2.Timestamp(seconds=later, nanos=999_999_999)
    created = client.create_task(parent=QUEUE, task=task)
    expected = dt.datetime.fromtimestamp(later, dt.UTC).replace(microsecond=999_999)
    assert created.schedule_time == expected
    assert created.schedule_time.nanosecond == 999_999_000


def test_create_time_is_truncated_to_the_second_and_deadline_to_the_millisecond(
    env: tuple[Emulator, ManualClock, ScriptedWorker, tasks_v2.CloudTasksClient],
) -> None:
    _, _, _, client = env
    client.pause_queue(name=QUEUE)
    task = http_task()
    task.dispatch_deadline = duration_pb2.Duration(seconds=20, nanos=123_456_789)
    created = client.create_task(parent=QUEUE, task=task)
    assert created.create_time == START.replace(microsecond=0)
    assert created.schedule_time == START
    assert created.dispatch_deadline == dt.timedelta(seconds=20, milliseconds=123)
    assert client.get_task(name=created.name).dispatch_deadline == dt.timedelta(seconds=20, milliseconds=123)


# 4. bounded memory -------------------------------------------------------------------------------------------


def test_only_the_latest_batch_operations_are_kept(
    env: tuple[Emulator, ManualClock, ScriptedWorker, tasks_v2.CloudTasksClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, _, client = env
    monkeypatch.setattr(_tasks_service, "_KEPT_OPERATIONS", 2)
    client.pause_queue(name=QUEUE)
    operations_client = client.transport.operations_client

    def batch(request_id: str) -> str:
        request = tasks_v2.BatchCreateTasksRequest(
            parent=QUEUE, requests=[tasks_v2.CreateTaskRequest(parent=QUEUE, task=http_task())], request_id=request_id
        )
        name: str = client.batch_create_tasks(request=request).operation.name
        return name

    names = [batch(f"r-{index}") for index in range(3)]
    with pytest.raises(exceptions.NotFound):
        operations_client.get_operation(names[0])
    assert [operations_client.get_operation(name).name for name in names[1:]] == names[1:]
    # a kept request id still answers with its operation; a forgotten one creates anew
    assert batch("r-2") == names[2]
    assert batch("r-0") not in names
    assert len(list(client.list_tasks(parent=QUEUE))) == 4


def tick_app() -> FastAPI:
    app = FastAPI()

    @app.post("/tick")
    def tick() -> Response:
        return Response(status_code=200)

    return app


def test_scheduler_keeps_only_the_latest_deliveries() -> None:
    with Emulator(clock=ManualClock(START), deliver_to=tick_app(), keep_deliveries=2) as emu:
        client = emu.scheduler_client()
        job = client.create_job(
            parent=PARENT,
            job=scheduler_v1.Job(
                name=job_name("tick"), schedule="0 0 1 1 *", http_target={"uri": "http://testserver/tick"}
            ),
        )
        for _ in range(3):
            client.run_job(name=job.name)
            emu.wait_until_idle(timeout=TIMEOUT)
        kept = emu.server.scheduler.deliveries
        assert len(kept) == 2
        assert all(delivery.status == 200 for delivery in kept)
        assert len(emu.deliveries) == 2


async def test_scheduler_run_due_counts_attempts_it_does_not_keep() -> None:
    clock = RawManualClock(START)
    deliverer = AsyncASGIDeliverer(tick_app())
    service = SchedulerService(clock=clock, deliverer=deliverer, keep_deliveries=0)
    server = GrpcServer(service.rpc_handlers())
    port = await server.start("127.0.0.1", 0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    client = scheduler_v1.CloudSchedulerAsyncClient(transport=CloudSchedulerGrpcAsyncIOTransport(channel=channel))
    try:
        job = await client.create_job(
            parent=PARENT,
            job=scheduler_v1.Job(
                name=job_name("tick"), schedule="0 0 1 1 *", http_target={"uri": "http://testserver/tick"}
            ),
        )
        await client.run_job(name=job.name)
        assert await service.run_due() == 1
        assert (await client.get_job(name=job.name)).status.code == 0
        assert len(service.deliveries) == 0
    finally:
        await service.stop()
        await channel.close()
        await server.stop()
        await deliverer.aclose()


def test_scheduler_refuses_a_negative_keep() -> None:
    with pytest.raises(ValueError, match="keep_deliveries"):
        SchedulerService(clock=RawManualClock(START), deliverer=AsyncASGIDeliverer(tick_app()), keep_deliveries=-1)


# 4. limits and settings read from the protos (issue #14, third audit) -------------------------------------------


def test_list_queues_pages_hold_up_to_9800_queues() -> None:
    """ListQueuesRequest.page_size: "The maximum page size is 9800. If unspecified, the page size will be the
    maximum" (a regression: pages stopped at ListTasks' 1000)."""
    names = [f"{LOCATION}/queues/q{i:04d}" for i in range(1001)]
    with Emulator(clock=ManualClock(START), deliver_to=ScriptedWorker(), queues=names) as emu:
        client = emu.tasks_client()
        first = client.list_queues(request={"parent": LOCATION, "page_size": 20_000})
        assert len(first.queues) == 1001
        assert first.next_page_token == ""


def test_page_tokens_refuse_tampering() -> None:
    tokens = _tasks_validation.PageTokens(lifetime=None)
    token = tokens.issue("ListTasks q", 7, START)
    assert tokens.read(token, "ListTasks q", START) == 7
    for forged in (token[:-1] + ("A" if token[-1] != "A" else "B"), "", "!!", "7"):
        with pytest.raises(_rpc.RpcError, match="not a page token"):
            tokens.read(forged, "ListTasks q", START)
    other = _tasks_validation.PageTokens(lifetime=None)  # another emulator's token
    with pytest.raises(_rpc.RpcError, match="not a page token"):
        other.read(token, "ListTasks q", START)


def _documented_backoff(min_backoff: float, max_backoff: float, doublings: int, retry: int) -> float:
    """RetryConfig.max_doublings, read literally: start at min_backoff, double `doublings` times, then grow
    linearly by 2^doublings * min_backoff, never above max_backoff."""
    interval = min_backoff
    for step in range(retry):
        interval = interval * 2 if step < doublings else interval + min_backoff * 2**doublings
    return min(interval, max_backoff)


@pytest.mark.parametrize("min_backoff", [0.1, 1.0, 10.0])
@pytest.mark.parametrize("max_backoff", [1.0, 300.0, 3600.0])
@pytest.mark.parametrize("max_doublings", [0, 1, 3, 16, 40])
def test_backoff_for_every_combination_of_retry_settings(
    env: tuple[Emulator, ManualClock, ScriptedWorker, tasks_v2.CloudTasksClient],
    min_backoff: float,
    max_backoff: float,
    max_doublings: int,
) -> None:
    """Every combination of the three settings, as UpdateQueue stores them (0 doublings: the default 16) and as the
    dispatcher spaces the retries."""
    _, _, _, client = env
    if min_backoff > max_backoff:
        with pytest.raises(exceptions.InvalidArgument, match="min_backoff"):
            client.update_queue(queue=_retry_queue(min_backoff, max_backoff, max_doublings))
        return
    stored = client.update_queue(queue=_retry_queue(min_backoff, max_backoff, max_doublings)).retry_config
    doublings = max_doublings or 16
    assert stored.max_doublings == doublings
    raw = tasks_v2.RetryConfig.pb(stored)
    for retry in range(60):
        expected = _documented_backoff(min_backoff, max_backoff, doublings, retry)
        assert backoff_seconds(raw, retry) == pytest.approx(expected, rel=1e-9), retry


def _retry_queue(min_backoff: float, max_backoff: float, max_doublings: int) -> tasks_v2.Queue:
    def length(value: float) -> duration_pb2.Duration:
        return duration_pb2.Duration(seconds=int(value), nanos=round(value % 1 * 1e9))

    return tasks_v2.Queue(
        name=QUEUE,
        retry_config=tasks_v2.RetryConfig(
            min_backoff=length(min_backoff), max_backoff=length(max_backoff), max_doublings=max_doublings
        ),
    )


def test_a_queue_given_only_max_retry_duration_keeps_the_other_defaults(
    env: tuple[Emulator, ManualClock, ScriptedWorker, tasks_v2.CloudTasksClient],
) -> None:
    _, _, _, client = env
    queue = tasks_v2.Queue(
        name=QUEUE, retry_config=tasks_v2.RetryConfig(max_retry_duration=duration_pb2.Duration(seconds=600))
    )
    retry = client.update_queue(queue=queue).retry_config
    assert (retry.max_attempts, retry.max_doublings) == (100, 16)
    assert (retry.min_backoff.total_seconds(), retry.max_backoff.total_seconds()) == (0.1, 3600)
    assert retry.max_retry_duration.total_seconds() == 600


def test_queue_tombstones_are_configurable_and_zero_turns_them_off() -> None:
    with pytest.raises(ValueError, match="queue_tombstone_seconds"):
        _tasks_service.TasksService(
            clock=RawManualClock(START), deliverer=AsyncASGIDeliverer(FastAPI()), queue_tombstone_seconds=-1
        )
    clock = ManualClock(START)
    with Emulator(clock=clock, deliver_to=ScriptedWorker(), queues=[QUEUE]) as emu:
        emu.server.tasks.queue_tombstone_seconds = 0
        client = emu.tasks_client()
        client.delete_queue(name=QUEUE)
        assert client.create_queue(parent=LOCATION, queue=tasks_v2.Queue(name=QUEUE)).name == QUEUE
        emu.server.tasks.queue_tombstone_seconds = 60
        client.delete_queue(name=QUEUE)
        with pytest.raises(exceptions.FailedPrecondition, match="deleted recently"):
            client.create_queue(parent=LOCATION, queue=tasks_v2.Queue(name=QUEUE))
        clock.advance(60)
        assert client.create_queue(parent=LOCATION, queue=tasks_v2.Queue(name=QUEUE)).name == QUEUE
