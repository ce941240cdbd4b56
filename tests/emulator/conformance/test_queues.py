"""Cloud Tasks queues through every transport: each RPC, its errors, defaults, output fields and update masks."""

from __future__ import annotations

from google.cloud import tasks_v2
from google.protobuf import duration_pb2, field_mask_pb2

from ._api import expect_status
from .conftest import LOCATION, QUEUE, Env

OTHER = f"{LOCATION}/queues/other"


def test_create_queue_fills_the_documented_defaults(env: Env) -> None:
    queue = env.api.tasks.create_queue(parent=LOCATION, queue=tasks_v2.Queue(name=OTHER))
    assert queue.name == OTHER
    assert queue.state == tasks_v2.Queue.State.RUNNING
    assert (queue.rate_limits.max_dispatches_per_second, queue.rate_limits.max_concurrent_dispatches) == (500, 1000)
    assert queue.rate_limits.max_burst_size == 100
    retry = queue.retry_config
    assert (retry.max_attempts, retry.max_doublings) == (100, 16)
    assert (retry.min_backoff.total_seconds(), retry.max_backoff.total_seconds()) == (0.1, 3600)
    assert env.api.tasks.get_queue(name=OTHER) == queue


def test_create_queue_errors(env: Env) -> None:
    with expect_status("ALREADY_EXISTS"):
        env.api.tasks.create_queue(parent=LOCATION, queue=tasks_v2.Queue(name=QUEUE))
    with expect_status("INVALID_ARGUMENT", "queue.name"):
        env.api.tasks.create_queue(parent=LOCATION, queue=tasks_v2.Queue(name=f"{LOCATION}/queues/no_underscore"))
    with expect_status("INVALID_ARGUMENT", "max_dispatches_per_second"):
        env.api.tasks.create_queue(
            parent=LOCATION,
            queue=tasks_v2.Queue(name=OTHER, rate_limits=tasks_v2.RateLimits(max_dispatches_per_second=501)),
        )
    with expect_status("NOT_FOUND"):
        env.api.tasks.get_queue(name=OTHER)


def test_backoffs_are_truncated_to_the_second(env: Env) -> None:
    retry = tasks_v2.RetryConfig(
        min_backoff=duration_pb2.Duration(seconds=2, nanos=700_000_000),
        max_backoff=duration_pb2.Duration(seconds=30, nanos=500_000_000),
        max_retry_duration=duration_pb2.Duration(seconds=90, nanos=1),
    )
    queue = env.api.tasks.create_queue(parent=LOCATION, queue=tasks_v2.Queue(name=OTHER, retry_config=retry))
    got = queue.retry_config
    assert [got.min_backoff.total_seconds(), got.max_backoff.total_seconds()] == [2, 30]
    assert got.max_retry_duration.total_seconds() == 90


def test_update_queue_with_a_mask_changes_only_the_masked_fields(env: Env) -> None:
    source = tasks_v2.Queue(
        name=QUEUE,
        rate_limits=tasks_v2.RateLimits(max_dispatches_per_second=5, max_concurrent_dispatches=7),
        retry_config=tasks_v2.RetryConfig(max_attempts=3),
    )
    mask = field_mask_pb2.FieldMask(paths=["rate_limits.max_dispatches_per_second"])
    updated = env.api.tasks.update_queue(queue=source, update_mask=mask)
    assert updated.rate_limits.max_dispatches_per_second == 5
    assert updated.rate_limits.max_burst_size == 5
    assert updated.rate_limits.max_concurrent_dispatches == 1000
    assert updated.retry_config.max_attempts == 100


def test_update_queue_refuses_unknown_or_output_only_paths(env: Env) -> None:
    for path in ("rate_limits.max_burst_size", "state", "purge_time", "no_such_field"):
        with expect_status("INVALID_ARGUMENT", "update_mask"):
            env.api.tasks.update_queue(
                queue=tasks_v2.Queue(name=QUEUE), update_mask=field_mask_pb2.FieldMask(paths=[path])
            )


def test_update_queue_without_a_mask_replaces_every_field_logging_included(env: Env) -> None:
    """UpdateQueueRequest.update_mask: "If empty, then all fields will be updated" (a regression: the logging
    configuration used to be skipped)."""
    logged = tasks_v2.Queue(
        name=QUEUE, stackdriver_logging_config=tasks_v2.StackdriverLoggingConfig(sampling_ratio=0.5)
    )
    assert env.api.tasks.update_queue(queue=logged).stackdriver_logging_config.sampling_ratio == 0.5
    cleared = env.api.tasks.update_queue(
        queue=tasks_v2.Queue(name=QUEUE, retry_config=tasks_v2.RetryConfig(max_attempts=4))
    )
    assert cleared.retry_config.max_attempts == 4
    assert cleared.stackdriver_logging_config.sampling_ratio == 0


def test_update_queue_creates_a_missing_queue(env: Env) -> None:
    created = env.api.tasks.update_queue(queue=tasks_v2.Queue(name=OTHER))
    assert created.state == tasks_v2.Queue.State.RUNNING
    assert env.api.tasks.get_queue(name=OTHER).name == OTHER


def test_pause_resume_purge(env: Env) -> None:
    assert env.api.tasks.pause_queue(name=QUEUE).state == tasks_v2.Queue.State.PAUSED
    assert env.api.tasks.get_queue(name=QUEUE).state == tasks_v2.Queue.State.PAUSED
    assert env.api.tasks.resume_queue(name=QUEUE).state == tasks_v2.Queue.State.RUNNING
    purged = env.api.tasks.purge_queue(name=QUEUE)
    assert purged.purge_time.timestamp() == env.clock.now().timestamp()
    for call in (env.api.tasks.pause_queue, env.api.tasks.resume_queue, env.api.tasks.purge_queue):
        with expect_status("NOT_FOUND"):
            call(name=OTHER)


def test_a_deleted_queue_name_is_refused_for_the_tombstone_window(env: Env) -> None:
    """Recorded from the service: CreateQueue with a just-deleted queue's name is FAILED_PRECONDITION."""
    env.api.tasks.delete_queue(name=QUEUE)
    with expect_status("NOT_FOUND"):
        env.api.tasks.get_queue(name=QUEUE)
    with expect_status("FAILED_PRECONDITION", "deleted recently"):
        env.api.tasks.create_queue(parent=LOCATION, queue=tasks_v2.Queue(name=QUEUE))
    with expect_status("FAILED_PRECONDITION", "deleted recently"):
        env.api.tasks.update_queue(queue=tasks_v2.Queue(name=QUEUE))
    env.clock.advance(3600)
    assert env.api.tasks.create_queue(parent=LOCATION, queue=tasks_v2.Queue(name=QUEUE)).name == QUEUE


def test_reset_forgets_queue_tombstones(env: Env) -> None:
    env.api.tasks.create_queue(parent=LOCATION, queue=tasks_v2.Queue(name=OTHER))
    env.api.tasks.delete_queue(name=OTHER)
    env.emu.reset()
    assert env.api.tasks.create_queue(parent=LOCATION, queue=tasks_v2.Queue(name=OTHER)).name == OTHER


def test_list_queues_filters_by_state(env: Env) -> None:
    env.api.tasks.create_queue(parent=LOCATION, queue=tasks_v2.Queue(name=OTHER))
    env.api.tasks.pause_queue(name=OTHER)
    names = [q.name for q in env.api.items(env.api.tasks.list_queues(parent=LOCATION))]
    assert names == [QUEUE, OTHER]
    paused = env.api.items(env.api.tasks.list_queues(request={"parent": LOCATION, "filter": "state: PAUSED"}))
    assert [q.name for q in paused] == [OTHER]
    with expect_status("INVALID_ARGUMENT", "filter"):
        env.api.items(env.api.tasks.list_queues(request={"parent": LOCATION, "filter": "name: x"}))
