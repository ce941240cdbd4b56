"""The calls a multi-step Cloud Scheduler operation makes, and the shape of a flow that makes them.

A flow is a generator written once per operation, next to its decisions: it yields one call at a time
and receives the call's result, or has the call's `google.api_core` error thrown into it, so that the
flow itself decides what `NotFound` or `FailedPrecondition` means (create the job, it was already
done, ...). It returns the operation's result. Flows do no I/O: `transport._scheduler.run_flow` and
`run_flow_async` drive any flow with a sync or an async client, the way httpx's `Client` and
`AsyncClient` drive `Auth.auth_flow`, so a decision is never written twice.

Calls pass the RPC's flattened fields (`name=`, `parent=`, `job=`, ...) rather than a request object,
as 0.3 did, so clients that subclass or imitate the official ones keep working; only `ListJobs`, whose
paging fields are not flattened, passes `request=`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from typing import Any, ClassVar, TypeAlias, TypeVar

from google.cloud import scheduler_v1
from google.protobuf import field_mask_pb2

__all__ = [
    "CreateJob",
    "DeleteJob",
    "Flow",
    "GetJob",
    "ListJobs",
    "PauseJob",
    "ResumeJob",
    "RunJob",
    "SchedulerCall",
    "UpdateJob",
]

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SchedulerCall:
    """One Cloud Scheduler RPC with its fields. `what` names the step in the error raised when it fails."""

    rpc: ClassVar[str]
    """The client method: `get_job`, `create_job`, ..."""
    what: str

    def arguments(self) -> dict[str, Any]:
        """The keyword arguments of the client method, without `timeout`."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self) if field.name != "what"}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _OnOneJob(SchedulerCall):
    """A call on the job `name` (`projects/P/locations/L/jobs/ID`)."""

    name: str


class GetJob(_OnOneJob):
    """Read one job; the result is the `Job`."""

    rpc: ClassVar[str] = "get_job"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CreateJob(SchedulerCall):
    """Create a job; the result is the stored `Job`. `AlreadyExists` when the name is taken."""

    rpc: ClassVar[str] = "create_job"
    parent: str
    job: scheduler_v1.Job


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class UpdateJob(SchedulerCall):
    """Write the top-level fields `update_mask` of `job`; the result is the stored `Job`."""

    rpc: ClassVar[str] = "update_job"
    job: scheduler_v1.Job
    update_mask: tuple[str, ...]

    def arguments(self) -> dict[str, Any]:
        return {"job": self.job, "update_mask": field_mask_pb2.FieldMask(paths=list(self.update_mask))}


class DeleteJob(_OnOneJob):
    """Delete one job; `NotFound` when there is none."""

    rpc: ClassVar[str] = "delete_job"


class PauseJob(_OnOneJob):
    """Pause one job; `FailedPrecondition` unless it is enabled."""

    rpc: ClassVar[str] = "pause_job"


class ResumeJob(_OnOneJob):
    """Resume one job; `FailedPrecondition` unless it is paused."""

    rpc: ClassVar[str] = "resume_job"


class RunJob(_OnOneJob):
    """Run one job now; the result is the `Job`."""

    rpc: ClassVar[str] = "run_job"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ListJobs(SchedulerCall):
    """One page of the jobs of `parent`; the result has `.jobs` and `.next_page_token` ("" on the last page)."""

    rpc: ClassVar[str] = "list_jobs"
    parent: str
    page_size: int
    page_token: str = ""

    def arguments(self) -> dict[str, Any]:
        request = scheduler_v1.ListJobsRequest(parent=self.parent, page_size=self.page_size, page_token=self.page_token)
        return {"request": request}


Flow: TypeAlias = Generator[SchedulerCall, Any, T]
"""A multi-step operation: yields calls, receives each result (or its error thrown in), returns a `T`."""
