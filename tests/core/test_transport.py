"""The transport: the one error table, pinned code by code, and the one batch routine against the emulator."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import pytest
from google.api_core import exceptions as core_exceptions
from google.auth import exceptions as google_auth_exceptions
from google.cloud import tasks_v2

from fastapi_gcp_tasks._limits import BATCH_CREATE_LIMIT
from fastapi_gcp_tasks.emulator import Emulator
from fastapi_gcp_tasks.exception import FastAPIGCPTasksError, SendError, TaskAlreadyExistsError
from fastapi_gcp_tasks.outbox import CloudTasksRelayClient
from fastapi_gcp_tasks.transport import _clients
from fastapi_gcp_tasks.transport._errors import POLICY, Outcome, from_status, outcome_of, translate
from fastapi_gcp_tasks.transport._tasks import RouteSender, batches, create_tasks, create_tasks_async

core: Any = core_exceptions  # api_core's and google.auth's exception constructors are untyped
auth_exceptions: Any = google_auth_exceptions
S = grpc.StatusCode
EXISTS, RETRY, FINAL = Outcome.EXISTS, Outcome.RETRY, Outcome.FINAL

EXPECTED: dict[grpc.StatusCode, Outcome] = {
    S.CANCELLED: RETRY,
    S.UNKNOWN: RETRY,
    S.INVALID_ARGUMENT: FINAL,
    S.DEADLINE_EXCEEDED: RETRY,
    S.NOT_FOUND: RETRY,
    S.ALREADY_EXISTS: EXISTS,
    S.PERMISSION_DENIED: RETRY,
    S.RESOURCE_EXHAUSTED: RETRY,
    S.FAILED_PRECONDITION: RETRY,
    S.ABORTED: RETRY,
    S.OUT_OF_RANGE: FINAL,
    S.UNIMPLEMENTED: FINAL,
    S.INTERNAL: RETRY,
    S.UNAVAILABLE: RETRY,
    S.DATA_LOSS: RETRY,
    S.UNAUTHENTICATED: RETRY,
}
"""Written by hand: a change to the policy must change this too."""

NAME = "projects/p/locations/l/queues/q/tasks/t"


def _check(error: Exception, outcome: Outcome) -> None:
    if outcome is EXISTS:
        assert isinstance(error, TaskAlreadyExistsError)
        assert error.task_name == NAME
    else:
        assert isinstance(error, SendError)
        assert error.retryable is (outcome is RETRY)


def test_the_table_covers_every_error_code_and_nothing_else() -> None:
    assert dict(POLICY) == EXPECTED
    assert set(POLICY) == set(grpc.StatusCode) - {S.OK}


@pytest.mark.parametrize("code", list(EXPECTED), ids=lambda code: code.name)
def test_an_exception_of_each_code(code: grpc.StatusCode) -> None:
    exc = core.exception_class_for_grpc_status(code)("it went wrong")
    translated = translate(exc, what="create_task", name=NAME)
    _check(translated, EXPECTED[code])
    if isinstance(translated, SendError):
        assert str(translated) == f"create_task failed: {code.name}: it went wrong"


@pytest.mark.parametrize("code", list(EXPECTED), ids=lambda code: code.name)
def test_a_per_task_status_of_each_code(code: grpc.StatusCode) -> None:
    _check(from_status(code.value[0], "it went wrong", NAME), EXPECTED[code])


def test_codes_outside_the_table_count_as_unknown() -> None:
    assert outcome_of(99) is outcome_of(S.UNKNOWN) is RETRY
    assert outcome_of(S.OK) is RETRY, "a failure reported with OK is no proof of creation"


def test_already_exists_of_an_unnamed_resource_is_a_final_conflict() -> None:
    translated = translate(core.AlreadyExists("queue exists"), what="create_queue")
    assert isinstance(translated, SendError)
    assert not translated.retryable


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (core.BadGateway("proxy"), RETRY),
        (core.GatewayTimeout("proxy"), RETRY),
        (core.ServiceUnavailable("down"), RETRY),
        (core.TooManyRequests("slow down"), RETRY),
        (core.InternalServerError("oops"), RETRY),
        (core.Conflict("conflict"), RETRY),
        (core.Forbidden("iam"), RETRY),
        (core.Unauthorized("token"), RETRY),
        (core.PreconditionFailed("state"), RETRY),
        (core.BadRequest("bad"), FINAL),
        (core.MethodNotAllowed("no"), FINAL),
        (core.LengthRequired("no"), FINAL),
        (core.RequestRangeNotSatisfiable("no"), FINAL),
        (core.RetryError("gave up", cause=core.ServiceUnavailable("down")), RETRY),
        (core.RetryError("gave up", cause=None), RETRY),
        (core.RetryError("gave up", cause=core.InvalidArgument("bad")), FINAL),
        (OSError("no route"), RETRY),
        (ConnectionResetError(), RETRY),
        (TimeoutError(), RETRY),
        (auth_exceptions.TransportError("metadata server"), RETRY),
        (auth_exceptions.RefreshError("token"), RETRY),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_http_and_transport_errors(error: Exception, outcome: Outcome) -> None:
    _check(translate(error, what="create_task", name=NAME), outcome)


class _RawRpcError(grpc.RpcError):  # type: ignore[misc]  # grpc is untyped
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


@pytest.mark.parametrize("code", [S.UNAVAILABLE, S.INVALID_ARGUMENT, S.ALREADY_EXISTS], ids=lambda c: c.name)
def test_a_raw_grpc_error_reads_its_code(code: grpc.StatusCode) -> None:
    _check(translate(_RawRpcError(code), what="create_task", name=NAME), EXPECTED[code])


def test_a_bug_is_not_a_call_error() -> None:
    bug = TypeError("not a call error")
    assert translate(bug, what="create_task", name=NAME) is bug
    ours = SendError("kept", retryable=False)
    assert translate(ours, what="create_task") is ours


def test_batches_group_by_key_in_first_seen_order_and_cut_at_the_limit() -> None:
    items = [("b", i) for i in range(250)] + [("a", i) for i in range(3)] + [("b", 250)]
    chunks = batches(items, lambda item: item[0])
    assert [len(chunk) for chunk in chunks] == [BATCH_CREATE_LIMIT, BATCH_CREATE_LIMIT, 51, 3]
    assert [item for chunk in chunks for item in chunk if item[0] == "b"] == [("b", i) for i in range(251)]
    assert batches([], lambda item: item) == []


# -- against the emulator, over real gRPC ---------------------------------------------------------------------------

QUEUE_A = "projects/test/locations/here/queues/batch-a"
QUEUE_B = "projects/test/locations/here/queues/batch-b"
MISSING = "projects/test/locations/here/queues/never-made"
LATER = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)  # nothing is delivered during the test


def _request(queue: str, task_id: str, *, too_late: bool = False) -> tasks_v2.CreateTaskRequest:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(days=40 if too_late else 1)
    return tasks_v2.CreateTaskRequest(
        parent=queue,
        task=tasks_v2.Task(
            name=f"{queue}/tasks/{task_id}",
            http_request=tasks_v2.HttpRequest(url="http://127.0.0.1:9/never", http_method=tasks_v2.HttpMethod.POST),
            schedule_time=when,
        ),
    )


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(queues=[QUEUE_A, QUEUE_B]) as emu:
        yield emu


class _Counting:
    """Counts `batch_create_tasks` calls of a wrapped client."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.batch_calls: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def batch_create_tasks(self, *, request: Any, timeout: float) -> Any:
        self.batch_calls.append(len(request.requests))
        return self.client.batch_create_tasks(request=request, timeout=timeout)


def _mixed_batch(emulator: Emulator) -> tuple[list[tasks_v2.CreateTaskRequest], set[int], set[int]]:
    """150 tasks in one queue and 60 in another; some names exist already, one task is invalid."""
    existing = [_request(QUEUE_A, f"old-{i}") for i in range(3)]
    for request in existing:
        emulator.tasks_client().create_task(request=request)
    requests = [_request(QUEUE_A, f"a-{i}") for i in range(147)] + [_request(QUEUE_B, f"b-{i}") for i in range(60)]
    requests[10:10] = existing  # indexes 10, 11, 12: ALREADY_EXISTS
    requests.insert(120, _request(QUEUE_A, "too-late", too_late=True))  # INVALID_ARGUMENT: 40 days ahead
    return requests, {10, 11, 12}, {120}


def _assert_mixed(
    requests: Sequence[tasks_v2.CreateTaskRequest],
    results: Sequence[tasks_v2.Task | FastAPIGCPTasksError],
    existed: set[int],
    invalid: set[int],
) -> None:
    assert len(results) == len(requests) == 211
    for index, (request, result) in enumerate(zip(requests, results, strict=True)):
        if index in existed:
            assert isinstance(result, TaskAlreadyExistsError), index
            assert result.task_name == request.task.name
        elif index in invalid:
            assert isinstance(result, SendError), index
            assert not result.retryable
            assert "INVALID_ARGUMENT" in str(result)
        else:
            assert isinstance(result, tasks_v2.Task), (index, result)
            assert result.name == request.task.name


async def test_a_batch_reports_each_tasks_own_outcome_and_chunks_per_queue(emulator: Emulator) -> None:
    requests, existed, invalid = _mixed_batch(emulator)
    client = _Counting(emulator.async_tasks_client())
    results = await create_tasks_async(client, requests, timeout=10)  # type: ignore[arg-type]
    _assert_mixed(requests, results, existed, invalid)
    assert sorted(client.batch_calls) == [51, 60, 100]
    listed = [t.name for t in emulator.tasks_client().list_tasks(parent=QUEUE_A)]
    assert len(listed) == 3 + 147


def test_the_sync_batch_routine_reads_the_same_outcomes(emulator: Emulator) -> None:
    requests, existed, invalid = _mixed_batch(emulator)
    client = _Counting(emulator.tasks_client())
    results = create_tasks(client, requests, timeout=10)  # type: ignore[arg-type]
    _assert_mixed(requests, results, existed, invalid)
    assert client.batch_calls == [100, 51, 60]


async def test_a_batch_that_fails_as_a_whole_gives_every_task_the_error(emulator: Emulator) -> None:
    requests = [_request(MISSING, f"m-{i}") for i in range(3)] + [_request(QUEUE_A, "fine")]
    results = await create_tasks_async(emulator.async_tasks_client(), requests, timeout=10)
    for result in results[:3]:
        assert isinstance(result, SendError)
        assert result.retryable, "a missing queue is fixed by an operator: the task is kept"
        assert "NOT_FOUND" in str(result)
    assert isinstance(results[3], tasks_v2.Task)


async def test_the_route_sender_creates_the_queue_before_its_first_batch(emulator: Emulator) -> None:
    queue = "projects/test/locations/here/queues/made-on-demand"
    address = emulator.address
    sender = RouteSender(
        sync_source=None,
        async_source=_clients.async_tasks_source(lambda: _clients.async_emulator_client(host=address)),
        auto_create_queue=True,
    )
    requests = [_request(queue, f"r-{i}") for i in range(5)]
    results = await sender.send_batch_async(requests, timeout=10)
    assert [r.name for r in results if isinstance(r, tasks_v2.Task)] == [r.task.name for r in requests]
    again = await sender.send_batch_async(requests[:2], timeout=10)
    assert all(isinstance(r, TaskAlreadyExistsError) for r in again)


@pytest.mark.parametrize("mode", ["batch", "concurrent"])
async def test_the_relay_client_reads_errors_through_the_same_table(emulator: Emulator, mode: Any) -> None:
    requests, existed, invalid = _mixed_batch(emulator)
    client = CloudTasksRelayClient.for_emulator(emulator.address, mode=mode)
    try:
        results = await client.send_batch_async(requests, timeout=10)
    finally:
        await client.close()
    _assert_mixed(requests, results, existed, invalid)


def test_the_client_table_has_one_cell_per_service_and_flavour() -> None:
    cells = {(kind.client, kind.aio) for kind in _clients.CLIENT_KINDS}
    assert cells == {
        (tasks_v2.CloudTasksClient, False),
        (tasks_v2.CloudTasksAsyncClient, True),
        (_clients.SCHEDULER.client, False),
        (_clients.ASYNC_SCHEDULER.client, True),
    }


def test_a_batch_creates_a_missing_queue_when_the_emulator_auto_creates_like_create_task() -> None:
    with Emulator(auto_create_queues=True) as emu:
        results = create_tasks(emu.tasks_client(), [_request(MISSING, f"auto-{i}") for i in range(2)], timeout=10)
        assert [type(result) for result in results] == [tasks_v2.Task, tasks_v2.Task]
        assert len(list(emu.tasks_client().list_tasks(parent=MISSING))) == 2
