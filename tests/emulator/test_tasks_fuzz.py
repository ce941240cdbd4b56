"""The emulator survives anything on its gRPC surface: random bytes, and random but well-formed messages."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.api_core import exceptions
from google.cloud import tasks_v2
from google.protobuf import duration_pb2, timestamp_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastapi_gcp_tasks.emulator import Emulator

from ._tasks_support import LOCATION, QUEUE, ScriptedWorker

METHODS = [
    "/google.cloud.tasks.v2.CloudTasks/" + name
    for name in [
        "ListQueues",
        "GetQueue",
        "CreateQueue",
        "UpdateQueue",
        "DeleteQueue",
        "PurgeQueue",
        "PauseQueue",
        "ResumeQueue",
        "ListTasks",
        "GetTask",
        "CreateTask",
        "BatchCreateTasks",
        "DeleteTask",
        "RunTask",
    ]
] + ["/google.longrunning.Operations/GetOperation"]

ALLOWED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNIMPLEMENTED,
}

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(deliver_to=ScriptedWorker(), queues=[QUEUE]) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def channel(emu: Emulator) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(emu.address) as raw:
        yield raw


@FUZZ
@given(method=st.sampled_from(METHODS), payload=st.binary(max_size=512))
def test_random_bytes_get_a_status_and_the_server_lives_on(
    emu: Emulator, channel: grpc.Channel, method: str, payload: bytes
) -> None:
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    code = None
    try:
        call(payload, timeout=5)
    except grpc.RpcError as exc:
        code = exc.code()
    assert code is None or code in ALLOWED
    assert emu.tasks_client().get_queue(name=QUEUE).name == QUEUE


names = st.one_of(
    st.just(""),
    st.builds(lambda s: f"{QUEUE}/tasks/{s}", st.text(max_size=30)),
    st.text(max_size=40),
)
urls = st.one_of(
    st.just("http://worker.test/x"),
    st.builds(lambda s: f"http://worker.test/{s}", st.text(max_size=50)),
    st.text(max_size=60),
)
tasks = st.builds(
    lambda name, url, method, body, headers, eta, deadline, oidc: tasks_v2.Task(
        name=name,
        http_request=tasks_v2.HttpRequest(
            url=url,
            http_method=method,
            body=body,
            headers=headers,
            oidc_token=tasks_v2.OidcToken(service_account_email=oidc) if oidc is not None else None,
        ),
        schedule_time=timestamp_pb2.Timestamp(seconds=eta) if eta is not None else None,
        dispatch_deadline=duration_pb2.Duration(seconds=deadline) if deadline is not None else None,
    ),
    names,
    urls,
    st.integers(0, 7),
    st.binary(max_size=64),
    st.dictionaries(st.text(min_size=1, max_size=20), st.text(max_size=40), max_size=4),
    st.one_of(st.none(), st.integers(-(2**62), 2**62)),
    st.one_of(st.none(), st.integers(-100, 4000)),
    st.one_of(st.none(), st.text(max_size=20)),
)


@FUZZ
@given(task=tasks, parent=st.one_of(st.just(QUEUE), st.text(max_size=40)))
def test_random_tasks_are_created_or_refused_with_a_client_error(
    emu: Emulator, task: tasks_v2.Task, parent: str
) -> None:
    client = emu.tasks_client()
    try:
        created = client.create_task(parent=parent, task=task)
    except exceptions.GoogleAPICallError as exc:
        code = exc.grpc_status_code
    else:
        code = None
        assert created.name.startswith(QUEUE + "/tasks/")
    assert code is None or code in ALLOWED
    assert client.get_queue(name=QUEUE).name == QUEUE


queues = st.builds(
    lambda name, rate, concurrent, attempts, min_backoff, max_backoff, doublings: tasks_v2.Queue(
        name=name,
        rate_limits=tasks_v2.RateLimits(max_dispatches_per_second=rate, max_concurrent_dispatches=concurrent),
        retry_config=tasks_v2.RetryConfig(
            max_attempts=attempts,
            min_backoff=duration_pb2.Duration(seconds=min_backoff),
            max_backoff=duration_pb2.Duration(seconds=max_backoff),
            max_doublings=doublings,
        ),
    ),
    st.one_of(st.builds(lambda s: f"{LOCATION}/queues/{s}", st.text(max_size=12)), st.text(max_size=30)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-10, 6000),
    st.integers(-5, 200),
    st.integers(-5, 100),
    st.integers(-5, 100),
    st.integers(-5, 100),
)


@FUZZ
@given(queue=queues)
def test_random_queues_are_created_or_refused_with_a_client_error(emu: Emulator, queue: tasks_v2.Queue) -> None:
    client = emu.tasks_client()
    for call in (
        lambda: client.create_queue(parent=LOCATION, queue=queue),
        lambda: client.update_queue(queue=queue),
    ):
        code = None
        try:
            call()  # type: ignore[no-untyped-call, unused-ignore]
        except exceptions.GoogleAPICallError as exc:
            code = exc.grpc_status_code
        assert code is None or code in ALLOWED
    assert client.get_queue(name=QUEUE).name == QUEUE
