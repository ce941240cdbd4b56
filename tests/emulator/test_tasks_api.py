"""Cloud Tasks tasks through the official clients: fields, validation, names and tombstones, paging, batches."""

from __future__ import annotations

import datetime as dt

import pytest
from google.api_core import exceptions
from google.cloud import tasks_v2

from fastapi_gcp_tasks._limits import MAX_HEADER_BYTES, MAX_TASK_BYTES
from fastapi_gcp_tasks.emulator import Emulator, ManualClock

from ._tasks_support import LOCATION, QUEUE, ScriptedWorker, http_task, task_name
from .conftest import Env


def test_create_fills_fields_as_the_service_does(env: Env) -> None:
    env.client.pause_queue(name=QUEUE)
    task = env.client.create_task(parent=QUEUE, task=http_task(body=b"secret"))
    assert task.name.startswith(QUEUE + "/tasks/")
    assert task.name.rpartition("/")[2].isdigit()
    assert task.schedule_time.timestamp() == pytest.approx(env.clock.now().timestamp(), abs=1e-3)
    assert task.create_time == task.schedule_time.replace(microsecond=0)  # create_time: truncated to the second
    assert task.dispatch_deadline.total_seconds() == 600
    assert task.http_request.http_method == tasks_v2.HttpMethod.POST
    assert (task.dispatch_count, task.response_count) == (0, 0)
    assert task.view == tasks_v2.Task.View.BASIC
    assert task.http_request.body == b""
    full = env.client.get_task(request=tasks_v2.GetTaskRequest(name=task.name, response_view=tasks_v2.Task.View.FULL))
    assert full.http_request.body == b"secret"
    assert full.view == tasks_v2.Task.View.FULL


def test_unspecified_method_means_post(env: Env) -> None:
    env.client.pause_queue(name=QUEUE)
    task = env.client.create_task(
        parent=QUEUE, task=http_task(method=tasks_v2.HttpMethod.HTTP_METHOD_UNSPECIFIED, body=b"x")
    )
    assert task.http_request.http_method == tasks_v2.HttpMethod.POST


def test_a_name_is_taken_while_the_task_exists_and_for_the_tombstone_window(env: Env) -> None:
    name = task_name("order-42")
    env.client.create_task(parent=QUEUE, task=http_task(name=name))
    with pytest.raises(exceptions.AlreadyExists, match="order-42"):
        env.client.create_task(parent=QUEUE, task=http_task(name=name))
    env.settle()
    assert env.worker.paths() == ["/work"]
    with pytest.raises(exceptions.AlreadyExists):
        env.client.create_task(parent=QUEUE, task=http_task(name=name))
    env.clock.advance(3601)
    env.client.create_task(parent=QUEUE, task=http_task(name=name))


def test_a_deleted_name_stays_taken_until_reset(env: Env) -> None:
    env.client.pause_queue(name=QUEUE)
    name = task_name("once")
    env.client.create_task(parent=QUEUE, task=http_task(name=name))
    env.client.delete_task(name=name)
    with pytest.raises(exceptions.NotFound):
        env.client.get_task(name=name)
    with pytest.raises(exceptions.AlreadyExists):
        env.client.create_task(parent=QUEUE, task=http_task(name=name))
    env.emu.reset()
    env.client.create_task(parent=QUEUE, task=http_task(name=name))


def test_tombstone_window_is_configurable() -> None:
    clock = ManualClock()
    with Emulator(clock=clock, deliver_to=ScriptedWorker(), queues=[QUEUE], tombstone_seconds=10) as emu:
        client = emu.tasks_client()
        client.pause_queue(name=QUEUE)
        name = task_name("short")
        client.create_task(parent=QUEUE, task=http_task(name=name))
        client.delete_task(name=name)
        clock.advance(9)
        with pytest.raises(exceptions.AlreadyExists):
            client.create_task(parent=QUEUE, task=http_task(name=name))
        clock.advance(1)
        client.create_task(parent=QUEUE, task=http_task(name=name))


def test_missing_queue_is_not_found_unless_auto_created(env: Env) -> None:
    other = f"{LOCATION}/queues/nowhere"
    with pytest.raises(exceptions.NotFound, match="does not exist"):
        env.client.create_task(parent=other, task=http_task())
    with Emulator(deliver_to=ScriptedWorker(), auto_create_queues=True) as emu:
        emu.tasks_client().create_task(parent=other, task=http_task())
        assert emu.tasks_client().get_queue(name=other).state == tasks_v2.Queue.State.RUNNING


def _invalid_tasks(now: dt.datetime) -> list[tuple[tasks_v2.Task, str]]:
    return [
        (http_task(url="ftp://worker.test/x"), "absolute http"),
        (http_task(url="/relative"), "absolute http"),
        (http_task(url=""), "url is required"),
        (http_task(url="http://worker.test/" + "a" * 2084), "2083"),
        (http_task(method=tasks_v2.HttpMethod.GET, body=b"x"), "only allowed with POST, PUT or PATCH"),
        (http_task(method=tasks_v2.HttpMethod.DELETE, body=b"x"), "not DELETE"),
        (http_task(schedule_time=now + dt.timedelta(days=30, seconds=5)), "30 days"),
        (http_task(deadline=14), "between 15 s and 30 min"),
        (http_task(deadline=1801), "between 15 s and 30 min"),
        (http_task(body=b"x" * MAX_TASK_BYTES), "1 MB"),
        (http_task(headers={"X-Big": "v" * MAX_HEADER_BYTES}), "80 KB"),
        (http_task(headers={"X-Injected": "a\r\nX-Other: b"}), "control characters"),
        (http_task(headers={"bad header": "x"}), "header name"),
        (http_task(url="http://worker.test:99999/"), "not a valid URL"),
        (http_task(url="http://worker.test/a b"), "whitespace"),
        (http_task(oidc=tasks_v2.OidcToken(service_account_email="nobody")), "service account email"),
        (http_task(name=task_name("bad.id")), "task id"),
        (http_task(name=f"{LOCATION}/queues/other/tasks/x"), "formatted like"),
        (http_task(oidc=tasks_v2.OidcToken(audience="a")), "service_account_email"),
        (tasks_v2.Task(), "http_request is required"),
    ]


@pytest.mark.parametrize("index", range(20))
def test_invalid_tasks_are_invalid_argument_with_a_useful_message(env: Env, index: int) -> None:
    task, message = _invalid_tasks(env.clock.now())[index]
    with pytest.raises(exceptions.InvalidArgument, match=message):
        env.client.create_task(parent=QUEUE, task=task)
    assert list(env.client.list_tasks(parent=QUEUE)) == []


def test_app_engine_targets_are_unimplemented(env: Env) -> None:
    task = tasks_v2.Task(app_engine_http_request=tasks_v2.AppEngineHttpRequest(relative_uri="/x"))
    with pytest.raises(exceptions.MethodNotImplemented, match="HTTP targets"):
        env.client.create_task(parent=QUEUE, task=task)


def test_schedule_time_up_to_30_days_and_in_the_past_is_accepted(env: Env) -> None:
    env.client.pause_queue(name=QUEUE)
    now = env.clock.now()
    later = env.client.create_task(parent=QUEUE, task=http_task(schedule_time=now + dt.timedelta(days=30)))
    assert later.schedule_time.timestamp() == pytest.approx((now + dt.timedelta(days=30)).timestamp(), abs=1e-3)
    env.client.create_task(parent=QUEUE, task=http_task(schedule_time=now - dt.timedelta(days=3)))


def test_list_pages_in_creation_order_and_survives_deletes(env: Env) -> None:
    env.client.pause_queue(name=QUEUE)
    names = [env.client.create_task(parent=QUEUE, task=http_task(name=task_name(f"t{i}"))).name for i in range(7)]
    first = env.client.list_tasks(request=tasks_v2.ListTasksRequest(parent=QUEUE, page_size=3))
    page = next(iter(first.pages))
    assert [task.name for task in page.tasks] == names[:3]
    env.client.delete_task(name=names[3])
    rest = env.client.list_tasks(
        request=tasks_v2.ListTasksRequest(parent=QUEUE, page_size=3, page_token=page.next_page_token)
    )
    assert [task.name for task in rest] == names[4:]
    with pytest.raises(exceptions.InvalidArgument, match="page_token"):
        list(env.client.list_tasks(request=tasks_v2.ListTasksRequest(parent=QUEUE, page_token="garbage")))


def test_get_and_delete_unknown_or_malformed_names(env: Env) -> None:
    with pytest.raises(exceptions.NotFound):
        env.client.get_task(name=task_name("nope"))
    with pytest.raises(exceptions.NotFound):
        env.client.delete_task(name=task_name("nope"))
    with pytest.raises(exceptions.InvalidArgument, match="formatted like"):
        env.client.get_task(name="tasks/nope")


def test_run_task_dispatches_a_future_task_now_even_when_paused(env: Env) -> None:
    env.client.pause_queue(name=QUEUE)
    later = env.clock.now() + dt.timedelta(hours=1)
    created = env.client.create_task(parent=QUEUE, task=http_task(name=task_name("manual"), schedule_time=later))
    ran = env.client.run_task(name=created.name)
    assert ran.dispatch_count == 1
    assert ran.last_attempt.dispatch_time.timestamp() == pytest.approx(env.clock.now().timestamp(), abs=1e-3)
    env.settle()
    assert env.worker.paths() == ["/work"]
    with pytest.raises(exceptions.NotFound):
        env.client.get_task(name=created.name)


def test_batch_create_is_a_done_operation_with_per_request_failures(env: Env) -> None:
    env.client.pause_queue(name=QUEUE)
    env.client.create_task(parent=QUEUE, task=http_task(name=task_name("dup")))
    requests = [
        tasks_v2.CreateTaskRequest(parent=QUEUE, task=http_task(name=task_name("b1"))),
        tasks_v2.CreateTaskRequest(parent=QUEUE, task=http_task(name=task_name("dup"))),
        tasks_v2.CreateTaskRequest(parent=QUEUE, task=http_task(url="nope")),
        tasks_v2.CreateTaskRequest(parent=QUEUE, task=http_task(name=task_name("b2"))),
    ]
    operation = env.client.batch_create_tasks(request=tasks_v2.BatchCreateTasksRequest(parent=QUEUE, requests=requests))
    response = operation.result(timeout=5)  # type: ignore[no-untyped-call, unused-ignore]
    assert [task.name for task in response.tasks] == [task_name("b1"), task_name("b2")]
    metadata = operation.metadata
    assert metadata.state == tasks_v2.BatchCreateTasksMetadata.State.PARTIALLY_SUCCEEDED
    assert {index: status.code for index, status in metadata.failed_requests.items()} == {1: 6, 2: 3}
    fetched = env.client.transport.operations_client.get_operation(operation.operation.name)
    assert fetched.done
    assert fetched.name == operation.operation.name


def test_batch_create_rejects_too_many_and_unknown_operations(env: Env) -> None:
    requests = [tasks_v2.CreateTaskRequest(parent=QUEUE, task=http_task()) for _ in range(101)]
    with pytest.raises(exceptions.InvalidArgument, match="at most 100"):
        env.client.batch_create_tasks(request=tasks_v2.BatchCreateTasksRequest(parent=QUEUE, requests=requests))
    with pytest.raises(exceptions.NotFound):
        env.client.transport.operations_client.get_operation(f"{LOCATION}/operations/unknown")


def test_batch_create_with_the_same_request_id_is_not_repeated(env: Env) -> None:
    env.client.pause_queue(name=QUEUE)
    request = tasks_v2.BatchCreateTasksRequest(
        parent=QUEUE, requests=[tasks_v2.CreateTaskRequest(parent=QUEUE, task=http_task())], request_id="r-1"
    )
    first = env.client.batch_create_tasks(request=request)
    second = env.client.batch_create_tasks(request=request)
    assert first.operation.name == second.operation.name
    assert len(list(env.client.list_tasks(parent=QUEUE))) == 1


async def test_the_async_client_works_the_same() -> None:
    worker = ScriptedWorker()
    async with Emulator(deliver_to=worker, queues=[QUEUE]) as emu:
        client = emu.async_tasks_client()
        created = await client.create_task(parent=QUEUE, task=http_task(name=task_name("a1"), body=b"{}"))
        with pytest.raises(exceptions.AlreadyExists):
            await client.create_task(parent=QUEUE, task=http_task(name=task_name("a1")))
        await emu.wait_until_idle_async()
        assert worker.paths() == ["/work"]
        assert created.name == task_name("a1")
        pager = await client.list_tasks(parent=QUEUE)
        assert [task async for task in pager] == []
        operation = await client.batch_create_tasks(
            request=tasks_v2.BatchCreateTasksRequest(
                parent=QUEUE, requests=[tasks_v2.CreateTaskRequest(parent=QUEUE, task=http_task())]
            )
        )
        assert len((await operation.result()).tasks) == 1  # type: ignore[no-untyped-call, unused-ignore]
        await emu.wait_until_idle_async()
        assert len(worker.received) == 2
        await client.transport.close()  # type: ignore[no-untyped-call, unused-ignore]
