"""The Cloud Scheduler service driven by the official scheduler_v1 clients over real gRPC."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud import scheduler_v1
from google.protobuf import field_mask_pb2

from tests._support import TIMEOUT, eventually

from ._scheduler_support import PARENT, START, Harness, job_name, start_harness

UTC = dt.UTC
State = scheduler_v1.Job.State


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    async for harness in start_harness():
        yield harness


@pytest.fixture
async def started() -> AsyncIterator[Harness]:
    """A harness whose firing loop runs on its own."""
    async for harness in start_harness(service_started=True):
        yield harness


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=UTC)


async def until(predicate: Callable[[], bool]) -> None:
    """Wait for work that runs on its own (attempts, the firing loop) to reach a state."""
    await eventually(predicate, "the scheduler's own work to reach the expected state")


async def job_names(h: Harness) -> list[str]:
    return [job.name async for job in await h.client.list_jobs(parent=PARENT)]


# creating and reading jobs


async def test_create_fills_output_fields_and_defaults(h: Harness) -> None:
    job = await h.create("nightly", description="d", schedule="30 2 * * *", time_zone="Europe/Berlin")

    assert job.name == job_name("nightly")
    assert job.state == State.ENABLED
    assert job.user_update_time == START
    assert job.schedule_time == at(2026, 3, 2, 1, 30)  # 02:30 CET
    assert job.http_target.http_method == scheduler_v1.HttpMethod.POST
    assert job.attempt_deadline == dt.timedelta(minutes=3)
    retry = job.retry_config
    assert (retry.retry_count, retry.max_doublings) == (0, 5)
    assert retry.min_backoff_duration == dt.timedelta(seconds=5)
    assert retry.max_backoff_duration == dt.timedelta(hours=1)
    assert "last_attempt_time" not in job
    assert await h.client.get_job(name=job.name) == job


async def test_create_without_a_name_generates_one_in_the_parent(h: Harness) -> None:
    job = await h.client.create_job(
        parent=PARENT, job=scheduler_v1.Job(schedule="* * * * *", http_target={"uri": "http://worker/status/200"})
    )
    assert job.name.startswith(PARENT + "/jobs/")
    assert (await h.client.get_job(name=job.name)).name == job.name


async def test_output_only_fields_in_a_create_request_are_ignored(h: Harness) -> None:
    job = await h.create("j", state=State.PAUSED, last_attempt_time=at(2020, 1, 1), status={"code": 5})
    assert job.state == State.ENABLED
    assert "last_attempt_time" not in job
    assert "status" not in job


async def test_creating_an_existing_name_is_already_exists(h: Harness) -> None:
    await h.create("twice")
    with pytest.raises(exceptions.AlreadyExists, match="twice"):
        await h.create("twice", schedule="0 * * * *")
    assert (await h.client.get_job(name=job_name("twice"))).schedule == "*/5 * * * *"


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = body
        for part in parents:
            node = node.setdefault(part, {})
        if value is _DELETE:
            node.pop(last, None)
        else:
            node[last] = value

    return apply


_DELETE = object()


def _other_target(kind: str, target: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def apply(body: dict[str, Any]) -> None:
        del body["http_target"]
        body[kind] = target

    return apply


INVALID_JOBS = [
    ("bad-char", _set("name", job_name("a/b")), "JOB_ID"),
    ("id-too-long", _set("name", job_name("x" * 501)), "JOB_ID"),
    ("other-parent", _set("name", "projects/other/locations/europe-west1/jobs/a"), "not in parent"),
    ("no-schedule", _set("schedule", _DELETE), "schedule is required"),
    ("cron-6-fields", _set("schedule", "0 0 * * * *"), "expected 5 fields"),
    ("cron-minute-60", _set("schedule", "60 * * * *"), "minute value 60"),
    ("cron-english", _set("schedule", "every 5 minutes"), "unix-cron"),
    ("time-zone", _set("time_zone", "Mars/Olympus"), "time zone"),
    ("time-zone-path", _set("time_zone", "../../etc/passwd"), "time zone"),
    ("no-target", _set("http_target", _DELETE), "needs a target"),
    ("uri-scheme", _set("http_target.uri", "ftp://worker/x"), "http:// or https://"),
    ("uri-missing", _set("http_target.uri", ""), "uri is required"),
    ("uri-no-host", _set("http_target.uri", "http:///path"), "no host"),
    ("uri-too-long", _set("http_target.uri", "http://worker/" + "x" * 2100), "2083"),
    (
        "body-with-get",
        _set("http_target", {"uri": "http://w/", "http_method": "GET", "body": b"x"}),
        "only allowed with POST",
    ),
    ("header-name", _set("http_target.headers", {"bad header": "x"}), "header name"),
    ("header-value", _set("http_target.headers", {"X-A": "a\nb"}), "control characters"),
    ("headers-size", _set("http_target.headers", {"X-Big": "x" * 82_000}), "80 KB"),
    ("oidc-email", _set("http_target.oidc_token", {"service_account_email": "nobody"}), "service account"),
    ("description", _set("description", "d" * 501), "description"),
    ("retry-count-high", _set("retry_config.retry_count", 6), "retry_count"),
    ("retry-count-negative", _set("retry_config.retry_count", -1), "retry_count"),
    ("doublings", _set("retry_config.max_doublings", 17), "max_doublings"),
    ("min-backoff-negative", _set("retry_config.min_backoff_duration", dt.timedelta(seconds=-1)), "non-negative"),
    ("max-backoff-long", _set("retry_config.max_backoff_duration", dt.timedelta(hours=2)), "at most 1 hour"),
    (
        "min-over-max",
        _set(
            "retry_config",
            {"min_backoff_duration": dt.timedelta(seconds=60), "max_backoff_duration": dt.timedelta(seconds=1)},
        ),
        "must not exceed",
    ),
    ("deadline-short", _set("attempt_deadline", dt.timedelta(seconds=14)), "between 15 s and 30 min"),
    ("deadline-long", _set("attempt_deadline", dt.timedelta(minutes=31)), "between 15 s and 30 min"),
    (
        "pubsub-topic",
        _other_target("pubsub_target", {"topic_name": "topic"}),
        "projects/PROJECT_ID/topics",
    ),
    (
        "app-engine-uri",
        _other_target("app_engine_http_target", {"relative_uri": "x"}),
        "relative_uri",
    ),
]


@pytest.mark.parametrize(("change", "message"), [p[1:] for p in INVALID_JOBS], ids=[p[0] for p in INVALID_JOBS])
async def test_invalid_jobs_are_invalid_argument(
    h: Harness, change: Callable[[dict[str, Any]], None], message: str
) -> None:
    body: dict[str, Any] = {
        "name": job_name("checked"),
        "schedule": "*/5 * * * *",
        "http_target": {"uri": "http://worker/status/200"},
    }
    change(body)
    with pytest.raises(exceptions.InvalidArgument, match=message):
        await h.client.create_job(parent=PARENT, job=scheduler_v1.Job(body))
    assert await job_names(h) == []


@pytest.mark.parametrize(
    "parent", ["", "projects/p", "projects/p/locations/", "projects/p q/locations/l", "locations/l/projects/p"]
)
async def test_malformed_parent_is_invalid_argument(h: Harness, parent: str) -> None:
    with pytest.raises(exceptions.InvalidArgument, match="parent"):
        await h.client.create_job(parent=parent, job=scheduler_v1.Job(schedule="* * * * *"))
    with pytest.raises(exceptions.InvalidArgument, match="parent"):
        await h.client.list_jobs(parent=parent)


async def test_pubsub_and_app_engine_jobs_are_stored(h: Harness) -> None:
    await h.client.create_job(
        parent=PARENT,
        job=scheduler_v1.Job(
            name=job_name("ps"), schedule="* * * * *", pubsub_target={"topic_name": "projects/p/topics/topic"}
        ),
    )
    ae = await h.client.create_job(
        parent=PARENT,
        job=scheduler_v1.Job(name=job_name("ae"), schedule="* * * * *", app_engine_http_target={"relative_uri": "/x"}),
    )
    assert ae.app_engine_http_target.http_method == scheduler_v1.HttpMethod.POST
    h.advance_to(START + dt.timedelta(minutes=1))
    assert await h.service.run_due() == 0
    await h.client.run_job(name=job_name("ps"))
    assert await h.service.run_due() == 0
    assert sorted(await job_names(h)) == [job_name("ae"), job_name("ps")]


@pytest.mark.parametrize("method", ["get_job", "delete_job", "pause_job", "resume_job", "run_job"])
async def test_missing_jobs_are_not_found_and_bad_names_invalid(h: Harness, method: str) -> None:
    call = getattr(h.client, method)
    with pytest.raises(exceptions.NotFound, match="ghost"):
        await call(name=job_name("ghost"))
    with pytest.raises(exceptions.InvalidArgument, match="JOB_ID"):
        await call(name=f"{PARENT}/jobs/")


async def test_update_of_a_missing_job_is_not_found(h: Harness) -> None:
    job = scheduler_v1.Job(name=job_name("ghost"), schedule="* * * * *")
    with pytest.raises(exceptions.NotFound):
        await h.client.update_job(job=job, update_mask=field_mask_pb2.FieldMask(paths=["schedule"]))


async def test_list_pages_through_every_job_of_the_parent_only(h: Harness) -> None:
    for i in range(7):
        await h.create(f"job-{i}")
    await h.client.create_job(
        parent="projects/test-project/locations/us-central1",
        job=scheduler_v1.Job(
            name="projects/test-project/locations/us-central1/jobs/elsewhere",
            schedule="* * * * *",
            http_target={"uri": "http://worker/status/200"},
        ),
    )
    pager = await h.client.list_jobs(request={"parent": PARENT, "page_size": 3})
    pages = [page async for page in pager.pages]
    assert [len(page.jobs) for page in pages] == [3, 3, 1]
    assert [job.name for page in pages for job in page.jobs] == [job_name(f"job-{i}") for i in range(7)]
    assert len([job async for job in await h.client.list_jobs(parent=PARENT)]) == 7


async def test_list_rejects_bad_paging(h: Harness) -> None:
    with pytest.raises(exceptions.InvalidArgument, match="page_size"):
        await h.client.list_jobs(request={"parent": PARENT, "page_size": -1})
    for i in range(3):
        await h.create(f"job-{i}")
    pager = await h.client.list_jobs(request={"parent": PARENT, "page_size": 1})
    token = pager.next_page_token
    assert token
    with pytest.raises(exceptions.InvalidArgument, match="another parent"):
        await h.client.list_jobs(request={"parent": "projects/x/locations/y", "page_token": token})
    with pytest.raises(exceptions.InvalidArgument, match="page_token"):
        await h.client.list_jobs(request={"parent": PARENT, "page_token": "%%%not-a-token"})


async def test_the_sync_client_works_too(h: Harness) -> None:
    def scenario() -> list[str]:
        client = h.sync_client
        client.create_job(
            parent=PARENT,
            job=scheduler_v1.Job(name=job_name("sync"), schedule="0 * * * *", http_target={"uri": "http://w/"}),
        )
        client.pause_job(name=job_name("sync"))
        names = [job.name for job in client.list_jobs(parent=PARENT)]
        assert client.get_job(name=job_name("sync")).state == State.PAUSED
        client.delete_job(name=job_name("sync"))
        with pytest.raises(exceptions.NotFound):
            client.get_job(name=job_name("sync"))
        return names

    assert await asyncio.to_thread(scenario) == [job_name("sync")]


# updating


async def test_update_with_a_mask_changes_only_the_masked_fields(h: Harness) -> None:
    await h.create("u", description="before", http_target={"uri": "http://worker/status/200", "headers": {"A": "1"}})
    h.clock.advance(30)
    patch = scheduler_v1.Job(
        name=job_name("u"),
        schedule="0 13 * * *",
        description="ignored",
        http_target={"uri": "http://worker/status/201"},
    )
    job = await h.client.update_job(
        job=patch, update_mask=field_mask_pb2.FieldMask(paths=["schedule", "http_target.uri"])
    )
    assert job.schedule == "0 13 * * *"
    assert job.description == "before"
    assert job.http_target.uri == "http://worker/status/201"
    assert dict(job.http_target.headers) == {"A": "1"}
    assert job.user_update_time == START + dt.timedelta(seconds=30)
    assert job.schedule_time == at(2026, 3, 1, 13, 0)
    assert await h.client.get_job(name=job.name) == job


async def test_update_without_a_mask_replaces_the_populated_fields(h: Harness) -> None:
    await h.create("u", description="before", retry_config={"retry_count": 2})
    job = await h.client.update_job(
        job=scheduler_v1.Job(name=job_name("u"), pubsub_target={"topic_name": "projects/p/topics/top"})
    )
    assert "pubsub_target" in job
    assert "http_target" not in job
    assert job.description == "before"
    assert job.schedule == "*/5 * * * *"
    assert job.retry_config.retry_count == 2


@pytest.mark.parametrize(
    ("paths", "message"),
    [(["state"], "not an updatable field"), (["name"], "not an updatable field"), (["http_target.nope"], "does not")],
)
async def test_update_masks_naming_other_fields_are_invalid(h: Harness, paths: list[str], message: str) -> None:
    await h.create("u")
    with pytest.raises(exceptions.InvalidArgument, match=message):
        await h.client.update_job(
            job=scheduler_v1.Job(name=job_name("u")), update_mask=field_mask_pb2.FieldMask(paths=paths)
        )


async def test_an_invalid_update_leaves_the_job_unchanged(h: Harness) -> None:
    before = await h.create("u")
    with pytest.raises(exceptions.InvalidArgument, match="hour value 25"):
        await h.client.update_job(
            job=scheduler_v1.Job(name=job_name("u"), schedule="0 25 * * *"),
            update_mask=field_mask_pb2.FieldMask(paths=["schedule"]),
        )
    with pytest.raises(exceptions.InvalidArgument, match="schedule is required"):
        await h.client.update_job(
            job=scheduler_v1.Job(name=job_name("u")), update_mask=field_mask_pb2.FieldMask(paths=["schedule"])
        )
    assert await h.client.get_job(name=job_name("u")) == before


async def test_update_keeps_a_paused_job_paused(h: Harness) -> None:
    await h.create("u")
    await h.client.pause_job(name=job_name("u"))
    job = await h.client.update_job(job=scheduler_v1.Job(name=job_name("u"), schedule="* * * * *"))
    assert job.state == State.PAUSED
    assert "schedule_time" not in job


# pause, resume, delete, run


async def test_pause_and_resume_need_the_right_state(h: Harness) -> None:
    await h.create("p")
    with pytest.raises(exceptions.FailedPrecondition, match="ENABLED, not PAUSED"):
        await h.client.resume_job(name=job_name("p"))
    h.clock.advance(10)
    paused = await h.client.pause_job(name=job_name("p"))
    assert paused.state == State.PAUSED
    assert paused.user_update_time == START + dt.timedelta(seconds=10)
    assert "schedule_time" not in paused
    with pytest.raises(exceptions.FailedPrecondition, match="PAUSED, not ENABLED"):
        await h.client.pause_job(name=job_name("p"))

    h.advance_to(at(2026, 3, 1, 12, 30))
    assert await h.service.run_due() == 0

    resumed = await h.client.resume_job(name=job_name("p"))
    assert resumed.state == State.ENABLED
    assert resumed.schedule_time == at(2026, 3, 1, 12, 35)
    h.advance_to(at(2026, 3, 1, 12, 35))
    assert await h.service.run_due() == 1


async def test_a_deleted_job_never_fires(h: Harness) -> None:
    await h.create("d")
    await h.client.delete_job(name=job_name("d"))
    with pytest.raises(exceptions.NotFound):
        await h.client.delete_job(name=job_name("d"))
    h.advance_to(at(2026, 3, 1, 12, 5))
    assert await h.service.run_due() == 0
    assert h.worker.calls == []


async def test_run_job_fires_now_even_when_paused(h: Harness) -> None:
    await h.create("r", schedule="0 0 1 1 *")
    await h.client.pause_job(name=job_name("r"))
    h.clock.advance(1.5)
    await h.client.run_job(name=job_name("r"))
    assert await h.service.run_due() == 1
    (delivery,) = h.service.deliveries
    assert delivery.forced
    assert delivery.schedule_time == START + dt.timedelta(seconds=1.5)
    assert delivery.headers["X-CloudScheduler-ScheduleTime"] == "2026-03-01T12:00:01.5Z"
    job = await h.client.get_job(name=job_name("r"))
    assert job.last_attempt_time == START + dt.timedelta(seconds=1.5)
    assert job.state == State.PAUSED


# firing


async def test_a_due_job_sends_the_cloud_scheduler_request(h: Harness) -> None:
    await h.create(
        "hello",
        http_target={
            "uri": "http://worker/status/204?x=1",
            "body": b"payload",
            "headers": {"X-Custom": "yes", "X-CloudScheduler-JobName": "forged", "User-Agent": "me", "Host": "evil"},
            "oidc_token": {"service_account_email": "sa@p.iam.gserviceaccount.com"},
        },
    )
    h.advance_to(at(2026, 3, 1, 12, 5, 0))
    assert await h.service.run_due() == 1

    ((method, url, headers, body),) = h.worker.calls
    assert (method, url, body) == ("POST", "http://worker/status/204?x=1", b"payload")
    assert headers["x-cloudscheduler"] == "true"
    assert headers["x-cloudscheduler-jobname"] == "hello"
    assert headers["x-cloudscheduler-scheduletime"] == "2026-03-01T12:05:00Z"
    assert headers["user-agent"] == "Google-Cloud-Scheduler"
    assert headers["content-type"] == "application/octet-stream"
    assert headers["x-custom"] == "yes"
    assert headers["host"] == "worker"
    assert headers["authorization"] == "Bearer jwt.http://worker/status/204?x=1.sa@p.iam.gserviceaccount.com"

    job = await h.client.get_job(name=job_name("hello"))
    assert job.last_attempt_time == at(2026, 3, 1, 12, 5)
    assert job.status.code == 0
    assert job.schedule_time == at(2026, 3, 1, 12, 10)


async def test_content_type_and_audience_given_by_the_job_are_kept(h: Harness) -> None:
    await h.create(
        "json",
        http_target={
            "uri": "http://worker/status/200",
            "body": b"{}",
            "headers": {"content-type": "application/json"},
            "oidc_token": {"service_account_email": "sa@p.iam", "audience": "https://aud"},
        },
    )
    await h.create("get", http_target={"uri": "http://worker/status/200", "http_method": "GET"})
    h.advance_to(at(2026, 3, 1, 12, 5))
    assert await h.service.run_due() == 2
    by_method = {call[0]: call[2] for call in h.worker.calls}
    assert by_method["POST"]["content-type"] == "application/json"
    assert by_method["POST"]["authorization"] == "Bearer jwt.https://aud.sa@p.iam"
    assert "content-type" not in by_method["GET"]
    assert "authorization" not in by_method["GET"]


async def test_a_clock_jump_over_several_slots_fires_once(h: Harness) -> None:
    await h.create("every-minute", schedule="* * * * *")
    h.advance_to(at(2026, 3, 1, 13, 0, 30))
    assert await h.service.run_due() == 1
    assert h.service.deliveries[0].schedule_time == at(2026, 3, 1, 12, 1)
    assert (await h.client.get_job(name=job_name("every-minute"))).schedule_time == at(2026, 3, 1, 13, 1)
    assert await h.service.run_due() == 0


async def test_failures_are_retried_with_exponential_then_linear_backoff(h: Harness) -> None:
    await h.create(
        "retry",
        schedule="0 0 1 1 *",
        http_target={"uri": "http://worker/status/503"},
        retry_config={
            "retry_count": 5,
            "min_backoff_duration": dt.timedelta(seconds=10),
            "max_backoff_duration": dt.timedelta(seconds=70),
            "max_doublings": 1,
        },
    )
    await h.client.run_job(name=job_name("retry"))
    assert await h.service.run_due() == 1
    waits = []
    for _ in range(5):
        job = await h.client.get_job(name=job_name("retry"))
        assert job.status.code == 14  # UNAVAILABLE
        waits.append((job.schedule_time - h.clock.now()).total_seconds())
        h.advance_to(job.schedule_time)
        assert await h.service.run_due() == 1
    assert waits == [10, 20, 40, 60, 70]  # 10, doubled once, then +20 linearly, capped at 70
    assert [d.attempt for d in h.service.deliveries] == [1, 2, 3, 4, 5, 6]
    h.clock.advance(3600)
    assert await h.service.run_due() == 0
    assert (await h.client.get_job(name=job_name("retry"))).schedule_time == at(2027, 1, 1)


async def test_retries_stop_on_success(h: Harness) -> None:
    h.worker.fail_first = 1
    await h.create(
        "flaky",
        schedule="0 0 1 1 *",
        http_target={"uri": "http://worker/flaky"},
        retry_config={"retry_count": 5, "min_backoff_duration": dt.timedelta(seconds=5)},
    )
    await h.client.run_job(name=job_name("flaky"))
    await h.service.run_due()
    h.clock.advance(5)
    assert await h.service.run_due() == 1
    h.clock.advance(3600)
    assert await h.service.run_due() == 0
    assert [d.status for d in h.service.deliveries] == [503, 200]
    assert (await h.client.get_job(name=job_name("flaky"))).status.code == 0


async def test_a_status_outside_the_table_is_recorded_as_cloud_tasks_does(h: Harness) -> None:
    # the two copies of the table disagreed here: Cloud Scheduler's said UNKNOWN, Cloud Tasks' FAILED_PRECONDITION
    await h.create("teapot", http_target={"uri": "http://worker/status/418"})
    h.advance_to(at(2026, 3, 1, 12, 5))
    assert await h.service.run_due() == 1
    job = await h.client.get_job(name=job_name("teapot"))
    assert (job.status.code, job.status.message) == (9, "HTTP 418")  # FAILED_PRECONDITION


async def test_without_retry_count_a_failure_waits_for_the_next_slot(h: Harness) -> None:
    await h.create("once", http_target={"uri": "http://worker/status/404"})
    h.advance_to(at(2026, 3, 1, 12, 5))
    assert await h.service.run_due() == 1
    job = await h.client.get_job(name=job_name("once"))
    assert job.status.code == 5  # NOT_FOUND
    assert job.schedule_time == at(2026, 3, 1, 12, 10)
    h.advance_to(at(2026, 3, 1, 12, 9, 59))
    assert await h.service.run_due() == 0


async def test_retries_never_reach_the_next_scheduled_start(h: Harness) -> None:
    await h.create(
        "minutely",
        schedule="* * * * *",
        http_target={"uri": "http://worker/status/500"},
        retry_config={"retry_count": 5, "min_backoff_duration": dt.timedelta(seconds=25), "max_doublings": 1},
    )
    h.advance_to(at(2026, 3, 1, 12, 1))
    await h.service.run_due()
    h.clock.advance(25)
    assert await h.service.run_due() == 1
    # the next retry would come 50 s later, after the 12:02 start: the execution ends instead
    job = await h.client.get_job(name=job_name("minutely"))
    assert job.schedule_time == at(2026, 3, 1, 12, 2)
    assert job.status.code == 13  # INTERNAL
    h.advance_to(at(2026, 3, 1, 12, 2))
    assert await h.service.run_due() == 1
    minutes = [(d.attempt, d.schedule_time and d.schedule_time.minute) for d in h.service.deliveries]
    assert minutes == [(1, 1), (2, 1), (1, 2)]


async def test_max_retry_duration_keeps_retrying_past_retry_count(h: Harness) -> None:
    await h.create(
        "long",
        schedule="0 0 1 1 *",
        http_target={"uri": "http://worker/status/500"},
        retry_config={
            "retry_count": 1,
            "max_retry_duration": dt.timedelta(seconds=30),
            "min_backoff_duration": dt.timedelta(seconds=10),
            "max_backoff_duration": dt.timedelta(seconds=10),
        },
    )
    await h.client.run_job(name=job_name("long"))
    await h.service.run_due()
    for _ in range(5):
        h.clock.advance(10)
        await h.service.run_due()
    assert [(d.started - START).total_seconds() for d in h.service.deliveries] == [0, 10, 20, 30]


async def test_attempt_deadline_is_enforced_on_the_clock_and_other_jobs_go_on(h: Harness) -> None:
    await h.create("slow", http_target={"uri": "http://worker/hang"}, attempt_deadline=dt.timedelta(seconds=15))
    await h.create("fast", schedule="* * * * *")
    h.advance_to(at(2026, 3, 1, 12, 5))
    runner = asyncio.create_task(h.service.run_due())
    await asyncio.wait_for(h.worker.arrived.wait(), 10)
    await until(lambda: len(h.service.deliveries) == 1)  # the fast job answered while the slow one hangs
    assert not h.service.is_idle()
    almost = asyncio.Event()  # a timer of ours, due with the move: once it ran, so had the clock's others
    h.clock.call_at(h.clock.now() + dt.timedelta(seconds=14.9), almost.set)
    h.clock.advance(14.9)
    await asyncio.wait_for(almost.wait(), TIMEOUT)
    assert not runner.done()
    h.clock.advance(0.1)
    await asyncio.wait_for(runner, 10)
    statuses = {d.job.rsplit("/", 1)[1]: d.status for d in h.service.deliveries}
    assert statuses == {"fast": 200, "slow": None}
    slow = await h.client.get_job(name=job_name("slow"))
    assert slow.status.code == 4  # DEADLINE_EXCEEDED
    assert h.service.is_idle()


async def test_a_start_time_that_comes_during_an_execution_is_delayed(h: Harness) -> None:
    await h.create("busy", schedule="* * * * *", http_target={"uri": "http://worker/hang"})
    h.advance_to(at(2026, 3, 1, 12, 1))
    assert h.service.fire_due() == 1
    await asyncio.wait_for(h.worker.arrived.wait(), 10)
    h.advance_to(at(2026, 3, 1, 12, 2, 30))
    assert h.service.fire_due() == 0
    h.worker.release.set()
    await h.service.run_due()
    assert [d.schedule_time for d in h.service.deliveries] == [at(2026, 3, 1, 12, 1), at(2026, 3, 1, 12, 2)]
    assert [d.started for d in h.service.deliveries] == [at(2026, 3, 1, 12, 1), at(2026, 3, 1, 12, 2, 30)]
    assert (await h.client.get_job(name=job_name("busy"))).schedule_time == at(2026, 3, 1, 12, 3)


async def test_the_firing_loop_fires_on_its_own_when_the_clock_moves(started: Harness) -> None:
    await started.create("loop", schedule="* * * * *", http_target={"uri": "http://worker/hang"})
    started.worker.release.set()
    started.advance_to(at(2026, 3, 1, 12, 1))
    await asyncio.wait_for(started.worker.arrived.wait(), 10)
    await until(started.service.is_idle)
    assert [d.status for d in started.service.deliveries] == [200]
    job = await started.client.get_job(name=job_name("loop"))
    assert job.schedule_time == at(2026, 3, 1, 12, 2)


async def test_reset_forgets_jobs_and_deliveries(h: Harness) -> None:
    await h.create("gone")
    await h.client.run_job(name=job_name("gone"))
    await h.service.run_due()
    assert h.service.deliveries
    h.service.reset()
    assert not h.service.deliveries
    assert await job_names(h) == []


# daylight-saving changes, end to end


@pytest.mark.parametrize(
    ("zone", "schedule", "start", "expected"),
    [
        # New York springs forward at 02:00 EST on 2026-03-08: 02:30 does not exist and runs at 03:00 EDT
        ("America/New_York", "30 2 * * *", at(2026, 3, 7, 12), [at(2026, 3, 8, 7), at(2026, 3, 9, 6, 30)]),
        # and falls back at 02:00 EDT on 2026-11-01: 01:30 happens twice and runs at the first one only
        ("America/New_York", "30 1 * * *", at(2026, 10, 31, 12), [at(2026, 11, 1, 5, 30), at(2026, 11, 2, 6, 30)]),
        # an hourly job runs in both copies of the repeated hour
        ("America/New_York", "30 * * * *", at(2026, 11, 1, 5), [at(2026, 11, 1, 5, 30), at(2026, 11, 1, 6, 30)]),
        # Berlin: 02:30 does not exist on 2026-03-29 (runs at 03:00 CEST), and is doubled on 2026-10-25
        ("Europe/Berlin", "30 2 * * *", at(2026, 3, 28, 12), [at(2026, 3, 29, 1), at(2026, 3, 30, 0, 30)]),
        ("Europe/Berlin", "30 2 * * *", at(2026, 10, 24, 12), [at(2026, 10, 25, 0, 30), at(2026, 10, 26, 1, 30)]),
    ],
)
async def test_schedules_follow_daylight_saving_changes(
    h: Harness, zone: str, schedule: str, start: dt.datetime, expected: list[dt.datetime]
) -> None:
    h.advance_to(start)
    job = await h.create("dst", schedule=schedule, time_zone=zone)
    fired = []
    for _ in expected:
        assert job.schedule_time > h.clock.now()
        h.advance_to(job.schedule_time)
        assert await h.service.run_due() == 1
        fired.append(h.service.deliveries[-1].schedule_time)
        job = await h.client.get_job(name=job_name("dst"))
    assert fired == expected
    assert [d.headers["X-CloudScheduler-ScheduleTime"] for d in h.service.deliveries] == [
        when.strftime("%Y-%m-%dT%H:%M:%SZ") for when in expected
    ]


async def test_update_mask_star_and_nested_paths(h: Harness) -> None:
    await h.create("u", description="before", retry_config={"retry_count": 1, "max_doublings": 2})
    job = await h.client.update_job(
        job=scheduler_v1.Job(name=job_name("u"), retry_config={"retry_count": 3}),
        update_mask=field_mask_pb2.FieldMask(paths=["retry_config.retry_count"]),
    )
    assert (job.retry_config.retry_count, job.retry_config.max_doublings) == (3, 2)
    job = await h.client.update_job(
        job=scheduler_v1.Job(name=job_name("u"), schedule="0 0 * * *", http_target={"uri": "https://other/"}),
        update_mask=field_mask_pb2.FieldMask(paths=["*"]),
    )
    assert job.description == ""
    assert job.retry_config.retry_count == 0
    assert job.http_target.uri == "https://other/"


async def test_oauth_tokens_are_accepted_but_not_sent(h: Harness) -> None:
    await h.create(
        "oauth", http_target={"uri": "http://worker/status/200", "oauth_token": {"service_account_email": "a@b"}}
    )
    await h.client.run_job(name=job_name("oauth"))
    await h.service.run_due()
    ((_, _, headers, _),) = h.worker.calls
    assert "authorization" not in headers


async def test_pausing_drops_a_pending_retry(h: Harness) -> None:
    await h.create(
        "paused-retry",
        http_target={"uri": "http://worker/status/500"},
        retry_config={"retry_count": 5, "min_backoff_duration": dt.timedelta(seconds=10)},
    )
    h.advance_to(at(2026, 3, 1, 12, 5))
    await h.service.run_due()
    assert (await h.client.get_job(name=job_name("paused-retry"))).schedule_time == at(2026, 3, 1, 12, 5, 10)
    await h.client.pause_job(name=job_name("paused-retry"))
    h.advance_to(at(2026, 3, 1, 12, 7))
    assert await h.service.run_due() == 0
    resumed = await h.client.resume_job(name=job_name("paused-retry"))
    assert resumed.schedule_time == at(2026, 3, 1, 12, 10)
    assert len(h.service.deliveries) == 1
