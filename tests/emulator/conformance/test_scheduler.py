"""Cloud Scheduler jobs through every transport: each RPC, its errors, output-only fields and what a run delivers."""

from __future__ import annotations

import datetime as dt

from google.cloud import scheduler_v1
from google.protobuf import field_mask_pb2

from ._api import expect_status
from .conftest import LOCATION, START, Env

State = scheduler_v1.Job.State


def job_name(job_id: str) -> str:
    return f"{LOCATION}/jobs/{job_id}"


def create(env: Env, job_id: str, **fields: object) -> scheduler_v1.Job:
    body: dict[str, object] = {
        "name": job_name(job_id),
        "schedule": "0 * * * *",
        "http_target": {"uri": f"{env.worker.url}/{job_id}"},
    }
    body.update(fields)
    job: scheduler_v1.Job = env.api.scheduler.create_job(parent=LOCATION, job=scheduler_v1.Job(body))
    return job


def test_create_job_fills_the_output_fields(env: Env) -> None:
    job = create(env, "hourly", state=State.PAUSED, status={"code": 5})
    assert job.state == State.ENABLED  # output only: what the request says is ignored
    assert "status" not in job
    assert "last_attempt_time" not in job
    assert job.user_update_time == START
    assert job.schedule_time == dt.datetime(2026, 3, 1, 13, tzinfo=dt.UTC)
    assert job.attempt_deadline == dt.timedelta(minutes=3)
    assert job.http_target.http_method == scheduler_v1.HttpMethod.POST
    assert env.api.scheduler.get_job(name=job.name) == job


def test_job_errors(env: Env) -> None:
    create(env, "a")
    with expect_status("ALREADY_EXISTS"):
        create(env, "a")
    with expect_status("INVALID_ARGUMENT", "schedule"):
        create(env, "b", schedule="every minute")
    with expect_status("INVALID_ARGUMENT"):
        create(env, "c", http_target={"uri": "ftp://x"})
    with expect_status("NOT_FOUND"):
        env.api.scheduler.get_job(name=job_name("missing"))
    with expect_status("NOT_FOUND"):
        env.api.scheduler.update_job(job=scheduler_v1.Job(name=job_name("missing"), description="x"))
    with expect_status("INVALID_ARGUMENT"):
        env.api.scheduler.get_job(name=f"{LOCATION}/jobs/bad.id")


def test_update_job_masks(env: Env) -> None:
    create(env, "u", description="before")
    env.clock.advance(30)
    mask = field_mask_pb2.FieldMask(paths=["description"])
    updated = env.api.scheduler.update_job(
        job=scheduler_v1.Job(name=job_name("u"), description="after", schedule="5 * * * *"), update_mask=mask
    )
    assert (updated.description, updated.schedule) == ("after", "0 * * * *")
    assert updated.user_update_time == START + dt.timedelta(seconds=30)
    for path in ("state", "no_such_field", "user_update_time"):
        with expect_status("INVALID_ARGUMENT", "update_mask"):
            env.api.scheduler.update_job(
                job=scheduler_v1.Job(name=job_name("u")), update_mask=field_mask_pb2.FieldMask(paths=[path])
            )


def test_pause_and_resume_check_the_state(env: Env) -> None:
    create(env, "p")
    env.clock.advance(10)
    paused = env.api.scheduler.pause_job(name=job_name("p"))
    assert paused.state == State.PAUSED
    assert paused.user_update_time == START + dt.timedelta(seconds=10)
    assert "schedule_time" not in paused
    with expect_status("FAILED_PRECONDITION", "not ENABLED"):
        env.api.scheduler.pause_job(name=job_name("p"))
    resumed = env.api.scheduler.resume_job(name=job_name("p"))
    assert resumed.state == State.ENABLED
    assert resumed.schedule_time == dt.datetime(2026, 3, 1, 13, tzinfo=dt.UTC)
    with expect_status("FAILED_PRECONDITION", "not PAUSED"):
        env.api.scheduler.resume_job(name=job_name("p"))


def test_run_job_delivers_now_with_the_scheduler_headers(env: Env) -> None:
    create(env, "run", http_target={"uri": f"{env.worker.url}/run", "body": b"hi"})
    env.api.scheduler.run_job(name=job_name("run"))
    env.settle()
    [received] = env.worker.received
    assert (received.method, received.path, received.body) == ("POST", "/run", b"hi")
    assert received.headers["user-agent"] == "Google-Cloud-Scheduler"
    assert received.headers["x-cloudscheduler"] == "true"
    assert received.headers["x-cloudscheduler-jobname"] == "run"
    assert received.headers["x-cloudscheduler-scheduletime"] == "2026-03-01T12:00:00.25Z"
    assert received.headers["content-type"] == "application/octet-stream"
    job = env.api.scheduler.get_job(name=job_name("run"))
    assert job.last_attempt_time == START
    assert job.status.code == 0


def test_run_job_runs_a_paused_job(env: Env) -> None:
    """RunJob "forces a job to run now"; the reference names no state it refuses, and a paused job run by hand is
    the documented way to keep a job for manual runs only. The job stays paused."""
    create(env, "manual")
    env.api.scheduler.pause_job(name=job_name("manual"))
    assert env.api.scheduler.run_job(name=job_name("manual")).state == State.PAUSED
    env.settle()
    assert [r.path for r in env.worker.received] == ["/manual"]


def test_scheduled_runs_and_failures_fill_status(env: Env) -> None:
    env.worker.statuses["/sched"] = [503]
    create(env, "sched")
    env.settle(advance=3600)
    job = env.api.scheduler.get_job(name=job_name("sched"))
    assert [r.path for r in env.worker.received] == ["/sched"]
    assert job.last_attempt_time == dt.datetime(2026, 3, 1, 13, 0, 0, 250_000, tzinfo=dt.UTC)
    assert job.status.code == 14  # UNAVAILABLE for a 503
    assert job.schedule_time == dt.datetime(2026, 3, 1, 14, tzinfo=dt.UTC)


def test_delete_job(env: Env) -> None:
    create(env, "d")
    env.api.scheduler.delete_job(name=job_name("d"))
    with expect_status("NOT_FOUND"):
        env.api.scheduler.delete_job(name=job_name("d"))


def test_list_jobs_caps_the_page_size_at_500_and_binds_its_token(env: Env) -> None:
    """ListJobsRequest.page_size: "The maximum page size is 500": more is capped, not refused."""
    setup = env.emu.scheduler_client()  # the listing is what is under test: create the jobs the fastest way
    for i in range(501):
        job = scheduler_v1.Job(name=job_name(f"j{i:03d}"), schedule="0 * * * *", http_target={"uri": env.worker.url})
        setup.create_job(parent=LOCATION, job=job)
    first = env.api.scheduler.list_jobs(request={"parent": LOCATION, "page_size": 600})
    assert len(first.jobs) == 500
    token = first.next_page_token
    assert token
    assert "j499" not in token
    assert len(env.api.items(first)) == 501
    with expect_status("INVALID_ARGUMENT", "another parent"):
        env.api.scheduler.list_jobs(request={"parent": "projects/conformance/locations/other", "page_token": token})
    with expect_status("INVALID_ARGUMENT", "page_size"):
        env.api.scheduler.list_jobs(request={"parent": LOCATION, "page_size": -1})
