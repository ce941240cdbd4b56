"""The emulator's Cloud Scheduler v1 service: jobs kept in memory, fired on the emulator's clock.

The official `google.cloud.scheduler_v1` clients talk to it unchanged over gRPC. It validates requests
and answers with the status codes of the real service, fills the output-only fields the way the
service does (`state`, `user_update_time`, `schedule_time`, `last_attempt_time`, `status`), and fires
HTTP-target jobs over the shared `Deliverer`. Pub/Sub and App Engine jobs are stored but never fired.

Execution model, as Cloud Scheduler documents it:

- An execution is a first attempt plus its retries. A job has at most one scheduled execution at a
  time: a start time that comes while the previous execution is still running (or waiting to retry)
  is delayed until it ends, and several missed start times collapse into one run. `RunJob` starts an
  extra execution right away, even while another one runs.
- Retries follow `retry_config`: none when `retry_count` is 0; otherwise the job is retried until
  `retry_count` retries were made and, when `max_retry_duration` is set, that much time has passed
  since the first attempt ("until both limits are reached"), but never at or after the next scheduled
  start time. Backoff starts at `min_backoff_duration`, doubles `max_doublings` times, then grows
  linearly by the last doubled value, capped at `max_backoff_duration` (`_rpc.backoff`, shared with
  Cloud Tasks).
- Each attempt may take at most `attempt_deadline`, measured on the emulator's clock, so a test with a
  manual clock can time an attempt out without waiting (`_delivery.deliver_on_clock`). Attempts run
  concurrently: a slow job never holds up another.

The RPC plumbing, the HTTP-target rules and the threading model are those of `_rpc.py`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.cloud import scheduler_v1
from google.protobuf import empty_pb2, field_mask_pb2, timestamp_pb2

from fastapi_gcp_tasks._limits import (
    BODY_METHODS,
    SCHEDULER_DEFAULT_ATTEMPT_DEADLINE,
    SCHEDULER_LIST_PAGE_SIZE,
)
from fastapi_gcp_tasks.build._cron import CronSchedule
from fastapi_gcp_tasks.build._job_checks import JOB_NAME, PARENT, validate_job
from fastapi_gcp_tasks.build._job_checks import clear_output as _clear_output
from fastapi_gcp_tasks.build._job_checks import normalise_job as _normalise
from fastapi_gcp_tasks.emulator._delivery import deliver_on_clock, logger
from fastapi_gcp_tasks.emulator._rpc import (
    METHODS,
    POST,
    Method,
    RpcError,
    attempt_status,
    backoff,
    check_deadline,
    check_http_target,
    grpc_handlers,
    invalid,
    seconds,
)
from fastapi_gcp_tasks.emulator._tasks_validation import PageTokens, page
from fastapi_gcp_tasks.emulator._types import Clock, Deliverer, DeliveryRecord, DeliveryRequest
from fastapi_gcp_tasks.exception import TaskLimitError

__all__ = ["SERVICE_NAME", "JobDelivery", "SchedulerService"]

SERVICE_NAME = "google.cloud.scheduler.v1.CloudScheduler"

_Job = scheduler_v1.Job.pb()
_ENABLED = int(scheduler_v1.Job.State.ENABLED)
_PAUSED = int(scheduler_v1.Job.State.PAUSED)

_PARENT = PARENT
_JOB_NAME = JOB_NAME
_REPLACED_HEADERS = ("host", "content-length", "user-agent", "x-google-", "x-appengine-", "x-cloudscheduler")

_UPDATABLE = frozenset(
    {
        "description",
        "schedule",
        "time_zone",
        "http_target",
        "pubsub_target",
        "app_engine_http_target",
        "retry_config",
        "attempt_deadline",
    }
)
_TARGETS = ("http_target", "pubsub_target", "app_engine_http_target")
_IDLE_WAIT = dt.timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class JobDelivery(DeliveryRecord):
    """One HTTP attempt the scheduler made: the emulator's delivery record, plus what the execution was.

    `attempt` is 1 for the first attempt of an execution, 2 for its first retry, ...
    """

    schedule_time: dt.datetime | None = None
    """The start time the execution was scheduled for (sent as `X-CloudScheduler-ScheduleTime`)."""
    forced: bool = False
    """The execution was started by `RunJob` rather than by the schedule."""

    @property
    def job(self) -> str:
        """The full job name (the record's `source`)."""
        return self.source

    @property
    def started(self) -> dt.datetime:
        """When the attempt started, on the emulator's clock (the record's `time`)."""
        return self.time


@dataclass(eq=False, slots=True)
class _StoredJob:
    pb: Any
    cron: CronSchedule
    tz: dt.tzinfo
    next_run: dt.datetime | None = None
    busy: _Execution | None = None


@dataclass(eq=False, slots=True)
class _Execution:
    job: _StoredJob
    schedule_time: dt.datetime
    due: dt.datetime
    forced: bool
    attempts: int = 0
    first_attempt: dt.datetime | None = None


def _timestamp(value: dt.datetime) -> Any:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _rfc3339(value: dt.datetime) -> str:
    value = value.astimezone(dt.UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def _validate_http_target(target: Any, deadline: Any | None) -> None:
    """An HTTP target and its `attempt_deadline` as `_validate` checks them; INVALID_ARGUMENT otherwise."""
    check_http_target(target, "http_target", "uri")
    if deadline is not None:
        check_deadline(deadline, "attempt_deadline")


def _validate(job: Any) -> tuple[CronSchedule, dt.tzinfo]:
    """Check a normalised job as the real service would (`build._job_checks`, which the library applies
    when a job is declared); INVALID_ARGUMENT with the reason."""
    try:
        return validate_job(job)
    except TaskLimitError as exc:
        raise invalid(str(exc)) from None


def _parse_job_name(name: str) -> re.Match[str]:
    match = _JOB_NAME.fullmatch(name)
    if match is None:
        raise invalid(
            f"job name {name!r} is not projects/PROJECT_ID/locations/LOCATION_ID/jobs/JOB_ID "
            "(JOB_ID: 1 to 500 characters from [A-Za-z0-9_-])"
        )
    return match


def _check_parent(parent: str) -> None:
    if _PARENT.fullmatch(parent) is None:
        raise invalid(f"parent {parent!r} is not projects/PROJECT_ID/locations/LOCATION_ID")


class SchedulerService:
    """Cloud Scheduler v1 in memory. Serve `rpc_handlers()` (coroutines) from a server on the same loop.

    Time comes only from `clock`, so with a manual clock a test moves time and then calls
    `await run_due()` to fire, and wait for, whatever became due.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        deliverer: Deliverer,
        oidc_signer: Callable[[str, str], str] | None = None,
        keep_deliveries: int | None = 10_000,
        body_limit: int | None = None,
    ) -> None:
        """`oidc_signer(audience, service_account_email)` returns a JWT; without it no token is sent.

        `deliveries` keeps the last `keep_deliveries` attempts (all of them when None), each with at most
        `body_limit` bytes of its body (all of it when None).
        """
        if keep_deliveries is not None and keep_deliveries < 0:
            raise ValueError(f"keep_deliveries must be None or at least 0, got {keep_deliveries}")
        self._clock = clock
        self._deliverer = deliverer
        self._oidc_signer = oidc_signer
        self.body_limit = body_limit
        self._jobs: dict[str, _StoredJob] = {}
        self._waiting: set[_Execution] = set()
        self._inflight: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self.deliveries: collections.deque[JobDelivery] = collections.deque(maxlen=keep_deliveries)
        """The latest attempts made (at most `keep_deliveries`), oldest first."""
        self._attempts_made = 0
        self._page_tokens = PageTokens(lifetime=None)

    # lifecycle

    async def start(self) -> None:
        """Start firing jobs on the running event loop."""
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self._run(), name="cloud-scheduler-emulator")

    async def stop(self) -> None:
        """Stop firing and cancel attempts in flight."""
        tasks = list(self._inflight)
        if self._loop_task is not None:
            tasks.append(self._loop_task)
            self._loop_task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def reset(self) -> None:
        """Forget every job and delivery; attempts in flight are cancelled and not recorded."""
        for task in self._inflight:
            task.cancel()
        self._jobs.clear()
        self._waiting.clear()
        self.deliveries.clear()
        self._clock.wake()

    def is_idle(self) -> bool:
        """True when no attempt is in flight and nothing is due on the clock now."""
        return not self._inflight and self._next_due(self._clock.now()) is None

    def fire_due(self) -> int:
        """Start every attempt due on the clock now, without waiting for them; returns how many started.

        Must be called on the loop the service runs on.
        """
        return self._start_due()

    async def run_due(self) -> int:
        """Fire everything due on the clock now and wait until no attempt is in flight; returns the attempts made.

        An attempt that hangs keeps this waiting until its `attempt_deadline` passes on the clock: with a
        manual clock, advance it from another task.
        """
        before = self._attempts_made
        while True:
            self._start_due()
            if not self._inflight:
                return self._attempts_made - before
            await asyncio.wait(set(self._inflight))

    # gRPC surface

    def methods(self) -> list[Method]:
        """The `google.cloud.scheduler.v1.CloudScheduler` RPCs, for the gRPC server and the REST gateway alike."""
        return [
            Method(SERVICE_NAME, "CreateJob", self._create_job, scheduler_v1.CreateJobRequest),
            Method(SERVICE_NAME, "GetJob", self._get_job, scheduler_v1.GetJobRequest),
            Method(SERVICE_NAME, "ListJobs", self._list_jobs, scheduler_v1.ListJobsRequest),
            Method(SERVICE_NAME, "UpdateJob", self._update_job, scheduler_v1.UpdateJobRequest),
            Method(SERVICE_NAME, "DeleteJob", self._delete_job, scheduler_v1.DeleteJobRequest),
            Method(SERVICE_NAME, "PauseJob", self._pause_job, scheduler_v1.PauseJobRequest),
            Method(SERVICE_NAME, "ResumeJob", self._resume_job, scheduler_v1.ResumeJobRequest),
            Method(SERVICE_NAME, "RunJob", self._run_job, scheduler_v1.RunJobRequest),
        ]

    def rpc_handlers(self) -> list[grpc.GenericRpcHandler]:
        """`methods()` as gRPC handlers, for `server.add_generic_rpc_handlers`."""
        return grpc_handlers(self.methods())

    def _create_job(self, request: Any) -> Any:
        _check_parent(request.parent)
        job = _Job()
        job.CopyFrom(request.job)
        _clear_output(job)
        if job.name:
            match = _parse_job_name(job.name)
            if match["parent"] != request.parent:
                raise invalid(f"job name {job.name!r} is not in parent {request.parent!r}")
        else:
            job.name = f"{request.parent}/jobs/{secrets.token_hex(10)}"
        _normalise(job)
        cron, tz = _validate(job)
        if job.name in self._jobs:
            raise RpcError(grpc.StatusCode.ALREADY_EXISTS, f"job {job.name} already exists")
        now = self._clock.now()
        job.state = _ENABLED
        job.user_update_time.CopyFrom(_timestamp(now))
        stored = _StoredJob(pb=job, cron=cron, tz=tz, next_run=cron.next_after(now, tz))
        self._jobs[job.name] = stored
        self._clock.wake()
        return self._view(stored)

    def _get_job(self, request: Any) -> Any:
        return self._view(self._find(request.name))

    def _list_jobs(self, request: Any) -> Any:
        """ListJobs by name; `page_size` above 500 is capped to 500 ("The maximum page size is 500"), and the
        opaque page token only continues a listing of the same parent."""
        _check_parent(request.parent)
        now = self._clock.now()
        binding = f"ListJobs {request.parent}"
        after = self._page_tokens.read(request.page_token, binding, now) if request.page_token else None
        prefix = request.parent + "/jobs/"
        names = sorted(name for name in self._jobs if name.startswith(prefix))
        chosen, more = page(names, request.page_size, after, lambda name: name, max_size=SCHEDULER_LIST_PAGE_SIZE)
        response = scheduler_v1.ListJobsResponse.pb()()
        response.jobs.extend(self._view(self._jobs[name]) for name in chosen)
        if more:
            response.next_page_token = self._page_tokens.issue(binding, chosen[-1], now)
        return response

    def _update_job(self, request: Any) -> Any:
        stored = self._find(request.job.name)
        paths = list(request.update_mask.paths)
        if not paths:
            paths = [name for name in _UPDATABLE if _populated(request.job, name)]
        elif paths == ["*"]:
            paths = sorted(_UPDATABLE)
        for path in paths:
            if path.split(".", 1)[0] not in _UPDATABLE:
                raise invalid(f"update_mask path {path!r} is not an updatable field of Job")
        mask = field_mask_pb2.FieldMask(paths=paths)
        if not mask.IsValidForDescriptor(_Job.DESCRIPTOR):
            raise invalid(f"update_mask {paths!r} names fields that Job does not have")
        job = _Job()
        job.CopyFrom(stored.pb)
        try:
            mask.MergeMessage(request.job, job, replace_message_field=True, replace_repeated_field=True)
        except ValueError as exc:
            raise invalid(f"update_mask {paths!r} cannot be applied: {exc}") from None
        _normalise(job)
        cron, tz = _validate(job)
        job.user_update_time.CopyFrom(_timestamp(self._clock.now()))
        stored.pb, stored.cron, stored.tz = job, cron, tz
        if job.state == _ENABLED:
            stored.next_run = cron.next_after(self._clock.now(), tz)
        self._clock.wake()
        return self._view(stored)

    def _delete_job(self, request: Any) -> Any:
        stored = self._find(request.name)
        del self._jobs[stored.pb.name]
        self._drop_waiting(stored)
        return empty_pb2.Empty()

    def _pause_job(self, request: Any) -> Any:
        stored = self._find(request.name)
        if stored.pb.state != _ENABLED:
            state = scheduler_v1.Job.State(stored.pb.state).name
            raise RpcError(grpc.StatusCode.FAILED_PRECONDITION, f"job {stored.pb.name} is {state}, not ENABLED")
        stored.pb.state = _PAUSED
        stored.pb.user_update_time.CopyFrom(_timestamp(self._clock.now()))
        stored.next_run = None
        self._drop_waiting(stored)
        return self._view(stored)

    def _resume_job(self, request: Any) -> Any:
        stored = self._find(request.name)
        if stored.pb.state != _PAUSED:
            state = scheduler_v1.Job.State(stored.pb.state).name
            raise RpcError(grpc.StatusCode.FAILED_PRECONDITION, f"job {stored.pb.name} is {state}, not PAUSED")
        now = self._clock.now()
        stored.pb.state = _ENABLED
        stored.pb.user_update_time.CopyFrom(_timestamp(now))
        stored.next_run = stored.cron.next_after(now, stored.tz)
        self._clock.wake()
        return self._view(stored)

    def _run_job(self, request: Any) -> Any:
        stored = self._find(request.name)
        if stored.pb.WhichOneof("target") == "http_target":
            now = self._clock.now()
            self._waiting.add(_Execution(job=stored, schedule_time=now, due=now, forced=True))
            self._clock.wake()
        return self._view(stored)

    def _find(self, name: str) -> _StoredJob:
        _parse_job_name(name)
        stored = self._jobs.get(name)
        if stored is None:
            raise RpcError(grpc.StatusCode.NOT_FOUND, f"job {name} not found")
        return stored

    def _view(self, stored: _StoredJob) -> Any:
        job = _Job()
        job.CopyFrom(stored.pb)
        upcoming = [e.due for e in self._waiting if e.job is stored and e.attempts]
        if stored.next_run is not None and stored.pb.state == _ENABLED:
            upcoming.append(stored.next_run)
        if upcoming:
            job.schedule_time.CopyFrom(_timestamp(min(upcoming)))
        return job

    # firing

    def _drop_waiting(self, stored: _StoredJob) -> None:
        self._waiting = {e for e in self._waiting if e.job is not stored}
        stored.busy = None

    def _next_due(self, now: dt.datetime) -> dt.datetime | None:
        """The earliest moment something must start, `now` if something is overdue, None if nothing."""
        times = [e.due for e in self._waiting]
        times.extend(
            s.next_run
            for s in self._jobs.values()
            if s.next_run is not None and s.busy is None and s.pb.state == _ENABLED
        )
        if not times:
            return None
        earliest = min(times)
        return None if earliest > now else earliest

    def _next_wakeup(self) -> dt.datetime | None:
        times = [e.due for e in self._waiting]
        times.extend(s.next_run for s in self._jobs.values() if s.next_run is not None and s.busy is None)
        return min(times, default=None)

    def _start_due(self) -> int:
        now = self._clock.now()
        for stored in list(self._jobs.values()):
            if stored.pb.state != _ENABLED or stored.busy is not None:
                continue
            if stored.next_run is None or stored.next_run > now:
                continue
            slot = stored.next_run
            stored.next_run = stored.cron.next_after(now, stored.tz)
            if stored.pb.WhichOneof("target") == "http_target":
                stored.busy = _Execution(job=stored, schedule_time=slot, due=now, forced=False)
                self._waiting.add(stored.busy)
        due = sorted((e for e in self._waiting if e.due <= now), key=lambda e: (e.due, e.job.pb.name))
        for execution in due:
            self._waiting.discard(execution)
            task = asyncio.get_running_loop().create_task(self._attempt(execution))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
        return len(due)

    async def _run(self) -> None:
        while True:
            try:
                self._start_due()
            except Exception:  # noqa: BLE001 - logged; the firing loop lives on
                logger.exception("cloud scheduler emulator: firing jobs failed")
            wakeup = self._next_wakeup()
            now = self._clock.now()
            await self._clock.sleep_until(wakeup if wakeup is not None else now + _IDLE_WAIT)

    async def _sleep_until(self, when: dt.datetime) -> None:
        while self._clock.now() < when:
            await self._clock.sleep_until(when)

    def _request(self, execution: _Execution) -> DeliveryRequest:
        job = execution.job.pb
        target = job.http_target
        headers: dict[str, str] = {
            name: value for name, value in target.headers.items() if not name.lower().startswith(_REPLACED_HEADERS)
        }
        method = METHODS[target.http_method or POST]
        if target.body and not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = "application/octet-stream"
        headers["User-Agent"] = "Google-Cloud-Scheduler"
        headers["X-CloudScheduler"] = "true"
        headers["X-CloudScheduler-JobName"] = job.name.rsplit("/", 1)[-1]
        headers["X-CloudScheduler-ScheduleTime"] = _rfc3339(execution.schedule_time)
        if target.HasField("oidc_token") and self._oidc_signer is not None:
            for name in [n for n in headers if n.lower() == "authorization"]:
                del headers[name]
            audience = target.oidc_token.audience or target.uri
            token = self._oidc_signer(audience, target.oidc_token.service_account_email)
            headers["Authorization"] = f"Bearer {token}"
        return DeliveryRequest(
            method=method,
            url=target.uri,
            headers=headers,
            body=target.body if method in BODY_METHODS else b"",
            deadline=seconds(job.attempt_deadline) or SCHEDULER_DEFAULT_ATTEMPT_DEADLINE,
            source=job.name,
            attempt=execution.attempts,
        )

    async def _attempt(self, execution: _Execution) -> None:
        stored = execution.job
        execution.attempts += 1
        request = self._request(execution)
        started = self._clock.now()
        execution.first_attempt = execution.first_attempt or started
        stored.pb.last_attempt_time.CopyFrom(_timestamp(started))
        result = await deliver_on_clock(self._deliverer, request, self._clock, started)
        code, message = attempt_status(result, http_message="HTTP {status}", ok_message="")
        stored.pb.status.Clear()
        stored.pb.status.code = code
        stored.pb.status.message = message
        self._attempts_made += 1
        if self.deliveries.maxlen != 0:
            self.deliveries.append(
                JobDelivery.of(
                    request,
                    result,
                    started,
                    body_limit=self.body_limit,
                    schedule_time=execution.schedule_time,
                    forced=execution.forced,
                )
            )
        retry_at = None if result.ok else self._retry_time(execution)
        if retry_at is None:
            if stored.busy is execution:
                stored.busy = None
        else:
            execution.due = retry_at
            self._waiting.add(execution)
        self._clock.wake()

    def _retry_time(self, execution: _Execution) -> dt.datetime | None:
        stored = execution.job
        if self._jobs.get(stored.pb.name) is not stored or stored.pb.state != _ENABLED:
            return None
        if stored.busy is not execution and not execution.forced:
            return None
        retry = stored.pb.retry_config
        if retry.retry_count == 0:
            return None
        now = self._clock.now()
        retries_done = execution.attempts - 1
        assert execution.first_attempt is not None
        elapsed = (now - execution.first_attempt).total_seconds()
        max_duration = seconds(retry.max_retry_duration)
        if retries_done >= retry.retry_count and (max_duration == 0 or elapsed >= max_duration):
            return None
        delay = backoff(
            seconds(retry.min_backoff_duration), seconds(retry.max_backoff_duration), retry.max_doublings, retries_done
        )
        when = now + dt.timedelta(seconds=delay)
        if stored.next_run is not None and when >= stored.next_run:
            return None
        return when


def _populated(job: Any, name: str) -> bool:
    if name in _TARGETS or name in ("retry_config", "attempt_deadline"):
        return bool(job.HasField(name))
    return bool(getattr(job, name))
