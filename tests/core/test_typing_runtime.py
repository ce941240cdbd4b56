"""`as_*_task(args=...)` at runtime: the statically checked calls are the ones the route accepts.

`tests/typing_checks/typed_app.py` declares the task arguments of endpoints that take `Request`,
`BackgroundTasks` and `Depends(...)` parameters, and mypy checks calls against those declarations. Here the
same endpoints are registered on a real app and the same calls are built (`.options().request()`,
`.scheduler().job()`: nothing is sent), delivered into the app, and every way a declaration can disagree
with its route is refused when the decorator runs, naming the parameter.
"""

from __future__ import annotations

from typing import Annotated, Any, List, NotRequired, Optional, Required, TypedDict  # noqa: UP035 - spellings

import pytest
from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, Query, Request
from google.cloud import tasks_v2
from pydantic import Field

from fastapi_gcp_tasks import (
    AsyncScheduledRouteBuilder,
    DelayedRouteBuilder,
    RouteDefinitionError,
    ScheduledRouteBuilder,
    UnknownParamError,
    as_async_scheduled_task,
    as_delayed_task,
    as_scheduled_task,
    location_path,
    queue_path,
)
from tests.core._replay import Recorder, replay
from tests.typing_checks import typed_app
from tests.typing_checks.typed_app import Payload, Settings, cleanup, notify, report, rollup

QUEUE = queue_path(project="p", location="l", queue="q")
LOCATION = location_path(project="p", location="l")


def _request(endpoint: object, **values: Any) -> tasks_v2.CreateTaskRequest:
    """The CreateTaskRequest `endpoint.delay(**values)` would send (the protocols do not show `.request`)."""
    built: tasks_v2.CreateTaskRequest = endpoint.options().request(**values)  # type: ignore[attr-defined]
    return built


def _app() -> FastAPI:
    app = FastAPI()
    for router in (typed_app.router, typed_app.async_router, typed_app.cron, typed_app.async_cron):
        app.include_router(router)
    return app


# --- the calls of typed_app.py, at runtime ---------------------------------------------------------------------


def test_the_checked_delayed_calls_are_accepted_and_delivered() -> None:
    app = _app()
    calls: list[tuple[object, dict[str, Any], str, bytes]] = [
        (report, {"key": "k", "payload": Payload(n=1)}, "http://w/r/k", b'{"n":1}'),
        (report, {"key": "k", "payload": Payload(n=1), "retries": 2}, "http://w/r/k?retries=2", b'{"n":1}'),
        (notify, {"payload": Payload(n=1)}, "http://w/n", b'{"n":1}'),
        (notify, {"payload": Payload(n=1), "urgent": True}, "http://w/n?urgent=true", b'{"n":1}'),
    ]
    for endpoint, values, url, body in calls:
        built = _request(endpoint, **values)
        assert built.task.http_request.url == url
        assert built.task.http_request.body == body
        response = replay(app, built)
        assert response.status_code == 200, response.text


def test_the_checked_scheduled_calls_are_accepted() -> None:
    handle = cleanup.scheduler(name="typing-runtime-cleanup", schedule="0 3 * * *", time_zone="Europe/Paris")
    assert handle.job(region="us").http_target.uri == "http://w/cleanup?region=us"  # type: ignore[attr-defined]
    assert handle.job().http_target.uri == "http://w/cleanup"  # type: ignore[attr-defined]
    async_handle = rollup.scheduler(name="typing-runtime-rollup", schedule="0 1 * * *")
    job = async_handle.job(day="2026-01-01")  # type: ignore[attr-defined]
    assert job.http_target.uri == "http://w/rollup/2026-01-01"


@pytest.mark.parametrize("injected", ["request", "background", "settings"])
def test_the_parameters_left_out_of_the_declaration_are_refused_at_runtime(injected: str) -> None:
    with pytest.raises(UnknownParamError) as caught:
        _request(report, key="k", payload=Payload(n=1), **{injected: None})
    assert caught.value.param == injected


def test_the_endpoint_receives_the_arguments_and_fastapi_fills_the_rest() -> None:
    record = Recorder()
    router = APIRouter(route_class=DelayedRouteBuilder(queue_path=QUEUE, callback_base_url="http://testserver"))

    class StoreArgs(TypedDict):
        key: str
        payload: Payload
        retries: NotRequired[int]

    def later() -> None:
        record(background_task_ran=True)

    @as_delayed_task(args=StoreArgs)
    @router.post("/store/{key}")
    def store(
        key: str,
        payload: Payload,
        request: Request,
        background: BackgroundTasks,
        settings: Annotated[Settings, Depends(typed_app.get_settings)],
        retries: int = 0,
    ) -> None:
        background.add_task(later)
        record(key=key, payload=payload, path=request.url.path, region=settings.region, retries=retries)

    app = FastAPI()
    app.include_router(router)
    response = replay(app, _request(store, key="a b", payload=Payload(n=3), retries=1))
    assert response.status_code == 200, response.text
    assert record.calls == [
        {"key": "a b", "payload": Payload(n=3), "path": "/store/a b", "region": "eu", "retries": 1},
        {"background_task_ran": True},
    ]


# --- declarations that disagree with the route are refused where the decorator runs ---------------------------


def _register(declaration: Any) -> None:
    router = APIRouter(route_class=DelayedRouteBuilder(queue_path=QUEUE, callback_base_url="http://w"))

    @as_delayed_task(args=declaration)
    @router.post("/orders/{order_id}")
    def ship(
        order_id: int,
        payload: Payload,
        request: Request,
        settings: Settings = Depends(typed_app.get_settings),
        express: bool = False,
    ) -> None: ...


class ShipArgs(TypedDict):
    order_id: int
    payload: Payload
    express: NotRequired[bool]


class MissingRequired(TypedDict):
    order_id: int
    express: NotRequired[bool]


class MissingOptional(TypedDict):
    order_id: int
    payload: Payload


class DeclaresRequest(ShipArgs):
    request: NotRequired[Request]


class DeclaresDependency(ShipArgs):
    settings: NotRequired[Settings]


class DeclaresUnknown(ShipArgs):
    priority: NotRequired[int]


class OptionalButRequired(TypedDict):
    order_id: NotRequired[int]
    payload: Payload
    express: NotRequired[bool]


class RequiredButOptional(TypedDict):
    order_id: int
    payload: Payload
    express: bool


class WrongType(TypedDict):
    order_id: str
    payload: Payload
    express: NotRequired[bool]


def test_a_matching_declaration_is_accepted() -> None:
    _register(ShipArgs)


@pytest.mark.parametrize(
    ("declaration", "message"),
    [
        (MissingRequired, "'payload' is missing (required in .delay())"),
        (MissingOptional, "'express' is missing (optional in .delay())"),
        (DeclaresRequest, "'request' is not a task argument (FastAPI fills it on the worker)"),
        (DeclaresDependency, "'settings' is not a task argument (FastAPI fills it on the worker)"),
        (DeclaresUnknown, "'priority' is not a task argument (the endpoint has no such parameter)"),
        (OptionalButRequired, "'order_id' is declared optional, but the endpoint requires it"),
        (RequiredButOptional, "'express' is declared required, but it has a default on the endpoint"),
        (WrongType, "'order_id' is declared as str, but the endpoint takes int"),
    ],
)
def test_a_declaration_that_disagrees_with_the_route_is_refused(declaration: object, message: str) -> None:
    with pytest.raises(RouteDefinitionError) as caught:
        _register(declaration)
    text = str(caught.value)
    assert "ship: as_delayed_task(args=" in text
    assert "does not match what .delay() accepts on '/orders/{order_id}'" in text
    assert message in text


def test_a_scheduled_declaration_is_checked_the_same_way() -> None:
    cron = APIRouter(route_class=AsyncScheduledRouteBuilder(location_path=LOCATION, callback_base_url="http://w"))

    class ReportArgs(TypedDict):
        day: str

    with pytest.raises(RouteDefinitionError, match=r"does not match what \.schedule\(\) accepts.*'region' is missing"):

        @as_async_scheduled_task(args=ReportArgs)
        @cron.post("/report/{day}")
        async def daily(day: str, request: Request, region: str = "eu") -> None: ...


def test_equivalent_spellings_of_a_type_match() -> None:
    router = APIRouter(route_class=DelayedRouteBuilder(queue_path=QUEUE, callback_base_url="http://w"))

    class Spelled(TypedDict, total=False):
        ids: Required[List[int]]  # noqa: UP006
        limit: Optional[int]  # noqa: UP045
        tag: str | None

    @as_delayed_task(args=Spelled)
    @router.get("/search")
    def search(
        ids: Annotated[list[Annotated[int, Field(ge=1)]], Query()],
        request: Request,
        limit: int | None = None,
        tag: Annotated[Optional[str], Query(max_length=5)] = None,  # noqa: UP045
    ) -> None: ...

    assert _request(search, ids=[1, 2], tag="x").task.http_request.url == "http://w/search?ids=1&ids=2&tag=x"


def test_a_function_with_keyword_only_parameters_declares_the_arguments() -> None:
    cron = APIRouter(route_class=ScheduledRouteBuilder(location_path=LOCATION, callback_base_url="http://w"))

    def purge_args(*, days: int, dry_run: bool = False) -> None: ...

    @as_scheduled_task(args=purge_args)
    @cron.post("/purge")
    def purge(days: int, request: Request, dry_run: bool = False) -> None: ...

    handle = purge.scheduler(name="typing-runtime-purge", schedule="0 4 * * *")
    assert handle.job(days=30).http_target.uri == "http://w/purge?days=30"  # type: ignore[attr-defined]


def test_a_function_declaration_must_be_keyword_only() -> None:
    def positional(days: int) -> None: ...

    with pytest.raises(RouteDefinitionError, match=r"parameter 'days' must be keyword-only"):
        as_scheduled_task(args=positional)


def test_args_takes_a_typeddict_or_a_function() -> None:
    with pytest.raises(RouteDefinitionError, match="takes a TypedDict class or a function"):
        as_delayed_task(args=Payload)


def test_args_below_the_route_decorator_is_checked_when_the_route_registers() -> None:
    router = APIRouter(route_class=DelayedRouteBuilder(queue_path=QUEUE, callback_base_url="http://w"))

    @router.post("/orders/{order_id}")
    @as_delayed_task(args=ShipArgs)
    def ship(order_id: int, payload: Payload, request: Request, express: bool = False) -> None: ...

    request = ship.options().request(order_id=1, payload=Payload(n=1))  # type: ignore[attr-defined]
    assert request.task.http_request.url == "http://w/orders/1"

    with pytest.raises(RouteDefinitionError, match="'payload' is missing"):

        @router.post("/other/{order_id}")
        @as_delayed_task(args=MissingRequired)
        def other(order_id: int, payload: Payload, express: bool = False) -> None: ...


def test_args_on_a_route_of_the_other_kind_is_refused() -> None:
    router = APIRouter(route_class=DelayedRouteBuilder(queue_path=QUEUE, callback_base_url="http://w"))
    with pytest.raises(RouteDefinitionError, match="types the route of a ScheduledRouteBuilder"):

        @as_scheduled_task(args=MissingOptional)
        @router.post("/orders/{order_id}")
        def ship(order_id: int, payload: Payload) -> None: ...


def test_the_plain_form_is_still_the_identity() -> None:
    def endpoint(request: Request, n: int) -> None: ...

    assert as_delayed_task(endpoint) is endpoint  # no route needed, nothing checked
    with pytest.raises(TypeError, match="either the endpoint or args"):
        as_delayed_task()  # type: ignore[call-overload]
