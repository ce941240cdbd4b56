"""What the emulator's two services share (`_rpc.py`): where their separate copies used to disagree."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from google.cloud import scheduler_v1, tasks_v2
from google.rpc import code_pb2  # type: ignore[import-untyped, unused-ignore]

from fastapi_gcp_tasks._limits import MAX_HEADER_BYTES
from fastapi_gcp_tasks.emulator._rpc import RpcError, attempt_status, backoff, check_http_target, rpc_code
from fastapi_gcp_tasks.emulator._scheduler import _validate_http_target
from fastapi_gcp_tasks.emulator._tasks_dispatch import backoff_seconds
from fastapi_gcp_tasks.emulator._tasks_validation import check_http_request
from fastapi_gcp_tasks.emulator._types import DeliveryResult


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (200, code_pb2.OK),
        (204, code_pb2.OK),
        (400, code_pb2.INVALID_ARGUMENT),
        (404, code_pb2.NOT_FOUND),
        (412, code_pb2.FAILED_PRECONDITION),  # Cloud Tasks' copy said FAILED_PRECONDITION by default
        (418, code_pb2.FAILED_PRECONDITION),  # Cloud Scheduler's copy said UNKNOWN
        (429, code_pb2.RESOURCE_EXHAUSTED),
        (500, code_pb2.INTERNAL),
        (502, code_pb2.INTERNAL),
        (503, code_pb2.UNAVAILABLE),
        (504, code_pb2.DEADLINE_EXCEEDED),
        (302, code_pb2.UNKNOWN),
    ],
)
def test_one_status_table_for_both_services(status: int, code: int) -> None:
    assert rpc_code(status) == code
    result = DeliveryResult(status, 0.01)
    assert attempt_status(result, http_message="HTTP status code {status}") == (code, f"HTTP status code {status}")
    scheduler_message = "" if 200 <= status < 300 else f"HTTP {status}"
    assert attempt_status(result, http_message="HTTP {status}", ok_message="") == (code, scheduler_message)


def test_no_response_is_deadline_exceeded_or_unavailable() -> None:
    timed_out = DeliveryResult(None, 15.0, error="no response within the 15 s deadline", timed_out=True)
    assert attempt_status(timed_out, http_message="HTTP {status}")[0] == code_pb2.DEADLINE_EXCEEDED
    refused = DeliveryResult(None, 0.0, error="ConnectionRefusedError")
    assert attempt_status(refused, http_message="HTTP {status}") == (code_pb2.UNAVAILABLE, "ConnectionRefusedError")


def test_one_backoff_for_queues_and_jobs() -> None:
    # the example of Cloud Scheduler's RetryConfig documentation, which Cloud Tasks' describes alike
    expected = [10, 20, 40, 80, 160, 240, 300, 300]
    assert [backoff(10, 300, 3, n) for n in range(8)] == expected
    retry = tasks_v2.RetryConfig.pb(
        tasks_v2.RetryConfig(min_backoff={"seconds": 10}, max_backoff={"seconds": 300}, max_doublings=3)
    )
    assert [backoff_seconds(retry, n) for n in range(8)] == expected


_TARGETS = [
    ({"headers": {"X-A": "a\nb"}}, "control characters"),
    ({"headers": {"bad header": "x"}}, "header name"),
    ({"headers": {"X-Big": "x" * MAX_HEADER_BYTES}}, "80 KB"),
    ({"url": "HTTP://worker/x"}, None),
    ({"url": "http://worker:99999/"}, "not a valid URL"),
    ({"url": "http://worker/a b"}, "whitespace"),
    ({"url": "http:///x"}, "no host"),
    ({"url": "ftp://worker/x"}, "http:// or https://"),
    ({"http_method": 2, "body": b"x"}, "only allowed with POST"),
    ({"oidc": "nobody"}, "service account email"),
    ({"oidc": ""}, "service_account_email is required"),
]


@pytest.mark.parametrize(("change", "message"), _TARGETS)
def test_one_http_target_check_for_tasks_and_jobs(change: dict[str, object], message: str | None) -> None:
    url = str(change.get("url", "http://worker/x"))
    headers = change.get("headers", {})
    body = change.get("body", b"")
    method = change.get("http_method", 1)
    oidc = change.get("oidc")
    task_http = tasks_v2.HttpRequest.pb()(url=url, headers=headers, body=body, http_method=method)
    job_target = scheduler_v1.HttpTarget.pb()(uri=url, headers=headers, body=body, http_method=method)
    if oidc is not None:
        task_http.oidc_token.service_account_email = oidc
        job_target.oidc_token.service_account_email = oidc
    checks: list[Callable[[], object]] = [
        lambda: check_http_request(task_http),
        lambda: _validate_http_target(job_target, None),
    ]
    for check in checks:
        if message is None:
            check()
            continue
        with pytest.raises(RpcError, match=message) as raised:
            check()
        assert raised.value.code.name == "INVALID_ARGUMENT"


def test_direct_check_names_the_field() -> None:
    with pytest.raises(RpcError, match=r"^http_target\.uri is required"):
        check_http_target(scheduler_v1.HttpTarget.pb()(), "http_target", "uri")
