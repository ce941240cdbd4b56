"""Typed replay of dead letters: re-create the task through the endpoint's current validation.

A letter keeps the request as it was received (method, path with its query string, headers, body). Replay finds
the task route of `app` that the path matches, rebuilds the endpoint's keyword arguments from those parts with
the route's own parameter definitions as they are NOW (`RoutePlan.from_wire`, the parsing FastAPI does), and
calls the route's `.delay(**arguments)`: a new task, with a new name, through whatever the route sends with
(immediate, a request buffer, the outbox). A letter whose request no longer fits the endpoint, for example after
a field was renamed, raises `ReplayArgumentError` naming the parameter and stays open, instead of being sent to
be refused with a 422 again and again.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import fastapi
from google.cloud import tasks_v2
from starlette.datastructures import Headers, QueryParams
from starlette.routing import Match

from fastapi_gcp_tasks.exception import TaskArgumentError
from fastapi_gcp_tasks.receive._record import replaying

if TYPE_CHECKING:
    from fastapi_gcp_tasks.build._plan import RoutePlan
    from fastapi_gcp_tasks.history._letters import DeadLetterStore
    from fastapi_gcp_tasks.history._types import StoredLetter

__all__ = ["ReplayArgumentError", "ReplayReport", "replay_letter", "replay_letter_async", "replay_letters"]

_BOUND_ROUTE = "__fastapi_gcp_tasks_route__"


class ReplayArgumentError(TaskArgumentError):
    """A dead letter that cannot be replayed as it is; `param` names the endpoint parameter that no longer fits.

    The letter stays open: fix the endpoint (or discard the letter) and replay again.
    """

    def __init__(self, message: str, *, param: str | None = None, letter_id: int | None = None) -> None:
        super().__init__(message, param=param)
        self.letter_id = letter_id


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """What `replay_letters` did: the tasks created (letter id, task name) and the letters that failed."""

    replayed: Sequence[tuple[int, str]] = ()
    failed: Sequence[tuple[int, ReplayArgumentError]] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """Whether every letter was replayed."""
        return not self.failed


@dataclass(frozen=True, slots=True)
class _Target:
    """The task route a letter is replayed through, and the endpoint arguments rebuilt from the letter."""

    delay: Any
    arguments: dict[str, Any]


def replay_letter(app: fastapi.FastAPI | fastapi.APIRouter, store: DeadLetterStore, letter_id: int) -> tasks_v2.Task:
    """Replay one open letter through the sync `.delay()` of its route; the letter is marked replayed.

    Raises `ReplayArgumentError` (the letter stays open) when the letter's request no longer fits the endpoint
    or no task route of `app` matches its path; `TaskArgumentError(param="letter_id")` for an unknown letter
    or one that is not open. Use `replay_letter_async` for routes of an async builder.
    """
    letter = _open_letter(store, letter_id)
    target = _target(app, letter)
    with replaying():
        try:
            task: tasks_v2.Task = target.delay(**target.arguments)
        except TaskArgumentError as error:
            raise _no_longer_fits(letter, error) from error
    if inspect.isawaitable(task):
        _close(task)
        raise TaskArgumentError(
            f"the route of {letter.method} {letter.endpoint} was built by an async builder: use replay_letter_async",
            param="app",
        )
    store.mark_replayed(letter_id, str(task.name))
    return task


async def replay_letter_async(
    app: fastapi.FastAPI | fastapi.APIRouter, store: DeadLetterStore, letter_id: int
) -> tasks_v2.Task:
    """`replay_letter` from a coroutine: async routes are awaited, sync ones and the store run in threads."""
    from starlette.concurrency import run_in_threadpool

    letter = await run_in_threadpool(_open_letter, store, letter_id)
    target = _target(app, letter)
    with replaying():
        try:
            if inspect.iscoroutinefunction(target.delay):
                task: tasks_v2.Task = await target.delay(**target.arguments)
            else:  # a sync route's `.delay()` blocks on its RPC: never on the event loop
                task = await run_in_threadpool(functools.partial(target.delay, **target.arguments))
        except TaskArgumentError as error:
            raise _no_longer_fits(letter, error) from error
    await run_in_threadpool(store.mark_replayed, letter_id, str(task.name))
    return task


def replay_letters(
    app: fastapi.FastAPI | fastapi.APIRouter,
    store: DeadLetterStore,
    *,
    endpoint: str | None = None,
    reason: str | None = None,
    limit: int = 1000,
) -> ReplayReport:
    """Replay the open letters matching the filters, up to `limit`, in the order the store lists them.

    A letter that no longer fits is collected in the report and the others go on; errors from sending (the
    queue is unreachable) stop the run and are raised.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise TaskArgumentError(f"limit must be an int >= 1, not {limit!r}", param="limit")
    replayed: list[tuple[int, str]] = []
    failed: list[tuple[int, ReplayArgumentError]] = []
    for letter in _open_letters(store, endpoint=endpoint, reason=reason, limit=limit):
        try:
            task = replay_letter(app, store, letter.letter_id)
        except ReplayArgumentError as error:
            failed.append((letter.letter_id, error))
            continue
        replayed.append((letter.letter_id, str(task.name)))
    return ReplayReport(tuple(replayed), tuple(failed))


def _open_letters(
    store: DeadLetterStore, *, endpoint: str | None, reason: str | None, limit: int
) -> Iterator[StoredLetter]:
    """The open letters to replay, collected before any is replayed (replaying changes what `list` returns)."""
    found: list[StoredLetter] = []
    cursor: str | None = None
    while len(found) < limit:
        page = store.list(
            status="open", endpoint=endpoint, reason=reason, limit=min(limit - len(found), 200), cursor=cursor
        )
        found.extend(page.items)
        cursor = page.next_cursor
        if cursor is None or not page.items:
            break
    yield from found[:limit]


def _open_letter(store: DeadLetterStore, letter_id: int) -> StoredLetter:
    letter: StoredLetter | None = store.get(letter_id)
    if letter is None:
        raise TaskArgumentError(f"there is no dead letter {letter_id!r}", param="letter_id")
    if letter.status != "open":
        raise TaskArgumentError(
            f"dead letter {letter_id} is {letter.status}"
            + (f" (as {letter.replayed_as})" if letter.replayed_as else "")
            + "; only open letters are replayed",
            param="letter_id",
        )
    return letter


def _no_longer_fits(letter: StoredLetter, error: TaskArgumentError) -> ReplayArgumentError:
    return ReplayArgumentError(
        f"dead letter {letter.letter_id} ({letter.method} {letter.endpoint}) no longer fits the endpoint: {error}",
        param=error.param,
        letter_id=letter.letter_id,
    )


def _target(app: fastapi.FastAPI | fastapi.APIRouter, letter: StoredLetter) -> _Target:
    """The task route of `app` matching the letter's method and path, and the arguments rebuilt from the letter."""
    path, _, query = letter.endpoint.partition("?")
    scope: dict[str, Any] = {
        "type": "http",
        "method": letter.method,
        "path": path,
        "root_path": "",
        "query_string": query.encode("latin-1"),
        "headers": [],
    }
    for matcher, route in _candidates(app.routes):
        delay = getattr(route.endpoint, "delay", None)
        bound = getattr(route.endpoint, _BOUND_ROUTE, None)
        plan: RoutePlan | None = getattr(bound, "task_plan", None)
        if delay is None or plan is None or letter.method not in (route.methods or ()):
            continue
        match, child = matcher.matches(dict(scope))
        if match is not Match.FULL:
            continue
        try:
            arguments = plan.from_wire(
                path_params=child.get("path_params", {}),
                query=QueryParams(query),
                headers=Headers(headers=dict(letter.headers)),
                body=letter.body,
            )
        except TaskArgumentError as error:
            raise _no_longer_fits(letter, error) from None
        return _Target(delay, arguments)
    raise ReplayArgumentError(
        f"dead letter {letter.letter_id}: no task route of the app answers {letter.method} {path}",
        param=None,
        letter_id=letter.letter_id,
    )


def _candidates(routes: Sequence[Any]) -> Iterator[tuple[Any, Any]]:
    """`(what to match with, the APIRoute)` for every route, inside included routers too (FastAPI >= 0.137)."""
    for route in routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts is not None:
            for context in contexts():
                original = getattr(context, "original_route", None)
                if isinstance(original, fastapi.routing.APIRoute):
                    yield context, original
        elif isinstance(route, fastapi.routing.APIRoute):
            yield route, route


def _close(awaitable: Any) -> None:
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()
