"""Cloud Tasks tasks through every transport: each RPC, its errors and the output-only fields it fills."""

from __future__ import annotations

import datetime as dt

from google.cloud import tasks_v2
from google.protobuf import duration_pb2, timestamp_pb2

from tests._support import listening_socket, wait_for
from tests._support.ports import url_of as socket_url

from ._api import expect_status
from .conftest import LOCATION, QUEUE, Env

FULL = tasks_v2.Task.View.FULL


def http_task(url: str, *, name: str = "", body: bytes = b"", **fields: object) -> tasks_v2.Task:
    return tasks_v2.Task(name=name, http_request=tasks_v2.HttpRequest(url=url, body=body), **fields)


def stamp(when: dt.datetime) -> timestamp_pb2.Timestamp:
    result = timestamp_pb2.Timestamp()
    result.FromDatetime(when)
    return result


def test_create_task_fills_the_output_fields(env: Env) -> None:
    env.api.tasks.pause_queue(name=QUEUE)
    task = env.api.tasks.create_task(parent=QUEUE, task=http_task(f"{env.worker.url}/a", body=b"payload"))
    now = env.clock.now()
    assert task.name.startswith(f"{QUEUE}/tasks/")
    assert task.create_time.timestamp() == int(now.timestamp())  # truncated to the second
    assert task.schedule_time.timestamp() == now.timestamp()  # unset: the creation instant
    assert task.dispatch_deadline.total_seconds() == 600
    assert task.http_request.http_method == tasks_v2.HttpMethod.POST
    assert (task.dispatch_count, task.response_count) == (0, 0)
    assert "first_attempt" not in task
    assert "last_attempt" not in task
    assert task.view == tasks_v2.Task.View.BASIC
    assert task.http_request.body == b""  # BASIC leaves the body out
    full = env.api.tasks.get_task(request={"name": task.name, "response_view": FULL})
    assert (full.view, full.http_request.body) == (FULL, b"payload")


def test_stored_headers_carry_the_user_agent_of_cloud_tasks(env: Env) -> None:
    """Recorded from the service: CreateTask and GetTask show `User-Agent: Google-Cloud-Tasks` (a regression)."""
    env.api.tasks.pause_queue(name=QUEUE)
    task = http_task(f"{env.worker.url}/a")
    task.http_request.headers = {"user-agent": "mine/1.0", "X-Custom": "kept"}
    created = env.api.tasks.create_task(parent=QUEUE, task=task)
    assert dict(created.http_request.headers) == {"User-Agent": "Google-Cloud-Tasks", "X-Custom": "kept"}
    assert env.api.tasks.get_task(name=created.name).http_request.headers["User-Agent"] == "Google-Cloud-Tasks"


def test_a_schedule_time_in_the_past_becomes_now_and_one_too_far_ahead_is_refused(env: Env) -> None:
    env.api.tasks.pause_queue(name=QUEUE)
    now = env.clock.now()
    past = env.api.tasks.create_task(
        parent=QUEUE, task=http_task(env.worker.url, schedule_time=stamp(now - dt.timedelta(days=3)))
    )
    assert past.schedule_time.timestamp() == now.timestamp()
    with expect_status("INVALID_ARGUMENT", "30 days"):
        env.api.tasks.create_task(
            parent=QUEUE, task=http_task(env.worker.url, schedule_time=stamp(now + dt.timedelta(days=31)))
        )


def test_create_task_errors(env: Env) -> None:
    url = env.worker.url
    with expect_status("NOT_FOUND"):
        env.api.tasks.create_task(parent=f"{LOCATION}/queues/missing", task=http_task(url))
    with expect_status("INVALID_ARGUMENT", "url"):
        env.api.tasks.create_task(parent=QUEUE, task=http_task("ftp://example.com/x"))
    with expect_status("INVALID_ARGUMENT", "dispatch_deadline"):
        env.api.tasks.create_task(parent=QUEUE, task=http_task(url, dispatch_deadline=duration_pb2.Duration(seconds=5)))
    with expect_status("INVALID_ARGUMENT", "task id"):
        env.api.tasks.create_task(parent=QUEUE, task=http_task(url, name=f"{QUEUE}/tasks/has.dot"))
    get_only = tasks_v2.Task(http_request=tasks_v2.HttpRequest(url=url, http_method=tasks_v2.HttpMethod.GET, body=b"x"))
    with expect_status("INVALID_ARGUMENT", "body"):
        env.api.tasks.create_task(parent=QUEUE, task=get_only)
    with expect_status("INVALID_ARGUMENT", "1 MB"):
        env.api.tasks.create_task(parent=QUEUE, task=http_task(url, body=b"x" * (1024 * 1024)))


def test_named_tasks_keep_their_name_taken_after_they_end(env: Env) -> None:
    name = f"{QUEUE}/tasks/once"
    env.api.tasks.create_task(parent=QUEUE, task=http_task(f"{env.worker.url}/once", name=name))
    with expect_status("ALREADY_EXISTS"):
        env.api.tasks.create_task(parent=QUEUE, task=http_task(env.worker.url, name=name))
    env.settle()
    with expect_status("NOT_FOUND"):
        env.api.tasks.get_task(name=name)
    with expect_status("ALREADY_EXISTS", "existed recently"):
        env.api.tasks.create_task(parent=QUEUE, task=http_task(env.worker.url, name=name))


def test_delete_task(env: Env) -> None:
    env.api.tasks.pause_queue(name=QUEUE)
    task = env.api.tasks.create_task(parent=QUEUE, task=http_task(env.worker.url))
    env.api.tasks.delete_task(name=task.name)
    for call in (env.api.tasks.get_task, env.api.tasks.delete_task, env.api.tasks.run_task):
        with expect_status("NOT_FOUND", "existed recently"):  # recorded from the service
            call(name=task.name)
    with expect_status("NOT_FOUND", "does not exist$"):
        env.api.tasks.get_task(name=f"{QUEUE}/tasks/never")


def test_urls_are_stored_percent_encoded_as_they_are_delivered(env: Env) -> None:
    """HttpRequest.url: "Cloud Tasks will encode some characters"; GetTask shows the URL the worker gets."""
    env.api.tasks.pause_queue(name=QUEUE)
    task = env.api.tasks.create_task(parent=QUEUE, task=http_task(f"{env.worker.url}/café?q=ü&r=%41&s=100%"))
    expected = f"{env.worker.url}/caf%C3%A9?q=%C3%BC&r=%41&s=100%25"
    assert task.http_request.url == expected
    plain = env.api.tasks.create_task(parent=QUEUE, task=http_task(f"{env.worker.url}/plain?a=1#frag"))
    assert plain.http_request.url == f"{env.worker.url}/plain?a=1#frag"  # nothing to encode: kept as given
    env.api.tasks.resume_queue(name=QUEUE)
    env.settle()
    assert sorted(request.path for request in env.worker.received) == [
        "/caf%C3%A9?q=%C3%BC&r=%41&s=100%25",
        "/plain?a=1",
    ]
    with expect_status("INVALID_ARGUMENT", "2083"):
        env.api.tasks.create_task(parent=QUEUE, task=http_task(f"{env.worker.url}/{'é' * 700}"))


def test_run_task_dispatches_a_paused_queue_s_task_now(env: Env) -> None:
    env.api.tasks.pause_queue(name=QUEUE)
    later = stamp(env.clock.now() + dt.timedelta(hours=1))
    task = env.api.tasks.create_task(parent=QUEUE, task=http_task(f"{env.worker.url}/run", schedule_time=later))
    ran = env.api.tasks.run_task(name=task.name)
    assert ran.dispatch_count == 1
    assert ran.last_attempt.dispatch_time.timestamp() == env.clock.now().timestamp()
    assert ran.first_attempt.dispatch_time == ran.last_attempt.dispatch_time
    env.settle()
    assert [request.path for request in env.worker.received] == ["/run"]
    with expect_status("NOT_FOUND"):  # it succeeded, so it is gone
        env.api.tasks.run_task(name=task.name)


def test_run_task_dispatches_a_task_whose_attempt_is_running(env: Env) -> None:
    """RunTask: "Cloud Tasks will dispatch the task, even if the task is already running" (a regression: it was
    FAILED_PRECONDITION). The worker here accepts connections and never answers."""
    with listening_socket() as silent:
        task = env.api.tasks.create_task(parent=QUEUE, task=http_task(f"{socket_url(silent)}/hang"))
        wait_for(lambda: env.api.tasks.get_task(name=task.name).dispatch_count == 1, "the first attempt to start")
        assert env.api.tasks.run_task(name=task.name).dispatch_count == 2


def test_batch_create_tasks_creates_each_request_on_its_own(env: Env) -> None:
    env.api.tasks.pause_queue(name=QUEUE)
    requests = [
        tasks_v2.CreateTaskRequest(parent=QUEUE, task=http_task(f"{env.worker.url}/{i}", name=f"{QUEUE}/tasks/b{i}"))
        for i in range(3)
    ]
    requests.append(tasks_v2.CreateTaskRequest(parent=QUEUE, task=http_task("not a url")))
    operation = env.api.tasks.batch_create_tasks(request={"parent": QUEUE, "requests": requests})
    response = env.api.operation_result(operation)
    assert [task.name for task in response.tasks] == [f"{QUEUE}/tasks/b{i}" for i in range(3)]
    metadata = operation.metadata
    assert metadata.state == tasks_v2.BatchCreateTasksMetadata.State.PARTIALLY_SUCCEEDED
    assert list(metadata.failed_requests) == [3]


def test_batch_create_tasks_refuses_a_request_for_another_queue_whole(env: Env) -> None:
    """BatchCreateTasksRequest.requests: the parent of each request "will be the same ... This validation happens
    on the client side as well as in the handler" (a regression: the other requests used to be created)."""
    other = f"{LOCATION}/queues/other"
    env.api.tasks.create_queue(parent=LOCATION, queue=tasks_v2.Queue(name=other))
    requests = [
        tasks_v2.CreateTaskRequest(parent=QUEUE, task=http_task(env.worker.url)),
        tasks_v2.CreateTaskRequest(parent=other, task=http_task(env.worker.url)),
    ]
    with expect_status("INVALID_ARGUMENT", r"requests\[1\]\.parent"):
        env.api.operation_result(env.api.tasks.batch_create_tasks(request={"parent": QUEUE, "requests": requests}))
    assert env.api.items(env.api.tasks.list_tasks(parent=QUEUE)) == []
    with expect_status("NOT_FOUND"):
        env.api.tasks.batch_create_tasks(
            request={"parent": f"{LOCATION}/queues/missing", "requests": [{"task": http_task(env.worker.url)}]}
        )


def test_batch_delete_tasks_deletes_each_name_on_its_own(env: Env) -> None:
    """BatchDeleteTasks: "a non-atomic operation: if deletion fails for some tasks, it can still succeed for
    others"; failures are in the metadata, and the names stay taken like any deleted task's."""
    env.api.tasks.pause_queue(name=QUEUE)
    names = [env.api.tasks.create_task(parent=QUEUE, task=http_task(env.worker.url)).name for _ in range(2)]
    missing = f"{QUEUE}/tasks/missing"
    operation = env.api.tasks.batch_delete_tasks(parent=QUEUE, names=[*names, missing])
    env.api.operation_result(operation)
    assert operation.metadata.state == tasks_v2.BatchDeleteTasksMetadata.State.PARTIALLY_SUCCEEDED
    assert list(operation.metadata.failed_requests) == [2]
    assert env.api.items(env.api.tasks.list_tasks(parent=QUEUE)) == []
    with expect_status("ALREADY_EXISTS"):
        env.api.tasks.create_task(parent=QUEUE, task=http_task(env.worker.url, name=names[0]))
    again = env.api.tasks.batch_delete_tasks(parent=QUEUE, names=[missing])
    with expect_status("ABORTED", "None of the requests succeeded"):
        env.api.operation_result(again)
    with expect_status("NOT_FOUND"):
        env.api.tasks.batch_delete_tasks(parent=f"{LOCATION}/queues/missing", names=[missing])
