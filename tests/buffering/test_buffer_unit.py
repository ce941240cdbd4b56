"""The buffer's sending rules against an in-memory sender (the emulator tests cover the real path)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest
from google.cloud import tasks_v2

from fastapi_gcp_tasks.buffering import BufferStats, LostTask, RetryPolicy, require_buffer, task_buffer
from fastapi_gcp_tasks.dispatch._sink import current_sink
from fastapi_gcp_tasks.exception import BufferRequiredError, SendError, TaskArgumentError

from ._fakes import RecordingSender, prepared

FAST_RETRY = RetryPolicy(attempts=3, initial_backoff=0.001, max_backoff=0.002)


def unavailable() -> SendError:
    return SendError("create_task failed: ServiceUnavailable", retryable=True)


async def test_tasks_are_kept_until_the_block_ends_then_created_once() -> None:
    sender = RecordingSender()
    async with task_buffer() as buffer:
        task = prepared(sender)
        returned = await buffer.submit_async(task)
        assert returned.name == task.name
        assert sender.calls == []
    assert sender.created == [task.name]
    assert buffer.report is not None
    assert buffer.report.created == 1
    assert buffer.report.ok


async def test_the_buffer_is_the_current_sink_only_inside_the_block() -> None:
    assert current_sink() is None
    async with task_buffer() as buffer:
        assert current_sink() is buffer
    assert current_sink() is None


async def test_a_raising_block_sends_nothing_and_logs_the_count(caplog: pytest.LogCaptureFixture) -> None:
    sender = RecordingSender()
    stats = BufferStats()

    async def job() -> None:
        async with task_buffer(stats=stats) as buffer:
            await buffer.submit_async(prepared(sender))
            buffer.submit(prepared(sender))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await job()
    assert sender.calls == []
    assert stats.discarded == 2
    assert "dropped 2 buffered task(s)" in caplog.text


async def test_many_tasks_of_one_queue_go_in_batches_of_at_most_100() -> None:
    sender = RecordingSender()
    async with task_buffer(batch_from=3) as buffer:
        names = [(await buffer.submit_async(prepared(sender))).name for _ in range(150)]
        await buffer.submit_async(prepared(sender, queue="projects/p/locations/l/queues/other"))
    kinds = sorted((kind, len(batch)) for kind, batch in sender.calls)
    assert kinds == [("batch", 50), ("batch", 100), ("create", 1)]
    assert set(names) < set(sender.created)
    assert len(sender.created) == 151
    assert buffer.stats.calls == 3


async def test_concurrency_is_bounded() -> None:
    sender = RecordingSender(delay=0.01)
    async with task_buffer(max_concurrency=4, batch_from=1000) as buffer:
        for i in range(20):
            await buffer.submit_async(prepared(sender, queue=f"projects/p/locations/l/queues/q{i}"))
    assert len(sender.created) == 20
    assert 1 < sender.max_in_flight <= 4


async def test_retryable_failures_are_retried_and_created_once() -> None:
    sender = RecordingSender()
    task = prepared(sender)
    sender.failures[task.name] = [unavailable(), unavailable()]
    async with task_buffer(retry=FAST_RETRY) as buffer:
        await buffer.submit_async(task)
    assert sender.created == [task.name]
    assert buffer.stats.retried == 2
    assert buffer.stats.failed == 0


async def test_a_retry_after_an_unseen_success_counts_as_created() -> None:
    sender = RecordingSender()
    tasks = [prepared(sender) for _ in range(4)]
    sender.created.append(tasks[0].name)  # the first attempt reached the service, its answer did not
    sender.batch_error.append(unavailable())
    async with task_buffer(retry=FAST_RETRY, batch_from=2) as buffer:
        for task in tasks:
            await buffer.submit_async(task)
    assert sorted(sender.created) == sorted(task.name for task in tasks)
    assert buffer.report is not None
    assert (buffer.report.created, buffer.report.already_existed) == (3, 1)


async def test_only_the_failed_part_of_a_batch_is_retried() -> None:
    sender = RecordingSender()
    tasks = [prepared(sender) for _ in range(5)]
    sender.failures[tasks[2].name] = [unavailable()]
    async with task_buffer(retry=FAST_RETRY, batch_from=2) as buffer:
        for task in tasks:
            await buffer.submit_async(task)
    assert sender.calls[1] == ("create", [tasks[2].name])
    assert len(sender.created) == 5


async def test_exhausted_retries_go_to_the_fallback_with_names() -> None:
    sender = RecordingSender()
    ok, doomed, refused = prepared(sender), prepared(sender), prepared(sender)
    sender.failures[doomed.name] = [unavailable() for _ in range(5)]
    sender.failures[refused.name] = [SendError("create_task failed: PermissionDenied", retryable=False)]
    received: list[LostTask] = []

    async def fallback(lost: Sequence[LostTask]) -> None:
        received.extend(lost)

    async with task_buffer(retry=FAST_RETRY, fallback=fallback) as buffer:
        for task in (ok, doomed, refused):
            await buffer.submit_async(task)
    assert sender.created == [ok.name]
    assert sorted(item.name for item in received) == sorted([doomed.name, refused.name])
    assert all(isinstance(item.error, SendError) for item in received)
    assert buffer.stats.snapshot()["failed"] == 2
    assert buffer.stats.lost == 0


async def test_without_a_fallback_every_lost_task_is_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    sender = RecordingSender()
    task = prepared(sender)
    sender.failures[task.name] = [SendError("create_task failed: PermissionDenied", retryable=False)]
    with caplog.at_level(logging.ERROR, logger="fastapi_gcp_tasks.buffering"):
        async with task_buffer() as buffer:
            await buffer.submit_async(task)
    assert buffer.stats.lost == 1
    assert task.name in caplog.text


async def test_a_raising_fallback_still_logs_every_task(caplog: pytest.LogCaptureFixture) -> None:
    sender = RecordingSender()
    task = prepared(sender)
    sender.failures[task.name] = [SendError("create_task failed: NotFound", retryable=False)]

    def fallback(lost: Sequence[LostTask]) -> None:
        raise OSError("outbox unreachable")

    async with task_buffer(fallback=fallback) as buffer:
        await buffer.submit_async(task)
    assert buffer.stats.lost == 1
    assert task.name in caplog.text
    assert "outbox unreachable" in caplog.text


def test_sync_block_sends_with_the_blocking_sender_and_retries() -> None:
    sender = RecordingSender()
    tasks = [prepared(sender) for _ in range(5)]
    sender.failures[tasks[1].name] = [unavailable()]
    with task_buffer(retry=FAST_RETRY) as buffer:
        for task in tasks:
            buffer.submit(task)
        assert sender.calls == []
    assert sorted(sender.created) == sorted(task.name for task in tasks)
    assert buffer.stats.retried == 1


def test_sync_block_hands_failures_to_an_async_fallback() -> None:
    sender = RecordingSender()
    task = prepared(sender)
    sender.failures[task.name] = [SendError("refused", retryable=False)]
    received: list[str] = []

    async def fallback(lost: Sequence[LostTask]) -> None:
        await asyncio.sleep(0)
        received.extend(item.name for item in lost)

    with task_buffer(fallback=fallback) as buffer:
        buffer.submit(task)
    assert received == [task.name]


async def test_a_task_reaching_a_closed_buffer_is_sent_at_once() -> None:
    sender = RecordingSender()
    async with task_buffer() as buffer:
        pass
    late = prepared(sender)
    result = await buffer.submit_async(late)
    assert result.name == late.name
    assert sender.created == [late.name]
    sync_late = prepared(sender)
    buffer.submit(sync_late)
    assert sender.created == [late.name, sync_late.name]


async def test_require_buffer_refuses_outside_and_forwards_inside() -> None:
    sender = RecordingSender()
    with pytest.raises(BufferRequiredError):
        require_buffer.submit(prepared(sender))
    with pytest.raises(BufferRequiredError):
        await require_buffer.submit_async(prepared(sender))
    async with task_buffer() as buffer:
        task = prepared(sender)
        assert (await require_buffer.submit_async(task)).name == task.name
        assert buffer.tasks == (task,)
    assert sender.created == [task.name]


def test_a_buffer_cannot_be_entered_twice() -> None:
    buffer = task_buffer()
    with buffer, pytest.raises(RuntimeError, match="only once"), buffer:
        pass


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"batch_from": 1}, "batch_from"),
        ({"fallback": "log"}, "fallback"),
        ({"retry": 3}, "retry"),
    ],
)
def test_bad_configuration_names_the_parameter(kwargs: dict[str, object], param: str) -> None:
    with pytest.raises(TaskArgumentError) as caught:
        task_buffer(**kwargs)  # type: ignore[arg-type]
    assert caught.value.param == param


def test_bad_retry_policy_names_the_parameter() -> None:
    with pytest.raises(TaskArgumentError) as caught:
        RetryPolicy(attempts=0)
    assert caught.value.param == "attempts"
    with pytest.raises(TaskArgumentError) as caught:
        RetryPolicy(max_backoff=-1)
    assert caught.value.param == "max_backoff"


def test_placeholder_is_the_request_task() -> None:
    sender = RecordingSender()
    task = prepared(sender)
    with task_buffer() as buffer:
        placeholder = buffer.submit(task)
    assert isinstance(placeholder, tasks_v2.Task)
    assert placeholder.http_request.url == "http://127.0.0.1/hello"


async def test_a_sync_flush_inside_a_loop_logs_instead_of_awaiting_an_async_fallback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sender = RecordingSender()
    task = prepared(sender)
    sender.failures[task.name] = [SendError("refused", retryable=False)]

    async def fallback(lost: Sequence[LostTask]) -> None:
        raise AssertionError("not reachable from a sync flush inside a running loop")

    with task_buffer(fallback=fallback) as buffer:
        buffer.submit(task)
    assert buffer.stats.lost == 1
    assert task.name in caplog.text
