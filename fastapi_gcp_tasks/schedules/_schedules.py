"""Declarative schedules: every cron job of an app declared in one registry, reconciled with Cloud Scheduler.

```python
schedules = Schedules(prefix="billing-", location_path=location_path(project="p", location="europe-west1"))

@schedules.job(name="invoices", schedule="0 6 * * *", time_zone="Europe/Paris", args={"region": "eu"})
@router.post("/jobs/invoices")
def invoices(region: str) -> None: ...
```

Declaring writes nothing; it builds and validates the Job right away, so a bad cron, time zone, name or
argument fails where it is declared. `plan()` compares the declarations with the jobs Cloud Scheduler
holds in the location; `sync()` creates the missing ones, updates the changed ones in place with
`UpdateJob` and a field mask, and deletes the jobs that carry this registry's prefix but are no longer
declared. Jobs without the prefix are never read for changes, updated or deleted. A sync never pauses
or resumes a job: that is left to `pause()` / `resume()`, so an operator's pause survives deploys.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from google.cloud import scheduler_v1

from fastapi_gcp_tasks._limits import MAX_ID_LENGTH
from fastapi_gcp_tasks.build import _job_checks, _naming
from fastapi_gcp_tasks.build._job import validate_time_zone
from fastapi_gcp_tasks.build._routes import ScheduleHandle
from fastapi_gcp_tasks.exception import TaskArgumentError, TaskLimitError
from fastapi_gcp_tasks.schedules._flows import Progress, apply_flow, plan_flow, run_job_flow, set_state_flow, sync_flow
from fastapi_gcp_tasks.schedules._plan import Action, FieldChange, JobChange, Plan
from fastapi_gcp_tasks.transport._clients import (
    AsyncClientSource,
    SyncClientSource,
    async_scheduler_source,
    sync_scheduler_source,
)
from fastapi_gcp_tasks.transport._flows import Flow
from fastapi_gcp_tasks.transport._scheduler import run_flow, run_flow_async

__all__ = ["Action", "FieldChange", "JobChange", "Plan", "ScheduleEntry", "Schedules"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

_registries: weakref.WeakSet[Schedules] = weakref.WeakSet()
"""Every live registry of this process, so that two cannot own overlapping job ids in one location."""
_registries_lock = threading.Lock()


def _overlapping(prefix: str, location_path: str) -> list[Schedules]:
    return [
        other
        for other in list(_registries)
        if other.location_path == location_path and (other.prefix.startswith(prefix) or prefix.startswith(other.prefix))
    ]


def _register(registry: Schedules) -> None:
    """Track `registry`; refuse it when a live registry of the same location has an overlapping prefix."""
    for attempt in range(2):
        with _registries_lock:
            clashes = _overlapping(registry.prefix, registry.location_path)
            if not clashes:
                _registries.add(registry)
                return
        if attempt == 0:
            del clashes
            gc.collect()  # a registry that is unreachable (a reloaded module, a finished test) no longer counts
    message = (
        f"prefix={registry.prefix!r} overlaps the prefix {clashes[0].prefix!r} of another registry in "
        f"{registry.location_path}: each would delete the other's jobs on sync. Give every registry of a "
        "location a prefix that is not a prefix of another's (billing- and shipping-, not billing- and "
        "billing-eu-), or use separate locations"
    )
    del clashes  # the traceback must not keep the other registry alive
    raise TaskArgumentError(message, param="prefix")


@dataclasses.dataclass(frozen=True, slots=True)
class ScheduleEntry:
    """One declared job: the endpoint it calls, with which arguments, and the Job that results."""

    name: str
    """The name given to `add()`, without the registry's prefix."""
    job_id: str
    """`prefix + name`, the job id in Cloud Scheduler."""
    endpoint: Callable[..., Any]
    args: Mapping[str, Any]
    handle: ScheduleHandle
    job: scheduler_v1.Job
    """The Job as the endpoint's request builder made it when declared."""


class Schedules:
    """A registry of the cron jobs of one app, in one Cloud Scheduler location, owning one job id prefix.

    The prefix is how a sync knows which jobs are its own: every job id in the location that starts with
    it and is not declared gets deleted. Give each app (and each environment sharing a project and
    location) a prefix that no other app's prefix starts with. Within one process this is enforced: a
    registry whose prefix overlaps a live registry's in the same location is refused (`param="prefix"`).
    """

    def __init__(
        self,
        *,
        prefix: str,
        location_path: str,
        time_zone: str | None = None,
        client: scheduler_v1.CloudSchedulerClient | Callable[[], scheduler_v1.CloudSchedulerClient] | None = None,
        async_client: scheduler_v1.CloudSchedulerAsyncClient
        | Callable[[], scheduler_v1.CloudSchedulerAsyncClient]
        | None = None,
        timeout: float = 30.0,
    ) -> None:
        """Create an empty registry; nothing is contacted until `plan()`, `sync()` or another call.

        Args:
            prefix: start of every job id this registry owns (`[A-Za-z0-9_-]`, not empty).
            location_path: `projects/P/locations/L`, where the jobs live; every declared job goes there.
            time_zone: default tz-database time zone of declared jobs (UTC when not given).
            client: the Cloud Scheduler client used by the sync methods, or a factory of one; by default the
                process's shared client (the emulator's when `FASTAPI_GCP_TASKS_EMULATOR_HOST` is set).
            async_client: the same for the `*_async` methods (one per event loop by default).
            timeout: seconds allowed for each call to Cloud Scheduler.
        """
        if not isinstance(prefix, str) or not prefix:
            raise TaskArgumentError(
                "prefix must be a non-empty string: it decides which jobs a sync may delete", param="prefix"
            )
        _naming.check_id(prefix, param="prefix", what="job id prefix")
        if not isinstance(location_path, str) or _job_checks.PARENT.fullmatch(location_path) is None:
            raise TaskArgumentError(
                f"location_path must look like projects/P/locations/L, not {location_path!r}", param="location_path"
            )
        if time_zone is not None:
            validate_time_zone(time_zone)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise TaskArgumentError(f"timeout must be a positive number of seconds, not {timeout!r}", param="timeout")
        self.prefix = prefix
        self.location_path = location_path
        self.time_zone = time_zone
        self.timeout = float(timeout)
        self._client: SyncClientSource[scheduler_v1.CloudSchedulerClient] = sync_scheduler_source(client)
        self._async_client: AsyncClientSource[scheduler_v1.CloudSchedulerAsyncClient] = async_scheduler_source(
            async_client
        )
        self._entries: dict[str, ScheduleEntry] = {}
        _register(self)

    # declaring -------------------------------------------------------------------------------------------------

    def add(
        self,
        endpoint: Callable[..., Any],
        *,
        name: str,
        schedule: str,
        args: Mapping[str, Any] | None = None,
        time_zone: str | None = None,
        retry_config: scheduler_v1.RetryConfig | None = None,
        attempt_deadline: float | dt.timedelta | None = None,
        description: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ScheduleEntry:
        """Declare that Cloud Scheduler calls `endpoint` with `args` on the cron `schedule`.

        `endpoint` is a function registered on a `ScheduledRouteBuilder` or `AsyncScheduledRouteBuilder`
        route; the job is built by its `.scheduler(...)` handle, with the builder's URL and pre-create hook.
        Everything is checked now, and the Job is built now: the name (required, not empty, not declared by
        another endpoint), `args` against the endpoint's parameters, and everything Cloud Scheduler would
        refuse (cron, time zone, retry and deadline bounds, description, headers, URL, size), with the
        emulator's own checks. Raises `TaskArgumentError` (or a subclass) naming the parameter; a refused
        entry is not added, so a sync never starts with one the service would refuse.
        """
        scheduler = getattr(endpoint, "scheduler", None)
        if not callable(scheduler):
            raise TaskArgumentError(
                f"endpoint {getattr(endpoint, '__qualname__', endpoint)!r} is not a scheduled route: register it "
                "on an APIRouter(route_class=ScheduledRouteBuilder(...)) before declaring its schedule",
                param="endpoint",
            )
        if not isinstance(name, str) or not name:
            raise TaskArgumentError(
                f"name is required: a non-empty job name (the job id is {self.prefix!r} + name)", param="name"
            )
        _naming.check_id(name, param="name", what="job name")
        job_id = self.prefix + name
        if len(job_id) > MAX_ID_LENGTH:
            raise TaskLimitError(
                f"name={name!r}: with the prefix {self.prefix!r} the job id is longer than {MAX_ID_LENGTH} characters",
                param="name",
            )
        if job_id in self._entries:
            raise TaskArgumentError(f"name={name!r} is already declared in this registry", param="name")
        if args is not None and not isinstance(args, Mapping):
            raise TaskArgumentError(f"args must be a mapping of the endpoint's parameters, not {args!r}", param="args")
        options: dict[str, Any] = {
            "location_path": self.location_path,
            "time_zone": time_zone if time_zone is not None else self.time_zone,
            "retry_config": retry_config,
            "attempt_deadline": attempt_deadline,
            "description": description,
            "headers": headers,
        }
        handle = scheduler(name=job_id, schedule=schedule, **{k: v for k, v in options.items() if v is not None})
        if not isinstance(handle, ScheduleHandle):
            raise TaskArgumentError(
                f"endpoint {getattr(endpoint, '__qualname__', endpoint)!r} has a .scheduler() that is not "
                "fastapi-gcp-tasks's",
                param="endpoint",
            )
        values = dict(args or {})
        try:
            job = handle.job(**values)  # every check Cloud Scheduler would make, now: a sync never meets a bad entry
        except BaseException:
            handle._release()
            raise
        entry = ScheduleEntry(name=name, job_id=job_id, endpoint=endpoint, args=values, handle=handle, job=job)
        self._entries[job_id] = entry
        return entry

    def job(
        self,
        *,
        name: str,
        schedule: str,
        args: Mapping[str, Any] | None = None,
        time_zone: str | None = None,
        retry_config: scheduler_v1.RetryConfig | None = None,
        attempt_deadline: float | dt.timedelta | None = None,
        description: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Callable[[F], F]:
        """`add()` as a decorator, placed above the route decorator (which must run first)."""

        def declare(endpoint: F) -> F:
            self.add(
                endpoint,
                name=name,
                schedule=schedule,
                args=args,
                time_zone=time_zone,
                retry_config=retry_config,
                attempt_deadline=attempt_deadline,
                description=description,
                headers=headers,
            )
            return endpoint

        return declare

    def __iter__(self) -> Iterator[ScheduleEntry]:
        """The declared jobs, in declaration order."""
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> ScheduleEntry:
        """The declared job `name` (without the prefix); `TaskArgumentError` when there is none."""
        entry = self._entries.get(self.prefix + name) if isinstance(name, str) else None
        if entry is None:
            declared = ", ".join(e.name for e in self._entries.values()) or "none"
            raise TaskArgumentError(f"no schedule named {name!r} is declared (declared: {declared})", param="name")
        return entry

    def job_name(self, name: str) -> str:
        """The full Cloud Scheduler name of the declared job `name`."""
        return f"{self.location_path}/jobs/{self[name].job_id}"

    # planning and syncing --------------------------------------------------------------------------------------

    def plan(self) -> Plan:
        """What `sync()` would do: lists the location's jobs (every page), writes nothing."""
        return self._run(self._plan_flow())

    async def plan_async(self) -> Plan:
        """`plan()` with the async client."""
        return await self._run_async(self._plan_flow())

    def apply(self, plan: Plan, *, progress: Progress | None = None) -> Plan:
        """Carry out `plan`: creates and updates first, deletes last, stopping at the first failure.

        A failure raises `SendError` naming the job; what was done stays done and the next sync resumes
        from there, since the plan is recomputed from what Cloud Scheduler holds. `progress`, when given, is
        called after each write with `(done, total, message)`, the message like `"[3/40] created job nightly"`
        (the command line shows it on stderr); it runs between two calls, so keep it quick.
        """
        self._check_own(plan)
        _check_progress(progress)
        return self._run(apply_flow(plan, progress))

    async def apply_async(self, plan: Plan, *, progress: Progress | None = None) -> Plan:
        """`apply()` with the async client."""
        self._check_own(plan)
        _check_progress(progress)
        return await self._run_async(apply_flow(plan, progress))

    def sync(self, *, dry_run: bool = False, progress: Progress | None = None) -> Plan:
        """Make Cloud Scheduler hold exactly the declared jobs under this prefix; returns the plan carried out.

        `progress` is told after each write, as in `apply()`; a dry run writes nothing and tells it nothing.
        """
        _check_progress(progress)
        return self._run(self._sync_flow(dry_run, progress))

    async def sync_async(self, *, dry_run: bool = False, progress: Progress | None = None) -> Plan:
        """`sync()` with the async client."""
        _check_progress(progress)
        return await self._run_async(self._sync_flow(dry_run, progress))

    # operating -------------------------------------------------------------------------------------------------

    def pause(self, name: str) -> scheduler_v1.Job:
        """Pause the declared job `name`; a job already paused is left as it is."""
        return self._run(set_state_flow(self.job_name(name), pause=True))

    async def pause_async(self, name: str) -> scheduler_v1.Job:
        """`pause()` with the async client."""
        return await self._run_async(set_state_flow(self.job_name(name), pause=True))

    def resume(self, name: str) -> scheduler_v1.Job:
        """Resume the declared job `name`; a job already enabled is left as it is."""
        return self._run(set_state_flow(self.job_name(name), pause=False))

    async def resume_async(self, name: str) -> scheduler_v1.Job:
        """`resume()` with the async client."""
        return await self._run_async(set_state_flow(self.job_name(name), pause=False))

    def run(self, name: str) -> scheduler_v1.Job:
        """Have Cloud Scheduler run the declared job `name` now, outside its schedule."""
        return self._run(run_job_flow(self.job_name(name)))

    async def run_async(self, name: str) -> scheduler_v1.Job:
        """`run()` with the async client."""
        return await self._run_async(run_job_flow(self.job_name(name)))

    # internals -------------------------------------------------------------------------------------------------

    def _run(self, flow: Flow[T]) -> T:
        return run_flow(flow, self._client.get(), timeout=self.timeout)

    async def _run_async(self, flow: Flow[T]) -> T:
        return await run_flow_async(flow, self._async_client.get(), timeout=self.timeout)

    def _desired(self) -> dict[str, scheduler_v1.Job]:
        return {job_id: entry.job for job_id, entry in self._entries.items()}

    def _plan_flow(self) -> Flow[Plan]:
        return plan_flow(location_path=self.location_path, prefix=self.prefix, desired=self._desired())

    def _sync_flow(self, dry_run: bool, progress: Progress | None = None) -> Flow[Plan]:
        return sync_flow(
            location_path=self.location_path,
            prefix=self.prefix,
            desired=self._desired(),
            dry_run=dry_run,
            progress=progress,
        )

    def _check_own(self, plan: Plan) -> None:
        if plan.location_path != self.location_path or plan.prefix != self.prefix:
            raise TaskArgumentError(
                f"this plan is for {plan.prefix}* in {plan.location_path}, not for this registry", param="plan"
            )
        for change in plan.changes:
            if not change.job_id.startswith(self.prefix):
                raise TaskArgumentError(
                    f"job {change.job_id!r} does not carry the prefix {self.prefix!r}", param="plan"
                )

    def __repr__(self) -> str:
        return f"Schedules(prefix={self.prefix!r}, location_path={self.location_path!r}, jobs={len(self)})"


def _check_progress(progress: object) -> None:
    if progress is not None and not callable(progress):
        raise TaskArgumentError(
            f"progress must be a callable taking (done, total, message), not {progress!r}", param="progress"
        )
