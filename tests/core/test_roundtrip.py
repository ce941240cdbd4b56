"""Property: `.delay(**values)` builds the request under which FastAPI hands the endpoint exactly `values`.

Each example builds the CreateTaskRequest with the real builder, replays its HTTP request into the same
app in-process, and compares what the endpoint received with what was given.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Cookie, FastAPI, Header, Query
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from fastapi_gcp_tasks import DelayedRouteBuilder, queue_path
from tests.core._replay import Recorder, replay

QUEUE = queue_path(project="p", location="l", queue="q")


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Tag(BaseModel):
    label: str
    weight: float = 1.0


class Item(BaseModel):
    name: str
    price: decimal.Decimal
    when: dt.datetime
    day: dt.date | None = None
    ref: uuid.UUID
    color: Color = Color.RED
    tags: list[Tag] = []
    extra: dict[str, int] = {}


@dataclasses.dataclass
class Point:
    x: int
    y: int


record = Recorder()
router = APIRouter(
    route_class=DelayedRouteBuilder(queue_path=QUEUE, callback_base_url="http://testserver/base"),
    prefix="/rt",
)


@router.post("/path/{s}/{i}/{u}/{c}/{d}/{lv}")
def path_params(s: str, i: int, u: uuid.UUID, c: Color, d: dt.date, lv: Level) -> None:
    record(s=s, i=i, u=u, c=c, d=d, lv=lv)


@router.get("/files/{rest:path}")
def path_convertor(rest: str) -> None:
    record(rest=rest)


@router.get("/query")
def query_params(
    words: Annotated[list[str], Query()] = [],  # noqa: B006
    numbers: Annotated[list[int] | None, Query()] = None,
    maybe: str | None = None,
    aliased: Annotated[str, Query(alias="the-key")] = "default",
    flag: bool = False,
    ratio: float = 0.0,
    moment: dt.datetime | None = None,
    color: Color = Color.RED,
) -> None:
    record(
        words=words, numbers=numbers, maybe=maybe, aliased=aliased, flag=flag, ratio=ratio, moment=moment, color=color
    )


@router.get("/headers")
def header_params(
    x_token: Annotated[str, Header()],
    x_one: Annotated[list[str] | None, Header()] = None,
    custom: Annotated[str | None, Header(alias="X-Custom-Name")] = None,
    x_count: Annotated[int, Header()] = 0,
    session: Annotated[str | None, Cookie()] = None,
    theme: Annotated[str, Cookie()] = "light",
) -> None:
    record(x_token=x_token, x_one=x_one, custom=custom, x_count=x_count, session=session, theme=theme)


@router.post("/single-model")
def single_model(item: Item) -> None:
    record(item=item)


@router.post("/embedded-single")
def embedded_single(item: Annotated[Item, Body(embed=True)]) -> None:
    record(item=item)


@router.post("/several/{key}")
def several_bodies(key: int, item: Item, tag: Tag, importance: Annotated[int, Body()] = 3) -> None:
    record(key=key, item=item, tag=tag, importance=importance)


@router.put("/collections")
def collections(items: list[Item], by_name: dict[str, Tag], point: Point) -> None:
    record(items=items, by_name=by_name, point=point)


@router.patch("/list-body")
def list_body(tags: list[Tag]) -> None:
    record(tags=tags)


@router.post("/optional-body")
def optional_body(tag: Tag | None = None) -> None:
    record(tag=tag)


app = FastAPI()
app.include_router(router, prefix="/base")


def same_instant(value: Any) -> Any:
    """`value` with aware datetimes moved to UTC.

    PEP 495 makes an aware datetime in a repeated (fold) hour unequal to every datetime of another time
    zone, even at the same instant; what must survive the trip is the instant and the awareness.
    """
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC)
    if isinstance(value, BaseModel):
        return (type(value), {k: same_instant(v) for k, v in value.__dict__.items()})
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value), same_instant(dataclasses.asdict(value)))
    if isinstance(value, dict):
        return {k: same_instant(v) for k, v in value.items()}
    if isinstance(value, list):
        return [same_instant(v) for v in value]
    return value


def roundtrip(endpoint: Any, **values: Any) -> dict[str, Any]:
    request = endpoint.options().request(**values)
    before = len(record.calls)
    response = replay(app, request)
    assert response.status_code == 200, (response.status_code, response.text, request.task.http_request.url)
    assert len(record.calls) == before + 1
    return same_instant(record.last)  # type: ignore[no-any-return]


no_surrogates = st.characters(exclude_categories=["Cs"])
# URL parts stay short: a URL over 2083 characters is refused on purpose (see test_refusals.py)
segment = st.text(no_surrogates, min_size=1, max_size=20).filter(lambda s: "/" not in s and s not in {".", ".."})
any_text = st.text(no_surrogates)
short_text = st.text(no_surrogates, max_size=20)
finite = st.floats(allow_nan=False, allow_infinity=False)
# RFC 3339 offsets have minute precision: historical local-mean-time offsets with seconds cannot travel.


def _minute_offset(moment: dt.datetime) -> bool:
    offset = moment.utcoffset()
    return offset is not None and offset.total_seconds() % 60 == 0


aware = st.datetimes(timezones=st.timezones()).filter(_minute_offset)
naive = st.datetimes()
header_text = st.from_regex(r"[\x21-\x7e]([\x20-\x7e]{0,30}[\x21-\x7e])?", fullmatch=True)
latin1 = st.text(st.characters(max_codepoint=255, exclude_categories=["Cs"]))
tags = st.builds(Tag, label=any_text, weight=finite)
items = st.builds(
    Item,
    name=any_text,
    price=st.decimals(allow_nan=False, allow_infinity=False),
    when=aware | naive,
    day=st.none() | st.dates(),
    ref=st.uuids(),
    color=st.sampled_from(Color),
    tags=st.lists(tags, max_size=3),
    extra=st.dictionaries(any_text, st.integers(), max_size=3),
)


@given(s=segment, i=st.integers(), u=st.uuids(), c=st.sampled_from(Color), d=st.dates(), lv=st.sampled_from(Level))
def test_path_parameters(s: str, i: int, u: uuid.UUID, c: Color, d: dt.date, lv: Level) -> None:
    values = {"s": s, "i": i, "u": u, "c": c, "d": d, "lv": lv}
    assert roundtrip(path_params, **values) == same_instant(values)


@given(parts=st.lists(segment.filter(lambda s: "\n" not in s), min_size=1, max_size=4))
def test_path_convertor_keeps_slashes(parts: list[str]) -> None:
    # Starlette's `{name:path}` is `.*` without DOTALL: a newline can never reach it (tested in test_refusals)
    rest = "/".join(parts)
    assert roundtrip(path_convertor, rest=rest) == {"rest": rest}


@given(
    words=st.lists(short_text, max_size=4),
    numbers=st.none() | st.lists(st.integers(), min_size=1, max_size=4),
    maybe=st.none() | short_text,
    aliased=short_text,
    flag=st.booleans(),
    ratio=st.floats(allow_nan=False),
    moment=st.none() | aware | naive,
    color=st.sampled_from(Color),
)
def test_query_parameters(**values: Any) -> None:
    assert roundtrip(query_params, **values) == same_instant(values)


@given(
    x_token=header_text,
    x_one=st.none() | st.lists(header_text, min_size=1, max_size=1),
    custom=st.none() | header_text,
    x_count=st.integers(),
    session=st.none() | latin1,
    theme=latin1,
)
def test_header_and_cookie_parameters(**values: Any) -> None:
    assert roundtrip(header_params, **values) == same_instant(values)


@given(item=items)
def test_single_model_body(item: Item) -> None:
    assert roundtrip(single_model, item=item) == same_instant({"item": item})


@given(item=items)
def test_embedded_single_body(item: Item) -> None:
    assert roundtrip(embedded_single, item=item) == same_instant({"item": item})


@given(key=st.integers(), item=items, tag=tags, importance=st.integers())
def test_several_body_parameters_are_embedded(key: int, item: Item, tag: Tag, importance: int) -> None:
    values = {"key": key, "item": item, "tag": tag, "importance": importance}
    assert roundtrip(several_bodies, **values) == same_instant(values)


@given(
    items=st.lists(items, max_size=3),
    by_name=st.dictionaries(any_text, tags, max_size=3),
    point=st.builds(Point, x=st.integers(), y=st.integers()),
)
def test_lists_dicts_and_dataclasses(items: list[Item], by_name: dict[str, Tag], point: Point) -> None:
    values = {"items": items, "by_name": by_name, "point": point}
    assert roundtrip(collections, **values) == same_instant(values)


@given(tags=st.lists(tags, max_size=4))
def test_list_body(tags: list[Tag]) -> None:
    assert roundtrip(list_body, tags=tags) == same_instant({"tags": tags})


def test_defaults_are_applied_by_the_endpoint() -> None:
    assert roundtrip(query_params) == {
        "words": [],
        "numbers": None,
        "maybe": None,
        "aliased": "default",
        "flag": False,
        "ratio": 0.0,
        "moment": None,
        "color": Color.RED,
    }
    assert roundtrip(optional_body) == {"tag": None}
    assert roundtrip(optional_body, tag=Tag(label="x")) == same_instant({"tag": Tag(label="x")})


def test_dict_input_is_validated_into_the_model() -> None:
    received = roundtrip(list_body, tags=[{"label": "a", "weight": 2}])
    assert received == same_instant({"tags": [Tag(label="a", weight=2.0)]})
