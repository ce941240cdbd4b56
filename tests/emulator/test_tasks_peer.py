"""The same official-client calls against our emulator and gcloud-tasks-emulator 0.6.2, where the peer has them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google.cloud import tasks_v2

from fastapi_gcp_tasks.emulator import Emulator
from fastapi_gcp_tasks.utils import emulator_client
from tests._support import RecordingWorker, wait_for

from ._peer import run_peer
from ._tasks_support import LOCATION, QUEUE, http_task

pytestmark = pytest.mark.peer


@pytest.fixture
def worker() -> Iterator[RecordingWorker]:
    with RecordingWorker() as recording:
        yield recording


@pytest.fixture(params=["ours", "peer"])
def client(request: pytest.FixtureRequest) -> Iterator[tasks_v2.CloudTasksClient]:
    if request.param == "ours":
        with Emulator(queues=[QUEUE]) as emu:
            yield emu.tasks_client()
    else:
        with run_peer([QUEUE]) as (address, _):
            tasks_client = emulator_client(host=address)
            yield tasks_client
            tasks_client.transport.close()  # type: ignore[no-untyped-call, unused-ignore]


def test_queue_lifecycle_agrees(client: tasks_v2.CloudTasksClient) -> None:
    name = f"{LOCATION}/queues/second"
    created = client.create_queue(parent=LOCATION, queue=tasks_v2.Queue(name=name))
    assert created.name == name
    assert client.get_queue(name=name).name == name
    assert sorted(queue.name for queue in client.list_queues(parent=LOCATION)) == [QUEUE, name]
    assert client.pause_queue(name=name).state == tasks_v2.Queue.State.PAUSED
    assert client.resume_queue(name=name).state == tasks_v2.Queue.State.RUNNING
    client.delete_queue(name=name)
    assert [queue.name for queue in client.list_queues(parent=LOCATION)] == [QUEUE]


def test_a_task_is_delivered_with_the_same_essentials(
    client: tasks_v2.CloudTasksClient, worker: RecordingWorker
) -> None:
    created = client.create_task(
        parent=QUEUE,
        task=http_task(url=f"{worker.url}/hello", name=f"{QUEUE}/tasks/peer-1", body=b'{"n": 1}'),
    )
    assert created.name == f"{QUEUE}/tasks/peer-1"
    worker.wait_for_requests(1)
    # the acknowledged task leaves the queue: after that, a second delivery could not come
    wait_for(lambda: not list(client.list_tasks(parent=QUEUE)), "the delivered task gone from the queue")
    [(method, path, headers, body)] = [(r.method, r.path, r.headers, r.body) for r in worker.requests()]
    assert (method, path, body) == ("POST", "/hello", b'{"n": 1}')
    # the peer sends the full queue path; Cloud Tasks (and ours, see test_tasks_dispatch) the short id
    assert headers["x-cloudtasks-queuename"].rpartition("/")[2] == "default"
    assert headers["x-cloudtasks-taskname"] == "peer-1"
    assert headers["x-cloudtasks-taskretrycount"] == "0"


def test_purge_empties_a_paused_queue(client: tasks_v2.CloudTasksClient) -> None:
    client.pause_queue(name=QUEUE)
    for index in range(3):
        client.create_task(parent=QUEUE, task=http_task(url="http://127.0.0.1:9/none", name=f"{QUEUE}/tasks/p{index}"))
    assert len(list(client.list_tasks(parent=QUEUE))) == 3
    client.purge_queue(name=QUEUE)
    assert list(client.list_tasks(parent=QUEUE)) == []
