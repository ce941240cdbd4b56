"""The Cloud Scheduler flows without I/O, and the two runners that drive them with the same calls."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from google.api_core import exceptions as core
from google.cloud import scheduler_v1

from fastapi_gcp_tasks.build._job import JobConfig, delete_flow, schedule_flow
from fastapi_gcp_tasks.exception import SendError
from fastapi_gcp_tasks.schedules._flows import apply_flow, plan_flow, set_state_flow, sync_flow
from fastapi_gcp_tasks.schedules._plan import Action, JobChange, Plan
from fastapi_gcp_tasks.transport._flows import (
    CreateJob,
    DeleteJob,
    Flow,
    GetJob,
    ListJobs,
    PauseJob,
    SchedulerCall,
    UpdateJob,
)
from fastapi_gcp_tasks.transport._scheduler import run_flow, run_flow_async

LOCATION = "projects/p/locations/l"
NAME = f"{LOCATION}/jobs/nightly"
CONFIG = JobConfig.create(
    name="nightly", schedule="0 3 * * *", options={"location_path": LOCATION, "callback_base_url": "http://w"}
)


def job(name: str = NAME, schedule: str = "0 3 * * *", **fields: Any) -> scheduler_v1.Job:
    return scheduler_v1.Job(name=name, schedule=schedule, http_target={"uri": "http://w/job"}, **fields)


def drive(flow: Flow[Any], answers: list[Any]) -> tuple[list[SchedulerCall], Any]:
    """Run `flow` against scripted answers (an exception is thrown in); the calls made and the result."""
    calls: list[SchedulerCall] = []
    try:
        call = next(flow)
        while True:
            calls.append(call)
            answer = answers.pop(0)
            call = flow.throw(answer) if isinstance(answer, Exception) else flow.send(answer)
    except StopIteration as done:
        assert answers == [], "the flow stopped before using every answer"
        return calls, done.value


# schedule and delete


def test_a_missing_job_is_created() -> None:
    desired = job()
    calls, result = drive(schedule_flow(CONFIG, desired), [core.NotFound("no"), desired])  # type: ignore[no-untyped-call]
    assert [type(call) for call in calls] == [GetJob, CreateJob]
    assert calls[1] == CreateJob(parent=LOCATION, job=desired, what=f"scheduling job {NAME}")
    assert result is desired


def test_a_matching_job_is_left_alone() -> None:
    calls, result = drive(schedule_flow(CONFIG, job()), [stored := job(state=scheduler_v1.Job.State.ENABLED)])
    assert calls == [GetJob(name=NAME, what=f"scheduling job {NAME}")]
    assert result is stored


def test_a_changed_job_is_updated_in_place_with_a_mask() -> None:
    desired = job(schedule="0 4 * * *")
    calls, result = drive(schedule_flow(CONFIG, desired), [job(), desired])
    assert calls[1] == UpdateJob(job=desired, update_mask=("schedule",), what=f"scheduling job {NAME}")
    assert calls[1].arguments()["update_mask"].paths == ["schedule"]
    assert result is desired


def test_losing_a_creation_race_compares_with_the_winner() -> None:
    desired = job()
    calls, result = drive(schedule_flow(CONFIG, desired), [core.NotFound("no"), core.AlreadyExists("x"), job()])  # type: ignore[no-untyped-call]
    assert [type(call) for call in calls] == [GetJob, CreateJob, GetJob]
    assert result == job()


def test_other_errors_go_through_the_flow() -> None:
    with pytest.raises(core.PermissionDenied):
        drive(schedule_flow(CONFIG, job()), [core.PermissionDenied("no")])  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(("answer", "deleted"), [(None, True), (core.NotFound("gone"), False)])  # type: ignore[no-untyped-call]
def test_delete(answer: Any, deleted: bool) -> None:
    calls, result = drive(delete_flow(NAME), [answer])
    assert calls == [DeleteJob(name=NAME, what=f"deleting job {NAME}")]
    assert result is deleted


# schedules


def test_plan_lists_every_page() -> None:
    pages = [
        scheduler_v1.ListJobsResponse(jobs=[job(f"{LOCATION}/jobs/app-a")], next_page_token="t1"),
        scheduler_v1.ListJobsResponse(jobs=[job(f"{LOCATION}/jobs/app-b"), job(f"{LOCATION}/jobs/other")]),
    ]
    desired = {"app-a": job(f"{LOCATION}/jobs/app-a"), "app-c": job(f"{LOCATION}/jobs/app-c")}
    calls, plan = drive(plan_flow(location_path=LOCATION, prefix="app-", desired=desired), pages)
    assert [call.page_token for call in calls if isinstance(call, ListJobs)] == ["", "t1"]
    assert {call.page_size for call in calls if isinstance(call, ListJobs)} == {500}
    assert [(c.action, c.job_id) for c in plan.changes] == [
        (Action.UNCHANGED, "app-a"),
        (Action.DELETE, "app-b"),
        (Action.CREATE, "app-c"),
    ]


def test_apply_writes_creates_and_updates_before_deletes_and_a_deleted_job_counts_as_deleted() -> None:
    changes = (
        JobChange(Action.DELETE, "app-a", current=job(f"{LOCATION}/jobs/app-a")),
        JobChange(Action.UPDATE, "app-b", desired=job(f"{LOCATION}/jobs/app-b"), update_mask=("schedule",)),
        JobChange(Action.CREATE, "app-c", desired=job(f"{LOCATION}/jobs/app-c")),
        JobChange(Action.UNCHANGED, "app-d", desired=job(f"{LOCATION}/jobs/app-d")),
    )
    plan = Plan(location_path=LOCATION, prefix="app-", changes=changes)
    calls, result = drive(apply_flow(plan), [None, None, core.NotFound("gone")])  # type: ignore[no-untyped-call]
    assert [type(call) for call in calls] == [CreateJob, UpdateJob, DeleteJob]
    assert calls[2] == DeleteJob(name=f"{LOCATION}/jobs/app-a", what=f"delete of job {LOCATION}/jobs/app-a")
    assert result is plan


def test_apply_stops_at_the_first_failure() -> None:
    changes = (
        JobChange(Action.CREATE, "app-a", desired=job(f"{LOCATION}/jobs/app-a")),
        JobChange(Action.CREATE, "app-b", desired=job(f"{LOCATION}/jobs/app-b")),
    )
    flow = apply_flow(Plan(location_path=LOCATION, prefix="app-", changes=changes))
    with pytest.raises(core.NotFound):
        drive(flow, [core.NotFound("no parent")])  # type: ignore[no-untyped-call]


def test_a_dry_run_sync_only_lists() -> None:
    flow = sync_flow(location_path=LOCATION, prefix="app-", desired={"app-a": job()}, dry_run=True)
    calls, plan = drive(flow, [scheduler_v1.ListJobsResponse()])
    assert [type(call) for call in calls] == [ListJobs]
    assert [c.action for c in plan.changes] == [Action.CREATE]


@pytest.mark.parametrize(
    ("state", "outcome"), [(scheduler_v1.Job.State.PAUSED, "job"), (scheduler_v1.Job.State.ENABLED, "raised")]
)
def test_pausing_a_paused_job_is_already_done(state: Any, outcome: str) -> None:
    refused = core.FailedPrecondition("not enabled")  # type: ignore[no-untyped-call]
    answers = [refused, stored := job(state=state)]
    if outcome == "job":
        calls, result = drive(set_state_flow(NAME, pause=True), answers)
        assert calls == [PauseJob(name=NAME, what=f"pausing job {NAME}"), GetJob(name=NAME, what=f"pausing job {NAME}")]
        assert result is stored
    else:
        with pytest.raises(core.FailedPrecondition) as info:
            drive(set_state_flow(NAME, pause=True), answers)
        assert info.value is refused


# the runners


class Recorder:
    """A sync or async client that records each call and answers from a script."""

    def __init__(self, answers: list[Any], *, is_async: bool) -> None:
        self.answers = answers
        self.is_async = is_async
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, rpc: str) -> Any:
        def call(**kwargs: Any) -> Any:
            self.calls.append((rpc, kwargs))
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

        async def call_async(**kwargs: Any) -> Any:
            return call(**kwargs)

        return call_async if self.is_async else call


def run_both(make_flow: Any, answers: list[Any]) -> list[tuple[Any, list[tuple[str, dict[str, Any]]]]]:
    outcomes = []
    for is_async in (False, True):
        client = Recorder(list(answers), is_async=is_async)
        try:
            if is_async:
                result: Any = asyncio.run(run_flow_async(make_flow(), client, timeout=7.0))  # type: ignore[arg-type]
            else:
                result = run_flow(make_flow(), client, timeout=7.0)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - compared between the two runners below
            result = (type(exc), str(exc), type(exc.__cause__))
        outcomes.append((result, client.calls))
    return outcomes


def test_both_runners_make_the_same_calls_with_flattened_fields_and_the_timeout() -> None:
    desired = job(schedule="0 4 * * *")
    sync, async_ = run_both(lambda: schedule_flow(CONFIG, desired), [core.NotFound("no"), desired])  # type: ignore[no-untyped-call]
    assert sync == async_
    result, calls = sync
    assert result == desired
    assert calls == [
        ("get_job", {"name": NAME, "timeout": 7.0}),
        ("create_job", {"parent": LOCATION, "job": desired, "timeout": 7.0}),
    ]


def test_both_runners_page_with_a_request() -> None:
    sync, async_ = run_both(
        lambda: plan_flow(location_path=LOCATION, prefix="app-", desired={}), [scheduler_v1.ListJobsResponse()]
    )
    assert sync == async_
    (rpc, kwargs), *_ = sync[1]
    assert rpc == "list_jobs"
    assert kwargs["request"] == scheduler_v1.ListJobsRequest(parent=LOCATION, page_size=500)


def test_both_runners_translate_what_the_flow_lets_through_naming_the_step() -> None:
    sync, async_ = run_both(lambda: delete_flow(NAME), [core.PermissionDenied("denied")])  # type: ignore[no-untyped-call]
    assert sync == async_
    kind, message, cause = sync[0]
    assert kind is SendError
    assert message.startswith(f"deleting job {NAME} failed")
    assert cause is core.PermissionDenied


def test_both_runners_let_other_errors_through_unchanged() -> None:
    def broken() -> Flow[None]:
        yield GetJob(name=NAME, what="reading")
        raise KeyError("a bug in a flow")

    sync, async_ = run_both(broken, [job()])
    assert sync == async_
    assert sync[0][0] is KeyError
