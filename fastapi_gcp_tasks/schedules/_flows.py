"""The multi-step operations of `Schedules`, each written once as a flow (see `transport._flows`).

`Schedules.plan()` and `plan_async()`, `apply()` and `apply_async()`, ... only pick a runner; what to
read, in which order to write and which errors mean "already done" is decided here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from google.api_core import exceptions as core
from google.cloud import scheduler_v1

from fastapi_gcp_tasks._limits import SCHEDULER_LIST_PAGE_SIZE
from fastapi_gcp_tasks.schedules._plan import Action, JobChange, Plan, compute_plan
from fastapi_gcp_tasks.transport._flows import (
    CreateJob,
    DeleteJob,
    Flow,
    GetJob,
    ListJobs,
    PauseJob,
    ResumeJob,
    RunJob,
    SchedulerCall,
    UpdateJob,
)

__all__ = ["Progress", "apply_flow", "plan_flow", "run_job_flow", "set_state_flow", "sync_flow"]

Progress = Callable[[int, int, str], None]
"""Told after each write of an apply: `(done, total, message)`, e.g. `(3, 40, "[3/40] created job nightly")`."""

_DONE = {Action.CREATE: "created", Action.UPDATE: "updated", Action.DELETE: "deleted"}


def plan_flow(*, location_path: str, prefix: str, desired: Mapping[str, scheduler_v1.Job]) -> Flow[Plan]:
    """List every page of the location's jobs and compare them with `desired` (by job id); writes nothing."""
    listed: list[scheduler_v1.Job] = []
    token = ""
    while True:
        page = yield ListJobs(
            parent=location_path,
            page_size=SCHEDULER_LIST_PAGE_SIZE,
            page_token=token,
            what=f"listing jobs in {location_path}",
        )
        listed.extend(page.jobs)
        token = page.next_page_token
        if not token:
            break
    return compute_plan(location_path=location_path, prefix=prefix, desired=desired, listed=listed)


def apply_flow(plan: Plan, progress: Progress | None = None) -> Flow[Plan]:
    """Creates and updates first, deletes last (a renamed job exists under its new id before the old one
    goes), stopping at the first failure; a job already deleted counts as deleted. `progress` is told after
    each write, so that a sync of many jobs shows how far it got."""
    writes = [*plan.creates, *plan.updates, *plan.deletes]
    for done, change in enumerate(writes, start=1):
        call = _write(plan.location_path, change)
        try:
            yield call
        except core.NotFound:
            if not isinstance(call, DeleteJob):
                raise
        if progress is not None:
            progress(done, len(writes), f"[{done}/{len(writes)}] {_DONE[change.action]} job {change.job_id}")
    return plan


def sync_flow(
    *,
    location_path: str,
    prefix: str,
    desired: Mapping[str, scheduler_v1.Job],
    dry_run: bool,
    progress: Progress | None = None,
) -> Flow[Plan]:
    """Plan, then carry the plan out unless `dry_run` (telling `progress` after each write)."""
    plan = yield from plan_flow(location_path=location_path, prefix=prefix, desired=desired)
    if dry_run:
        return plan
    return (yield from apply_flow(plan, progress))


def set_state_flow(job_name: str, *, pause: bool) -> Flow[scheduler_v1.Job]:
    """Pause or resume the job. The service refuses pausing a paused job (and resuming an enabled one):
    that is already done, so a refusal is checked against the job's state before it is raised."""
    what = f"{'pausing' if pause else 'resuming'} job {job_name}"
    target = scheduler_v1.Job.State.PAUSED if pause else scheduler_v1.Job.State.ENABLED
    job: scheduler_v1.Job
    try:
        job = yield PauseJob(name=job_name, what=what) if pause else ResumeJob(name=job_name, what=what)
    except core.FailedPrecondition:
        job = yield GetJob(name=job_name, what=what)
        if job.state != target:
            raise
    return job


def run_job_flow(job_name: str) -> Flow[scheduler_v1.Job]:
    """Have Cloud Scheduler run the job now, outside its schedule."""
    job: scheduler_v1.Job = yield RunJob(name=job_name, what=f"running job {job_name}")
    return job


def _write(location_path: str, change: JobChange) -> SchedulerCall:
    what = f"{change.action.value} of job {location_path}/jobs/{change.job_id}"
    if change.action is Action.CREATE:
        assert change.desired is not None
        return CreateJob(parent=location_path, job=change.desired, what=what)
    if change.action is Action.UPDATE:
        assert change.desired is not None
        return UpdateJob(job=change.desired, update_mask=change.update_mask, what=what)
    return DeleteJob(name=f"{location_path}/jobs/{change.job_id}", what=what)
