"""Property: every `.delay()` is delivered exactly, through the emulator, or refused at the call site.

The catalogue below holds the kinds of parameter that broke the promise before (unions, strict types,
secrets, aliases, output-only fields, bytes, int literals and enums, floats of any magnitude, huge ints,
validators that change a value twice validated, models defined inside an app factory under
`from __future__ import annotations`), in every part of a request that can carry them. Hypothesis draws
an endpoint and a value (often outside the declared type). The case passes when either

* `.delay()` raises a `TaskArgumentError` naming the parameter, before anything is sent, or
* the task, created in the emulator over real gRPC and delivered into the app, hands the endpoint a
  value that is exactly the validated one: same types, same fields set, same instant and offset.

Anything else fails: a raw exception, a task the worker answers with an error, a value that arrives
changed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import math
import uuid
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal

import pytest
from fastapi import APIRouter, Body, Cookie, FastAPI, Header, Query
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    computed_field,
)

from fastapi_gcp_tasks import DelayedRouteBuilder, TaskArgumentError, emulator_client, queue_path
from fastapi_gcp_tasks.emulator import Emulator
from tests.core._replay import Recorder

QUEUE = queue_path(project="p", location="l", queue="exact")


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Color(str, enum.Enum):  # noqa: UP042 - the str mixin is the case under test (f-strings)
    RED = "red"
    BLUE = "blue"


def _make_models() -> tuple[type[BaseModel], ...]:
    """Models defined inside a function (an app factory), exported to the module below."""

    class Secretive(BaseModel):
        token: SecretStr
        note: str = ""

    class Renamed(BaseModel):
        name: str = Field(serialization_alias="fullName")
        code: int = Field(validation_alias=AliasChoices("code", "c"), default=0)

    class Hidden(BaseModel):
        shown: int
        hidden: int = Field(default=0, exclude=True)

    class Computed(BaseModel):
        model_config = ConfigDict(extra="forbid")
        a: int

        @computed_field  # type: ignore[prop-decorator]
        @property
        def twice(self) -> int:
            return self.a * 2

    class Patch(BaseModel):
        title: str = "untitled"
        count: int = 0
        tags: set[str] = set()

    class Stamped(BaseModel):
        when: dt.datetime
        price: float
        made: uuid.UUID = Field(default_factory=uuid.uuid4)

    class Strict(BaseModel):
        model_config = ConfigDict(strict=True)
        when: dt.date
        n: int

    class Shouting(BaseModel):
        word: Annotated[str, AfterValidator(lambda s: s + "!")]

    class Mixed(BaseModel):
        either: int | str
        raw: bytes = b""
        level: Level = Level.LOW
        big: int = 0

    return Secretive, Renamed, Hidden, Computed, Patch, Stamped, Strict, Shouting, Mixed


Secretive, Renamed, Hidden, Computed, Patch, Stamped, Strict, Shouting, Mixed = _make_models()


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    endpoint: Any
    values: st.SearchStrategy[Any]
    annotation: Any


record = Recorder()
ENTRIES: list[Entry] = []


def _register(router: APIRouter, path: str, name: str, part: Any, annotation: Any, values: Any) -> None:
    """One endpoint whose only parameter `v` has this annotation, read from this part of the request."""
    method = "post" if part is Body else "get"
    annotated = Annotated[annotation, part()] if part is not None else annotation

    def endpoint(v: Any) -> None:
        record(v=v)

    endpoint.__annotations__ = {"v": annotated, "return": None}
    endpoint.__name__ = endpoint.__qualname__ = name
    getattr(router, method)(path)(endpoint)
    ENTRIES.append(Entry(name, endpoint, values, annotation))


texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
huge = st.sampled_from([4400, 4301]).map(lambda digits: 10**digits)  # too long to parse back
ints = st.integers(min_value=-(10**20), max_value=10**20) | huge | huge.map(lambda n: -n)
floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([1e22, 1.5e-7, -0.0, 1e308])
scalars = texts | ints | floats | st.booleans()
aware = st.datetimes(timezones=st.timezones())
moments = aware | st.datetimes()


def build_app(client: Callable[[], Any]) -> FastAPI:
    router = APIRouter(
        route_class=DelayedRouteBuilder(queue_path=QUEUE, callback_base_url="http://testserver", client=client)
    )
    text_types: list[tuple[str, Any, Any]] = [
        ("union_int_str", int | str, ints | texts),
        ("strict_int", StrictInt, ints | texts),
        ("strict_bool", StrictBool, st.booleans()),
        ("strict_str", StrictStr, texts),
        ("int_literal", Literal[1, 2], st.sampled_from([1, 2])),
        ("str_literal", Literal["a", "b"], st.sampled_from(["a", "b"])),
        ("int_enum", Level, st.sampled_from(Level)),
        ("str_enum", Color, st.sampled_from(Color)),
        ("float", float, floats),
        ("decimal", decimal.Decimal, st.decimals(allow_nan=False, places=3) | st.decimals()),
        ("bytes", bytes, st.binary(max_size=8)),
        ("secret", SecretStr, texts.map(SecretStr)),
        ("moment", dt.datetime, moments),
        ("day", dt.date, st.dates()),
        ("ident", uuid.UUID, st.uuids()),
        ("shout", Annotated[str, AfterValidator(lambda s: s + "!")], texts),
        ("plain_int", int, ints),
        ("plain_str", str, texts),
        ("plain_bool", bool, st.booleans() | st.sampled_from(["yes", "off", "1"])),
    ]
    for prefix, part in (("q", Query), ("h", Header), ("c", Cookie)):
        for name, annotation, values in text_types:
            _register(router, f"/{prefix}/{name}", f"{prefix}_{name}", part, annotation, values)
    _register(router, "/q/list_union", "q_list_union", Query, list[int | str], st.lists(ints | texts, max_size=3))
    _register(router, "/q/str_set", "q_str_set", Query, set[str], st.sets(texts, max_size=4))
    for name, annotation, values in text_types:
        if name in {
            "union_int_str",
            "float",
            "plain_int",
            "plain_str",
            "str_enum",
            "int_enum",
            "moment",
            "ident",
            "decimal",
        }:
            _register(router, f"/p/{name}/{{v}}", f"p_{name}", None, annotation, values)
    _register(router, "/p/float_conv/{v:float}", "p_float_conv", None, float, floats)
    _register(router, "/p/int_conv/{v:int}", "p_int_conv", None, int, ints)

    body_models: list[tuple[str, Any, Any]] = [
        ("secretive", Secretive, st.builds(Secretive, token=texts.map(SecretStr), note=texts)),
        ("renamed", Renamed, st.builds(Renamed, name=texts, code=ints)),
        ("hidden", Hidden, st.builds(Hidden, shown=ints, hidden=ints)),
        ("computed", Computed, st.builds(Computed, a=ints)),
        ("patch", Patch, st.builds(Patch, title=texts, count=ints, tags=st.sets(texts, max_size=3)) | st.just(Patch())),
        ("stamped", Stamped, st.builds(Stamped, when=moments, price=floats)),
        ("strict", Strict, st.builds(Strict, when=st.dates(), n=ints)),
        ("shouting", Shouting, st.builds(Shouting, word=texts)),
        (
            "mixed",
            Mixed,
            st.builds(Mixed, either=ints | texts, raw=st.binary(max_size=6), level=st.sampled_from(Level), big=ints),
        ),
        ("any_mapping", dict[str, Any], st.dictionaries(texts, scalars | moments | st.binary(max_size=4), max_size=3)),
        ("tuple_any", Any, st.tuples(ints, texts) | st.frozensets(ints, max_size=3)),
    ]
    for name, annotation, values in body_models:
        _register(router, f"/b/{name}", f"b_{name}", Body, annotation, values)
    app = FastAPI()
    app.include_router(router)
    return app


def same(expected: Any, received: Any) -> bool:
    """Exactly equal: types, values, fields set; aware datetimes by instant and offset; NaN equals NaN.

    Fields filled by a `default_factory` travel with the caller's value, so they arrive set (documented).
    """
    if type(expected) is not type(received):
        return False
    if isinstance(expected, BaseModel):
        factory = {name for name, info in type(expected).model_fields.items() if info.default_factory is not None}
        return expected.model_fields_set | factory == received.model_fields_set and all(
            same(v, received.__dict__[k]) for k, v in expected.__dict__.items()
        )
    if isinstance(expected, dict):
        return expected.keys() == received.keys() and all(same(v, received[k]) for k, v in expected.items())
    if isinstance(expected, (list, tuple)):
        return len(expected) == len(received) and all(same(a, b) for a, b in zip(expected, received, strict=True))
    if isinstance(expected, float):
        return bool(expected == received or (math.isnan(expected) and math.isnan(received)))
    if isinstance(expected, decimal.Decimal):
        return str(expected) == str(received)
    if isinstance(expected, dt.datetime):
        if expected.utcoffset() is None or received.utcoffset() is None:
            return bool(expected == received and expected.utcoffset() == received.utcoffset())
        # by instant, not `==`: across zones, `==` is False for a wall time that a zone repeats or skips (PEP 495)
        return bool(
            expected.astimezone(dt.UTC) == received.astimezone(dt.UTC) and expected.utcoffset() == received.utcoffset()
        )
    if isinstance(expected, SecretStr):
        return bool(expected.get_secret_value() == received.get_secret_value())
    return bool(expected == received)


@pytest.fixture(scope="module")
def world() -> Iterator[Emulator]:
    holder: dict[str, FastAPI] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await holder["app"](scope, receive, send)

    with Emulator(deliver_to=app, queues=[QUEUE]) as emulator:
        holder["app"] = build_app(lambda: emulator_client(host=emulator.address))
        yield emulator


@settings(max_examples=400)
@given(data=st.data())
def test_each_value_is_delivered_exactly_or_refused_naming_the_parameter(world: Emulator, data: st.DataObject) -> None:
    entry = data.draw(st.sampled_from(ENTRIES), label="endpoint")
    value = data.draw(entry.values, label="v")
    try:
        expected = TypeAdapter(entry.annotation).validate_python(value)
    except ValidationError:
        expected = None  # the endpoint's own validation refuses it: .delay() must refuse it too
    deliveries = len(world.deliveries)
    calls = len(record.calls)
    refusal: TaskArgumentError | None = None
    try:
        entry.endpoint.delay(v=value)
    except TaskArgumentError as exc:
        refusal = exc
    if refusal is not None:
        assert refusal.param == "v", f"{entry.name}: refusal names {refusal.param!r}: {refusal}"
        return
    assert expected is not None, f"{entry.name}: .delay() accepted {value!r}, which the endpoint refuses"
    world.wait_until_idle(timeout=30)
    (delivery,) = world.deliveries[deliveries:]
    assert delivery.status == 200, f"{entry.name}: the worker answered {delivery.status} for {value!r}"
    assert len(record.calls) == calls + 1
    received = record.last["v"]
    assert same(expected, received), f"{entry.name}: sent {expected!r}, the endpoint received {received!r}"


def test_the_catalogue_holds_cases_of_each_outcome(world: Emulator) -> None:
    """Guards the property against passing vacuously: some values of the catalogue travel, some are refused."""
    delivered = {"q_union_int_str": "text", "b_patch": Patch(count=3), "b_secretive": Secretive(token=SecretStr("s"))}
    refused = {"q_union_int_str": 5, "q_strict_int": 5, "q_int_literal": 2, "b_mixed": Mixed(either=5, raw=b"\xff")}
    by_name = {entry.name: entry for entry in ENTRIES}
    for name, value in delivered.items():
        before = len(record.calls)
        by_name[name].endpoint.delay(v=value)
        world.wait_until_idle(timeout=30)
        assert len(record.calls) == before + 1
        assert same(value, record.last["v"]), name
    for name, value in refused.items():
        with pytest.raises(TaskArgumentError) as info:
            by_name[name].endpoint.delay(v=value)
        assert info.value.param == "v"
