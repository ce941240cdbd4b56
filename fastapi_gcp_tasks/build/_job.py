"""Cloud Scheduler jobs for scheduled routes: building the Job and keeping the service in step with it.

`.schedule()` reads the job, creates it when missing, updates it in place with `UpdateJob` when it
differs (deleting and re-creating would lose its history and leave a gap in its runs), and writes
nothing when it already matches. The comparison ignores output-only fields and headers the service
adds itself. Those decisions are written once, as the flows `schedule_flow` and `delete_flow`, which
`transport._scheduler` drives with the sync or the async client.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from google.api_core import exceptions as core
from google.cloud import scheduler_v1
from google.protobuf import duration_pb2

from fastapi_gcp_tasks._limits import (
    SCHEDULER_DEFAULT_ATTEMPT_DEADLINE,
    SCHEDULER_MAX_ATTEMPT_DEADLINE,
    SCHEDULER_MAX_BACKOFF,
    SCHEDULER_MAX_DOUBLINGS,
    SCHEDULER_MAX_RETRY_COUNT,
    SCHEDULER_MIN_ATTEMPT_DEADLINE,
    SCHEDULER_MIN_BACKOFF,
)
from fastapi_gcp_tasks.build import _naming, _tracing
from fastapi_gcp_tasks.build._cron import CronSchedule, parse_time_zone
from fastapi_gcp_tasks.build._plan import RoutePlan
from fastapi_gcp_tasks.build._task import check_url, to_seconds
from fastapi_gcp_tasks.exception import TaskArgumentError, TaskLimitError, UnknownParamError
from fastapi_gcp_tasks.transport._clients import AsyncClientSource, SyncClientSource
from fastapi_gcp_tasks.transport._flows import CreateJob, DeleteJob, Flow, GetJob, UpdateJob
from fastapi_gcp_tasks.transport._scheduler import run_flow, run_flow_async

__all__ = ["SCHEDULER_OPTION_NAMES", "JobConfig", "JobSync", "default_retry_config", "validate_cron"]

_HTTP_METHODS = {
    "POST": scheduler_v1.HttpMethod.POST,
    "GET": scheduler_v1.HttpMethod.GET,
    "HEAD": scheduler_v1.HttpMethod.HEAD,
    "PUT": scheduler_v1.HttpMethod.PUT,
    "DELETE": scheduler_v1.HttpMethod.DELETE,
    "PATCH": scheduler_v1.HttpMethod.PATCH,
    "OPTIONS": scheduler_v1.HttpMethod.OPTIONS,
}
_SERVICE_HEADERS = frozenset({"user-agent", "x-cloudscheduler", "content-length"})
_OUTPUT_ONLY = ("state", "status", "user_update_time", "schedule_time", "last_attempt_time")
_RETRY_DEFAULTS = {
    "max_retry_duration": dt.timedelta(0),
    "min_backoff_duration": dt.timedelta(seconds=SCHEDULER_MIN_BACKOFF),
    "max_backoff_duration": dt.timedelta(seconds=SCHEDULER_MAX_BACKOFF),
}
"""What Cloud Scheduler stores for retry settings left unset, so that they compare equal."""
_UPDATABLE = ("description", "http_target", "schedule", "time_zone", "retry_config", "attempt_deadline")

SCHEDULER_OPTION_NAMES = frozenset(
    {
        "location_path",
        "callback_base_url",
        "base_url",
        "job_create_timeout",
        "pre_create_hook",
        "client",
        "retry_config",
        "time_zone",
        "force",
        "attempt_deadline",
        "description",
        "headers",
    }
)


def default_retry_config() -> scheduler_v1.RetryConfig:
    """The retry settings of fastapi-gcp-tasks 0.3: five retries, backoff 5 s doubling up to 120 s."""
    return scheduler_v1.RetryConfig(
        retry_count=5,
        max_retry_duration=duration_pb2.Duration(seconds=0),
        min_backoff_duration=duration_pb2.Duration(seconds=5),
        max_backoff_duration=duration_pb2.Duration(seconds=120),
        max_doublings=5,
    )


def validate_cron(schedule: Any, *, param: str = "schedule") -> str:
    """A unix-cron expression of five fields, in the one grammar the emulator also evaluates."""
    return CronSchedule.parse(schedule, param=param).text


def validate_time_zone(time_zone: Any, *, param: str = "time_zone") -> str:
    """A tz-database time zone name, checked by the same rule as the emulator's (`build._cron`)."""
    if not isinstance(time_zone, str):
        raise TaskLimitError(f"{param}={time_zone!r} is not a time zone name (for example 'UTC')", param=param)
    parse_time_zone(time_zone, param=param)
    return time_zone


@dataclasses.dataclass(frozen=True, slots=True)
class JobConfig:
    """What `.scheduler(...)` was given, merged over the builder's settings; validated when made."""

    name: str
    schedule: str
    location_path: str
    callback_base_url: str
    time_zone: str = "UTC"
    retry_config: scheduler_v1.RetryConfig = dataclasses.field(default_factory=default_retry_config)
    job_create_timeout: float = 10.0
    force: bool = False
    attempt_deadline: float | None = None
    description: str = ""
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    pre_create_hook: Callable[[scheduler_v1.CreateJobRequest], scheduler_v1.CreateJobRequest] | None = None

    @classmethod
    def create(cls, *, name: str, schedule: str, options: Mapping[str, Any]) -> JobConfig:
        """Check every option by name and build the config."""
        unknown = set(options) - SCHEDULER_OPTION_NAMES
        if unknown:
            raise UnknownParamError(
                f"unknown option(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(SCHEDULER_OPTION_NAMES))}",
                param=sorted(unknown)[0],
            )
        values = {k: v for k, v in options.items() if k not in {"client", "base_url"} and v is not None}
        base = options.get("callback_base_url") or options.get("base_url")
        if base is None:
            raise TaskArgumentError("callback_base_url (or the legacy base_url) is required", param="callback_base_url")
        values["callback_base_url"] = check_url(base, param="callback_base_url")
        location = values.get("location_path")
        if not isinstance(location, str) or not scheduler_v1.CloudSchedulerClient.parse_common_location_path(location):
            raise TaskArgumentError(
                f"location_path must look like projects/P/locations/L, not {location!r}", param="location_path"
            )
        _naming.check_id(name, param="name", what="job id")
        validate_cron(schedule)
        if "time_zone" in values:
            validate_time_zone(values["time_zone"])
        if "attempt_deadline" in values:
            seconds = to_seconds(values["attempt_deadline"], param="attempt_deadline")
            if not SCHEDULER_MIN_ATTEMPT_DEADLINE <= seconds <= SCHEDULER_MAX_ATTEMPT_DEADLINE:
                raise TaskLimitError(
                    f"attempt_deadline must be between 15 seconds and 30 minutes, not {seconds:g} s",
                    param="attempt_deadline",
                )
            values["attempt_deadline"] = seconds
        retry = values.get("retry_config")
        if retry is not None:
            if not isinstance(retry, scheduler_v1.RetryConfig):
                raise TaskArgumentError("retry_config must be a scheduler_v1.RetryConfig", param="retry_config")
            if not 0 <= retry.retry_count <= SCHEDULER_MAX_RETRY_COUNT:
                raise TaskLimitError(
                    f"retry_config.retry_count must be between 0 and {SCHEDULER_MAX_RETRY_COUNT}", param="retry_config"
                )
        if "job_create_timeout" in values:
            values["job_create_timeout"] = to_seconds(values["job_create_timeout"], param="job_create_timeout")
        return cls(name=name, schedule=schedule, **values)

    @property
    def job_name(self) -> str:
        """The full job name, `projects/P/locations/L/jobs/NAME`."""
        return f"{self.location_path}/jobs/{self.name}"


class JobSync:
    """One scheduled route with one job configuration: builds the job, and creates, updates or deletes it."""

    def __init__(
        self,
        plan: RoutePlan,
        config: JobConfig,
        *,
        sync_source: SyncClientSource[scheduler_v1.CloudSchedulerClient] | None,
        async_source: AsyncClientSource[scheduler_v1.CloudSchedulerAsyncClient] | None,
    ) -> None:
        self.plan = plan
        self.config = config
        self._sync_source = sync_source
        self._async_source = async_source

    def job(self, values: Mapping[str, Any]) -> scheduler_v1.Job:
        """The Job for these endpoint arguments, after the pre-create hook (pure: no I/O)."""
        config = self.config
        parts = self.plan.build(values)
        headers = {**config.headers, **parts.headers} if config.headers else parts.headers
        trace = _tracing.propagation_headers()
        if trace:
            headers.update(trace)
        target = scheduler_v1.HttpTarget(
            uri=config.callback_base_url + parts.path_and_query,
            http_method=_HTTP_METHODS[parts.method],
            headers=headers,
        )
        if parts.body is not None:
            target.body = parts.body
        job = scheduler_v1.Job(
            name=config.job_name,
            http_target=target,
            schedule=config.schedule,
            time_zone=config.time_zone,
            retry_config=config.retry_config,
            description=config.description,
        )
        if config.attempt_deadline is not None:
            job.attempt_deadline = dt.timedelta(seconds=config.attempt_deadline)
        request = scheduler_v1.CreateJobRequest(parent=config.location_path, job=job)
        if config.pre_create_hook is not None:
            request = config.pre_create_hook(request)
            if not isinstance(request, scheduler_v1.CreateJobRequest):
                raise TypeError("pre_create_hook must return the CreateJobRequest")
        return request.job

    def schedule(self, values: Mapping[str, Any]) -> scheduler_v1.Job:
        """Create the job, or update it in place when it differs; write nothing when it matches."""
        flow = schedule_flow(self.config, self.job(values))
        return run_flow(flow, self._sync(), timeout=self.config.job_create_timeout)

    async def schedule_async(self, values: Mapping[str, Any]) -> scheduler_v1.Job:
        """`schedule()` from a coroutine, with the async client."""
        flow = schedule_flow(self.config, self.job(values))
        return await run_flow_async(flow, self._async(), timeout=self.config.job_create_timeout)

    def delete(self) -> bool:
        """Delete the job; False when there was none."""
        return run_flow(delete_flow(self.config.job_name), self._sync(), timeout=self.config.job_create_timeout)

    async def delete_async(self) -> bool:
        """`delete()` from a coroutine."""
        flow = delete_flow(self.config.job_name)
        return await run_flow_async(flow, self._async(), timeout=self.config.job_create_timeout)

    def _sync(self) -> scheduler_v1.CloudSchedulerClient:
        if self._sync_source is None:
            raise RuntimeError("this route was built by AsyncScheduledRouteBuilder: use `await ....schedule()`")
        return self._sync_source.get()

    def _async(self) -> scheduler_v1.CloudSchedulerAsyncClient:
        if self._async_source is None:
            raise RuntimeError("this route was built by ScheduledRouteBuilder: call `.schedule()` without await")
        return self._async_source.get()


def schedule_flow(config: JobConfig, desired: scheduler_v1.Job) -> Flow[scheduler_v1.Job]:
    """Read the job; create it when missing, update the fields that differ, or leave it when it matches."""
    what = f"scheduling job {desired.name}"
    current: scheduler_v1.Job
    try:
        current = yield GetJob(name=desired.name, what=what)
    except core.NotFound:
        try:
            created: scheduler_v1.Job = yield CreateJob(parent=config.location_path, job=desired, what=what)
        except core.AlreadyExists:  # another process created it meanwhile: compare with theirs
            current = yield GetJob(name=desired.name, what=what)
        else:
            return created
    mask = changed_fields(current, desired, force=config.force)
    if not mask:
        return current
    updated: scheduler_v1.Job = yield UpdateJob(job=desired, update_mask=tuple(mask), what=what)
    return updated


def delete_flow(job_name: str) -> Flow[bool]:
    """Delete the job; False when there was none."""
    try:
        yield DeleteJob(name=job_name, what=f"deleting job {job_name}")
    except core.NotFound:
        return False
    return True


def changed_fields(current: scheduler_v1.Job, desired: scheduler_v1.Job, *, force: bool = False) -> list[str]:
    """The updatable top-level fields of `desired` that differ from `current` (all of them with `force`)."""
    if force:
        return list(_UPDATABLE)
    have = _comparable(current)
    want = _comparable(desired)
    return [name for name in _UPDATABLE if getattr(have, name) != getattr(want, name)]


def _comparable(job: scheduler_v1.Job) -> scheduler_v1.Job:
    copy: scheduler_v1.Job = scheduler_v1.Job.deserialize(scheduler_v1.Job.serialize(job))
    for name in _OUTPUT_ONLY:
        copy._pb.ClearField(name)
    target = copy.http_target
    headers = {k: v for k, v in target.headers.items() if k.lower() not in _SERVICE_HEADERS}
    if target.body and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/octet-stream"
    target.headers = headers
    if not copy._pb.HasField("attempt_deadline"):
        copy.attempt_deadline = dt.timedelta(seconds=SCHEDULER_DEFAULT_ATTEMPT_DEADLINE)
    retry = copy._pb.retry_config
    for name, default in _RETRY_DEFAULTS.items():
        if not retry.HasField(name):
            getattr(retry, name).FromTimedelta(default)
    if not retry.max_doublings:
        retry.max_doublings = SCHEDULER_MAX_DOUBLINGS
    return copy
