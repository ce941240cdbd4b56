"""Cloud Tasks queues through the official sync client: CRUD, masks, pause/resume, purge, paging, errors."""

from __future__ import annotations

import pytest
from google.api_core import exceptions
from google.cloud import tasks_v2
from google.protobuf import duration_pb2, field_mask_pb2

from fastapi_gcp_tasks import emulator_client, queue_path
from fastapi_gcp_tasks.emulator import Emulator

from ._tasks_support import LOCATION, QUEUE, URL, http_task
from .conftest import Env


def test_create_fills_the_service_defaults(env: Env) -> None:
    queue = env.client.create_queue(parent=LOCATION, queue=tasks_v2.Queue(name=f"{LOCATION}/queues/fresh"))
    assert queue.state == tasks_v2.Queue.State.RUNNING
    assert queue.rate_limits.max_dispatches_per_second == 500
    assert queue.rate_limits.max_concurrent_dispatches == 1000
    assert queue.rate_limits.max_burst_size == 100
    assert queue.retry_config.max_attempts == 100
    assert queue.retry_config.min_backoff.total_seconds() == pytest.approx(0.1)
    assert queue.retry_config.max_backoff.total_seconds() == 3600
    assert queue.retry_config.max_doublings == 16
    assert env.client.get_queue(name=queue.name) == queue


def test_create_existing_is_already_exists_and_missing_is_not_found(env: Env) -> None:
    with pytest.raises(exceptions.AlreadyExists, match="already exists"):
        env.client.create_queue(parent=LOCATION, queue=tasks_v2.Queue(name=QUEUE))
    for call in (env.client.get_queue, env.client.delete_queue, env.client.pause_queue, env.client.purge_queue):
        with pytest.raises(exceptions.NotFound, match="does not exist"):
            call(name=f"{LOCATION}/queues/missing")


@pytest.mark.parametrize(
    ("parent", "name"),
    [
        (LOCATION, f"{LOCATION}/queues/bad_underscore"),
        (LOCATION, f"{LOCATION}/queues/" + "q" * 101),
        (LOCATION, "projects/other/locations/europe-west1/queues/q"),
        ("projects/p", "projects/p/queues/q"),
    ],
)
def test_malformed_queue_names_are_invalid_argument(env: Env, parent: str, name: str) -> None:
    with pytest.raises(exceptions.InvalidArgument, match="formatted like"):
        env.client.create_queue(parent=parent, queue=tasks_v2.Queue(name=name))


@pytest.mark.parametrize(
    ("queue", "message"),
    [
        (tasks_v2.Queue(rate_limits=tasks_v2.RateLimits(max_dispatches_per_second=501)), "max_dispatches_per_second"),
        (tasks_v2.Queue(rate_limits=tasks_v2.RateLimits(max_concurrent_dispatches=5001)), "max_concurrent"),
        (tasks_v2.Queue(retry_config=tasks_v2.RetryConfig(max_attempts=-2)), "max_attempts"),
        (
            tasks_v2.Queue(
                retry_config=tasks_v2.RetryConfig(
                    min_backoff=duration_pb2.Duration(seconds=10), max_backoff=duration_pb2.Duration(seconds=1)
                )
            ),
            "min_backoff",
        ),
    ],
)
def test_out_of_range_settings_are_invalid_argument(env: Env, queue: tasks_v2.Queue, message: str) -> None:
    queue.name = f"{LOCATION}/queues/limits"
    with pytest.raises(exceptions.InvalidArgument, match=message):
        env.client.create_queue(parent=LOCATION, queue=queue)


def test_update_with_a_mask_changes_only_masked_fields(env: Env) -> None:
    change = tasks_v2.Queue(
        name=QUEUE,
        rate_limits=tasks_v2.RateLimits(max_dispatches_per_second=5, max_concurrent_dispatches=7),
        retry_config=tasks_v2.RetryConfig(max_attempts=3),
    )
    updated = env.client.update_queue(
        queue=change, update_mask=field_mask_pb2.FieldMask(paths=["rate_limits.max_dispatches_per_second"])
    )
    assert updated.rate_limits.max_dispatches_per_second == 5
    assert updated.rate_limits.max_burst_size == 5
    assert updated.rate_limits.max_concurrent_dispatches == 1000
    assert updated.retry_config.max_attempts == 100
    assert env.client.get_queue(name=QUEUE) == updated


def test_update_with_an_unknown_or_output_only_path_is_invalid(env: Env) -> None:
    for path in ("state", "rate_limits.max_burst_size", "nope"):
        with pytest.raises(exceptions.InvalidArgument, match="cannot be updated"):
            env.client.update_queue(
                queue=tasks_v2.Queue(name=QUEUE), update_mask=field_mask_pb2.FieldMask(paths=[path])
            )


def test_update_of_a_missing_queue_creates_it(env: Env) -> None:
    name = f"{LOCATION}/queues/upserted"
    env.client.update_queue(queue=tasks_v2.Queue(name=name, retry_config=tasks_v2.RetryConfig(max_attempts=4)))
    assert env.client.get_queue(name=name).retry_config.max_attempts == 4


def test_list_pages_through_queues_of_the_location_only(env: Env) -> None:
    for index in range(5):
        env.client.create_queue(parent=LOCATION, queue=tasks_v2.Queue(name=f"{LOCATION}/queues/q{index}"))
    env.client.create_queue(
        parent="projects/test-project/locations/us-east1",
        queue=tasks_v2.Queue(name="projects/test-project/locations/us-east1/queues/elsewhere"),
    )
    pager = env.client.list_queues(request=tasks_v2.ListQueuesRequest(parent=LOCATION, page_size=2))
    pages = list(pager.pages)
    assert [len(page.queues) for page in pages] == [2, 2, 2]
    names = [queue.name for page in pages for queue in page.queues]
    assert names == sorted([QUEUE] + [f"{LOCATION}/queues/q{i}" for i in range(5)])


def test_pause_resume_and_the_state_filter(env: Env) -> None:
    assert env.client.pause_queue(name=QUEUE).state == tasks_v2.Queue.State.PAUSED
    paused = list(env.client.list_queues(request=tasks_v2.ListQueuesRequest(parent=LOCATION, filter="state: PAUSED")))
    assert [queue.name for queue in paused] == [QUEUE]
    assert env.client.resume_queue(name=QUEUE).state == tasks_v2.Queue.State.RUNNING
    assert not list(env.client.list_queues(request=tasks_v2.ListQueuesRequest(parent=LOCATION, filter="state: PAUSED")))
    with pytest.raises(exceptions.InvalidArgument, match="filter"):
        list(env.client.list_queues(request=tasks_v2.ListQueuesRequest(parent=LOCATION, filter="name: x")))


def test_purge_deletes_every_task_and_sets_purge_time(env: Env) -> None:
    env.client.pause_queue(name=QUEUE)
    for _ in range(3):
        env.client.create_task(parent=QUEUE, task=http_task())
    purged = env.client.purge_queue(name=QUEUE)
    assert purged.purge_time.timestamp() == pytest.approx(env.clock.now().timestamp(), abs=1e-3)
    assert list(env.client.list_tasks(parent=QUEUE)) == []


def test_delete_removes_the_queue_and_its_tasks(env: Env) -> None:
    env.client.pause_queue(name=QUEUE)
    env.client.create_task(parent=QUEUE, task=http_task())
    env.client.delete_queue(name=QUEUE)
    with pytest.raises(exceptions.NotFound):
        env.client.list_tasks(parent=QUEUE)
    # the name stays unusable for the queue tombstone window (3600 s by default), then comes back empty
    with pytest.raises(exceptions.FailedPrecondition, match="deleted recently"):
        env.client.create_queue(parent=LOCATION, queue=tasks_v2.Queue(name=QUEUE))
    env.clock.advance(3600)
    env.client.create_queue(parent=LOCATION, queue=tasks_v2.Queue(name=QUEUE))
    assert list(env.client.list_tasks(parent=QUEUE)) == []


def test_reset_restores_the_initial_queues_only(env: Env) -> None:
    env.client.create_queue(parent=LOCATION, queue=tasks_v2.Queue(name=f"{LOCATION}/queues/temporary"))
    env.client.pause_queue(name=QUEUE)
    env.emu.reset()
    names = [queue.name for queue in env.client.list_queues(parent=LOCATION)]
    assert names == [QUEUE]
    assert env.client.get_queue(name=QUEUE).state == tasks_v2.Queue.State.RUNNING


def test_the_emulator_client_lists_full_tasks_beyond_grpcs_default_receive_limit() -> None:
    """Six paused 900 KB tasks are 5.4 MB in one FULL page: more than gRPC's 4 MB default receive limit."""
    queue = queue_path(project="p", location="l", queue="big-bodies")
    with Emulator(queues=[queue]) as emulator:
        client = emulator_client(host=emulator.address)
        client.pause_queue(name=queue)
        for _ in range(6):
            client.create_task(
                parent=queue, task=tasks_v2.Task(http_request=tasks_v2.HttpRequest(url=URL, body=b"x" * 900_000))
            )
        listed = list(client.list_tasks(request={"parent": queue, "response_view": tasks_v2.Task.View.FULL}))
    assert [len(task.http_request.body) for task in listed] == [900_000] * 6
