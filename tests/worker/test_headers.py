"""`CloudTasksHeaders` and `CloudSchedulerHeaders` through a real FastAPI app, and their lenient parsing."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from hypothesis import given
from hypothesis import strategies as st

from fastapi_gcp_tasks.dependencies import CloudSchedulerHeaders, CloudTasksHeaders
from fastapi_gcp_tasks.receive import _headers as h

from ._support import client_for


def make_app() -> FastAPI:
    app = FastAPI()

    @app.post("/task")
    async def task(meta: CloudTasksHeaders = Depends()) -> dict[str, Any]:
        return {
            "retry_count": meta.retry_count,
            "execution_count": meta.execution_count,
            "queue_name": meta.queue_name,
            "task_name": meta.task_name,
            "eta": meta.eta.isoformat() if meta.eta else None,
            "eta_utc": meta.eta is not None and meta.eta.utcoffset() == dt.timedelta(0),
            "previous_response": meta.previous_response,
            "retry_reason": meta.retry_reason,
            "idempotency_key": meta.idempotency_key,
        }

    @app.get("/cron")
    def cron(meta: CloudSchedulerHeaders = Depends()) -> dict[str, Any]:
        return {
            "from_scheduler": meta.from_scheduler,
            "job_name": meta.job_name,
            "schedule_time": meta.schedule_time.isoformat() if meta.schedule_time else None,
        }

    return app


async def test_all_seven_headers_are_typed() -> None:
    headers = {
        "X-CloudTasks-QueueName": "emails",
        "X-CloudTasks-TaskName": "a1b2c3",
        "X-CloudTasks-TaskRetryCount": "3",
        "X-CloudTasks-TaskExecutionCount": "2",
        "X-CloudTasks-TaskETA": "1767250800.25",
        "X-CloudTasks-TaskPreviousResponse": "503",
        "X-CloudTasks-TaskRetryReason": "instance unavailable",
    }
    async with client_for(make_app()) as client:
        response = await client.post("/task", headers=headers)
    assert response.status_code == 200
    assert response.json() == {
        "retry_count": 3,
        "execution_count": 2,
        "queue_name": "emails",
        "task_name": "a1b2c3",
        "eta": "2026-01-01T07:00:00.250000+00:00",
        "eta_utc": True,
        "previous_response": 503,
        "retry_reason": "instance unavailable",
        "idempotency_key": "emails/a1b2c3",
    }


async def test_missing_headers_give_defaults_not_422() -> None:
    async with client_for(make_app()) as client:
        response = await client.post("/task")
    assert response.status_code == 200
    body = response.json()
    assert body["retry_count"] == 0
    assert body["execution_count"] == 0
    assert body["eta"] is None
    assert body["previous_response"] is None
    assert body["task_name"] is None
    assert body["idempotency_key"] is None


@pytest.mark.parametrize("value", ["", "  ", "not-a-number", "nan", "inf", "1e400"])
async def test_empty_or_malformed_eta_is_none_not_422(value: str) -> None:
    async with client_for(make_app()) as client:
        response = await client.post(
            "/task",
            headers={"X-CloudTasks-TaskETA": value, "X-CloudTasks-TaskRetryCount": "", "X-CloudTasks-TaskName": "t"},
        )
    assert response.status_code == 200
    assert response.json()["eta"] is None
    assert response.json()["retry_count"] == 0


async def test_scheduler_headers() -> None:
    headers = {
        "X-CloudScheduler": "true",
        "X-CloudScheduler-JobName": "nightly",
        "X-CloudScheduler-ScheduleTime": "2026-11-21T07:00:00.123456789Z",
    }
    async with client_for(make_app()) as client:
        response = await client.get("/cron", headers=headers)
        plain = await client.get("/cron", headers={"X-CloudScheduler-ScheduleTime": ""})
    assert response.json() == {
        "from_scheduler": True,
        "job_name": "nightly",
        "schedule_time": "2026-11-21T07:00:00.123456+00:00",
    }
    assert plain.status_code == 200
    assert plain.json() == {"from_scheduler": False, "job_name": None, "schedule_time": None}


def test_direct_construction_keeps_the_0_3_keywords() -> None:
    meta = CloudTasksHeaders(x_cloudtasks_taskretrycount=4, x_cloudtasks_taskname="t", x_cloudtasks_tasketa=0.0)
    assert meta.retry_count == 4
    assert meta.task_name == "t"
    assert meta.eta == dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    assert "retry_count=4" in repr(meta)


def test_rfc3339_offsets_are_converted_to_utc() -> None:
    assert h.rfc3339("2026-01-01T09:00:00+02:00") == dt.datetime(2026, 1, 1, 7, tzinfo=dt.UTC)
    assert h.rfc3339("2026-01-01T07:00:00") == dt.datetime(2026, 1, 1, 7, tzinfo=dt.UTC)
    assert h.rfc3339("yesterday") is None


@given(st.text(max_size=40))
def test_parsers_never_raise(value: str) -> None:
    h.integer(value)
    h.epoch_seconds(value)
    h.rfc3339(value)
    h.flag(value)
    h.text(value)


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_eta_round_trips(seconds: float) -> None:
    parsed = h.epoch_seconds(repr(seconds))
    assert parsed is not None
    assert parsed.tzinfo is dt.UTC
    assert abs(parsed.timestamp() - seconds) < 1e-3


@pytest.mark.parametrize(
    "value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "9999-12-31T23:59:59.999999999-00:01"]
)
def test_a_schedule_time_moved_off_the_calendar_by_its_offset_is_none_not_an_error(value: str) -> None:
    assert h.rfc3339(value) is None  # OverflowError before: a 500 for an unauthenticated request


async def test_the_scheduler_headers_of_a_request_never_fail_on_the_calendar_ends() -> None:
    app = FastAPI()

    @app.post("/cron")
    def cron(meta: CloudSchedulerHeaders = Depends()) -> dict[str, str | None]:
        return {"at": None if meta.schedule_time is None else meta.schedule_time.isoformat()}

    async with client_for(app) as client:
        response = await client.post("/cron", headers={"X-CloudScheduler-ScheduleTime": "0001-01-01T00:00:00+01:00"})
    assert response.status_code == 200
    assert response.json() == {"at": None}
