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


def test_task_over_one_megabyte() -> None:
    with pytest.raises(TaskLimitError, match="1 MB"):
        big.delay(blob="x" * MAX_TASK_BYTES)  # type: ignore[attr-defined]


def test_url_over_2083_characters() -> None:
    with pytest.raises(TaskLimitError, match="2083"):
        query.delay(raw="x" * 2100)  # type: ignore[attr-defined]


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
    router2 = APIRouter(
        route_class=ScheduledRouteBuilder(
            location_path=location_path(project="p", location="l"),
            callback_base_url="http://w",
            client=ExplodingClient(),  # type: ignore[arg-type]
        )
    )

    @router2.post("/job")
    def job() -> None: ...

    with pytest.raises(TaskArgumentError) as info:
        job.scheduler(**kwargs)  # type: ignore[attr-defined]
    assert info.value.param == param
