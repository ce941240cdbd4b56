"""What Cloud Scheduler refuses is refused where a job is declared, by the checks the emulator applies.

For every limit: the library refuses the value at declaration (`Schedules.add`, `.scheduler()`, or the
job's build for what depends on the arguments), naming the job and the option, and the emulator answers
INVALID_ARGUMENT to the same value; a value at the boundary is accepted by both. Then: a job is a pure
function of its declaration (hash seed, trace context), and job ids cannot collide between endpoints or
registries of one process.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from fastapi import APIRouter, Body, FastAPI, Query
from google.api_core import exceptions as core
from google.cloud import scheduler_v1
from google.protobuf import duration_pb2
from opentelemetry import baggage, context
from opentelemetry.sdk.trace import TracerProvider
from pydantic import BaseModel

from fastapi_gcp_tasks import ScheduledRouteBuilder, TaskArgumentError, TaskLimitError, location_path
from fastapi_gcp_tasks._limits import (
    MAX_HEADER_BYTES,
    MAX_URL_LENGTH,
    SCHEDULER_MAX_DESCRIPTION,
    SCHEDULER_MAX_DOUBLINGS_ACCEPTED,
    SCHEDULER_MAX_JOB_BYTES,
)
from fastapi_gcp_tasks.build import _job_checks
from fastapi_gcp_tasks.emulator import Emulator, ManualClock
from fastapi_gcp_tasks.schedules import Schedules

ROOT = Path(__file__).resolve().parents[2]
LOCATION = location_path(project="decl", location="europe-west1")
OTHER_LOCATION = location_path(project="decl", location="us-central1")
BASE = "http://worker.example"
_ids = itertools.count()


def fresh(prefix: str = "d") -> str:
    return f"{prefix}{next(_ids)}-"


@pytest.fixture(scope="module")
def client() -> Iterator[scheduler_v1.CloudSchedulerClient]:
    with Emulator(clock=ManualClock(dt.datetime(2026, 3, 1, tzinfo=dt.UTC))) as emu:
        yield emu.scheduler_client()


class Endpoints:
    """Scheduled endpoints: no argument, a query string, a JSON body."""

    def __init__(self) -> None:
        router = APIRouter(route_class=ScheduledRouteBuilder(location_path=LOCATION, callback_base_url=BASE))

        @router.get("/tick")
        def tick() -> None: ...

        @router.get("/query")
        def query(q: str) -> None: ...

        @router.post("/body")
        def body(data: str = Body()) -> None: ...

        self.tick, self.query, self.body = tick, query, body
        FastAPI().include_router(router)


@pytest.fixture
def endpoints() -> Endpoints:
    return Endpoints()


def emulator_refuses(client: scheduler_v1.CloudSchedulerClient, job: scheduler_v1.Job) -> str:
    with pytest.raises(core.InvalidArgument) as info:
        client.create_job(parent=LOCATION, job=job)
    assert info.value.grpc_status_code == grpc.StatusCode.INVALID_ARGUMENT
    return str(info.value.message)


def emulator_accepts(client: scheduler_v1.CloudSchedulerClient, job: scheduler_v1.Job) -> scheduler_v1.Job:
    created = client.create_job(parent=LOCATION, job=job)
    client.delete_job(name=created.name)
    return created


def plain_job(job_id: str, **fields: Any) -> scheduler_v1.Job:
    """A job as the library would write it for `tick`, with `fields` set as given."""
    job = scheduler_v1.Job(
        name=f"{LOCATION}/jobs/{job_id}",
        schedule="0 7 * * *",
        time_zone="UTC",
        http_target=scheduler_v1.HttpTarget(uri=f"{BASE}/tick", http_method=scheduler_v1.HttpMethod.GET),
    )
    for name, value in fields.items():
        setattr(job, name, value)
    return job


def retry(**fields: Any) -> scheduler_v1.RetryConfig:
    return scheduler_v1.RetryConfig(**fields)


def seconds(value: float) -> duration_pb2.Duration:
    result = duration_pb2.Duration()
    result.FromNanoseconds(round(value * 1e9))
    return result


# Each case: the option given to the declaration, the value Cloud Scheduler refuses, the boundary value both
# accept, the `param` of the library's error. The same values are set on a job sent straight to the emulator.
DECLARATION_LIMITS: list[tuple[str, str, Any, Any, str]] = [
    ("cron grammar", "schedule", "60 * * * *", "59 23 31 12 7", "schedule"),
    ("cron step", "schedule", "*/0 * * * *", "*/59 * * * *", "schedule"),
    ("time zone", "time_zone", "Mars/Olympus_Mons", "Pacific/Chatham", "time_zone"),
    ("retry_count above 5", "retry_config", retry(retry_count=6), retry(retry_count=5), "retry_config"),
    ("retry_count below 0", "retry_config", retry(retry_count=-1), retry(retry_count=0), "retry_config"),
    (
        "min_backoff above 1 h",
        "retry_config",
        retry(min_backoff_duration=seconds(3600.001), max_backoff_duration=seconds(3600)),
        retry(min_backoff_duration=seconds(3600), max_backoff_duration=seconds(3600)),
        "retry_config",
    ),
    (
        "max_backoff above 1 h",
        "retry_config",
        retry(max_backoff_duration=seconds(3601)),
        retry(max_backoff_duration=seconds(3600)),
        "retry_config",
    ),
    (
        "min_backoff above max_backoff",
        "retry_config",
        retry(min_backoff_duration=seconds(10.5), max_backoff_duration=seconds(10)),
        retry(min_backoff_duration=seconds(10), max_backoff_duration=seconds(10)),
        "retry_config",
    ),
    (
        "unset min_backoff (5 s) above max_backoff",
        "retry_config",
        retry(max_backoff_duration=seconds(4)),
        retry(max_backoff_duration=seconds(5)),
        "retry_config",
    ),
    (
        "negative backoff",
        "retry_config",
        retry(min_backoff_duration=seconds(-1), max_backoff_duration=seconds(0)),
        retry(min_backoff_duration=seconds(0), max_backoff_duration=seconds(0)),
        "retry_config",
    ),
    (
        "max_doublings above the bound",
        "retry_config",
        retry(max_doublings=SCHEDULER_MAX_DOUBLINGS_ACCEPTED + 1),
        retry(max_doublings=SCHEDULER_MAX_DOUBLINGS_ACCEPTED),
        "retry_config",
    ),
    ("max_doublings below 0", "retry_config", retry(max_doublings=-1), retry(max_doublings=1), "retry_config"),
    (
        "negative max_retry_duration",
        "retry_config",
        retry(max_retry_duration=seconds(-1)),
        retry(max_retry_duration=seconds(0)),
        "retry_config",
    ),
    ("attempt_deadline below 15 s", "attempt_deadline", 14.999, 15, "attempt_deadline"),
    ("attempt_deadline above 30 min", "attempt_deadline", 1800.001, 1800, "attempt_deadline"),
    (
        "description too long",
        "description",
        "d" * (SCHEDULER_MAX_DESCRIPTION + 1),
        "é" * SCHEDULER_MAX_DESCRIPTION,
        "description",
    ),
    ("header name", "headers", {"X Bad": "1"}, {"X-Good!#$%&'*+.^_`|~": "1"}, "headers"),
    ("header value", "headers", {"X-Value": "a\nb"}, {"X-Value": "a\tb"}, "headers"),
    (
        "headers of 80 KB",
        "headers",
        {"X-Big": "v" * (MAX_HEADER_BYTES - len("X-Big"))},
        {"X-Big": "v" * (MAX_HEADER_BYTES - len("X-Big") - 1)},
        "headers",
    ),
]


def _as_job_field(option: str, value: Any) -> dict[str, Any]:
    if option == "attempt_deadline":
        return {"attempt_deadline": dt.timedelta(seconds=value)}
    if option == "headers":
        return {}
    return {option: value}


def _job_with(job_id: str, option: str, value: Any) -> scheduler_v1.Job:
    job = plain_job(job_id, **_as_job_field(option, value))
    if option == "headers":
        job.http_target.headers = value
    return job


@pytest.mark.parametrize(
    ("option", "refused", "boundary", "param"),
    [case[1:] for case in DECLARATION_LIMITS],
    ids=[case[0] for case in DECLARATION_LIMITS],
)
def test_a_limit_is_refused_at_declaration_exactly_where_the_emulator_refuses_it(
    client: scheduler_v1.CloudSchedulerClient,
    endpoints: Endpoints,
    option: str,
    refused: Any,
    boundary: Any,
    param: str,
) -> None:
    schedule: dict[str, Any] = {"schedule": refused if option == "schedule" else "0 7 * * *"}
    options: dict[str, Any] = {} if option == "schedule" else {option: refused}
    registry = Schedules(prefix=fresh(), location_path=LOCATION)

    with pytest.raises(TaskLimitError) as by_registry:
        registry.add(endpoints.tick, name="job", **schedule, **options)
    assert by_registry.value.param == param
    assert f"job '{registry.prefix}job'" in str(by_registry.value), "the message names the job"
    assert len(registry) == 0

    with pytest.raises(TaskLimitError) as by_route:
        endpoints.tick.scheduler(name=f"route-{next(_ids)}", **schedule, **options)  # type: ignore[attr-defined]
    assert by_route.value.param == param

    message = emulator_refuses(client, _job_with(f"emu-{next(_ids)}", option, refused))
    assert message, "the emulator says why"

    # the boundary: accepted by the library, and what it builds is accepted by the emulator
    schedule = {"schedule": boundary if option == "schedule" else "0 7 * * *"}
    options = {} if option == "schedule" else {option: boundary}
    entry = registry.add(endpoints.tick, name="ok", **schedule, **options)
    created = emulator_accepts(client, entry.job)
    assert created.name == entry.job.name
    handle = endpoints.tick.scheduler(name=f"route-{next(_ids)}", **schedule, **options)  # type: ignore[attr-defined]
    emulator_accepts(client, handle.job())
    emulator_accepts(client, _job_with(f"emu-{next(_ids)}", option, boundary))


@pytest.mark.parametrize(
    ("base", "param"),
    [
        ("ftp://worker.example", "callback_base_url"),
        ("http://", "callback_base_url"),
        ("http://a b", "callback_base_url"),
    ],
)
def test_a_callback_url_the_service_refuses_is_refused_by_the_builder_and_scheduler(
    client: scheduler_v1.CloudSchedulerClient, endpoints: Endpoints, base: str, param: str
) -> None:
    with pytest.raises(TaskArgumentError) as info:
        endpoints.tick.scheduler(  # type: ignore[attr-defined]
            name=f"route-{next(_ids)}", schedule="0 7 * * *", callback_base_url=base
        )
    assert info.value.param == param
    with pytest.raises(TaskArgumentError):
        ScheduledRouteBuilder(location_path=LOCATION, callback_base_url=base)
    emulator_refuses(client, plain_job(f"emu-{next(_ids)}", http_target=scheduler_v1.HttpTarget(uri=base + "/tick")))


def test_a_location_the_service_refuses_is_refused(endpoints: Endpoints) -> None:
    with pytest.raises(TaskArgumentError) as info:
        endpoints.tick.scheduler(  # type: ignore[attr-defined]
            name="x", schedule="0 7 * * *", location_path="projects/has space/locations/l"
        )
    assert info.value.param == "location_path"
    with pytest.raises(TaskArgumentError):
        Schedules(prefix=fresh(), location_path="projects/p/locations/under_score")


def test_the_url_length_is_checked_when_the_job_is_built(
    client: scheduler_v1.CloudSchedulerClient, endpoints: Endpoints
) -> None:
    fixed = len(f"{BASE}/query?q=")
    registry = Schedules(prefix=fresh(), location_path=LOCATION)
    with pytest.raises(TaskLimitError) as info:
        registry.add(endpoints.query, name="long", schedule="0 7 * * *", args={"q": "x" * (MAX_URL_LENGTH - fixed + 1)})
    assert info.value.param == "http_target.uri"
    assert f"job '{registry.prefix}long'" in str(info.value)
    too_long = plain_job(f"emu-{next(_ids)}")
    too_long.http_target.uri = f"{BASE}/query?q=" + "x" * (MAX_URL_LENGTH - fixed + 1)
    emulator_refuses(client, too_long)

    entry = registry.add(endpoints.query, name="edge", schedule="0 7 * * *", args={"q": "x" * (MAX_URL_LENGTH - fixed)})
    assert len(entry.job.http_target.uri) == MAX_URL_LENGTH
    emulator_accepts(client, entry.job)

    handle = endpoints.query.scheduler(name=f"route-{next(_ids)}", schedule="0 7 * * *")  # type: ignore[attr-defined]
    with pytest.raises(TaskLimitError):
        handle.job(q="x" * (MAX_URL_LENGTH - fixed + 1))
    with pytest.raises(TaskLimitError):
        handle.schedule(q="x" * (MAX_URL_LENGTH - fixed + 1))  # refused before any RPC: no client is configured


def _normalised_size(job: scheduler_v1.Job) -> int:
    pb = scheduler_v1.Job.pb()()
    pb.CopyFrom(scheduler_v1.Job.pb(job))
    _job_checks.normalise_job(pb)
    return int(pb.ByteSize())


def test_the_job_size_is_checked_when_the_job_is_built(
    client: scheduler_v1.CloudSchedulerClient, endpoints: Endpoints
) -> None:
    handle = endpoints.body.scheduler(name=f"route-{next(_ids)}", schedule="0 7 * * *")  # type: ignore[attr-defined]
    length = SCHEDULER_MAX_JOB_BYTES - 200
    for _ in range(5):  # the size of the length prefixes moves with the length: converge on exactly 1 MB
        length += SCHEDULER_MAX_JOB_BYTES - _normalised_size(handle.job(data="x" * length))
    edge = handle.job(data="x" * length)
    assert _normalised_size(edge) == SCHEDULER_MAX_JOB_BYTES
    emulator_accepts(client, edge)

    with pytest.raises(TaskLimitError) as info:
        handle.job(data="x" * (length + 1))
    assert info.value.param == "job"
    over = scheduler_v1.Job(edge)
    over.http_target.body = edge.http_target.body + b" "
    emulator_refuses(client, over)

    registry = Schedules(prefix=fresh(), location_path=LOCATION)
    with pytest.raises(TaskLimitError) as info:
        registry.add(endpoints.body, name="big", schedule="0 7 * * *", args={"data": "x" * (length + 100)})
    assert info.value.param == "job"
    assert len(registry) == 0


def test_a_sync_never_starts_with_an_entry_that_cannot_be_applied(
    client: scheduler_v1.CloudSchedulerClient, endpoints: Endpoints
) -> None:
    """Every entry that got in is one the emulator accepts: the refused ones never entered the registry."""
    registry = Schedules(prefix=fresh(), location_path=LOCATION, client=client)
    registry.add(endpoints.tick, name="good", schedule="0 7 * * *")
    with pytest.raises(TaskLimitError):
        registry.add(endpoints.tick, name="bad", schedule="0 7 * * *", description="d" * 501)
    registry.add(endpoints.query, name="also-good", schedule="0 8 * * *", args={"q": "x"})
    assert [c.job_id for c in registry.sync().creates] == [f"{registry.prefix}also-good", f"{registry.prefix}good"]
    assert registry.plan().empty
    for job in client.list_jobs(parent=LOCATION):
        if job.name.rsplit("/", 1)[1].startswith(registry.prefix):
            client.delete_job(name=job.name)


# -- a job is a pure function of its declaration ----------------------------------------------------------------

_DECLARATIONS = textwrap.dedent(
    """
    import sys
    from fastapi import APIRouter, Body, FastAPI, Query
    from google.cloud import scheduler_v1
    from pydantic import BaseModel

    from fastapi_gcp_tasks import ScheduledRouteBuilder, location_path
    from fastapi_gcp_tasks.schedules import Schedules

    LOCATION = location_path(project="decl", location="europe-west1")
    router = APIRouter(route_class=ScheduledRouteBuilder(location_path=LOCATION, callback_base_url="http://w.example"))


    class Filter(BaseModel):
        tags: frozenset[str]
        nested: list[set[str]]


    @router.get("/sets")
    def by_query(regions: set[str] = Query(), codes: frozenset[str] = Query(default=frozenset())) -> None: ...


    @router.post("/body")
    def by_body(filter: Filter, names: set[str] = Body()) -> None: ...


    FastAPI().include_router(router)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]
    schedules = Schedules(prefix="h-", location_path=LOCATION)
    schedules.add(by_query, name="query", schedule="0 7 * * *", args={"regions": set(words), "codes": frozenset(words)},
                  headers={w: w for w in words}, description="sets")
    schedules.add(by_body, name="body", schedule="0 8 * * *",
                  args={"filter": Filter(tags=frozenset(words), nested=[set(words[:5]), set(words[5:])]),
                        "names": set(words)})
    route = by_query.scheduler(name="route", schedule="0 9 * * *").job(regions=set(words))
    for job in [entry.job for entry in schedules] + [route]:
        # deterministic=True: the order of a map (the headers) on the wire is protobuf's, not the library's
        sys.stdout.write(scheduler_v1.Job.pb(job).SerializeToString(deterministic=True).hex() + "\\n")
    """
)


def test_the_same_declarations_give_byte_identical_jobs_under_any_hash_seed() -> None:
    outputs = []
    for seed in ("0", "1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        env.pop("FASTAPI_GCP_TASKS_EMULATOR_HOST", None)
        result = subprocess.run(
            [sys.executable, "-c", _DECLARATIONS], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120
        )
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert outputs[0].count("\n") == 3
    assert outputs[0] == outputs[1] == outputs[2]
    query = scheduler_v1.Job.deserialize(bytes.fromhex(outputs[0].splitlines()[0]))
    assert query.http_target.uri.endswith(
        "/sets?regions=alpha&regions=bravo&regions=charlie&regions=delta"
        "&regions=echo&regions=foxtrot&regions=golf&regions=hotel&regions=india"
        "&regions=juliet&codes=alpha&codes=bravo&codes=charlie&codes=delta"
        "&codes=echo&codes=foxtrot&codes=golf&codes=hotel&codes=india&codes=juliet"
    )


class Tags(BaseModel):
    tags: frozenset[str]


def test_sets_arrive_equal_to_what_was_given() -> None:
    """The canonical order changes the bytes, not the values: the endpoint receives equal sets."""
    received: list[Any] = []
    router = APIRouter(route_class=ScheduledRouteBuilder(location_path=LOCATION, callback_base_url="http://testserver"))

    @router.post("/equal")
    def equal(model: Tags, names: set[str] = Body(), regions: set[str] = Query()) -> None:
        received.append((model.tags, names, regions))

    app = FastAPI()
    app.include_router(router)
    given = ({"b", "a", "c"}, {"é", "z", "y"}, {"9", "10", "1"})
    job = equal.scheduler(name=f"eq-{next(_ids)}", schedule="0 7 * * *").job(  # type: ignore[attr-defined]
        model=Tags(tags=frozenset(given[0])), names=given[1], regions=given[2]
    )
    assert job.http_target.uri.endswith("?regions=1&regions=10&regions=9")
    assert job.http_target.body == '{"model":{"tags":["a","b","c"]},"names":["y","z","é"]}'.encode()

    async def deliver() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            return await http.post(job.http_target.uri, content=job.http_target.body, headers=job.http_target.headers)

    response = asyncio.run(deliver())
    assert response.status_code == 200, response.text
    assert received == [(frozenset(given[0]), given[1], given[2])]


def test_a_job_declared_inside_a_span_carries_no_trace_context(endpoints: Endpoints) -> None:
    provider = TracerProvider()
    try:
        with provider.get_tracer("test").start_as_current_span("deploy"):
            token = context.attach(baggage.set_baggage("tenant", "acme"))
            try:
                registry = Schedules(prefix=fresh(), location_path=LOCATION)
                entry = registry.add(endpoints.tick, name="traced", schedule="0 7 * * *")
                handle = endpoints.tick.scheduler(name=f"route-{next(_ids)}", schedule="0 7 * * *")  # type: ignore[attr-defined]
                built = handle.job()
            finally:
                context.detach(token)
        outside = endpoints.tick.scheduler(name=handle.job_sync.config.name, schedule="0 7 * * *").job()  # type: ignore[attr-defined]
    finally:
        provider.shutdown()
    for job in (entry.job, built):
        lowered = {name.lower() for name in job.http_target.headers}
        assert not lowered & {"traceparent", "tracestate", "baggage"}, job.http_target.headers
    assert built == outside


# -- ownership --------------------------------------------------------------------------------------------------


def test_two_endpoints_cannot_declare_one_job_id_in_one_location(endpoints: Endpoints) -> None:
    name = f"shared-{next(_ids)}"
    endpoints.tick.scheduler(name=name, schedule="0 7 * * *")  # type: ignore[attr-defined]
    endpoints.tick.scheduler(name=name, schedule="0 8 * * *")  # type: ignore[attr-defined]  # may re-declare
    with pytest.raises(TaskArgumentError) as info:
        endpoints.query.scheduler(name=name, schedule="0 7 * * *")  # type: ignore[attr-defined]
    assert info.value.param == "name"
    assert name in str(info.value)
    assert "tick" in str(info.value)
    endpoints.query.scheduler(name=name, schedule="0 7 * * *", location_path=OTHER_LOCATION)  # type: ignore[attr-defined]


def test_without_a_name_the_job_id_is_the_route_unique_id_and_still_cannot_collide(endpoints: Endpoints) -> None:
    handle = endpoints.tick.scheduler(schedule="0 7 * * *")  # type: ignore[attr-defined]
    assert handle.job_name == f"{LOCATION}/jobs/tick_tick_get"
    with pytest.raises(TaskArgumentError) as info:
        endpoints.query.scheduler(name="tick_tick_get", schedule="0 7 * * *")  # type: ignore[attr-defined]
    assert info.value.param == "name"


def test_an_app_built_again_takes_over_its_own_job_ids() -> None:
    """An app factory called twice (tests, reloads) re-creates the same endpoints: not a collision."""
    first, second = Endpoints(), Endpoints()
    name = f"factory-{next(_ids)}"
    first.tick.scheduler(name=name, schedule="0 7 * * *")  # type: ignore[attr-defined]
    second.tick.scheduler(name=name, schedule="0 7 * * *")  # type: ignore[attr-defined]
    with pytest.raises(TaskArgumentError):
        second.query.scheduler(name=name, schedule="0 7 * * *")  # type: ignore[attr-defined]


def test_a_registry_job_id_cannot_be_taken_by_another_endpoint(endpoints: Endpoints) -> None:
    registry = Schedules(prefix=fresh(), location_path=LOCATION)
    registry.add(endpoints.tick, name="mine", schedule="0 7 * * *")
    with pytest.raises(TaskArgumentError) as info:
        endpoints.query.scheduler(name=f"{registry.prefix}mine", schedule="0 7 * * *")  # type: ignore[attr-defined]
    assert info.value.param == "name"
    with pytest.raises(TaskArgumentError) as info:
        registry.add(endpoints.tick, name="mine", schedule="0 8 * * *")
    assert info.value.param == "name"


def test_a_refused_declaration_leaves_its_job_id_free(endpoints: Endpoints) -> None:
    registry = Schedules(prefix=fresh(), location_path=LOCATION)
    with pytest.raises(TaskArgumentError):
        registry.add(endpoints.query, name="job", schedule="0 7 * * *")  # `q` is missing
    registry.add(endpoints.tick, name="job", schedule="0 7 * * *")


@pytest.mark.parametrize("name", ["", None])
def test_add_requires_a_name(endpoints: Endpoints, name: Any) -> None:
    registry = Schedules(prefix=fresh(), location_path=LOCATION)
    with pytest.raises(TaskArgumentError) as info:
        registry.add(endpoints.tick, name=name, schedule="0 7 * * *")
    assert info.value.param == "name"


def test_registries_of_one_location_cannot_have_overlapping_prefixes() -> None:
    prefix = fresh("own")
    first = Schedules(prefix=prefix, location_path=LOCATION)
    for clash in (prefix, prefix + "eu-", prefix[:-1]):
        with pytest.raises(TaskArgumentError) as info:
            Schedules(prefix=clash, location_path=LOCATION)
        assert info.value.param == "prefix"
        assert first.prefix in str(info.value)
    Schedules(prefix=prefix + "x", location_path=OTHER_LOCATION)  # another location: no overlap
    disjoint = Schedules(prefix=fresh("other"), location_path=LOCATION)
    assert disjoint.prefix != first.prefix

    del first, info  # a registry that is gone owns nothing
    Schedules(prefix=prefix, location_path=LOCATION)
