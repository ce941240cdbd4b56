"""The REST transport (`transport="rest"`) of both official clients against a real emulator.

The same scenarios run over gRPC and over REST, each in its own emulator on the same manual clock, and
must give the same answers and deliveries; errors surface as the exception class Google's HTTP status
maps to; what no client would send (malformed JSON, unknown fields, garbage, huge bodies) is a 4xx.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import pytest
from google.api_core import exceptions
from google.cloud import scheduler_v1, tasks_v2
from google.protobuf import field_mask_pb2

from fastapi_gcp_tasks.emulator import Emulator, ManualClock
from fastapi_gcp_tasks.emulator._rest import http_status, service_routes
from fastapi_gcp_tasks.transport._clients import ASYNC_SCHEDULER, ASYNC_TASKS
from tests._support import TIMEOUT

from ._tasks_support import LOCATION, QUEUE, URL, ScriptedWorker

START = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
SECOND = f"{LOCATION}/queues/second"
TRANSPORTS = ("grpc", "rest")


class Side:
    """One emulator on a manual clock, delivering into a scripted worker."""

    def __init__(self, emu: Emulator, clock: ManualClock, worker: ScriptedWorker) -> None:
        self.emu = emu
        self.clock = clock
        self.worker = worker

    def settle(self) -> None:
        self.emu.wait_until_idle(timeout=TIMEOUT)


@pytest.fixture
def side() -> Iterator[Side]:
    clock = ManualClock(START)
    worker = ScriptedWorker()
    with Emulator(clock=clock, deliver_to=worker, queues=[QUEUE]) as emu:
        yield Side(emu, clock, worker)


@pytest.fixture
def other() -> Iterator[Side]:
    clock = ManualClock(START)
    worker = ScriptedWorker()
    with Emulator(clock=clock, deliver_to=worker, queues=[QUEUE]) as emu:
        yield Side(emu, clock, worker)


def _task(name: str, body: bytes = b"") -> tasks_v2.Task:
    return tasks_v2.Task(
        name=f"{QUEUE}/tasks/{name}",
        http_request=tasks_v2.HttpRequest(url=f"{URL}/{name}", body=body, headers={"X-Name": name}),
    )


def _tasks_scenario(side: Side, transport: str) -> list[Any]:
    """Every Cloud Tasks RPC the emulator serves, through the official client on `transport`."""
    client = side.emu.tasks_client(transport)  # type: ignore[arg-type]
    out: list[Any] = [client.create_queue(parent=LOCATION, queue=tasks_v2.Queue(name=SECOND))]
    out.append(client.get_queue(name=QUEUE))
    out.append([list(page.queues) for page in client.list_queues(request={"parent": LOCATION, "page_size": 1}).pages])
    mask = field_mask_pb2.FieldMask(paths=["rate_limits.max_dispatches_per_second", "retry_config.max_attempts"])
    queue = tasks_v2.Queue(
        name=QUEUE,
        rate_limits=tasks_v2.RateLimits(max_dispatches_per_second=7),
        retry_config=tasks_v2.RetryConfig(max_attempts=3),
    )
    out.append(client.update_queue(queue=queue, update_mask=mask))
    out.append(client.pause_queue(name=QUEUE))
    for name, body in (("one", b"\x00\xffbinary"), ("two", "h\u00e9".encode()), ("three", b"")):
        out.append(client.create_task(parent=QUEUE, task=_task(name, body)))
    full = tasks_v2.Task.View.FULL
    out.append(client.get_task(request={"name": f"{QUEUE}/tasks/one", "response_view": full}))
    pages = client.list_tasks(request={"parent": QUEUE, "page_size": 2, "response_view": full}).pages
    out.append([list(page.tasks) for page in pages])
    client.delete_task(name=f"{QUEUE}/tasks/three")
    deleted = client.batch_delete_tasks(parent=QUEUE, names=[f"{QUEUE}/tasks/one"])
    out.append(deleted.result(timeout=TIMEOUT))  # type: ignore[no-untyped-call]
    operation = client.batch_create_tasks(
        parent=QUEUE, requests=[tasks_v2.CreateTaskRequest(parent=QUEUE, task=_task("batched", b"b"))]
    )
    out.append(operation.result(timeout=TIMEOUT))  # type: ignore[no-untyped-call]
    fetched = client.get_operation(request={"name": operation.operation.name})
    assert fetched.name == operation.operation.name
    assert re.fullmatch(f"{LOCATION}/operations/[0-9a-f]+", fetched.name)
    response, metadata = tasks_v2.BatchCreateTasksResponse.pb()(), tasks_v2.BatchCreateTasksMetadata.pb()()
    assert fetched.done
    assert fetched.response.Unpack(response)
    assert fetched.metadata.Unpack(metadata)
    out.append((response, metadata))  # unpacked: map entries may be packed in another order
    out.append(client.run_task(name=f"{QUEUE}/tasks/two"))
    side.settle()
    out.append(client.resume_queue(name=QUEUE))
    side.settle()
    out.append(client.purge_queue(name=QUEUE))
    client.delete_queue(name=SECOND)
    out.append(list(client.list_queues(parent=LOCATION)))
    return out


def _job(job_id: str) -> scheduler_v1.Job:
    return scheduler_v1.Job(
        name=f"{LOCATION}/jobs/{job_id}",
        schedule="*/5 * * * *",
        time_zone="Europe/Paris",
        http_target=scheduler_v1.HttpTarget(uri=f"{URL}/{job_id}", body=b"\x01job", headers={"X-Job": job_id}),
    )


def _scheduler_scenario(side: Side, transport: str) -> list[Any]:
    """Every Cloud Scheduler RPC, through the official client on `transport`."""
    client = side.emu.scheduler_client(transport)  # type: ignore[arg-type]
    out: list[Any] = [client.create_job(parent=LOCATION, job=_job(name)) for name in ("a", "b", "c")]
    out.append(client.get_job(name=f"{LOCATION}/jobs/a"))
    out.append([list(page.jobs) for page in client.list_jobs(request={"parent": LOCATION, "page_size": 2}).pages])
    changed = scheduler_v1.Job(name=f"{LOCATION}/jobs/b", schedule="0 9 * * 1", description="weekly")
    mask = field_mask_pb2.FieldMask(paths=["schedule", "description"])
    out.append(client.update_job(job=changed, update_mask=mask))
    out.append(client.pause_job(name=f"{LOCATION}/jobs/c"))
    out.append(client.resume_job(name=f"{LOCATION}/jobs/c"))
    out.append(client.run_job(name=f"{LOCATION}/jobs/a"))
    side.settle()
    client.delete_job(name=f"{LOCATION}/jobs/c")
    out.append(list(client.list_jobs(parent=LOCATION)))
    return out


def _deliveries(side: Side) -> list[tuple[str, str, bytes, str | None]]:
    return [(r.method, r.path, r.body, r.headers.get("x-name") or r.headers.get("x-job")) for r in side.worker.received]


@pytest.mark.parametrize("scenario", [_tasks_scenario, _scheduler_scenario], ids=["tasks", "scheduler"])
def test_every_rpc_answers_over_rest_as_over_grpc(
    side: Side, other: Side, scenario: Callable[[Side, str], list[Any]]
) -> None:
    over_grpc = scenario(side, "grpc")
    over_rest = scenario(other, "rest")
    assert len(over_rest) == len(over_grpc)
    for step, (expected, got) in enumerate(zip(over_grpc, over_rest, strict=True)):
        assert got == expected, f"step {step} differs"
    assert _deliveries(other) == _deliveries(side)
    assert _deliveries(other)  # run_task / run_job delivered something


def test_list_tasks_pages_and_views_over_rest(side: Side) -> None:
    client = side.emu.tasks_client("rest")
    client.pause_queue(name=QUEUE)
    for index in range(5):
        client.create_task(parent=QUEUE, task=_task(f"t{index}", b"x" * index))
    pages = list(client.list_tasks(request={"parent": QUEUE, "page_size": 2}).pages)
    assert [len(page.tasks) for page in pages] == [2, 2, 1]
    assert [task.name.rsplit("/", 1)[1] for page in pages for task in page.tasks] == [f"t{i}" for i in range(5)]
    assert all(task.view == tasks_v2.Task.View.BASIC and not task.http_request.body for t in pages for task in t.tasks)
    full = list(client.list_tasks(request={"parent": QUEUE, "response_view": tasks_v2.Task.View.FULL}))
    assert [task.http_request.body for task in full] == [b"x" * i for i in range(5)]


def test_full_views_beyond_grpcs_default_message_size_list_over_rest(side: Side) -> None:
    """Six 900 KB bodies are 7.2 MB of JSON in one page: REST has no receive limit to lift."""
    client = side.emu.tasks_client("rest")
    client.pause_queue(name=QUEUE)
    for index in range(6):
        client.create_task(parent=QUEUE, task=_task(f"big{index}", b"\xfe" * 900_000))
    listed = list(client.list_tasks(request={"parent": QUEUE, "response_view": tasks_v2.Task.View.FULL}))
    assert [task.http_request.body for task in listed] == [b"\xfe" * 900_000] * 6


def test_update_mask_changes_only_the_listed_fields_over_rest(side: Side) -> None:
    client = side.emu.tasks_client("rest")
    before = client.get_queue(name=QUEUE)
    queue = tasks_v2.Queue(
        name=QUEUE,
        rate_limits=tasks_v2.RateLimits(max_dispatches_per_second=2, max_concurrent_dispatches=9),
    )
    mask = field_mask_pb2.FieldMask(paths=["rate_limits.max_concurrent_dispatches"])
    after = client.update_queue(queue=queue, update_mask=mask)
    assert after.rate_limits.max_concurrent_dispatches == 9
    assert after.rate_limits.max_dispatches_per_second == before.rate_limits.max_dispatches_per_second


# -- errors ----------------------------------------------------------------------------------------------------------


def _setup_paused_job(emu: Emulator) -> None:
    emu.scheduler_client().create_job(parent=LOCATION, job=_job("paused"))
    emu.scheduler_client().pause_job(name=f"{LOCATION}/jobs/paused")


ERRORS: list[tuple[str, Callable[[Any, Any], Any], grpc.StatusCode]] = [
    ("missing queue", lambda t, s: t.get_queue(name=f"{LOCATION}/queues/nope"), grpc.StatusCode.NOT_FOUND),
    (
        "existing queue",
        lambda t, s: t.create_queue(parent=LOCATION, queue=tasks_v2.Queue(name=QUEUE)),
        grpc.StatusCode.ALREADY_EXISTS,
    ),
    (
        "bad url",
        lambda t, s: t.create_task(parent=QUEUE, task={"http_request": {"url": "ftp://worker.test/"}}),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    ("missing task", lambda t, s: t.get_task(name=f"{QUEUE}/tasks/nope"), grpc.StatusCode.NOT_FOUND),
    (
        "missing operation",
        lambda t, s: t.get_operation(request={"name": f"{LOCATION}/operations/nope"}),
        grpc.StatusCode.NOT_FOUND,
    ),
    ("unimplemented RPC", lambda t, s: t.get_iam_policy(request={"resource": QUEUE}), grpc.StatusCode.UNIMPLEMENTED),
    ("missing job", lambda t, s: s.get_job(name=f"{LOCATION}/jobs/nope"), grpc.StatusCode.NOT_FOUND),
    (
        "bad schedule",
        lambda t, s: s.create_job(parent=LOCATION, job=scheduler_v1.Job(schedule="never", http_target={"uri": URL})),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    ("paused job", lambda t, s: s.pause_job(name=f"{LOCATION}/jobs/paused"), grpc.StatusCode.FAILED_PRECONDITION),
]


@pytest.mark.parametrize(("call", "code"), [(call, code) for _, call, code in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors_map_to_the_http_status_google_gives_their_code(
    side: Side, call: Callable[[Any, Any], Any], code: grpc.StatusCode
) -> None:
    """The REST client picks its class from the HTTP status: the gRPC class or its parent (as with Google)."""
    emu = side.emu
    _setup_paused_job(emu)
    with pytest.raises(exceptions.GoogleAPICallError) as over_grpc:
        call(emu.tasks_client(), emu.scheduler_client())
    with pytest.raises(exceptions.GoogleAPICallError) as over_rest:
        call(emu.tasks_client("rest"), emu.scheduler_client("rest"))
    assert over_grpc.value.grpc_status_code == code
    status = http_status(code)
    assert over_rest.value.code == status
    assert type(over_rest.value) is exceptions.exception_class_for_http_status(status)  # type: ignore[no-untyped-call]
    assert isinstance(over_grpc.value, type(over_rest.value))
    assert over_rest.value.response.json()["error"] == {
        "code": status,
        "message": over_grpc.value.message,
        "status": code.name,
    }


def test_not_found_and_already_exists_keep_their_exact_classes(side: Side) -> None:
    client = side.emu.tasks_client("rest")
    with pytest.raises(exceptions.NotFound):
        client.get_queue(name=f"{LOCATION}/queues/nope")
    with pytest.raises(exceptions.Conflict):  # ALREADY_EXISTS and ABORTED share 409, as with Google
        client.create_queue(parent=LOCATION, queue=tasks_v2.Queue(name=QUEUE))


# -- what no client sends ----------------------------------------------------------------------------------------


def _error(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == response.status_code
    return error


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"\xff\xfe\x00garbage",
        b"[1, 2]",
        b'"a string"',
        b'{"task": {"bogus": 1}}',
        b'{"task": {"httpRequest": {"url": 5}}}',
        b'{"task": {"httpRequest": {"body": "not base64 !!"}}}',
        b'{"task": {"scheduleTime": "yesterday"}}',
        b'{"responseView": "SIDEWAYS"}',
        b"[" * 100_000,
        b'{"task": ' * 50_000,
    ],
)
def test_malformed_or_unknown_json_is_invalid_argument(side: Side, body: bytes) -> None:
    response = httpx.post(f"{side.emu.http_url}/v2/{QUEUE}/tasks", content=body)
    assert response.status_code == 400
    assert _error(response)["status"] == "INVALID_ARGUMENT"
    assert side.emu.tasks_client().list_tasks(parent=QUEUE).tasks == []


def test_unknown_field_is_named(side: Side) -> None:
    response = httpx.post(f"{side.emu.http_url}/v2/{QUEUE}/tasks", json={"task": {"bogusField": 1}})
    assert "bogusField" in _error(response)["message"]


@pytest.mark.parametrize(
    "query",
    [
        "unknownParam=1",
        "pageSize=1&pageSize=2",
        "pageSize=many",
        "responseView=99999999999",
        "parent.x=1",
        "%ff=1",
        pytest.param("pageSize=1&" * 1_001, id="too-many-fields"),
    ],
)
def test_bad_query_parameters_are_invalid_argument(side: Side, query: str) -> None:
    response = httpx.get(f"{side.emu.http_url}/v2/{QUEUE}/tasks?{query}")
    assert response.status_code == 400, response.text
    assert _error(response)["status"] == "INVALID_ARGUMENT"


def test_system_parameters_are_ignored_and_enums_follow_alt(side: Side) -> None:
    side.emu.tasks_client().pause_queue(name=QUEUE)
    base = f"{side.emu.http_url}/v2/{QUEUE}/tasks"
    created = httpx.post(f"{base}?prettyPrint=false", json={"task": {"httpRequest": {"url": URL}}}).json()
    assert created["view"] == "BASIC"
    assert created["httpRequest"]["httpMethod"] == "POST"
    as_ints = httpx.get(f"{side.emu.http_url}/v2/{created['name']}", params={"$alt": "json;enum-encoding=int"}).json()
    assert as_ints["view"] == 1
    assert as_ints["httpRequest"]["httpMethod"] == 1


def test_unknown_paths_and_wrong_verbs_are_json_404s(side: Side) -> None:
    url = side.emu.http_url
    for response in (
        httpx.get(f"{url}/v2/projects/p/nothing"),
        httpx.get(f"{url}/v1/{QUEUE}"),
        httpx.put(f"{url}/v2/{QUEUE}", json={}),
        httpx.get(f"{url}/v2/{QUEUE}:pause"),
    ):
        assert response.status_code == 404, response.request
        assert _error(response)["status"] == "NOT_FOUND"


def test_a_body_larger_than_the_limit_is_refused_before_it_is_read(side: Side) -> None:
    with socket.create_connection(("127.0.0.1", side.emu.server.http_port), timeout=TIMEOUT) as sock:
        sock.sendall(
            f"POST /v2/{QUEUE}/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 999999999999\r\n\r\n{".encode()
        )
        head = sock.recv(65536).decode("latin-1")
    assert head.startswith("HTTP/1.1 413 ")


@pytest.mark.parametrize(
    "raw",
    [b"\x16\x03\x01\x02\x00garbage\r\n\r\n", b"\x00\x01\x02 \xff\r\n\r\n", b"GET /v2/x HTTP/1.1\r\nBad Header\r\n\r\n"],
)
def test_bytes_that_are_not_http_get_a_400_and_the_port_lives_on(side: Side, raw: bytes) -> None:
    with socket.create_connection(("127.0.0.1", side.emu.server.http_port), timeout=TIMEOUT) as sock:
        sock.sendall(raw)
        head = sock.recv(65536).decode("latin-1")
    assert head.startswith("HTTP/1.1 400 "), head
    assert httpx.get(f"{side.emu.http_url}/v2/{QUEUE}").json()["name"] == QUEUE


def _concrete(template: str) -> str:
    """A path that matches `template`: each `*` one segment, each `**` two."""

    def fill(variable: re.Match[str]) -> str:
        return (variable.group(2) or "*").replace("**", "x/y").replace("*", "x")

    return re.sub(r"\{([^}=]+)(?:=([^}]*))?\}", fill, template)


@pytest.mark.parametrize("body", [b"", b"{}", b"\x00\xff", b'{"name": 5}', b'{"x": {"y": []}}'])
def test_no_route_answers_5xx_to_client_input(side: Side, body: bytes) -> None:
    with httpx.Client(base_url=side.emu.http_url) as http:
        for route in service_routes():
            path = _concrete(route.template)
            for query in ("", "?pageSize=-1", "?updateMask=a,b", "?name=1&name=2", "?$alt=json;enum-encoding=int"):
                response = http.request(route.verb, path + query, content=body)
                assert response.status_code < 500 or response.status_code == 501, (route.name, query, body)
                if response.status_code >= 400:
                    _error(response)


def test_keep_alive_serves_several_calls_on_one_connection(side: Side) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", side.emu.server.http_port, timeout=TIMEOUT)
    try:
        connection.request("GET", f"/v2/{QUEUE}")
        first = connection.getresponse()
        assert json.loads(first.read())["name"] == QUEUE
        assert not first.will_close
        sock = connection.sock
        connection.request("POST", f"/v2/{QUEUE}:pause", body=b"{}")
        second = connection.getresponse()
        assert json.loads(second.read())["state"] == "PAUSED"
        assert connection.sock is sock
    finally:
        connection.close()


def test_path_variables_are_percent_decoded(side: Side) -> None:
    quoted = urllib.parse.quote(QUEUE.replace("default", "d\u00e9faut"), safe="/")
    response = httpx.get(f"{side.emu.http_url}/v2/{quoted}")
    assert response.status_code in (400, 404)
    assert "d\u00e9faut" in _error(response)["message"]


def test_the_oidc_documents_are_still_served(side: Side) -> None:
    discovery = httpx.get(f"{side.emu.http_url}/.well-known/openid-configuration").json()
    assert discovery["issuer"] == side.emu.issuer == side.emu.http_url
    assert httpx.get(discovery["jwks_uri"]).json()["keys"]


# -- clients -----------------------------------------------------------------------------------------------------


def test_clients_are_kept_per_transport_and_closed_with_the_emulator() -> None:
    with Emulator() as emu:
        rest = emu.tasks_client("rest")
        assert emu.tasks_client(transport="rest") is rest
        assert emu.tasks_client() is not rest
        assert type(rest.transport).__name__ == "CloudTasksRestTransport"
        assert type(emu.scheduler_client("rest").transport).__name__ == "CloudSchedulerRestTransport"
        with pytest.raises(ValueError, match="transport must be 'grpc' or 'rest'"):
            emu.tasks_client("soap")  # type: ignore[arg-type]
        assert emu.http_url == f"http://127.0.0.1:{emu.server.http_port}"


@pytest.mark.parametrize("kind", [ASYNC_TASKS, ASYNC_SCHEDULER])
def test_the_async_clients_have_no_rest_transport(kind: Any) -> None:
    with pytest.raises(ValueError, match="has no REST transport"):
        kind.connect_rest("http://127.0.0.1:1")


def test_rest_clients_follow_the_emulator_through_reset(side: Side) -> None:
    client = side.emu.tasks_client("rest")
    client.create_queue(parent=LOCATION, queue=tasks_v2.Queue(name=SECOND))
    side.emu.reset()
    assert [queue.name for queue in client.list_queues(parent=LOCATION)] == [QUEUE]


@pytest.mark.slow
def test_the_cli_prints_the_rest_url_and_serves_it() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "fastapi_gcp_tasks.emulator", "--port", "0", "--http-port", "0", "--queue", QUEUE],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    try:
        lines: list[str] = []
        while not any("(REST)" in line for line in lines):
            line = process.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
        match = re.search(r"(http://[\d.]+:\d+) \(REST\)", "".join(lines))
        assert match, "".join(lines)
        with httpx.Client(base_url=match.group(1), timeout=TIMEOUT) as http:
            assert http.get(f"/v2/{QUEUE}").json()["state"] == "RUNNING"
        process.send_signal(signal.SIGTERM)
        assert process.wait(TIMEOUT) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(TIMEOUT)
        process.stderr.close()
