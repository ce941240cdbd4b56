"""How the emulator delivers tasks: headers, schedule, retries and backoff, rate and concurrency limits."""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud import tasks_v2
from google.protobuf import duration_pb2, field_mask_pb2

from fastapi_gcp_tasks.emulator import Emulator
from fastapi_gcp_tasks.emulator._tasks_dispatch import retry_after_seconds
from fastapi_gcp_tasks.emulator._types import DeliveryResult
from tests._support import TIMEOUT, wait_for

from ._tasks_support import QUEUE, URL, ScriptedWorker, http_task, task_name
from .conftest import Env


def _retry(env: Env, **config: object) -> None:
    env.client.update_queue(
        queue=tasks_v2.Queue(name=QUEUE, retry_config=tasks_v2.RetryConfig(**config)),
        update_mask=field_mask_pb2.FieldMask(paths=[f"retry_config.{key}" for key in config]),
    )


def _seconds(value: float) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=int(value), nanos=round((value % 1) * 1e9))


def test_every_cloud_tasks_header_is_sent(env: Env) -> None:
    created = env.client.create_task(
        parent=QUEUE,
        task=http_task(
            name=task_name("hdr"),
            body=b'{"a": 1}',
            headers={"Content-Type": "application/json", "X-Custom": "yes", "Host": "evil", "User-Agent": "me"},
        ),
    )
    env.settle()
    [request] = env.worker.received
    headers = request.headers
    assert request.method == "POST"
    assert request.body == b'{"a": 1}'
    assert headers["x-cloudtasks-queuename"] == "default"
    assert headers["x-cloudtasks-taskname"] == "hdr"
    assert headers["x-cloudtasks-taskretrycount"] == "0"
    assert headers["x-cloudtasks-taskexecutioncount"] == "0"
    assert float(headers["x-cloudtasks-tasketa"]) == pytest.approx(created.schedule_time.timestamp(), abs=1e-5)
    assert headers["user-agent"] == "Google-Cloud-Tasks"
    assert headers["content-type"] == "application/json"
    assert headers["x-custom"] == "yes"
    assert headers["host"] == "worker.test"
    assert "x-cloudtasks-taskpreviousresponse" not in headers
    assert "authorization" not in headers


def test_no_content_type_unless_the_task_has_one(env: Env) -> None:
    env.client.create_task(parent=QUEUE, task=http_task(body=b"raw"))
    env.settle()
    assert "content-type" not in env.worker.received[0].headers


def test_a_task_waits_for_its_schedule_time(env: Env) -> None:
    eta = env.clock.now() + dt.timedelta(seconds=90)
    env.client.create_task(parent=QUEUE, task=http_task(schedule_time=eta))
    env.settle(89)
    assert env.worker.received == []
    env.settle(1)
    assert len(env.worker.received) == 1
    assert float(env.worker.received[0].headers["x-cloudtasks-tasketa"]) == pytest.approx(eta.timestamp(), abs=1e-5)


def test_retries_back_off_and_count_attempts_like_cloud_tasks(env: Env) -> None:
    _retry(env, min_backoff=_seconds(1), max_backoff=_seconds(10), max_doublings=2)
    env.worker.script["/work"] = [503, 500, 404, 500, 500, 200]
    name = task_name("flaky")
    env.client.create_task(parent=QUEUE, task=http_task(name=name))
    env.settle()
    # intervals: 1, 2, 4 (two doublings), then linear by 4: 8, then capped at 10
    for expected_delay in (1, 2, 4, 8, 10):
        before = len(env.worker.received)
        env.settle(expected_delay - 0.01)
        assert len(env.worker.received) == before, f"retry came before {expected_delay} s"
        env.settle(0.01)
        assert len(env.worker.received) == before + 1, f"no retry after {expected_delay} s"
    headers = [request.headers for request in env.worker.received]
    assert [h["x-cloudtasks-taskretrycount"] for h in headers] == ["0", "1", "2", "3", "4", "5"]
    assert [h["x-cloudtasks-taskexecutioncount"] for h in headers] == ["0", "0", "0", "1", "1", "1"]
    assert [h.get("x-cloudtasks-taskpreviousresponse") for h in headers] == [None, "503", "500", "404", "500", "500"]
    assert headers[1]["x-cloudtasks-taskretryreason"]
    with pytest.raises(exceptions.NotFound):
        env.client.get_task(name=name)
    assert [record.status for record in env.emu.deliveries] == [503, 500, 404, 500, 500, 200]
    assert [record.attempt for record in env.emu.deliveries] == [1, 2, 3, 4, 5, 6]


def test_a_failed_task_shows_its_attempts_while_waiting_to_retry(env: Env) -> None:
    env.worker.script["/work"] = [500]
    name = task_name("shown")
    env.client.create_task(parent=QUEUE, task=http_task(name=name))
    env.settle()
    task = env.client.get_task(name=name)
    assert (task.dispatch_count, task.response_count) == (1, 1)
    assert task.first_attempt.dispatch_time == task.last_attempt.dispatch_time
    assert task.last_attempt.response_status.code == 13
    assert task.last_attempt.response_time.timestamp() >= task.last_attempt.dispatch_time.timestamp()
    assert task.schedule_time.timestamp() == pytest.approx(env.clock.now().timestamp() + 0.1, abs=1e-3)


def test_max_attempts_gives_up_and_deletes_the_task(env: Env) -> None:
    _retry(env, max_attempts=3, min_backoff=_seconds(1), max_backoff=_seconds(1))
    env.worker.script["/work"] = [500] * 10
    name = task_name("doomed")
    env.client.create_task(parent=QUEUE, task=http_task(name=name))
    env.settle()
    for _ in range(5):
        env.settle(1)
    assert len(env.worker.received) == 3
    with pytest.raises(exceptions.NotFound):
        env.client.get_task(name=name)


def test_max_retry_duration_needs_both_limits_reached(env: Env) -> None:
    _retry(env, max_attempts=2, max_retry_duration=_seconds(10), min_backoff=_seconds(3), max_backoff=_seconds(3))
    env.worker.script["/work"] = [500] * 10
    env.client.create_task(parent=QUEUE, task=http_task())
    env.settle()
    for _ in range(6):
        env.settle(3)
    # attempts at 0, 3, 6, 9, 12: the one at 12 s is past the 10 s limit and the 2 attempts, so it is the last
    assert len(env.worker.received) == 5


def test_unlimited_attempts_with_a_duration_stop_at_the_duration(env: Env) -> None:
    _retry(env, max_attempts=-1, max_retry_duration=_seconds(5), min_backoff=_seconds(2), max_backoff=_seconds(2))
    env.worker.script["/work"] = [500] * 10
    env.client.create_task(parent=QUEUE, task=http_task())
    env.settle()
    for _ in range(6):
        env.settle(2)
    assert len(env.worker.received) == 4  # 0, 2, 4, 6 s


def test_retry_after_is_honoured_on_429_and_503_only(env: Env) -> None:
    env.worker.script["/work"] = [429, 200]
    env.worker.answer_headers["/work"] = {"Retry-After": "30"}
    env.client.create_task(parent=QUEUE, task=http_task())
    env.settle()
    env.settle(29)
    assert len(env.worker.received) == 1
    env.settle(1)
    assert len(env.worker.received) == 2
    env.worker.received.clear()
    env.worker.script["/work"] = [500, 200]
    env.client.create_task(parent=QUEUE, task=http_task())
    env.settle(0.1)
    assert len(env.worker.received) == 2


def test_rate_limit_spends_a_token_bucket(env: Env) -> None:
    env.client.update_queue(
        queue=tasks_v2.Queue(name=QUEUE, rate_limits=tasks_v2.RateLimits(max_dispatches_per_second=2)),
        update_mask=field_mask_pb2.FieldMask(paths=["rate_limits.max_dispatches_per_second"]),
    )
    for _ in range(6):
        env.client.create_task(parent=QUEUE, task=http_task())
    env.settle()
    assert len(env.worker.received) == 2  # the burst
    env.settle(0.5)
    assert len(env.worker.received) == 3
    env.settle(1.5)
    assert len(env.worker.received) == 5  # the bucket holds at most max_burst_size (2) tokens
    env.settle(0.5)
    assert len(env.worker.received) == 6


def test_concurrency_limit_and_a_hanging_worker_holds_only_its_own_slot() -> None:
    worker = ScriptedWorker(slow=0.02)
    with Emulator(deliver_to=worker, queues=[QUEUE]) as emu:
        client = emu.tasks_client()
        client.update_queue(
            queue=tasks_v2.Queue(name=QUEUE, rate_limits=tasks_v2.RateLimits(max_concurrent_dispatches=2)),
            update_mask=field_mask_pb2.FieldMask(paths=["rate_limits.max_concurrent_dispatches"]),
        )
        client.create_task(parent=QUEUE, task=http_task(url="http://worker.test/hang", name=task_name("hang")))
        for _ in range(6):
            client.create_task(parent=QUEUE, task=http_task())
        wait_for(lambda: len(worker.received) >= 7, lambda: f"7 requests; got {worker.paths()}")
        assert sorted(worker.paths()) == ["/hang"] + ["/work"] * 6
        assert worker.max_in_flight == 2
        task = client.get_task(name=task_name("hang"))
        assert task.dispatch_count == 1
        assert task.response_count == 0


def test_a_busy_queue_delivers_in_the_asyncio_tasks_it_has_rather_than_one_per_attempt() -> None:
    """A finished attempt's asyncio task takes the queue's next due attempt (the ASGI app runs in it)."""
    runners: list[asyncio.Task[Any]] = []

    async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]], send: Any) -> None:
        assert scope["type"] == "http"
        while (await receive()).get("more_body"):
            pass
        runner = asyncio.current_task()
        assert runner is not None
        runners.append(runner)  # kept alive, so identities cannot be reused
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with Emulator(deliver_to=app, queues=[QUEUE]) as emu:  # the system clock: attempts run inline
        client = emu.tasks_client()
        client.pause_queue(name=QUEUE)
        client.update_queue(
            queue=tasks_v2.Queue(name=QUEUE, rate_limits=tasks_v2.RateLimits(max_concurrent_dispatches=2)),
            update_mask=field_mask_pb2.FieldMask(paths=["rate_limits.max_concurrent_dispatches"]),
        )
        for _ in range(8):
            client.create_task(parent=QUEUE, task=http_task())
        client.resume_queue(name=QUEUE)
        emu.wait_until_idle(timeout=TIMEOUT)
        assert len(runners) == 8
        assert len(set(runners)) == 2
        assert client.list_tasks(parent=QUEUE).tasks == []


def test_paused_queue_dispatches_nothing_until_resumed(env: Env) -> None:
    env.client.pause_queue(name=QUEUE)
    env.client.create_task(parent=QUEUE, task=http_task())
    env.settle(60)
    assert env.worker.received == []
    env.client.resume_queue(name=QUEUE)
    env.settle()
    assert len(env.worker.received) == 1


def test_deleting_a_task_waiting_for_retry_stops_it(env: Env) -> None:
    env.worker.script["/work"] = [500] * 5
    name = task_name("stop-me")
    env.client.create_task(parent=QUEUE, task=http_task(name=name))
    env.settle()
    env.client.delete_task(name=name)
    env.settle(3600)
    assert len(env.worker.received) == 1


def test_http_methods_and_bodies_are_sent_as_given(env: Env) -> None:
    for method in (tasks_v2.HttpMethod.PUT, tasks_v2.HttpMethod.PATCH, tasks_v2.HttpMethod.GET):
        body = b"" if method == tasks_v2.HttpMethod.GET else b"b"
        env.client.create_task(parent=QUEUE, task=http_task(url=f"{URL}?m={int(method)}", method=method, body=body))
    env.settle()
    assert sorted((request.method, request.body) for request in env.worker.received) == [
        ("GET", b""),
        ("PATCH", b"b"),
        ("PUT", b"b"),
    ]


def test_retry_after_as_an_http_date(env: Env) -> None:
    when = env.clock.now() + dt.timedelta(seconds=120)
    env.worker.script["/work"] = [503, 200]
    env.worker.answer_headers["/work"] = {"Retry-After": email.utils.format_datetime(when, usegmt=True)}
    env.client.create_task(parent=QUEUE, task=http_task())
    env.settle()
    env.settle(118)
    assert len(env.worker.received) == 1
    env.settle(3)
    assert len(env.worker.received) == 2


def test_oauth_token_becomes_an_opaque_bearer_token(env: Env) -> None:
    task = http_task()
    task.http_request.oauth_token = tasks_v2.OAuthToken(service_account_email="sa@test-project.iam.gserviceaccount.com")
    env.client.create_task(parent=QUEUE, task=task)
    env.settle()
    assert env.worker.received[0].headers["authorization"] == (
        "Bearer emulator-oauth-token.sa@test-project.iam.gserviceaccount.com"
    )


def test_a_hanging_worker_times_out_when_the_manual_clock_passes_the_deadline(env: Env) -> None:
    name = task_name("hangs")
    env.client.create_task(parent=QUEUE, task=http_task(url="http://worker.test/hang", name=name, deadline=20))
    wait_for(lambda: env.worker.received, "the hanging attempt to reach the worker")
    assert env.worker.paths() == ["/hang"]
    # A sentinel due at the same instant: once it is delivered, the emulator has seen the clock at 19 s.
    sentinel = task_name("sentinel")
    env.client.create_task(
        parent=QUEUE, task=http_task(name=sentinel, schedule_time=env.clock.now() + dt.timedelta(seconds=19))
    )
    env.clock.advance(19)
    wait_for(lambda: env.emu.deliveries, "the sentinel delivered at 19 s")
    assert [record.source for record in env.emu.deliveries] == [sentinel]
    assert not env.emu.is_idle()
    env.clock.advance(1)
    env.emu.wait_until_idle(timeout=TIMEOUT)
    [record] = [record for record in env.emu.deliveries if record.source == name]
    assert record.status is None
    assert record.error is not None
    assert "20 s deadline" in record.error
    task = env.client.get_task(name=name)
    assert (task.dispatch_count, task.response_count) == (1, 0)
    assert task.last_attempt.response_status.code == 4  # DEADLINE_EXCEEDED


@pytest.mark.parametrize(
    ("header", "wait"),
    [
        ("30", 30.0),
        (" 7 ", 7.0),
        ("9" * 30, 31 * 86400.0),  # any number of digits: capped at the longest a task lives
        ("1e400", None),  # not delay-seconds (1*DIGIT): ignored, never an overflow
        ("-5", None),
        ("1.5", None),
        ("٣", None),  # a non-ASCII digit
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date in the past: no wait
        ("Fri, 31 Dec 9999 23:59:59 GMT", 31 * 86400.0),
    ],
)
def test_retry_after_syntax_and_bounds(header: str, wait: float | None) -> None:
    result = DeliveryResult(status=503, latency=0.0, headers={"retry-after": header})
    assert retry_after_seconds(result, dt.datetime(2026, 1, 1, tzinfo=dt.UTC)) == wait


def test_a_huge_retry_after_reschedules_within_the_tasks_life_and_does_not_hammer(env: Env) -> None:
    env.worker.script["/work"] = [503, 200]
    env.worker.answer_headers["/work"] = {"Retry-After": "9" * 40}
    created = env.client.create_task(parent=QUEUE, task=http_task())
    env.settle()
    assert len(env.worker.received) == 1
    env.settle(3600)
    assert len(env.worker.received) == 1, "the retry waits for Retry-After, not a second"
    again = env.client.get_task(name=created.name)
    ahead = again.schedule_time - env.clock.now()
    assert dt.timedelta(days=30) < ahead <= dt.timedelta(days=31)


def test_a_queue_given_only_max_retry_duration_gets_the_default_doublings(env: Env) -> None:
    queue = tasks_v2.Queue(
        name=QUEUE.rsplit("/", 1)[0] + "/only-duration",
        retry_config=tasks_v2.RetryConfig(max_retry_duration=_seconds(3600)),
    )
    created = env.client.create_queue(parent=QUEUE.rsplit("/queues/", 1)[0], queue=queue)
    assert created.retry_config.max_doublings == 16
    assert created.retry_config.max_retry_duration.total_seconds() == 3600
