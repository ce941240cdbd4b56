"""Static types for task endpoints: what `.delay()`, `.options()` and `.scheduler()` accept.

`.delay` and friends are attached to endpoint functions when routes are registered, which type checkers
cannot see. Wrap the endpoint with `as_delayed_task` (innermost decorator) to give it a type whose
`.delay()` takes exactly the endpoint's parameters, keyword-only, and whose `.options()` takes only known
options:

```python
@router.post("/hello/{name}")
@as_delayed_task
def hello(name: str, greeting: Greeting) -> None: ...

hello.delay(name="Ada", greeting=Greeting(text="hi"))   # checked
hello.options(countdown=60).delay(name="Ada", greeting=...)
```

An endpoint that also takes parameters FastAPI fills on the worker (`Request`, `BackgroundTasks`,
`Depends(...)`) cannot reuse its own signature for `.delay()`: those parameters are not task arguments, and
the runtime refuses them. Declare the task's arguments instead, as a `TypedDict` (or a function with
keyword-only parameters), and apply the decorator above or below the route decorator:

```python
class HelloArgs(TypedDict):
    name: str
    greeting: NotRequired[Greeting]

@as_delayed_task(args=HelloArgs)
@router.post("/hello/{name}")
def hello(name: str, request: Request, db: Db = Depends(get_db), greeting: Greeting = DEFAULT) -> None: ...

hello.delay(name="Ada")                                 # checked against HelloArgs
```

The declaration is checked against the registered route when the decorator runs (names, required-ness
and types must be exactly those `.delay()` accepts), so the static promise cannot drift from the runtime.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import types
from collections.abc import Callable, Iterator, Mapping
from typing import (
    Annotated,
    Any,
    ClassVar,
    Generic,
    NotRequired,
    ParamSpec,
    Protocol,
    Required,
    TypedDict,
    TypeVar,
    Union,
    cast,
    get_args,
    get_origin,
    overload,
)

from fastapi.routing import APIRoute
from google.cloud import scheduler_v1, tasks_v2
from typing_extensions import ReadOnly, Unpack, get_type_hints, is_typeddict

from fastapi_gcp_tasks.build._hooks import DelayedTaskHook, ScheduledHook
from fastapi_gcp_tasks.build._routes import _BOUND_ROUTE, CHECK_ARGS_ATTR
from fastapi_gcp_tasks.dispatch._sink import TaskSink
from fastapi_gcp_tasks.exception import RouteDefinitionError

__all__ = [
    "AsyncDelayOptions",
    "AsyncDelayedTask",
    "AsyncDelayedTaskWithArgs",
    "AsyncScheduledTask",
    "AsyncScheduledTaskWithArgs",
    "AsyncSchedulerOptions",
    "DelayOptions",
    "DelayedTask",
    "DelayedTaskWithArgs",
    "ScheduledTask",
    "ScheduledTaskWithArgs",
    "SchedulerOptions",
    "TaskDefaultOptions",
    "as_async_delayed_task",
    "as_async_scheduled_task",
    "as_delayed_task",
    "as_scheduled_task",
]

P = ParamSpec("P")
R = TypeVar("R", covariant=True)
E = ParamSpec("E")
"""With `args=`: the endpoint's own parameters, which direct calls take."""
A = ParamSpec("A")
"""With `args=`: the declared task arguments, which `.delay()` / `.schedule()` take."""


class TaskDefaultOptions(TypedDict, total=False):
    """Options shared by sync and async delayed routes (`task_default_options`, `.options()`)."""

    countdown: float | dt.timedelta
    eta: dt.datetime
    task_id: str
    hash_task_id: bool
    dispatch_deadline: float | dt.timedelta
    task_create_timeout: float
    callback_base_url: str
    base_url: str
    queue_path: str
    pre_create_hook: DelayedTaskHook
    auto_create_queue: bool
    headers: Mapping[str, str]
    sink: TaskSink


class DelayOptions(TaskDefaultOptions, total=False):
    """Per-call overrides for `.options()` on a `DelayedRouteBuilder` endpoint."""

    client: tasks_v2.CloudTasksClient | Callable[[], tasks_v2.CloudTasksClient]


class AsyncDelayOptions(TaskDefaultOptions, total=False):
    """Per-call overrides for `.options()` on an `AsyncDelayedRouteBuilder` endpoint."""

    client: tasks_v2.CloudTasksAsyncClient | Callable[[], tasks_v2.CloudTasksAsyncClient]


class _SchedulerCommon(TypedDict, total=False):
    callback_base_url: str
    base_url: str
    location_path: str
    job_create_timeout: float
    retry_config: scheduler_v1.RetryConfig
    time_zone: str
    force: bool
    attempt_deadline: float | dt.timedelta
    description: str
    headers: Mapping[str, str]
    pre_create_hook: ScheduledHook


class SchedulerOptions(_SchedulerCommon, total=False):
    """Options for `.scheduler()` on a `ScheduledRouteBuilder` endpoint."""

    client: scheduler_v1.CloudSchedulerClient | Callable[[], scheduler_v1.CloudSchedulerClient]


class AsyncSchedulerOptions(_SchedulerCommon, total=False):
    """Options for `.scheduler()` on an `AsyncScheduledRouteBuilder` endpoint."""

    client: scheduler_v1.CloudSchedulerAsyncClient | Callable[[], scheduler_v1.CloudSchedulerAsyncClient]


class DelayHandle(Protocol[P]):
    """`endpoint.options(...)`: a `.delay()` with those options."""

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> tasks_v2.Task:
        """Create the task (keyword arguments only)."""
        ...


class AsyncDelayHandle(Protocol[P]):
    """`endpoint.options(...)` on an async route."""

    async def delay(self, *args: P.args, **kwargs: P.kwargs) -> tasks_v2.Task:
        """Create the task (keyword arguments only)."""
        ...


class ScheduleHandle(Protocol[P]):
    """`endpoint.scheduler(...)`: the Cloud Scheduler job of this endpoint."""

    def schedule(self, *args: P.args, **kwargs: P.kwargs) -> scheduler_v1.Job:
        """Create the job, update it in place when it differs, or leave it when it matches."""
        ...

    def delete(self) -> bool:
        """Delete the job; whether it existed."""
        ...


class AsyncScheduleHandle(Protocol[P]):
    """`endpoint.scheduler(...)` on an async route."""

    async def schedule(self, *args: P.args, **kwargs: P.kwargs) -> scheduler_v1.Job:
        """Create the job, update it in place when it differs, or leave it when it matches."""
        ...

    async def delete(self) -> bool:
        """Delete the job; whether it existed."""
        ...


class DelayedTask(Protocol[P, R]):
    """An endpoint of a `DelayedRouteBuilder` route, as typed by `as_delayed_task`."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the endpoint directly."""
        ...

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> tasks_v2.Task:
        """Create a task that calls this endpoint with these arguments."""
        ...

    def options(self, **options: Unpack[DelayOptions]) -> DelayHandle[P]:
        """Override options for one call: `endpoint.options(countdown=60).delay(...)`."""
        ...


class AsyncDelayedTask(Protocol[P, R]):
    """An endpoint of an `AsyncDelayedRouteBuilder` route, as typed by `as_async_delayed_task`."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the endpoint directly."""
        ...

    async def delay(self, *args: P.args, **kwargs: P.kwargs) -> tasks_v2.Task:
        """Create a task that calls this endpoint with these arguments."""
        ...

    def options(self, **options: Unpack[AsyncDelayOptions]) -> AsyncDelayHandle[P]:
        """Override options for one call: `await endpoint.options(countdown=60).delay(...)`."""
        ...


class ScheduledTask(Protocol[P, R]):
    """An endpoint of a `ScheduledRouteBuilder` route, as typed by `as_scheduled_task`."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the endpoint directly."""
        ...

    def scheduler(self, *, name: str, schedule: str, **options: Unpack[SchedulerOptions]) -> ScheduleHandle[P]:
        """The Cloud Scheduler job `name` calling this endpoint on the cron `schedule`."""
        ...


class AsyncScheduledTask(Protocol[P, R]):
    """An endpoint of an `AsyncScheduledRouteBuilder` route, as typed by `as_async_scheduled_task`."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the endpoint directly."""
        ...

    def scheduler(
        self, *, name: str, schedule: str, **options: Unpack[AsyncSchedulerOptions]
    ) -> AsyncScheduleHandle[P]:
        """The Cloud Scheduler job `name` calling this endpoint on the cron `schedule`."""
        ...


class DelayedTaskWithArgs(Protocol[E, A, R]):
    """An endpoint of a `DelayedRouteBuilder` route, as typed by `as_delayed_task(args=...)`.

    Direct calls take the endpoint's own parameters (`E`); `.delay()` takes the declared task arguments
    (`A`), which leave out what FastAPI fills on the worker (`Request`, `BackgroundTasks`, `Depends(...)`).
    """

    def __call__(self, *args: E.args, **kwargs: E.kwargs) -> R:
        """Call the endpoint directly."""
        ...

    def delay(self, *args: A.args, **kwargs: A.kwargs) -> tasks_v2.Task:
        """Create a task that calls this endpoint with these arguments."""
        ...

    def options(self, **options: Unpack[DelayOptions]) -> DelayHandle[A]:
        """Override options for one call: `endpoint.options(countdown=60).delay(...)`."""
        ...


class AsyncDelayedTaskWithArgs(Protocol[E, A, R]):
    """An endpoint of an `AsyncDelayedRouteBuilder` route, as typed by `as_async_delayed_task(args=...)`."""

    def __call__(self, *args: E.args, **kwargs: E.kwargs) -> R:
        """Call the endpoint directly."""
        ...

    async def delay(self, *args: A.args, **kwargs: A.kwargs) -> tasks_v2.Task:
        """Create a task that calls this endpoint with these arguments."""
        ...

    def options(self, **options: Unpack[AsyncDelayOptions]) -> AsyncDelayHandle[A]:
        """Override options for one call: `await endpoint.options(countdown=60).delay(...)`."""
        ...


class ScheduledTaskWithArgs(Protocol[E, A, R]):
    """An endpoint of a `ScheduledRouteBuilder` route, as typed by `as_scheduled_task(args=...)`."""

    def __call__(self, *args: E.args, **kwargs: E.kwargs) -> R:
        """Call the endpoint directly."""
        ...

    def scheduler(self, *, name: str, schedule: str, **options: Unpack[SchedulerOptions]) -> ScheduleHandle[A]:
        """The Cloud Scheduler job `name` calling this endpoint on the cron `schedule`."""
        ...


class AsyncScheduledTaskWithArgs(Protocol[E, A, R]):
    """An endpoint of an `AsyncScheduledRouteBuilder` route, as typed by `as_async_scheduled_task(args=...)`."""

    def __call__(self, *args: E.args, **kwargs: E.kwargs) -> R:
        """Call the endpoint directly."""
        ...

    def scheduler(
        self, *, name: str, schedule: str, **options: Unpack[AsyncSchedulerOptions]
    ) -> AsyncScheduleHandle[A]:
        """The Cloud Scheduler job `name` calling this endpoint on the cron `schedule`."""
        ...


# --- declared task arguments (`args=`) -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Declared:
    """One declared task argument: whether the declaration makes it required, and its type."""

    required: bool
    type: Any


class _Declaration:
    """The task arguments given to `args=`: a `TypedDict` class or a function with keyword-only parameters."""

    def __init__(self, source: object, decorator: str) -> None:
        shown = getattr(source, "__qualname__", None) or repr(source)
        self.label = f"{decorator}(args={shown})"
        self.fields = _declared_fields(source, self.label)


_QUALIFIERS = (Required, NotRequired, ReadOnly)


def _declared_fields(source: object, label: str) -> dict[str, _Declared]:
    """Name -> (required, type) of a declaration, or `RouteDefinitionError` when it is not one."""
    typed_dict = is_typeddict(source)
    if not typed_dict and not inspect.isfunction(source):
        raise RouteDefinitionError(
            f"{label}: args= takes a TypedDict class or a function with keyword-only parameters, not {source!r}"
        )
    try:
        hints = get_type_hints(source, include_extras=True)
    except (NameError, TypeError, AttributeError, SyntaxError) as exc:
        raise RouteDefinitionError(
            f"{label}: its annotations cannot be evaluated ({exc}); they are compared with the endpoint's "
            "when the decorator runs, so the types they name must be importable at runtime"
        ) from None
    if typed_dict:
        # `__required_keys__` is wrong for `NotRequired[...]` under `from __future__ import annotations`
        # (Python < 3.14), so the qualifiers are read from the evaluated hints.
        required_keys: frozenset[str] = getattr(source, "__required_keys__", frozenset())
        fields: dict[str, _Declared] = {}
        for name, hint in hints.items():
            qualifiers = set(_qualifiers(hint))
            required = Required in qualifiers or (NotRequired not in qualifiers and name in required_keys)
            fields[name] = _Declared(required=required, type=_unqualified(hint))
        return fields
    assert callable(source)
    fields = {}
    for param in inspect.signature(source).parameters.values():
        if param.kind is not inspect.Parameter.KEYWORD_ONLY:
            raise RouteDefinitionError(
                f"{label}: parameter {param.name!r} must be keyword-only (`def ...(*, {param.name}: ...)`): "
                "task arguments are passed by keyword only"
            )
        fields[param.name] = _Declared(required=param.default is param.empty, type=hints.get(param.name, Any))
    return fields


def _qualifiers(hint: Any) -> Iterator[Any]:
    while get_origin(hint) in _QUALIFIERS:
        yield get_origin(hint)
        hint = get_args(hint)[0]


def _unqualified(hint: Any) -> Any:
    while get_origin(hint) in _QUALIFIERS:
        hint = get_args(hint)[0]
    return hint


def _normal_form(hint: Any) -> Any:
    """A comparable form of a type: no `Annotated` metadata, `X | None` equal to `Optional[X]`, `List` to `list`."""
    origin = get_origin(hint)
    if origin is None:
        return hint
    if origin is Annotated:
        return _normal_form(get_args(hint)[0])
    args = tuple(_normal_form(arg) for arg in get_args(hint))
    if origin in (Union, types.UnionType):
        return (Union, frozenset(args))
    return (origin, args)


def _same_type(declared: Any, actual: Any) -> bool:
    if declared is Any or actual is Any:
        return True
    try:
        return bool(_normal_form(declared) == _normal_form(actual))
    except TypeError:  # an unhashable argument of a Union: compare as written
        return bool(declared == actual)


def _type_name(hint: Any) -> str:
    if isinstance(hint, type) and not get_args(hint):
        return hint.__qualname__
    return repr(hint).replace("typing.", "")


def _mismatches(
    route: APIRoute, plan: Any, endpoint: Callable[..., Any], declaration: _Declaration, call: str
) -> list[str]:
    """How the declaration differs from what the route's `.delay()` / `.schedule()` accepts (`plan`)."""
    fields: dict[str, Any] = plan.fields
    accepted = frozenset(fields)
    own = inspect.signature(endpoint).parameters
    problems: list[str] = []
    for name, declared in declaration.fields.items():
        if name not in accepted:
            why = "FastAPI fills it on the worker" if name in own else "the endpoint has no such parameter"
            problems.append(f"{name!r} is not a task argument ({why}): remove it")
            continue
        field = fields.get(name)
        if field is None:
            continue
        required = field.field_info.is_required()
        if declared.required and not required:
            problems.append(f"{name!r} is declared required, but it has a default on the endpoint: make it optional")
        elif required and not declared.required:
            problems.append(f"{name!r} is declared optional, but the endpoint requires it")
        actual = field.field_info.annotation
        if not _same_type(declared.type, actual):
            problems.append(
                f"{name!r} is declared as {_type_name(declared.type)}, but the endpoint takes {_type_name(actual)}"
            )
    for name in sorted(accepted - declaration.fields.keys()):
        field = fields.get(name)
        kind = "required" if field is not None and field.field_info.is_required() else "optional"
        problems.append(f"{name!r} is missing ({kind} in {call})")
    return problems


def _check_declaration(endpoint: Callable[..., Any], declaration: _Declaration, method: str) -> None:
    """Raise `RouteDefinitionError` unless `endpoint` is a registered task route taking exactly the declaration."""
    name = getattr(endpoint, "__qualname__", None) or repr(endpoint)
    route: APIRoute | None = getattr(endpoint, _BOUND_ROUTE, None)
    builder = "DelayedRouteBuilder" if method == "delay" else "ScheduledRouteBuilder"
    if route is None:  # applied below the route decorator: the route runs the check when it registers
        setattr(endpoint, CHECK_ARGS_ATTR, lambda: _check_declaration(endpoint, declaration, method))
        return
    if not callable(getattr(endpoint, method, None)):
        raise RouteDefinitionError(
            f"{name}: {declaration.label} types the route of a {builder} (or its async variant); "
            f"{route.path!r} is not one"
        )
    plan: Any = route.task_plan  # type: ignore[attr-defined]
    try:
        plan.resolve()
    except RouteDefinitionError as exc:
        raise RouteDefinitionError(
            f"{declaration.label} compares the declaration with the route when the route is registered, so "
            f"the types the endpoint names must be defined above it: {exc}"
        ) from None
    call = ".delay()" if method == "delay" else ".schedule()"
    problems = _mismatches(route, plan, endpoint, declaration, call)
    if problems:
        raise RouteDefinitionError(
            f"{name}: {declaration.label} does not match what {call} accepts on {route.path!r}: " + "; ".join(problems)
        )


class _ArgsDecorator(Generic[A]):
    """What `as_*_task(args=...)` returns: checks the declaration against the route, returns the endpoint."""

    _decorator: ClassVar[str]
    _method: ClassVar[str]

    def __init__(self, args: Callable[A, object]) -> None:
        self._declaration = _Declaration(args, self._decorator)

    def _checked(self, endpoint: Callable[..., Any]) -> object:
        _check_declaration(endpoint, self._declaration, self._method)
        return endpoint


class _DelayedArgs(_ArgsDecorator[A]):
    """`as_delayed_task(args=...)`: gives the endpoint the type `DelayedTaskWithArgs`."""

    _decorator = "as_delayed_task"
    _method = "delay"

    def __call__(self, endpoint: Callable[E, R]) -> DelayedTaskWithArgs[E, A, R]:
        return cast("DelayedTaskWithArgs[E, A, R]", self._checked(endpoint))


class _AsyncDelayedArgs(_ArgsDecorator[A]):
    """`as_async_delayed_task(args=...)`: gives the endpoint the type `AsyncDelayedTaskWithArgs`."""

    _decorator = "as_async_delayed_task"
    _method = "delay"

    def __call__(self, endpoint: Callable[E, R]) -> AsyncDelayedTaskWithArgs[E, A, R]:
        return cast("AsyncDelayedTaskWithArgs[E, A, R]", self._checked(endpoint))


class _ScheduledArgs(_ArgsDecorator[A]):
    """`as_scheduled_task(args=...)`: gives the endpoint the type `ScheduledTaskWithArgs`."""

    _decorator = "as_scheduled_task"
    _method = "scheduler"

    def __call__(self, endpoint: Callable[E, R]) -> ScheduledTaskWithArgs[E, A, R]:
        return cast("ScheduledTaskWithArgs[E, A, R]", self._checked(endpoint))


class _AsyncScheduledArgs(_ArgsDecorator[A]):
    """`as_async_scheduled_task(args=...)`: gives the endpoint the type `AsyncScheduledTaskWithArgs`."""

    _decorator = "as_async_scheduled_task"
    _method = "scheduler"

    def __call__(self, endpoint: Callable[E, R]) -> AsyncScheduledTaskWithArgs[E, A, R]:
        return cast("AsyncScheduledTaskWithArgs[E, A, R]", self._checked(endpoint))


def _one_form(fn: object, args: object, decorator: str) -> None:
    """Refuse `as_*_task()` with neither or both of the endpoint and `args=` (the overloads allow one)."""
    if (fn is None) == (args is None):
        raise TypeError(f"{decorator}() takes either the endpoint or args=..., not both or neither")


@overload
def as_delayed_task(fn: Callable[P, R]) -> DelayedTask[P, R]: ...
@overload
def as_delayed_task(*, args: Callable[A, object]) -> _DelayedArgs[A]: ...
def as_delayed_task(fn: Callable[P, R] | None = None, *, args: Callable[A, object] | None = None) -> Any:
    """Type an endpoint as a `DelayedTask`, whose `.delay()` takes the endpoint's own parameters.

    `@as_delayed_task` is the identity at runtime (apply it as the innermost decorator). For an endpoint that
    also takes parameters FastAPI fills on the worker (`Request`, `BackgroundTasks`, `Depends(...)`), use
    `@as_delayed_task(args=Declared)`: `.delay()` then takes the arguments of `Declared` (a `TypedDict`, or
    a function with keyword-only parameters), which are checked against what the registered route accepts
    when the route is registered, raising `RouteDefinitionError` on any difference.
    """
    _one_form(fn, args, "as_delayed_task")
    return fn if args is None else _DelayedArgs(args)


@overload
def as_async_delayed_task(fn: Callable[P, R]) -> AsyncDelayedTask[P, R]: ...
@overload
def as_async_delayed_task(*, args: Callable[A, object]) -> _AsyncDelayedArgs[A]: ...
def as_async_delayed_task(fn: Callable[P, R] | None = None, *, args: Callable[A, object] | None = None) -> Any:
    """Type an endpoint as an `AsyncDelayedTask` (or with `args=`, an `AsyncDelayedTaskWithArgs`).

    See `as_delayed_task`.
    """
    _one_form(fn, args, "as_async_delayed_task")
    return fn if args is None else _AsyncDelayedArgs(args)


@overload
def as_scheduled_task(fn: Callable[P, R]) -> ScheduledTask[P, R]: ...
@overload
def as_scheduled_task(*, args: Callable[A, object]) -> _ScheduledArgs[A]: ...
def as_scheduled_task(fn: Callable[P, R] | None = None, *, args: Callable[A, object] | None = None) -> Any:
    """Type an endpoint as a `ScheduledTask` (or with `args=`, a `ScheduledTaskWithArgs`).

    See `as_delayed_task`; with `args=`, `.scheduler(...).schedule()` takes the declared arguments.
    """
    _one_form(fn, args, "as_scheduled_task")
    return fn if args is None else _ScheduledArgs(args)


@overload
def as_async_scheduled_task(fn: Callable[P, R]) -> AsyncScheduledTask[P, R]: ...
@overload
def as_async_scheduled_task(*, args: Callable[A, object]) -> _AsyncScheduledArgs[A]: ...
def as_async_scheduled_task(fn: Callable[P, R] | None = None, *, args: Callable[A, object] | None = None) -> Any:
    """Type an endpoint as an `AsyncScheduledTask` (or with `args=`, an `AsyncScheduledTaskWithArgs`).

    See `as_scheduled_task`.
    """
    _one_form(fn, args, "as_async_scheduled_task")
    return fn if args is None else _AsyncScheduledArgs(args)
