"""The plan of a schedule sync: what differs between declared jobs and the jobs Cloud Scheduler holds.

Computing a plan is pure: it takes the declared jobs and the listed ones and returns a `Plan`; the
flows of `_flows` list and write around it.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
from collections.abc import Iterable, Mapping
from typing import Any

from google.cloud import scheduler_v1

from fastapi_gcp_tasks.build._job import _comparable, changed_fields

__all__ = ["PLAN_FORMAT_VERSION", "Action", "FieldChange", "JobChange", "Plan", "compute_plan"]


class Action(enum.Enum):
    """What a sync does to one job."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    UNCHANGED = "unchanged"


_SYMBOL = {Action.CREATE: "+", Action.UPDATE: "~", Action.DELETE: "-", Action.UNCHANGED: "="}


@dataclasses.dataclass(frozen=True, slots=True)
class FieldChange:
    """One leaf field of a job that an update changes, as a dotted path (`http_target.uri`)."""

    path: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.path}: {_show(self.old)} -> {_show(self.new)}"


@dataclasses.dataclass(frozen=True, slots=True)
class JobChange:
    """One job of the plan.

    `desired` is the declared job (None for a delete), `current` the one Cloud Scheduler holds (None for
    a create). `update_mask` lists the top-level fields an update writes; `fields` the leaves that differ.
    """

    action: Action
    job_id: str
    desired: scheduler_v1.Job | None = None
    current: scheduler_v1.Job | None = None
    update_mask: tuple[str, ...] = ()
    fields: tuple[FieldChange, ...] = ()

    @property
    def paused(self) -> bool:
        """Whether Cloud Scheduler holds this job paused (a sync never changes that)."""
        return self.current is not None and self.current.state == scheduler_v1.Job.State.PAUSED

    def describe(self) -> list[str]:
        """Lines for humans: `+ create ID  cron (tz) METHOD uri`, `~ update ID` then one line per field."""
        job = self.desired if self.desired is not None else self.current
        head = f"{_SYMBOL[self.action]} {self.action.value:<9} {self.job_id}"
        if job is not None and self.action is not Action.UPDATE:
            target = job.http_target
            method = scheduler_v1.HttpMethod(target.http_method).name
            head += f"  {job.schedule} ({job.time_zone or 'UTC'}) {method} {target.uri}"
        if self.paused:
            head += "  [paused]"
        return [head, *(f"    {change}" for change in sorted(self.fields, key=_by_path))]

    def to_dict(self) -> dict[str, Any]:
        """This change for `Plan.to_dict()`."""
        if self.action is Action.UPDATE:
            fields = sorted(self.fields, key=_by_path)
        elif self.action is Action.CREATE and self.desired is not None:
            fields = [FieldChange(path, None, value) for path, value in _job_fields(self.desired)]
        elif self.action is Action.DELETE and self.current is not None:
            fields = [FieldChange(path, value, None) for path, value in _job_fields(self.current)]
        else:
            fields = []
        return {
            "action": self.action.value,
            "job_id": self.job_id,
            "paused": self.paused,
            "fields": [{"field": f.path, "current": _json(f.old), "desired": _json(f.new)} for f in fields],
        }


def _by_path(change: FieldChange) -> str:
    return change.path


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """Every job of one prefix in one location, and what a sync does to each."""

    location_path: str
    prefix: str
    changes: tuple[JobChange, ...]

    def of(self, action: Action) -> list[JobChange]:
        """The changes with this action, in job id order."""
        return [change for change in self.changes if change.action is action]

    @property
    def creates(self) -> list[JobChange]:
        """Declared jobs that Cloud Scheduler does not have."""
        return self.of(Action.CREATE)

    @property
    def updates(self) -> list[JobChange]:
        """Declared jobs that differ from what Cloud Scheduler has."""
        return self.of(Action.UPDATE)

    @property
    def deletes(self) -> list[JobChange]:
        """Jobs carrying the prefix that are no longer declared."""
        return self.of(Action.DELETE)

    @property
    def unchanged(self) -> list[JobChange]:
        """Declared jobs that already match."""
        return self.of(Action.UNCHANGED)

    @property
    def empty(self) -> bool:
        """Whether a sync would write nothing."""
        return all(change.action is Action.UNCHANGED for change in self.changes)

    def summary(self) -> str:
        """`N to create, N to update, N to delete, N unchanged`."""
        return (
            f"{len(self.creates)} to create, {len(self.updates)} to update, "
            f"{len(self.deletes)} to delete, {len(self.unchanged)} unchanged"
        )

    def render(self, *, verbose: bool = False) -> str:
        """The plan as text, one job per line (unchanged jobs only when `verbose`).

        Stable, so two runs on the same declarations and jobs can be diffed: jobs in job id order, an
        update's fields in path order, no times, no service address.
        """
        lines = [f"Cloud Scheduler jobs {self.prefix}* in {self.location_path}:"]
        for change in sorted(self.changes, key=_by_job_id):
            if verbose or change.action is not Action.UNCHANGED:
                lines.extend(change.describe())
        if self.empty:
            lines.append("  nothing to do")
        lines.append(f"Plan: {self.summary()}.")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The plan for machines (`schedules plan --format json`), stable like `render()`; every value is JSON.

        `{"version": 1, "location": ..., "prefix": ..., "changes": [{"action": "create|update|delete|unchanged",
        "job_id": ..., "paused": bool, "fields": [{"field": ..., "current": ..., "desired": ...}]}],
        "summary": {"create": N, "update": N, "delete": N, "unchanged": N, "empty": bool}}`. Changes are in job
        id order, fields in path order. An update lists the fields that differ; a create every field of the
        declared job (`current` null), a delete every field of the listed one (`desired` null), both as the sync
        compares them (output-only fields left out, Cloud Scheduler's defaults filled in); unchanged, none.
        """
        return {
            "version": PLAN_FORMAT_VERSION,
            "location": self.location_path,
            "prefix": self.prefix,
            "changes": [change.to_dict() for change in sorted(self.changes, key=_by_job_id)],
            "summary": {
                "create": len(self.creates),
                "update": len(self.updates),
                "delete": len(self.deletes),
                "unchanged": len(self.unchanged),
                "empty": self.empty,
            },
        }


PLAN_FORMAT_VERSION = 1
"""The version of `Plan.to_dict()`'s layout; it changes only when a key is renamed or removed."""


def _by_job_id(change: JobChange) -> str:
    return change.job_id


def compute_plan(
    *,
    location_path: str,
    prefix: str,
    desired: Mapping[str, scheduler_v1.Job],
    listed: Iterable[scheduler_v1.Job],
) -> Plan:
    """Compare the declared jobs (by job id) with those listed in the location.

    Listed jobs whose id does not start with `prefix` are ignored: they belong to someone else.
    """
    parent = location_path + "/jobs/"
    current: dict[str, scheduler_v1.Job] = {}
    for job in listed:
        if job.name.startswith(parent):
            job_id = job.name[len(parent) :]
            if job_id.startswith(prefix):
                current[job_id] = job
    changes: list[JobChange] = []
    for job_id in sorted(desired.keys() | current.keys()):
        want = desired.get(job_id)
        have = current.get(job_id)
        if want is None:
            changes.append(JobChange(Action.DELETE, job_id, current=have))
        elif have is None:
            changes.append(JobChange(Action.CREATE, job_id, desired=want))
        else:
            mask = changed_fields(have, want)
            if mask:
                fields = tuple(field_changes(have, want, mask))
                changes.append(JobChange(Action.UPDATE, job_id, want, have, tuple(mask), fields))
            else:
                changes.append(JobChange(Action.UNCHANGED, job_id, want, have))
    return Plan(location_path=location_path, prefix=prefix, changes=tuple(changes))


def field_changes(current: scheduler_v1.Job, desired: scheduler_v1.Job, mask: Iterable[str]) -> list[FieldChange]:
    """The leaf fields under the top-level fields `mask` that differ, compared as the sync compares them."""
    have = _leaves(_comparable(current))
    want = _leaves(_comparable(desired))
    top = set(mask)
    paths = sorted(path for path in have.keys() | want.keys() if path.split(".", 1)[0] in top)
    return [FieldChange(path, have.get(path), want.get(path)) for path in paths if have.get(path) != want.get(path)]


def _leaves(job: scheduler_v1.Job) -> dict[str, Any]:
    as_dict = scheduler_v1.Job.to_dict(job, use_integers_for_enums=False, preserving_proto_field_name=True)
    target = as_dict.get("http_target")
    if isinstance(target, dict) and isinstance(target.get("body"), str):
        target["body"] = _body_text(target["body"])
    flat: dict[str, Any] = {}
    _flatten(as_dict, "", flat)
    return flat


def _job_fields(job: scheduler_v1.Job) -> list[tuple[str, Any]]:
    """Every leaf of `job` that a sync compares (under the updatable fields), as it compares them, in path order."""
    compared = set(changed_fields(job, job, force=True))
    leaves = _leaves(_comparable(job))
    return [(path, leaves[path]) for path in sorted(leaves) if path.split(".", 1)[0] in compared]


def _json(value: Any) -> Any:
    """`value` as JSON: to_dict() leaves already are, except bytes (none in a Job today) and other odd types."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json(value[key]) for key in sorted(value, key=str)}
    return str(value)


def _flatten(value: Any, path: str, into: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{path}.{key}" if path else str(key), into)
    elif value not in ("", {}, None):
        into[path] = value


def _body_text(encoded: str) -> str:
    try:
        raw = base64.b64decode(encoded)
        return raw.decode()
    except (binascii.Error, UnicodeDecodeError):
        return encoded


def _show(value: Any) -> str:
    return "(unset)" if value is None else repr(value)
