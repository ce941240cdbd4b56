"""The headers of a delivery, typed: what Cloud Tasks and Cloud Scheduler say about the call.

```python
@task_router.post("/send-email")
async def send_email(p: Email, meta: CloudTasksHeaders = Depends()) -> None:
    if await already_done(meta.idempotency_key):
        return
    ...
```

The `X-CloudTasks-*` and `X-CloudScheduler-*` headers describe the delivery; they do not prove who
sent it (anyone can set them). Use `fastapi_gcp_tasks.oidc.OIDCVerifier` for that.
"""

from __future__ import annotations

import datetime as dt

from fastapi import Header

from fastapi_gcp_tasks.receive import _headers as h

__all__ = ["CloudSchedulerHeaders", "CloudTasksHeaders"]


class CloudTasksHeaders:
    """The `X-CloudTasks-*` headers of the current delivery, typed; use as `meta: CloudTasksHeaders = Depends()`.

    Every value tolerates a missing, empty or malformed header (counts become 0, the rest None), so a
    request without them, for example a manual call, still reaches the handler instead of a 422.

    * `retry_count`: attempts made before this one, *including* those that got no response or a
      5xx that never reached the handler (the attempt number, starting at 0).
    * `execution_count`: attempts before this one that got a response (not a 5xx): how many times
      the handler may already have run.
    * `queue_name`, `task_name`: short ids. The task name is stable across retries of one task.
    * `eta`: the scheduled time, tz-aware UTC.
    * `previous_response`: the HTTP status of the previous attempt, None on the first one.
    * `retry_reason`: why Cloud Tasks is retrying, as it words it.
    """

    retry_count: int
    execution_count: int
    queue_name: str | None
    task_name: str | None
    eta: dt.datetime | None
    previous_response: int | None
    retry_reason: str | None

    __slots__ = (
        "eta",
        "execution_count",
        "previous_response",
        "queue_name",
        "retry_count",
        "retry_reason",
        "task_name",
    )

    def __init__(
        self,
        x_cloudtasks_taskretrycount: str | int | None = Header(None, description="Retries so far, 0 first"),
        x_cloudtasks_taskexecutioncount: str | int | None = Header(None, description="Attempts that got a response"),
        x_cloudtasks_queuename: str | None = Header(None, description="Short queue id"),
        x_cloudtasks_taskname: str | None = Header(None, description="Short task id, stable across retries"),
        x_cloudtasks_tasketa: str | float | None = Header(None, description="Schedule time, seconds since epoch"),
        x_cloudtasks_taskpreviousresponse: str | int | None = Header(None, description="HTTP status of last try"),
        x_cloudtasks_taskretryreason: str | None = Header(None, description="Why the task is retried"),
    ) -> None:
        self.retry_count = h.integer(x_cloudtasks_taskretrycount) or 0
        self.execution_count = h.integer(x_cloudtasks_taskexecutioncount) or 0
        self.queue_name = h.text(x_cloudtasks_queuename)
        self.task_name = h.text(x_cloudtasks_taskname)
        self.eta = h.epoch_seconds(x_cloudtasks_tasketa)
        self.previous_response = h.integer(x_cloudtasks_taskpreviousresponse)
        self.retry_reason = h.text(x_cloudtasks_taskretryreason)

    @property
    def idempotency_key(self) -> str | None:
        """`"<queue>/<task>"`: the same for every delivery of one task, different for any other task.

        Cloud Tasks delivers at least once, so a handler may run twice for one task. Record this key
        in the same transaction as the handler's effect (a unique column) and skip the work when it is
        already there. None when the request did not come from Cloud Tasks.
        """
        if self.task_name is None:
            return None
        return f"{self.queue_name or ''}/{self.task_name}"

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in sorted(self.__slots__))
        return f"CloudTasksHeaders({fields})"


class CloudSchedulerHeaders:
    """The `X-CloudScheduler-*` headers of the current call; use as `meta: CloudSchedulerHeaders = Depends()`.

    * `from_scheduler`: the request says it comes from Cloud Scheduler (`X-CloudScheduler: true`).
      A claim, not a proof: verify the OIDC token to know.
    * `job_name`: the short job id.
    * `schedule_time`: the time this run was scheduled for, tz-aware UTC (not when it was delivered).
    """

    from_scheduler: bool
    job_name: str | None
    schedule_time: dt.datetime | None

    __slots__ = ("from_scheduler", "job_name", "schedule_time")

    def __init__(
        self,
        x_cloudscheduler: str | None = Header(None, description="'true' when sent by Cloud Scheduler"),
        x_cloudscheduler_jobname: str | None = Header(None, description="Short job id"),
        x_cloudscheduler_scheduletime: str | None = Header(None, description="Scheduled time, RFC 3339"),
    ) -> None:
        self.from_scheduler = h.flag(x_cloudscheduler)
        self.job_name = h.text(x_cloudscheduler_jobname)
        self.schedule_time = h.rfc3339(x_cloudscheduler_scheduletime)

    def __repr__(self) -> str:
        return (
            f"CloudSchedulerHeaders(from_scheduler={self.from_scheduler!r}, job_name={self.job_name!r}, "
            f"schedule_time={self.schedule_time!r})"
        )
