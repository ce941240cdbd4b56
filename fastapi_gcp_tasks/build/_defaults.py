"""`task_default_options`: per-endpoint defaults for `.delay()`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

from typing_extensions import Unpack

from fastapi_gcp_tasks.build._routes import DEFAULT_OPTIONS_ATTR
from fastapi_gcp_tasks.build._task import DELAY_OPTION_NAMES
from fastapi_gcp_tasks.build._typing import AsyncDelayOptions, DelayOptions
from fastapi_gcp_tasks.exception import UnknownParamError

__all__ = ["task_default_options"]

F = TypeVar("F", bound=Callable[..., Any])


@overload
def task_default_options(**options: Unpack[DelayOptions]) -> Callable[[F], F]: ...


@overload
def task_default_options(**options: Unpack[AsyncDelayOptions]) -> Callable[[F], F]: ...


def task_default_options(**options: Any) -> Callable[[F], F]:
    """Set options for every `.delay()` of the decorated endpoint (below the route decorator).

    ```python
    @router.post("/report")
    @task_default_options(countdown=30, dispatch_deadline=600)
    def report(...): ...
    ```

    Per-call `.options()` still override them.
    """
    unknown = set(options) - DELAY_OPTION_NAMES
    if unknown:
        raise UnknownParamError(f"task_default_options: unknown option(s) {', '.join(sorted(unknown))}")

    def wrapper(fn: F) -> F:
        setattr(fn, DEFAULT_OPTIONS_ATTR, dict(options))
        return fn

    return wrapper
