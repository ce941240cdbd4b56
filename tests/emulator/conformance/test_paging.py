"""Paging through every transport: opaque page tokens bound to their request, expiring, and the page sizes."""

from __future__ import annotations

from google.cloud import tasks_v2

from ._api import expect_status
from .conftest import LOCATION, QUEUE, Env

FULL = tasks_v2.Task.View.FULL


def make_queues(env: Env, count: int) -> list[str]:
    names = [f"{LOCATION}/queues/q{i:02d}" for i in range(count)]
    for name in names:
        env.api.tasks.create_queue(parent=LOCATION, queue=tasks_v2.Queue(name=name))
    return sorted([QUEUE, *names])


def make_tasks(env: Env, count: int, body: bytes = b"") -> list[str]:
    env.api.tasks.pause_queue(name=QUEUE)
    task = tasks_v2.Task(http_request=tasks_v2.HttpRequest(url=env.worker.url, body=body))
    return [env.api.tasks.create_task(parent=QUEUE, task=task).name for _ in range(count)]


def test_list_queues_pages_follow_their_tokens(env: Env) -> None:
    names = make_queues(env, 4)
    first = env.api.tasks.list_queues(request={"parent": LOCATION, "page_size": 2})
    assert [q.name for q in first.queues] == names[:2]
    assert first.next_page_token
    assert [q.name for q in env.api.items(first)] == names


def test_page_tokens_are_opaque(env: Env) -> None:
    """A token is no offset or name in clear (a regression: it was the last name, which callers could forge)."""
    names = make_queues(env, 2)
    token = env.api.tasks.list_queues(request={"parent": LOCATION, "page_size": 1}).next_page_token
    assert token != names[0]
    with expect_status("INVALID_ARGUMENT", "page_token"):
        env.api.tasks.list_queues(request={"parent": LOCATION, "page_token": names[0]})
    with expect_status("INVALID_ARGUMENT", "page_token"):
        env.api.tasks.list_queues(request={"parent": LOCATION, "page_token": token[:-2] + "AA"})


def test_a_list_queues_token_is_bound_to_its_parent_and_filter(env: Env) -> None:
    """ListQueuesRequest.page_token: "It is an error to switch the value of the filter while iterating"."""
    make_queues(env, 2)
    token = env.api.tasks.list_queues(request={"parent": LOCATION, "page_size": 1}).next_page_token
    with expect_status("INVALID_ARGUMENT", "another parent, filter"):
        env.api.tasks.list_queues(request={"parent": LOCATION, "page_token": token, "filter": "state: RUNNING"})
    with expect_status("INVALID_ARGUMENT", "another parent, filter"):
        env.api.tasks.list_queues(request={"parent": "projects/conformance/locations/elsewhere", "page_token": token})


def test_page_tokens_expire_after_two_hours(env: Env) -> None:
    """ListTasksResponse / ListQueuesResponse.next_page_token: "The page token is valid for only 2 hours"."""
    make_tasks(env, 2)
    make_queues(env, 1)
    task_token = env.api.tasks.list_tasks(request={"parent": QUEUE, "page_size": 1}).next_page_token
    queue_token = env.api.tasks.list_queues(request={"parent": LOCATION, "page_size": 1}).next_page_token
    env.clock.advance(2 * 3600)
    assert len(env.api.tasks.list_tasks(request={"parent": QUEUE, "page_token": task_token}).tasks) == 1
    env.clock.advance(1)
    with expect_status("INVALID_ARGUMENT", "expired"):
        env.api.tasks.list_tasks(request={"parent": QUEUE, "page_token": task_token})
    with expect_status("INVALID_ARGUMENT", "expired"):
        env.api.tasks.list_queues(request={"parent": LOCATION, "page_token": queue_token})


def test_list_tasks_pages_in_creation_order_and_binds_the_token_to_its_queue_and_view(env: Env) -> None:
    names = make_tasks(env, 5)
    first = env.api.tasks.list_tasks(request={"parent": QUEUE, "page_size": 2})
    token = first.next_page_token
    assert [task.name for task in first.tasks] == names[:2]
    assert [task.name for task in env.api.items(first)] == names  # the pager moves on to the last page
    other = f"{LOCATION}/queues/other"
    env.api.tasks.create_queue(parent=LOCATION, queue=tasks_v2.Queue(name=other))
    with expect_status("INVALID_ARGUMENT", "another parent"):
        env.api.tasks.list_tasks(request={"parent": other, "page_token": token})
    with expect_status("INVALID_ARGUMENT", "another parent"):
        env.api.tasks.list_tasks(request={"parent": QUEUE, "page_token": token, "response_view": FULL})
    with expect_status("INVALID_ARGUMENT", "page_size"):
        env.api.tasks.list_tasks(request={"parent": QUEUE, "page_size": -1})


def test_a_deleted_task_does_not_shift_the_next_page(env: Env) -> None:
    names = make_tasks(env, 4)
    first = env.api.tasks.list_tasks(request={"parent": QUEUE, "page_size": 2})
    env.api.tasks.delete_task(name=names[0])
    second = env.api.tasks.list_tasks(request={"parent": QUEUE, "page_size": 2, "page_token": first.next_page_token})
    assert [task.name for task in second.tasks] == names[2:]


def test_full_pages_of_big_tasks_stay_under_grpc_s_default_receive_limit(env: Env) -> None:
    """ListTasksRequest.page_size: "Fewer tasks than requested might be returned": a FULL page stops before 4 MiB,
    so every client can read it (a regression: six 900 KB tasks made one 5.4 MB page)."""
    names = make_tasks(env, 6, body=b"x" * 900_000)
    first = env.api.tasks.list_tasks(request={"parent": QUEUE, "response_view": FULL})
    assert len(first.tasks) == 4
    assert first.next_page_token
    listed = env.api.items(env.api.tasks.list_tasks(request={"parent": QUEUE, "response_view": FULL}))
    assert [task.name for task in listed] == names
    assert {len(task.http_request.body) for task in listed} == {900_000}
