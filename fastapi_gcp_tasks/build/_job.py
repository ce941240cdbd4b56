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
import gc
import math
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from google.api_core import exceptions as core
from google.cloud import scheduler_v1
from google.protobuf import duration_pb2

from fastapi_gcp_tasks.build import _job_checks, _naming
from fastapi_gcp_tasks.build._cron import CronSchedule, parse_time_zone
from fastapi_gcp_tasks.build._plan import RoutePlan
from fastapi_gcp_tasks.build._task import check_headers, check_url, to_seconds
from fastapi_gcp_tasks.exception import TaskArgumentError, TaskLimitError, UnknownParamError
from fastapi_gcp_tasks.transport._clients import AsyncClientSource, SyncClientSource
from fastapi_gcp_tasks.transport._flows import CreateJob, DeleteJob, Flow, GetJob, UpdateJob
from fastapi_gcp_tasks.transport._scheduler import run_flow, run_flow_async

__all__ = [
    "SCHEDULER_OPTION_NAMES",
    "JobConfig",
    "JobSync",
    "claim_job",
    "default_retry_config",
    "owner_identity",
    "release_job",
    "validate_cron",
]

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
_UPDATABLE = ("description", "http_target", "schedule", "time_zone", "retry_config", "attempt_deadline")
_JobPB = scheduler_v1.Job.pb()
_MAX_SECONDS = 1e12
"""Beyond any deadline; keeps `timedelta` from overflowing before the real check refuses the value."""

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
    def create(cls, *, name: str, schedule: str, options: Mapping[str, Any], label: str | None = None) -> JobConfig:
        """Check every option by name and build the config.

        Everything Cloud Scheduler would refuse in these settings is refused here, by the checks the
        emulator applies (`build._job_checks`), with a `TaskLimitError` naming the job and the option;
        what depends on the endpoint's arguments is checked when the job is built (`JobSync.job`).
        `label` replaces "job NAME" in messages (the builder checks its settings before any job exists).
        """
        where = label or f"job {name!r}"
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
        if not isinstance(location, str) or _job_checks.PARENT.fullmatch(location) is None:
            raise TaskArgumentError(
                f"{where}: location_path must look like projects/P/locations/L "
                f"(P from [A-Za-z0-9:.-], L from [A-Za-z0-9-]), not {location!r}",
                param="location_path",
            )
        if not name:
            raise TaskArgumentError("a job needs a name (the Cloud Scheduler job id)", param="name")
        _naming.check_id(name, param="name", what="job id")
        _relabel(where, validate_cron, schedule)
        if "time_zone" in values:
            _relabel(where, validate_time_zone, values["time_zone"])
        if "attempt_deadline" in values:
            seconds = to_seconds(values["attempt_deadline"], param="attempt_deadline")
            if not math.isfinite(seconds) or abs(seconds) > _MAX_SECONDS:
                message = f"{where}: attempt_deadline must be between 15 s and 30 min, got {seconds}"
                raise TaskLimitError(message, param="attempt_deadline")
            values["attempt_deadline"] = seconds
        retry = values.get("retry_config")
        if retry is not None and not isinstance(retry, scheduler_v1.RetryConfig):
            raise TaskArgumentError(f"{where}: retry_config must be a scheduler_v1.RetryConfig", param="retry_config")
        description = values.get("description")
        if description is not None and not isinstance(description, str):
            raise TaskArgumentError(f"{where}: description must be a string, not {description!r}", param="description")
        if values.get("headers") is not None:
            values["headers"] = check_headers(values["headers"], where=where)
        if "job_create_timeout" in values:
            values["job_create_timeout"] = to_seconds(values["job_create_timeout"], param="job_create_timeout")
        config = cls(name=name, schedule=schedule, **values)
        # The settings as a job without the endpoint's path: what Cloud Scheduler would refuse in them is
        # refused now. The URL is the base alone, a prefix of every URL the job can have.
        probe = scheduler_v1.Job(
            name=config.job_name,
            schedule=config.schedule,
            time_zone=config.time_zone,
            retry_config=config.retry_config,
            description=config.description,
            http_target=scheduler_v1.HttpTarget(uri=config.callback_base_url, headers=dict(config.headers)),
        )
        if config.attempt_deadline is not None:
            probe.attempt_deadline = dt.timedelta(seconds=config.attempt_deadline)
        check_job(probe, where=where, url_param="callback_base_url")
        return config

    @property
    def job_name(self) -> str:
        """The full job name, `projects/P/locations/L/jobs/NAME`."""
        return f"{self.location_path}/jobs/{self.name}"


def _relabel(where: str, check: Callable[[Any], Any], value: Any) -> None:
    try:
        check(value)
    except TaskLimitError as exc:
        raise TaskLimitError(f"{where}: {exc}", param=exc.param) from None


def _option(field: str | None, url_param: str) -> str:
    """The `.scheduler()` option (or, for what the endpoint's arguments produce, the Job field) at fault."""
    if not field:
        return "job"
    if field.startswith("retry_config."):
        return "retry_config"
    if field == "http_target.headers":
        return "headers"
    if field == "http_target.uri":
        return url_param
    return field


def check_job(job: scheduler_v1.Job, *, where: str, url_param: str = "http_target.uri") -> None:
    """Refuse, with a `TaskLimitError` naming `where` and the option, a job Cloud Scheduler would refuse.

    The job is copied, given the defaults the service fills in and checked as the emulator checks a
    `CreateJob` (`build._job_checks`), so the library and the emulator agree on every value.
    """
    pb = _JobPB()
    pb.CopyFrom(job._pb)
    _job_checks.clear_output(pb)
    if _job_checks.JOB_NAME.fullmatch(pb.name) is None:
        raise TaskLimitError(
            f"{where}: the job name {pb.name!r} is not projects/PROJECT_ID/locations/LOCATION_ID/jobs/JOB_ID",
            param="name",
        )
    _job_checks.normalise_job(pb)
    try:
        _job_checks.validate_job(pb)
    except TaskLimitError as exc:
        raise TaskLimitError(f"{where}: {exc}", param=_option(exc.param, url_param)) from None


# -- who owns which job id, in this process ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Claim:
    owner: weakref.ReferenceType[Any]
    identity: tuple[str, ...]
    description: str


_claims: dict[str, _Claim] = {}
_claims_lock = threading.Lock()


def owner_identity(route: Any) -> tuple[tuple[str, ...], str]:
    """What makes two scheduled routes the same declaration: endpoint module and name, path and methods.

    An app built twice in one process (an app factory, a test fixture) re-creates its endpoints: the new
    route takes over the old one's job ids. Two different endpoints never share one.
    """
    endpoint = getattr(route, "endpoint", None)
    module = str(getattr(endpoint, "__module__", ""))
    name = str(getattr(endpoint, "__qualname__", "") or repr(endpoint))
    path = str(getattr(route, "path", ""))
    methods = ",".join(sorted(getattr(route, "methods", None) or ()))
    return (module, name, path, methods), f"endpoint {module}.{name} ({methods} {path})"


def claim_job(job_name: str, owner: Any) -> bool:
    """Record that `owner` (a scheduled route) declares the job `job_name`; True when the claim is new.

    A different endpoint already declaring the same job id in the same location is refused with
    `TaskArgumentError` (`param="name"`): the two would overwrite each other's job. Claims are weak: an
    owner that is gone no longer holds its ids, and a re-created one (same endpoint, same path) takes over.
    """
    identity, description = owner_identity(owner)
    for attempt in range(2):
        with _claims_lock:
            current = _claims.get(job_name)
            holder = current.owner() if current is not None else None
            if current is not None and holder is owner:
                return False
            if holder is None or current is None or current.identity == identity:
                _claims[job_name] = _Claim(weakref.ref(owner), identity, description)
                return True
            del holder
        if attempt == 0:
            gc.collect()  # the holder may be unreachable but not yet collected (routes and endpoints form cycles)
    assert current is not None
    job_id = job_name.rsplit("/jobs/", 1)
    raise TaskArgumentError(
        f"job {job_id[-1]!r} in {job_id[0]} is already declared by {current.description}; it cannot also be "
        f"declared by {description}: two endpoints under one job id would overwrite each other's job, so give "
        "this one another name",
        param="name",
    )


def release_job(job_name: str, owner: Any) -> None:
    """Drop `owner`'s claim on `job_name` (a declaration that failed after claiming)."""
    with _claims_lock:
        current = _claims.get(job_name)
        if current is not None and current.owner() is owner:
            del _claims[job_name]


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
        parts = self.plan.build(values, call="scheduler().schedule")
        # Nothing ambient (trace context, baggage) goes in: a job is a function of its declaration alone,
        # so that every deploy of the same code plans no change.
        headers = {**config.headers, **parts.headers} if config.headers else parts.headers
        target = scheduler_v1.HttpTarget(
            uri=self.plan.callback_url(config.callback_base_url, parts.path_and_query),
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
        check_job(request.job, where=f"job {config.name!r} ({self.plan.endpoint_name})")
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
    """`job` as Cloud Scheduler stores it: output fields cleared, service defaults and headers filled in."""
    copy: scheduler_v1.Job = scheduler_v1.Job.deserialize(scheduler_v1.Job.serialize(job))
    _job_checks.clear_output(copy._pb)
    _job_checks.normalise_job(copy._pb)
    target = copy.http_target
    headers = {k: v for k, v in target.headers.items() if k.lower() not in _SERVICE_HEADERS}
    if target.body and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/octet-stream"
    target.headers = headers
    return copy
