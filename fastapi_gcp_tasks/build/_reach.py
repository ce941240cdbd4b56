"""Where each task route is reachable in an app, so that its callback URL carries the whole path.

A task route knows only the path it was declared with (its own router's prefix included). What stands in
front of it in the app that serves it (an outer `include_router(prefix=...)`, `app.mount(...)`, a
Starlette `Mount`, the app's `root_path`) is known only once the app is; a callback URL built without it
is answered 404, and Cloud Tasks retries that until the queue gives up. This module walks an app's
routing table in the order its routers try routes (both FastAPI generations: before 0.137
`include_router` copies routes, recognised here by the `_RegistrationMarker` they share with the
original; since then it keeps included routers, read with `fastapi.routing.iter_route_contexts`), finds
every path of each task route, and sets `RoutePlan.mount_prefix` where there is exactly one.

When it runs:

* `check_app(app)`, explicitly (at startup, in a deploy check, by the pytest plugin's `gcp_tasks_apps`):
  binds, then raises `RouteDefinitionError` listing every task route whose callback URL would not reach it;
* `bind_scope_app(scope)`, from the first request a task route handles in an app and from the first scope
  (lifespan startup included) the buffer middleware sees: a dict lookup once the app is bound, never
  raises, logs each problem at ERROR once.

`root_path` (the ASGI scope's, as `uvicorn --root-path` sets it, or the deprecated
`FastAPI(root_path=...)`) is the path the outside world puts in front of the app, typically a proxy that
strips it before the app sees the request. It is part of the prefix: `callback_base_url` is the address
that root_path is relative to. A base URL that already ends with the whole prefix is used as it is
(`RoutePlan.callback_url`), so base URLs written for fastapi-gcp-tasks 0.3 keep working.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import logging
import threading
import weakref
from collections.abc import Callable, Collection, Coroutine, Iterable, Iterator, MutableMapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import fastapi.routing
from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute
from starlette.applications import Starlette
from starlette.convertors import CONVERTOR_TYPES
from starlette.routing import BaseRoute, Host, Mount, Route, Router, compile_path

from fastapi_gcp_tasks.build._plan import RoutePlan
from fastapi_gcp_tasks.exception import RouteDefinitionError

__all__ = ["AppReach", "TaskReach", "bind_app", "bind_app_on_request", "bind_scope_app", "check_app"]

logger = logging.getLogger("fastapi_gcp_tasks.reach")

RouteHandler = Callable[[Request], Coroutine[Any, Any, Response]]

_MAX_DEPTH = 32
"""Mounts and middleware followed at most: an app graph with a cycle cannot make the walk loop."""

_SAMPLE_VALUES = {"str": "x", "path": "x", "int": "1", "float": "1", "uuid": "00000000-0000-4000-8000-000000000000"}
"""A value of each Starlette convertor, to make a concrete path that earlier routes are tried against."""

_lock = threading.Lock()
_bound: dict[int, _Bound] = {}
"""id(app) -> how it was bound: what makes the triggers a lookup once an app is bound."""
_prefix_owners: weakref.WeakKeyDictionary[RoutePlan, tuple[weakref.ref[Any] | None, str]] = weakref.WeakKeyDictionary()
"""The app whose walk set each plan's prefix, to warn when two live apps disagree."""
_declared: weakref.WeakValueDictionary[int, APIRoute] = weakref.WeakValueDictionary()
"""Every worker route constructed in the process, for `check_app`'s never-included check."""
_logged: set[str] = set()
"""Problems already logged by the request triggers (each once per process)."""


# --- the routing table ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Entry:
    """One route of an app's routing table, in the order the routers try them."""

    path: str
    """Its path relative to the app (root_path left out), outer prefixes and mounts included."""
    route: BaseRoute
    task_route: APIRoute | None
    """The task route it serves (for a route FastAPI copied on include, the original)."""
    methods: frozenset[str] | None
    """The methods it answers; None when it answers every method (a mount, a class endpoint)."""
    mount_number: int | None
    """For a mount: its position in the table; the entries inside it list that number in `inside`."""
    inside: tuple[int, ...]
    under_host: bool
    """Behind a `Host` route: it answers one host name only, so it never hides routes of other hosts."""


def _plan_of(route: APIRoute) -> RoutePlan:
    """The plan of a task route (`_task_route_of` returned it, so it has one)."""
    plan: RoutePlan = getattr(route, "task_plan")  # noqa: B009 - set by the route classes of `_routes`
    return plan


def _task_route_of(route: BaseRoute) -> APIRoute | None:
    """The task route `route` serves: itself, or for a copy made by FastAPI before 0.137, the original."""
    if not isinstance(route, APIRoute):
        return None
    if isinstance(getattr(route, "task_plan", None), RoutePlan):
        return route
    original = getattr(route.openapi_extra, "route", None)  # `_routes._RegistrationMarker.route`
    if isinstance(original, APIRoute) and isinstance(getattr(original, "task_plan", None), RoutePlan):
        return original
    return None


def _routes_of(app: Any) -> Sequence[BaseRoute] | None:
    """The routes of an ASGI app, looking through middleware (`.app`); None for an app with no routes."""
    for _ in range(_MAX_DEPTH):
        if isinstance(app, Starlette):
            return app.router.routes
        if isinstance(app, Router):
            return app.routes
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


def _flattened(routes: Sequence[BaseRoute]) -> Iterator[tuple[BaseRoute, Any]]:
    """Each route with the object holding its effective path (and `.app`, `.methods`), in routing order.

    Since FastAPI 0.137 an included router stays one entry whose routes get their prefix from an
    inclusion context; `iter_route_contexts` yields them flattened. Before, included routes are copies.
    """
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if contexts is None:
        for route in routes:
            yield route, route
        return
    for context in contexts(routes):
        yield context.original_route, context


def _path_of(effective: Any, route: Mount | Route) -> str:
    """The path a route answers at in its router: with the prefix of the inclusion it is seen through."""
    path = getattr(effective, "path", None)
    return path if isinstance(path, str) else route.path


def _routing_table(app: Any) -> list[_Entry]:
    """Every HTTP route and mount reachable in `app`, in the order its routers try them."""
    table: list[_Entry] = []
    _walk(app, "", (), False, table, set())
    return table


def _walk(
    app: Any, prefix: str, inside: tuple[int, ...], under_host: bool, table: list[_Entry], active: set[int]
) -> None:
    """Append the routes of `app`, served under `prefix`, to `table`; descend into mounts and hosts.

    `active` holds the route lists being walked (the mount chain), so that an app mounted in itself stops.
    """
    routes = _routes_of(app)
    if routes is None or id(routes) in active or len(active) > _MAX_DEPTH:
        return
    active.add(id(routes))
    try:
        for route, effective in _flattened(routes):
            if isinstance(route, Mount):
                path = prefix + _path_of(effective, route)
                number = len(table)
                table.append(_Entry(path, route, None, None, number, inside, under_host))
                _walk(getattr(effective, "app", None), path, (*inside, number), under_host, table, active)
            elif isinstance(route, Host):
                _walk(getattr(effective, "app", None), prefix, inside, True, table, active)
            elif isinstance(route, Route):
                methods = getattr(effective, "methods", None)
                table.append(
                    _Entry(
                        path=prefix + _path_of(effective, route),
                        route=route,
                        task_route=_task_route_of(route),
                        methods=None if methods is None else frozenset(methods),
                        mount_number=None,
                        inside=inside,
                        under_host=under_host,
                    )
                )
    finally:
        active.discard(id(routes))


# --- what the table says about each task route -----------------------------------------------------------


def _describe(route: APIRoute) -> str:
    name = getattr(route.endpoint, "__qualname__", None) or route.name
    return f"{name} ({'/'.join(sorted(route.methods or ()))} {route.path})"


def _dotted_name(route: APIRoute) -> str:
    """Where the endpoint is declared: `module.qualname`."""
    endpoint = route.endpoint
    name = getattr(endpoint, "__qualname__", None) or route.name
    return f"{getattr(endpoint, '__module__', None) or '?'}.{name}"


@dataclasses.dataclass(frozen=True, slots=True)
class TaskReach:
    """Where one task route is reachable in an app."""

    route: APIRoute
    paths: tuple[str, ...]
    """Every distinct path it is reachable at, relative to the app (root_path left out), in routing order."""
    prefix: str | None
    """root_path plus what stands in front of the route's own path; None when there is no single one."""
    problem: str | None
    """Why there is no single prefix, naming the endpoint."""


@dataclasses.dataclass(frozen=True, slots=True)
class AppReach:
    """What one walk of an app found."""

    root_path: str
    tasks: tuple[TaskReach, ...]
    table: tuple[_Entry, ...]

    @property
    def problems(self) -> list[str]:
        """The task routes whose callback URL cannot be composed, one message each."""
        return [task.problem for task in self.tasks if task.problem is not None]


def _task_reach(route: APIRoute, paths: tuple[str, ...], root: str) -> TaskReach:
    name = _describe(route)
    if len(paths) > 1:
        listed = ", ".join(repr(root + path) for path in paths)
        return TaskReach(
            route,
            paths,
            None,
            f"{name} is reachable at {len(paths)} paths ({listed}); its .delay() can reach only one: "
            "include its router once, or declare one endpoint function per path",
        )
    (path,) = paths
    own = route.path
    if not path.endswith(own):
        return TaskReach(
            route,
            paths,
            None,
            f"{name} is reachable at {root + path!r}, which does not end with its own path {own!r}: "
            "the prefix its callback URL needs cannot be told",
        )
    prefix = root + path[: len(path) - len(own)]
    if "{" in prefix:
        return TaskReach(
            route,
            paths,
            None,
            f"{name} is reachable only under {prefix!r}: .delay() cannot fill path parameters of a mount or "
            "router prefix; declare the parameter in the endpoint's own path instead",
        )
    return TaskReach(route, paths, prefix, None)


def _effective_root(app: Any, root_path: str | None) -> str:
    """The root_path the app runs under: `FastAPI(root_path=...)` replaces the server's, as FastAPI does."""
    own = app.root_path if isinstance(app, FastAPI) else ""
    return (own or root_path or "").rstrip("/")


def _reach_from(table: list[_Entry], root: str) -> AppReach:
    found: dict[int, tuple[APIRoute, list[str]]] = {}
    for entry in table:
        if entry.task_route is not None:
            paths = found.setdefault(id(entry.task_route), (entry.task_route, []))[1]
            if entry.path not in paths:
                paths.append(entry.path)
    tasks = tuple(_task_reach(route, tuple(paths), root) for route, paths in found.values())
    return AppReach(root_path=root, tasks=tasks, table=tuple(table))


# --- binding --------------------------------------------------------------------------------------------


def _weak(app: Any) -> weakref.ref[Any] | None:
    try:
        return weakref.ref(app)
    except TypeError:
        return None


@dataclasses.dataclass(slots=True)
class _Bound:
    """An app already bound: the root path it was bound under, and the scope root paths known to lead to it."""

    app: weakref.ref[Any]
    root_path: str
    scope_roots: set[str]
    """`scope["root_path"]` values of requests already handled: a route behind a mount inside the app sees
    the app's root path plus that mount's path."""


def _forget(key: int, ref: weakref.ref[Any]) -> None:
    """Weak reference callback: the app is gone, so is its entry (unless a new app took the id since)."""
    entry = _bound.get(key)
    if entry is not None and entry.app is ref:
        _bound.pop(key, None)


def _remember(app: Any, root_path: str | None, scope_root: str) -> None:
    """Mark `app` bound under `root_path` (None: keep its binding) and `scope_root` as leading to it.

    Apps that take no weak reference are never marked: they are walked again by each trigger.
    """
    key = id(app)
    known = _bound.get(key)
    if known is not None and known.app() is app and (root_path is None or known.root_path == root_path):
        known.scope_roots.add(scope_root)
        return
    try:
        ref = weakref.ref(app, functools.partial(_forget, key))
    except TypeError:
        return
    _bound[key] = _Bound(ref, root_path or "", {scope_root})


def _set_prefix(route: APIRoute, prefix: str, app: Any) -> None:
    plan = _plan_of(route)
    previous = _prefix_owners.get(plan)
    owner = previous[0]() if previous is not None and previous[0] is not None else None
    if owner is not None and owner is not app and previous is not None and previous[1] != prefix:
        logger.warning(
            "%s: two live apps put this task route under different prefixes (%r, then %r); "
            "its callback URL now uses the latest. Serve each task route from one app per process.",
            _describe(route),
            previous[1],
            prefix,
        )
    plan.mount_prefix = prefix
    _prefix_owners[plan] = (_weak(app), prefix)


def _bind(app: Any, table: list[_Entry], root_path: str | None, scope_root: str) -> AppReach:
    root = _effective_root(app, root_path)
    reach = _reach_from(table, root)
    with _lock:
        for task in reach.tasks:
            if task.prefix is not None:
                _set_prefix(task.route, task.prefix, app)
        _remember(app, root, scope_root)
    return reach


def bind_app(app: Any, root_path: str | None = None) -> AppReach:
    """Walk `app` and set the mount prefix of every task route reachable at exactly one path.

    `root_path` is the server's (the ASGI scope's); None when unknown, then only `FastAPI(root_path=...)`
    counts. Routes with problems keep their prefix; the problems are in the result. Always walks: the
    triggers call it only the first time they see an app (see `bind_scope_app`).
    """
    root = _effective_root(app, root_path)
    return _bind(app, _routing_table(app), root_path, root if root_path is None else root_path)


def _log_once(message: str) -> None:
    with _lock:
        if message in _logged:
            return
        _logged.add(message)
    logger.error("%s", message)


def _app_root(table: list[_Entry], route: BaseRoute, scope_root: str) -> str | None:
    """The app's own root path, from the one `route` saw: the mounts between the app and the route removed.

    None when the route is not in the table, or its places in it disagree.
    """
    found: set[str] = set()
    for entry in table:
        if entry.route is route:
            inner = table[entry.inside[-1]].path if entry.inside else ""
            if "{" in inner or not scope_root.endswith(inner):
                return None
            found.add(scope_root[: len(scope_root) - len(inner)])
    return found.pop() if len(found) == 1 else None


def bind_scope_app(scope: MutableMapping[str, Any], fallback: Any = None, route: APIRoute | None = None) -> None:
    """Bind the app handling `scope` (its `"app"`, else `fallback`) the first time it is seen. Never raises.

    After the first time it is a dict and a set lookup. A problem is logged at ERROR once, never turned
    into an error response: the request itself is served as usual. `route` is the route handling the
    request (None for middleware): its path parameters are its own, any other one in the scope comes from
    a mount or router prefix whose value belongs to this request only, so the app is not bound from it.
    """
    app = scope.get("app", fallback)
    if app is None:
        return
    scope_root = scope.get("root_path", "")
    known = _bound.get(id(app))
    if known is not None and scope_root in known.scope_roots and known.app() is app:
        return
    try:
        own_params = route.param_convertors if route is not None else {}
        prefix_params = sorted(name for name in scope.get("path_params", ()) if name not in own_params)
        if prefix_params:
            _log_once(
                f"task routes of {app!r} are served under a mount or prefix with path parameters "
                f"({', '.join(prefix_params)}): .delay() cannot fill them, so their callback URLs lack that "
                "part; declare the parameters in the endpoints' own paths"
            )
            return
        table = _routing_table(app)
        app_root = scope_root if route is None else _app_root(table, route, scope_root)
        if app_root is None:  # cannot tell the app's own root path from this request: leave it to others
            with _lock:
                _remember(app, None, scope_root)
            return
        reach = _bind(app, table, app_root, scope_root)
    except Exception:  # a request must never fail because its app could not be inspected
        with _lock:
            _remember(app, None, scope_root)
        logger.exception("could not find where the task routes of %r are served; their callback URLs lack it", app)
        return
    for problem in reach.problems:
        _log_once(problem)


def bind_app_on_request(route: APIRoute, handler: RouteHandler) -> RouteHandler:
    """Wrap a worker route's handler so that a request binds its app first; record the route as declared.

    Called by `WorkerRoute.get_route_handler`, which FastAPI calls when the route is constructed (and, since
    0.137, once per inclusion of its router).
    """
    with _lock:
        _declared[id(route)] = route

    async def handle(request: Request) -> Response:
        bind_scope_app(request.scope, None, route)
        return await handler(request)

    return handle


# --- the check ------------------------------------------------------------------------------------------


def _sample_path(path: str) -> str | None:
    """A concrete path `path` matches (None for a custom convertor)."""
    regex, path_format, convertors = compile_path(path)
    values: dict[str, str] = {}
    for name, convertor in convertors.items():
        sample = next((v for k, v in _SAMPLE_VALUES.items() if type(CONVERTOR_TYPES[k]) is type(convertor)), None)
        if sample is None:
            return None
        values[name] = sample
    concrete = path_format.format(**values)
    return concrete if regex.match(concrete) else None


def _shadowed(reach: AppReach) -> Iterator[str]:
    """Task routes whose path is answered by a route or mount the router tries before them."""
    for task in reach.tasks:
        if task.prefix is None:
            continue
        index, entry = next((i, e) for i, e in enumerate(reach.table) if e.task_route is task.route)
        sample = _sample_path(entry.path)
        if sample is None:
            continue
        methods = frozenset(task.route.methods or ())
        for earlier in reach.table[:index]:
            if earlier.under_host or (earlier.mount_number is not None and earlier.mount_number in entry.inside):
                continue
            if earlier.mount_number is None and earlier.methods is not None and not earlier.methods & methods:
                continue
            pattern = earlier.path + "/{path:path}" if earlier.mount_number is not None else earlier.path
            if compile_path(pattern)[0].match(sample):
                kind = "the mount" if earlier.mount_number is not None else "the route"
                yield (
                    f"{_describe(task.route)}: a request to {reach.root_path + sample!r} is answered by {kind} at "
                    f"{reach.root_path + earlier.path or '/'!r}, which comes first in the app; move the task's "
                    "router before it"
                )
                break


def _callback_base_url(route: APIRoute) -> str | None:
    config = getattr(getattr(route, "task_delayer", None), "config", None)
    base = getattr(config, "callback_base_url", None)
    return base if isinstance(base, str) else None


def _base_url_clashes(reach: AppReach) -> Iterator[str]:
    """Delayed task routes whose `callback_base_url` path repeats part of the prefix found in the app.

    A base URL ending with the whole prefix is used as it is; one ending with a segment the prefix also
    has (`https://h/api` for the prefix `/api/v1`) most likely holds part of the prefix written by hand,
    and the URL would repeat it.
    """
    for task in reach.tasks:
        base = _callback_base_url(task.route)
        if not task.prefix or base is None:
            continue
        parts = urlsplit(base)
        base_path = parts.path.rstrip("/")
        if not base_path or base_path.endswith(task.prefix):
            continue
        last = base_path.rsplit("/", 1)[-1]
        if last in task.prefix.split("/"):
            url = _plan_of(task.route).callback_url(base, task.route.path)
            yield (
                f"{_describe(task.route)}: callback_base_url {base!r} ends with '/{last}', which the prefix "
                f"{task.prefix!r} found in the app contains too, so the callback URL would be {url!r}; give "
                f"callback_base_url without what the app adds ({parts.scheme}://{parts.netloc}) or ending with "
                "the whole prefix"
            )


def _in_scopes(dotted: str, scopes: Collection[str]) -> bool:
    return any(dotted == scope or dotted.startswith(scope + ".") for scope in scopes)


def _unreached(reach: AppReach, declared_in: str | Iterable[str] | None) -> list[str]:
    """Task routes declared under `declared_in` that the app does not reach at all."""
    if declared_in is None:  # the modules of the reached task endpoints: a router forgotten beside them
        scopes = {getattr(task.route.endpoint, "__module__", None) or "?" for task in reach.tasks}
    else:
        scopes = {declared_in} if isinstance(declared_in, str) else set(declared_in)
    reached = {id(task.route) for task in reach.tasks}

    def candidates() -> list[APIRoute]:
        with _lock:
            routes = list(_declared.values())
        return [
            route
            for route in routes
            if id(route) not in reached
            and isinstance(getattr(route, "task_plan", None), RoutePlan)
            and _in_scopes(_dotted_name(route), scopes)
        ]

    if not scopes or not candidates():
        return []
    gc.collect()  # routers that are only garbage (a finished test, a reloaded module) do not count
    return [
        f"{_describe(route)}, declared in {_dotted_name(route)}, is not reachable in this app: include its "
        "router, or leave it out of declared_in"
        for route in sorted(candidates(), key=_dotted_name)
    ]


def _unresolved(reach: AppReach) -> Iterator[str]:
    """Task routes whose types still name something undefined (forward references FastAPI cannot see)."""
    for task in reach.tasks:
        try:
            _plan_of(task.route).resolve()
        except RouteDefinitionError as exc:
            yield str(exc)


def check_app(app: Any, *, root_path: str | None = None, declared_in: str | Iterable[str] | None = None) -> None:
    """Find where each task route is served in `app`, use it for callback URLs, and refuse what would 404.

    A task route's callback URL is `callback_base_url` + the prefix found here + the route's own path. The
    prefix (outer `include_router` prefixes, mounts, root_path) is found automatically the first time a
    task route or the buffer middleware sees the app; calling this at startup makes it known before the
    first `.delay()`, and makes the problems fail loudly instead of being logged. Call it once every router
    is included and every sub-app mounted (in a lifespan, or at the end of the module that builds the app),
    or let the pytest plugin run it (`gcp_tasks_apps`).

    Raises `RouteDefinitionError` listing every task route whose callback URL would not reach it:

    * reachable at two or more paths (one router included twice, one sub-app mounted twice): `.delay()`
      can reach one only;
    * reachable only under a mount or prefix with path parameters, which `.delay()` cannot fill;
    * answered by a route or mount the app tries first (a catch-all route, `app.mount("/", ...)`);
    * a delayed route whose `callback_base_url` ends with part of the prefix found, which the URL would
      then repeat (a base URL ending with the whole prefix is fine and used as it is);
    * typed with a name that is still undefined (a forward reference FastAPI cannot resolve either);
    * declared but not reachable in `app` at all (a router never included), among the endpoints declared
      under `declared_in`: dotted names of packages, modules or classes (`"myproj"`, `"myproj.jobs"`).
      By default, the modules of the task endpoints `app` does reach (a router declared beside them and
      forgotten); `()` checks none. Several apps of one package (an API and a worker service) keep their
      own task modules apart this way.

    Args:
        app: a FastAPI or Starlette app, a Router, or middleware wrapping one.
        root_path: the server's root path (`uvicorn --root-path`), when the app runs behind a proxy that
            strips it; `FastAPI(root_path=...)` is read from the app.
        declared_in: where the endpoints that must all be reachable in `app` are declared.
    """
    reach = bind_app(app, root_path)
    problems = [
        *reach.problems,
        *_unresolved(reach),
        *_shadowed(reach),
        *_base_url_clashes(reach),
        *_unreached(reach, declared_in),
    ]
    if problems:
        listed = "\n".join(f"  - {problem}" for problem in problems)
        raise RouteDefinitionError(
            f"{len(problems)} task route problem(s) in this {type(app).__name__}: callback URLs would not reach "
            f"their endpoint\n{listed}"
        )
