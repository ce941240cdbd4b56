"""Bad input fails at the call site, before any network call, with an error naming the parameter."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Body, Cookie, FastAPI, File, Form, Header, Query, UploadFile
from pydantic import BaseModel, Field

from fastapi_gcp_tasks import (
    DelayedRouteBuilder,
    MissingParamError,
    RouteDefinitionError,
    ScheduledRouteBuilder,
    TaskArgumentError,
    TaskLimitError,
    UnknownParamError,
    UnrepresentableValueError,
    WrongTypeError,
    location_path,
    queue_path,
)
from fastapi_gcp_tasks._limits import MAX_TASK_BYTES
from fastapi_gcp_tasks.exception import BadMethodError

QUEUE = queue_path(project="p", location="l", queue="q")


class ExplodingClient:
    """A client that fails the test if anything reaches the network."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"network call {name} made for an invalid task")


def scheduled_router() -> APIRouter:
    """A router of scheduled routes whose client fails the test if anything reaches the network."""
    return APIRouter(
        route_class=ScheduledRouteBuilder(
            location_path=location_path(project="p", location="l"),
            callback_base_url="http://w",
            client=ExplodingClient(),  # type: ignore[arg-type]
        )
    )


def route_class(**kwargs: Any) -> Any:
    options: dict[str, Any] = {"queue_path": QUEUE, "callback_base_url": "http://w", "client": ExplodingClient()}
    options.update(kwargs)
    return DelayedRouteBuilder(**options)


class Payload(BaseModel):
    n: int = Field(ge=0)


router = APIRouter(route_class=route_class())


@router.post("/t/{item_id}")
def task(item_id: int, payload: Payload, limit: Annotated[int, Query(le=10)] = 5) -> None: ...


@router.get("/h")
def headers(x_list: Annotated[list[str] | None, Header()] = None, x_value: Annotated[str, Header()] = "d") -> None: ...


@router.get("/q")
def query(
    tag: str | None = "x",
    items: Annotated[list[int], Query()] = [1],  # noqa: B006
    raw: str = "ok",
) -> None: ...


@router.get("/f/{rest:path}")
def files(rest: str) -> None: ...


@router.get("/c")
def cookies(session: Annotated[str, Cookie()] = "") -> None: ...


@router.post("/big")
def big(blob: Annotated[str, Body(embed=True)]) -> None: ...


@router.get("/aliased")
def aliased(value: Annotated[str, Query(alias="the-key")] = "") -> None: ...


@router.post("/binary")
def binary(data: Annotated[bytes, Body(embed=True)], count: Annotated[int, Body()] = 0) -> None: ...


FastAPI().include_router(router)


def test_missing_argument_names_it() -> None:
    with pytest.raises(MissingParamError, match="'payload'") as info:
        task.delay(item_id=1)  # type: ignore[attr-defined]
    assert info.value.param == "payload"


def test_unknown_keyword_names_it_and_is_a_type_error() -> None:
    with pytest.raises(UnknownParamError, match="'nope'") as info:
        task.delay(item_id=1, payload=Payload(n=1), nope=2)  # type: ignore[attr-defined]
    assert isinstance(info.value, TypeError)
    assert info.value.param == "nope"


def test_positional_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match="keyword arguments only"):
        task.delay(1, Payload(n=1))  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("values", "param"),
    [
        ({"item_id": "abc", "payload": Payload(n=1)}, "item_id"),
        ({"item_id": 1, "payload": {"n": -1}}, "payload"),
        ({"item_id": 1, "payload": Payload(n=1), "limit": 11}, "limit"),
        ({"item_id": 1, "payload": "not a payload"}, "payload"),
    ],
)
def test_values_the_endpoint_would_reject(values: dict[str, Any], param: str) -> None:
    with pytest.raises(WrongTypeError, match=repr(param)) as info:
        task.delay(**values)  # type: ignore[attr-defined]
    assert info.value.param == param
    assert isinstance(info.value, ValueError)


def test_header_list_of_several_values_is_unrepresentable() -> None:
    with pytest.raises(UnrepresentableValueError, match="'x_list'"):
        headers.options().request(x_list=["a", "b"])  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", [" padded", "tab\t", "new\nline", "é"])
def test_header_values_that_cannot_travel(value: str) -> None:
    with pytest.raises(UnrepresentableValueError, match="'x_value'"):
        headers.options().request(x_value=value)  # type: ignore[attr-defined]


def test_none_is_refused_when_omission_gives_another_default() -> None:
    with pytest.raises(UnrepresentableValueError, match="default 'x'"):
        query.options().request(tag=None)  # type: ignore[attr-defined]
    with pytest.raises(UnrepresentableValueError, match="'items'"):
        query.options().request(items=[])  # type: ignore[attr-defined]


@pytest.mark.parametrize("rest", ["a/../b", "./x", "line\nbreak"])
def test_path_values_that_cannot_reach_the_route(rest: str) -> None:
    with pytest.raises(UnrepresentableValueError, match="'rest'"):
        files.options().request(rest=rest)  # type: ignore[attr-defined]


def test_slash_in_a_plain_path_parameter_suggests_the_path_convertor() -> None:
    router2 = APIRouter(route_class=route_class())

    @router2.get("/s/{name}")
    def by_name(name: str) -> None: ...

    with pytest.raises(UnrepresentableValueError, match=r"\{name:path\}"):
        by_name.options().request(name="a/b")  # type: ignore[attr-defined]


def test_cookie_outside_latin1() -> None:
    with pytest.raises(UnrepresentableValueError, match="Latin-1"):
        cookies.options().request(session="☃")  # type: ignore[attr-defined]


def test_task_over_one_megabyte_names_the_largest_parameter() -> None:
    with pytest.raises(TaskLimitError, match="1 MB") as info:
        big.delay(blob="x" * MAX_TASK_BYTES)  # type: ignore[attr-defined]
    assert info.value.param == "blob"
    assert f"blob: {MAX_TASK_BYTES + 2:,} bytes" in str(info.value)


def test_url_over_2083_characters_names_the_largest_parameters() -> None:
    with pytest.raises(TaskLimitError, match="2083") as info:
        query.delay(raw="x" * 2100, tag="é" * 10)  # type: ignore[attr-defined]
    assert info.value.param == "raw"
    assert "raw: 2,100 bytes, tag: 60 bytes" in str(info.value)


def test_an_alias_passed_as_keyword_says_to_use_the_python_name() -> None:
    with pytest.raises(UnknownParamError) as info:
        aliased.delay(**{"the-key": "v"})  # type: ignore[attr-defined]
    assert "'the-key' is how parameter 'value' travels" in str(info.value)
    assert "pass it by its Python name" in str(info.value)


@pytest.mark.parametrize(
    ("endpoint_name", "values", "param", "fragment"),
    [
        ("binary", {"data": b"\xff\xfe"}, "data", "not UTF-8"),
        ("binary", {"data": b"ok", "count": 10**5000}, "count", "4300 digits"),
        ("query", {"raw": "\ud800"}, None, "lone surrogate"),
        ("query", {"tag": "a\udc80"}, None, "lone surrogate"),
    ],
)
def test_values_without_a_wire_form_are_library_errors(
    endpoint_name: str, values: dict[str, Any], param: str | None, fragment: str
) -> None:
    endpoint = {"binary": binary, "query": query}[endpoint_name]
    with pytest.raises(UnrepresentableValueError, match=fragment) as info:
        endpoint.delay(**values)  # type: ignore[attr-defined]
    if param is not None:
        assert info.value.param == param


def test_schedule_errors_speak_of_schedule() -> None:
    jobs = scheduled_router()

    @jobs.post("/report")
    def report(region: Annotated[str, Query(max_length=2)] = "eu") -> None: ...

    handle = report.scheduler(name="r", schedule="0 * * * *")  # type: ignore[attr-defined]
    with pytest.raises(WrongTypeError) as info:
        handle.job(region="too long")
    assert "report.scheduler().schedule()" in str(info.value)
    assert ".delay()" not in str(info.value)


def test_builders_refuse_a_base_url_with_a_query_string_or_fragment() -> None:
    with pytest.raises(TaskArgumentError) as delayed:
        DelayedRouteBuilder(queue_path=QUEUE, callback_base_url="https://w.example/?token=x")
    assert delayed.value.param == "callback_base_url"
    with pytest.raises(TaskArgumentError) as scheduled:
        ScheduledRouteBuilder(location_path=location_path(project="p", location="l"), callback_base_url="https://w/#x")
    assert scheduled.value.param == "callback_base_url"


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"countdown": 31 * 86400}, "countdown"),
        ({"countdown": -1}, "countdown"),
        ({"eta": dt.datetime.now(dt.UTC) + dt.timedelta(days=31)}, "eta"),
        ({"eta": dt.datetime(2030, 1, 1)}, "eta"),
        ({"task_id": "has space"}, "task_id"),
        ({"task_id": ""}, "task_id"),
        ({"task_id": "x" * 501}, "task_id"),
        ({"dispatch_deadline": 10}, "dispatch_deadline"),
        ({"dispatch_deadline": dt.timedelta(minutes=31)}, "dispatch_deadline"),
        ({"countdown": 5, "eta": dt.datetime.now(dt.UTC)}, "eta"),
        ({"queue_path": "queues/q"}, "queue_path"),
        ({"callback_base_url": "ftp://x"}, "callback_base_url"),
        ({"callback_base_url": "https://w.example/api?key=1"}, "callback_base_url"),
        ({"callback_base_url": "https://w.example/api#top"}, "callback_base_url"),
        ({"callback_base_url": "https:///no-host"}, "callback_base_url"),
        ({"callback_base_url": "https://w.example/caf\u00e9"}, "callback_base_url"),
        ({"headers": {"X-Name": "J\u00fcrgen"}}, "headers"),
        ({"headers": {"X-Name": " padded"}}, "headers"),
        ({"headers": {"Bad Name": "v"}}, "headers"),
        ({"unheard_of": 1}, "unheard_of"),
    ],
)
def test_options_cloud_tasks_would_refuse(options: dict[str, Any], param: str) -> None:
    with pytest.raises(TaskArgumentError) as info:
        task.options(**options).delay(item_id=1, payload=Payload(n=1))  # type: ignore[attr-defined]
    assert info.value.param == param
    assert param in str(info.value)


def test_hashed_task_id_accepts_any_key() -> None:
    request = task.options(task_id="order 42 / ünïcode", hash_task_id=True).request(  # type: ignore[attr-defined]
        item_id=1, payload=Payload(n=1)
    )
    task_id = request.task.name.rsplit("/", 1)[1]
    assert len(task_id) == 64
    again = task.options(task_id="order 42 / ünïcode", hash_task_id=True).request(  # type: ignore[attr-defined]
        item_id=1, payload=Payload(n=1)
    )
    assert again.task.name == request.task.name


@pytest.mark.parametrize("method", ["GET", "DELETE", "HEAD"])
def test_body_on_a_method_without_body_is_refused_at_registration(method: str) -> None:
    router2 = APIRouter(route_class=route_class())
    with pytest.raises(RouteDefinitionError, match="cannot carry a body"):
        router2.add_api_route("/b", _with_body, methods=[method])


def _with_body(payload: Payload) -> None: ...


def test_forms_and_files_are_refused_at_registration() -> None:
    router2 = APIRouter(route_class=route_class())
    with pytest.raises(RouteDefinitionError, match="form and file"):

        @router2.post("/form")
        def form(name: Annotated[str, Form()]) -> None: ...

    with pytest.raises(RouteDefinitionError, match="form and file"):

        @router2.post("/file")
        def upload(data: Annotated[UploadFile, File()]) -> None: ...


def test_several_methods_are_refused() -> None:
    router2 = APIRouter(route_class=route_class())
    with pytest.raises(BadMethodError, match="exactly one HTTP method"):
        router2.add_api_route("/m", lambda: None, methods=["GET", "POST"])


def test_reserved_headers_are_refused_at_registration() -> None:
    router2 = APIRouter(route_class=route_class())
    with pytest.raises(RouteDefinitionError, match="overwritten by Cloud Tasks"):

        @router2.get("/ua")
        def agent(user_agent: Annotated[str, Header()]) -> None: ...


def test_cloud_tasks_headers_are_not_arguments() -> None:
    router2 = APIRouter(route_class=route_class())

    @router2.get("/meta")
    def meta(x_cloudtasks_taskname: Annotated[str, Header()] = "") -> None: ...

    with pytest.raises(UnknownParamError):
        meta.delay(x_cloudtasks_taskname="x")  # type: ignore[attr-defined]


def test_builder_arguments_are_checked_when_the_builder_is_called() -> None:
    with pytest.raises(TaskArgumentError, match="queue_path"):
        DelayedRouteBuilder(queue_path="nope", callback_base_url="http://w")
    with pytest.raises(TaskArgumentError, match="callback_base_url"):
        DelayedRouteBuilder(queue_path=QUEUE)
    with pytest.raises(TaskArgumentError, match="location_path"):
        ScheduledRouteBuilder(location_path="nope", callback_base_url="http://w")


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"name": "bad name", "schedule": "* * * * *"}, "name"),
        ({"name": "ok", "schedule": "61 * * * *"}, "schedule"),
        ({"name": "ok", "schedule": "* * * *"}, "schedule"),
        ({"name": "ok", "schedule": "* * * * *", "time_zone": "Mars/Olympus"}, "time_zone"),
        ({"name": "ok", "schedule": "* * * * *", "attempt_deadline": 5}, "attempt_deadline"),
    ],
)
def test_scheduler_refusals(kwargs: dict[str, Any], param: str) -> None:
    router2 = scheduled_router()

    @router2.post("/job")
    def job() -> None: ...

    with pytest.raises(TaskArgumentError) as info:
        job.scheduler(**kwargs)  # type: ignore[attr-defined]
    assert info.value.param == param
