"""What a worker receives, and when, through every transport: headers, retries and backoff on a manual clock."""

from __future__ import annotations

import pytest
from google.cloud import tasks_v2
from google.protobuf import duration_pb2

from ._api import expect_status
from .conftest import QUEUE, Env


def retry_queue(env: Env, **retry: object) -> None:
    queue = tasks_v2.Queue(name=QUEUE, retry_config=tasks_v2.RetryConfig(**retry))
    env.api.tasks.update_queue(queue=queue, update_mask={"paths": ["retry_config"]})


def failing_task(env: Env, path: str) -> tasks_v2.Task:
    task: tasks_v2.Task = env.api.tasks.create_task(
        parent=QUEUE, task=tasks_v2.Task(http_request=tasks_v2.HttpRequest(url=f"{env.worker.url}{path}"))
    )
    return task


def seconds(value: float) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=int(value), nanos=round(value % 1 * 1e9))


def test_headers_of_the_first_attempt(env: Env) -> None:
    task = tasks_v2.Task(
        name=f"{QUEUE}/tasks/hello",
        http_request=tasks_v2.HttpRequest(
            url=f"{env.worker.url}/hello",
            body=b"{}",
            headers={"X-Mine": "1", "User-Agent": "mine", "X-CloudTasks-TaskName": "forged", "X-Google-Thing": "x"},
        ),
    )
    created = env.api.tasks.create_task(parent=QUEUE, task=task)
    env.settle()
    [received] = env.worker.received
    headers = received.headers
    assert (received.method, received.path, received.body) == ("POST", "/hello", b"{}")
    assert headers["user-agent"] == "Google-Cloud-Tasks"
    assert headers["x-cloudtasks-queuename"] == "main"
    assert headers["x-cloudtasks-taskname"] == "hello"
    assert headers["x-cloudtasks-taskretrycount"] == "0"
    assert headers["x-cloudtasks-taskexecutioncount"] == "0"
    assert float(headers["x-cloudtasks-tasketa"]) == created.schedule_time.timestamp()
    assert headers["x-mine"] == "1"
    assert "x-google-thing" not in headers
    assert "content-type" not in headers  # Cloud Tasks sets none
    assert "x-cloudtasks-taskpreviousresponse" not in headers


def test_headers_of_retries(env: Env) -> None:
    """Recorded from the service: ExecutionCount does not count 5xx; PreviousResponse from the second attempt;
    RetryReason present on retries."""
    env.worker.statuses["/flaky"] = [503, 404, 200]
    retry_queue(env, min_backoff=seconds(1), max_backoff=seconds(10))
    failing_task(env, "/flaky")
    env.settle()
    env.settle(advance=1)
    env.settle(advance=2)
    seen = [
        (
            r.headers["x-cloudtasks-taskretrycount"],
            r.headers["x-cloudtasks-taskexecutioncount"],
            r.headers.get("x-cloudtasks-taskpreviousresponse"),
            "x-cloudtasks-taskretryreason" in r.headers,
        )
        for r in env.worker.received
    ]
    assert seen == [("0", "0", None, False), ("1", "0", "503", True), ("2", "1", "404", True)]
    assert env.api.items(env.api.tasks.list_tasks(parent=QUEUE)) == []


def test_backoff_follows_the_documented_example(env: Env) -> None:
    """RetryConfig.max_doublings: min 10 s, max 300 s, 3 doublings retry "at 10s, 20s, 40s, 80s, 160s, 240s, 300s,
    300s, ..."; the attempt and dispatch counts and last_attempt follow each attempt."""
    env.worker.statuses["/fail"] = [500] * 9
    retry_queue(env, min_backoff=seconds(10), max_backoff=seconds(300), max_doublings=3, max_attempts=9)
    task = failing_task(env, "/fail")
    first_dispatch = env.clock.now().timestamp()
    env.settle()
    delays = []
    for attempt in range(1, 9):
        got = env.api.tasks.get_task(name=task.name)
        assert (got.dispatch_count, got.response_count) == (attempt, attempt)
        assert got.last_attempt.response_status.code == 13  # INTERNAL for a 500
        assert got.first_attempt.dispatch_time.timestamp() == first_dispatch
        assert got.last_attempt.dispatch_time.timestamp() == env.clock.now().timestamp()
        delay = got.schedule_time.timestamp() - env.clock.now().timestamp()
        delays.append(round(delay, 6))
        env.settle(advance=delay)
    assert delays == [10, 20, 40, 80, 160, 240, 300, 300]
    with expect_status("NOT_FOUND"):  # the ninth attempt was the last one (max_attempts 9)
        env.api.tasks.get_task(name=task.name)
    assert len(env.worker.received) == 9


@pytest.mark.parametrize(
    ("retry", "attempts"),
    [
        ({"max_attempts": 1}, 1),
        ({"max_attempts": 3}, 3),
        # with both limits, "the task is retried until both limits are reached"
        ({"max_attempts": 2, "max_retry_duration": seconds(5)}, 4),
        ({"max_attempts": -1, "max_retry_duration": seconds(5)}, 4),
    ],
    ids=["one-attempt", "three-attempts", "attempts-and-duration", "unlimited-attempts-and-duration"],
)
def test_when_retries_stop(env: Env, retry: dict[str, object], attempts: int) -> None:
    env.worker.statuses["/fail"] = [500] * 10
    retry_queue(env, min_backoff=seconds(2), max_backoff=seconds(2), **retry)
    task = failing_task(env, "/fail")
    env.settle()
    for _ in range(12):
        env.settle(advance=2)
    assert len(env.worker.received) == attempts
    with expect_status("NOT_FOUND"):
        env.api.tasks.get_task(name=task.name)
