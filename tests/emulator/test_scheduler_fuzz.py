"""Hypothesis-generated requests against the Cloud Scheduler service: every one gets a status, none crashes it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.api_core import exceptions
from google.cloud import scheduler_v1
from google.cloud.scheduler_v1.services.cloud_scheduler.transports import CloudSchedulerGrpcTransport
from hypothesis import event, given
from hypothesis import strategies as st

from fastapi_gcp_tasks.emulator._clock import ManualClock
from fastapi_gcp_tasks.emulator._grpc_server import GrpcServer
from fastapi_gcp_tasks.emulator._scheduler import SERVICE_NAME, SchedulerService
from fastapi_gcp_tasks.emulator._types import DeliveryRequest, DeliveryResult

from ._scheduler_support import PARENT, START, fake_signer

EXPECTED_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
}
METHODS = ["CreateJob", "GetJob", "ListJobs", "UpdateJob", "DeleteJob", "PauseJob", "ResumeJob", "RunJob"]


class AcceptingDeliverer:
    """Answers 200 to every attempt without sending it: the fuzzed URLs point anywhere."""

    def __init__(self) -> None:
        self.requests: list[DeliveryRequest] = []

    async def deliver(self, request: DeliveryRequest) -> DeliveryResult:
        self.requests.append(request)
        return DeliveryResult(status=200, latency=0.0)

    async def aclose(self) -> None:
        pass


@dataclass
class Server:
    loop: asyncio.AbstractEventLoop
    clock: ManualClock
    service: SchedulerService
    deliverer: AcceptingDeliverer
    client: scheduler_v1.CloudSchedulerClient
    channel: grpc.Channel

    def run_due(self) -> int:
        return asyncio.run_coroutine_threadsafe(self.service.run_due(), self.loop).result(timeout=30)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    loop = asyncio.new_event_loop()
    clock = ManualClock(START)
    deliverer = AcceptingDeliverer()
    service = SchedulerService(clock=clock, deliverer=deliverer, oidc_signer=fake_signer)
    grpc_server = GrpcServer(service.rpc_handlers())

    async def start() -> int:
        return await grpc_server.start("127.0.0.1", 0)

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    port = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    client = scheduler_v1.CloudSchedulerClient(transport=CloudSchedulerGrpcTransport(channel=channel))
    try:
        yield Server(loop, clock, service, deliverer, client, channel)
    finally:
        channel.close()
        asyncio.run_coroutine_threadsafe(grpc_server.stop(), loop).result(timeout=10)
        asyncio.run_coroutine_threadsafe(service.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


# strategies: mostly plausible values, with enough garbage to reach every validation branch

_text = st.text(max_size=40)
_job_id = st.one_of(
    st.sampled_from(["a", "b", "c"]),
    st.sampled_from(["a", "b", "c"]),
    st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True),
    _text,
)
_name = st.one_of(_job_id.map(lambda job_id: f"{PARENT}/jobs/{job_id}"), _text)
_parent = st.one_of(st.just(PARENT), st.just("projects/p/locations/l"), _text)
_cron_field = st.sampled_from(["*", "*/5", "0", "7", "1-5", "MON", "JAN", "60", "5-1", "*/0", "?", ""])
_schedule = st.one_of(
    st.lists(_cron_field, min_size=0, max_size=7).map(" ".join),
    st.sampled_from(["* * * * *", "0 9 * * 1-5", "30 2 * * *"]),
    _text,
)
_zone = st.one_of(st.sampled_from(["", "UTC", "utc", "Europe/Berlin", "America/New_York", "Nowhere/Else"]), _text)
_int32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
_duration = st.fixed_dictionaries(
    {
        "seconds": st.one_of(st.integers(0, 4000), st.integers(-(2**40), 2**40)),
        "nanos": st.one_of(st.just(0), _int32),
    }
)
_uri = st.one_of(
    st.sampled_from(["http://worker/x", "https://w.example/a?b=c", "ftp://x", "http://", "http://[::1", ""]),
    _text,
    _text.map(lambda path: "http://worker/" + path),
)
_headers = st.dictionaries(st.one_of(st.sampled_from(["Content-Type", "Host", "X-A"]), _text), _text, max_size=3)
_auth = st.one_of(
    st.just({}),
    st.builds(lambda email, aud: {"oidc_token": {"service_account_email": email, "audience": aud}}, _text, _text),
    st.builds(lambda email: {"oauth_token": {"service_account_email": email}}, _text),
)
_http_target = st.builds(
    lambda uri, method, headers, body, auth: {
        "http_target": {"uri": uri, "http_method": method, "headers": headers, "body": body, **auth}
    },
    _uri,
    st.integers(-1, 9),
    _headers,
    st.one_of(st.just(b""), st.binary(max_size=20)),
    _auth,
)
_other_target = st.one_of(
    st.builds(
        lambda topic: {"pubsub_target": {"topic_name": topic}}, st.one_of(st.just("projects/p/topics/top"), _text)
    ),
    st.builds(
        lambda uri, method: {"app_engine_http_target": {"relative_uri": uri, "http_method": method}},
        st.one_of(st.just("/x"), _text),
        st.integers(-1, 9),
    ),
    st.just({}),
)
_retry = st.fixed_dictionaries(
    {},
    optional={
        "retry_count": st.one_of(st.integers(-1, 6), _int32),
        "max_doublings": st.one_of(st.integers(-1, 17), _int32),
        "min_backoff_duration": _duration,
        "max_backoff_duration": _duration,
        "max_retry_duration": _duration,
    },
)
_job = st.builds(
    lambda name, schedule, zone, target, description, retry, deadline, state: {
        "name": name,
        "schedule": schedule,
        "time_zone": zone,
        "description": description,
        "retry_config": retry,
        "state": state,
        **({"attempt_deadline": deadline} if deadline is not None else {}),
        **target,
    },
    _name,
    _schedule,
    _zone,
    st.one_of(_http_target, _other_target),
    st.one_of(st.just(""), st.text(max_size=600)),
    _retry,
    st.one_of(st.none(), _duration),
    st.integers(-1, 6),
)
_valid_job = st.builds(
    lambda job_id, schedule, zone, method, headers, retry_count, backoff, deadline, body: {
        "name": f"{PARENT}/jobs/{job_id}",
        "schedule": schedule,
        "time_zone": zone,
        "http_target": {
            "uri": "http://worker/ok",
            "http_method": method,
            "headers": headers,
            "body": body if method in (0, 1, 4, 6) else b"",
        },
        "retry_config": {"retry_count": retry_count, "min_backoff_duration": {"seconds": backoff}},
        "attempt_deadline": {"seconds": deadline},
    },
    st.sampled_from(["a", "b", "c"]),
    st.sampled_from(["* * * * *", "*/5 * * * *", "0 9 * * 1-5", "30 2 * * *"]),
    st.sampled_from(["", "UTC", "Europe/Berlin", "America/New_York"]),
    st.integers(0, 7),
    st.dictionaries(st.from_regex(r"X-[A-Za-z0-9]{1,8}", fullmatch=True), st.text("abc ,;=", max_size=10), max_size=3),
    st.integers(0, 5),
    st.integers(0, 3600),
    st.integers(15, 1800),
    st.binary(max_size=10),
)
_mask = st.lists(
    st.one_of(
        st.sampled_from(["schedule", "http_target", "http_target.uri", "retry_config.retry_count", "state", "name"]),
        _text,
    ),
    max_size=3,
)


_any_job = st.one_of(_valid_job, _valid_job, _job)


def _request(method: str, data: st.DataObject) -> Any:
    if method == "CreateJob":
        return scheduler_v1.CreateJobRequest(
            parent=data.draw(_parent), job=scheduler_v1.Job.pb()(**data.draw(_any_job))
        )
    if method == "UpdateJob":
        request = scheduler_v1.UpdateJobRequest.pb()(job=data.draw(_any_job))
        request.update_mask.paths.extend(data.draw(_mask))
        return scheduler_v1.UpdateJobRequest.wrap(request)
    if method == "ListJobs":
        return scheduler_v1.ListJobsRequest(
            parent=data.draw(_parent), page_size=data.draw(_int32), page_token=data.draw(_text)
        )
    request_type = getattr(scheduler_v1, f"{method}Request")
    return request_type(name=data.draw(_name))


@given(data=st.data())
def test_any_request_through_the_official_client_gets_an_expected_status(server: Server, data: st.DataObject) -> None:
    for _ in range(4):
        method = data.draw(st.sampled_from(METHODS))
        request = _request(method, data)
        call = getattr(server.client, method.replace("Job", "_job").lower())
        code = grpc.StatusCode.OK
        try:
            response = call(request=request, timeout=10, retry=None)
            if method == "ListJobs":
                list(response)
        except exceptions.GoogleAPICallError as exc:
            code = exc.grpc_status_code
        event(f"{method} -> {code.name}")  # `pytest --hypothesis-show-statistics` shows how far requests get
        assert code in EXPECTED_CODES | {grpc.StatusCode.OK}, (method, request)
    server.clock.advance(data.draw(st.integers(0, 3 * 3600)))
    server.run_due()
    assert server.service.is_idle()


@given(method=st.sampled_from(METHODS), payload=st.binary(max_size=200))
def test_any_bytes_get_a_status(server: Server, method: str, payload: bytes) -> None:
    call = server.channel.unary_unary(f"/{SERVICE_NAME}/{method}")
    code = grpc.StatusCode.OK
    try:
        call(payload, timeout=10)
    except grpc.RpcError as exc:
        code = exc.code()
    assert code in EXPECTED_CODES | {grpc.StatusCode.OK}, (method, payload)


def test_the_service_still_works_after_the_fuzzing(server: Server) -> None:
    name = f"{PARENT}/jobs/after-the-fuzzing"
    client = server.client
    client.create_job(
        parent=PARENT,
        job=scheduler_v1.Job(name=name, schedule="* * * * *", http_target={"uri": "http://worker/ok"}),
    )
    client.run_job(name=name)
    before = len(server.deliverer.requests)
    server.run_due()
    assert server.deliverer.requests[before:][0].url == "http://worker/ok"
    assert client.get_job(name=name).last_attempt_time == server.clock.now()
    assert name in [job.name for job in client.list_jobs(parent=PARENT)]
