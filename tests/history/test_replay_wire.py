"""`RoutePlan.from_wire`, the inverse of `build`: the request `.delay(**values)` sends gives `values` back.

Checked on both of its paths: the one-validation fast path and FastAPI's per-parameter parsing (which also names
the parameter at fault when the request does not fit).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

import pytest
from fastapi import APIRouter, Body, Cookie, Header, Query
from pydantic import BaseModel
from starlette.datastructures import Headers, QueryParams
from starlette.routing import Match

from fastapi_gcp_tasks.build._plan import RoutePlan
from fastapi_gcp_tasks.delayed_route import DelayedRouteBuilder
from fastapi_gcp_tasks.exception import MissingParamError, TaskArgumentError, WrongTypeError

QUEUE = "projects/p/locations/l/queues/q"


class Item(BaseModel):
    name: str
    tags: set[str] = set()
    at: dt.datetime | None = None


def route_of(endpoint: Any) -> Any:
    return endpoint.__fastapi_gcp_tasks_route__


def make_router() -> APIRouter:
    return APIRouter(route_class=DelayedRouteBuilder(queue_path=QUEUE, callback_base_url="http://w.test"))


router = make_router()


@router.post("/one/{shop}/{rest:path}")
async def one(
    shop: str,
    rest: str,
    item: Item,
    ids: Annotated[list[int], Query()] = [],  # noqa: B006 - FastAPI copies defaults
    lang: str = "en",
    x_tenant: Annotated[str | None, Header()] = None,
    session_hint: Annotated[str | None, Cookie()] = None,
) -> None:
    return None


@router.put("/two/{n}")
async def two(n: int, first: Annotated[Item, Body()], second: Annotated[int, Body()] = 3) -> None:
    return None


@router.get("/three")
async def three(limit: int = 10, flags: Annotated[list[str] | None, Query()] = None) -> None:
    return None


def roundtrip(endpoint: Any, values: dict[str, Any], *, fast: bool) -> dict[str, Any]:
    route = route_of(endpoint)
    plan: RoutePlan = route.task_plan
    parts = plan.build(values)
    split = urlsplit(parts.path_and_query)
    path = unquote(split.path)  # what a server puts in the scope (and a dead letter keeps)
    match, child = route.matches({"type": "http", "method": plan.method, "path": path, "root_path": ""})
    assert match is Match.FULL
    received: dict[str, Any] = {
        "path_params": child["path_params"],
        "query": QueryParams(split.query),
        "headers": Headers(headers={k.lower(): v for k, v in parts.headers.items()}),
        "body": parts.body,
    }
    if fast:
        assert plan._fast_from_wire(*received.values()) is not None, "the fast path did not take this request"
    else:
        plan._readers = None  # force FastAPI's per-parameter parsing
    try:
        return plan.from_wire(**received)
    finally:
        plan._analyse(route.dependant)


CASES = [
    (one, {"shop": "s", "rest": "a/b", "item": Item(name="x", tags={"b", "a"})}),
    (
        one,
        {
            "shop": "s p",
            "rest": "z",
            "item": Item(name="y", at=dt.datetime(2024, 1, 2, tzinfo=dt.UTC)),
            "ids": [3, 1],
            "lang": "fr",
            "x_tenant": "acme",
            "session_hint": "h 1",
        },
    ),
    (two, {"n": 4, "first": Item(name="q")}),
    (two, {"n": 4, "first": Item(name="q"), "second": 9}),
    (three, {}),
    (three, {"limit": 2, "flags": ["a", "b"]}),
]


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "fastapi"])
@pytest.mark.parametrize(("endpoint", "values"), CASES)
def test_from_wire_gives_back_what_delay_was_given(endpoint: Any, values: dict[str, Any], fast: bool) -> None:
    assert roundtrip(endpoint, values, fast=fast) == values


def wire(endpoint: Any, *, path: dict[str, Any], query: str = "", body: bytes | None = None) -> dict[str, Any]:
    plan: RoutePlan = route_of(endpoint).task_plan
    return plan.from_wire(path_params=path, query=QueryParams(query), headers=Headers(headers={}), body=body)


def test_a_value_that_does_not_fit_names_its_parameter() -> None:
    with pytest.raises(WrongTypeError) as raised:
        wire(two, path={"n": "x"}, body=b'{"first": {"name": "a"}}')
    assert raised.value.param == "n"
    with pytest.raises(WrongTypeError) as inside:
        wire(two, path={"n": "1"}, body=b'{"first": {"nom": "a"}}')
    assert inside.value.param == "first"
    assert "first.name" in str(inside.value)
    with pytest.raises(WrongTypeError) as query:
        wire(three, path={}, query="limit=many")
    assert query.value.param == "limit"


def test_a_missing_required_parameter_is_named() -> None:
    with pytest.raises(MissingParamError) as raised:
        wire(two, path={"n": "1"}, body=b'{"second": 1}')
    assert raised.value.param == "first"
    with pytest.raises(TaskArgumentError) as not_json:
        wire(two, path={"n": "1"}, body=b"{nope")
    assert not_json.value.param == "first"
