"""Callback URLs carry the path the app serves each task route at: outer prefixes, mounts, root_path.

Every positive case replays the built request into the app in-process and expects the endpoint to answer
200; the first one also shows the 404 that the prefix used to be missing for.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import subprocess
import sys
import textwrap
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from google.cloud import scheduler_v1, tasks_v2
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.routing import Mount

from fastapi_gcp_tasks import (
    DelayedRouteBuilder,
    RouteDefinitionError,
    ScheduledRouteBuilder,
    TaskBufferMiddleware,
    check_app,
    location_path,
    queue_path,
)
from fastapi_gcp_tasks.build import _reach
from tests.core._replay import Recorder

QUEUE = queue_path(project="p", location="l", queue="q")
LOCATION = location_path(project="p", location="l")
BASE = "http://testserver"


class Note(BaseModel):
    text: str


def declared_in(test: Callable[..., Any]) -> str:
    """The dotted name under which the endpoints defined inside `test` are declared."""
    return f"{test.__module__}.{test.__qualname__}"


def delayed_router(prefix: str = "", base_url: str = BASE) -> APIRouter:
    return APIRouter(route_class=DelayedRouteBuilder(queue_path=QUEUE, callback_base_url=base_url), prefix=prefix)


def send(
    app: Any, method: str, url: str, *, headers: Any = None, body: bytes | None = None, root_path: str = ""
) -> Any:
    """One request into `app` in-process; `root_path` is the server's (as `uvicorn --root-path` sets it)."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, root_path=root_path)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            return await client.request(method, url, headers=headers, content=body or None)

    return asyncio.run(go())


def deliver(app: Any, request: tasks_v2.CreateTaskRequest, *, root_path: str = "") -> Any:
    """Deliver a built task the way Cloud Tasks would."""
    http = request.task.http_request
    method = tasks_v2.HttpMethod(http.http_method).name
    return send(app, method, http.url, headers=dict(http.headers), body=http.body, root_path=root_path)


def deliver_job(app: Any, job: scheduler_v1.Job, *, root_path: str = "") -> Any:
    """Deliver a built job the way Cloud Scheduler would."""
    target = job.http_target
    method = scheduler_v1.HttpMethod(target.http_method).name
    return send(app, method, target.uri, headers=dict(target.headers), body=target.body, root_path=root_path)


def at_startup(app: Any, probe: Callable[[], Any]) -> Any:
    """Run the app's lifespan as a server does, and what `probe()` returns once startup is complete."""
    messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    seen: list[Any] = []

    async def receive() -> dict[str, Any]:
        return await messages.get()

    async def send(message: dict[str, Any]) -> None:
        assert message["type"] != "lifespan.startup.failed", message
        if message["type"] == "lifespan.startup.complete":
            seen.append(probe())
            await messages.put({"type": "lifespan.shutdown"})

    async def go() -> None:
        await messages.put({"type": "lifespan.startup"})
        await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)

    asyncio.run(go())
    (result,) = seen
    return result


def url_of(endpoint: Any, **values: Any) -> str:
    return str(endpoint.options().request(**values).task.http_request.url)


# --- prefixes and mounts ---------------------------------------------------------------------------------


def test_outer_include_router_prefixes_are_found_and_the_task_reaches_its_endpoint() -> None:
    record = Recorder()
    tasks = delayed_router("/notes")

    @tasks.post("/{note_id}")
    def save(note_id: int, note: Note) -> None:
        record(note_id=note_id, note=note)

    outer = APIRouter(prefix="/outer")
    outer.include_router(tasks)
    app = FastAPI()
    app.include_router(outer, prefix="/v1")

    unbound = save.options().request(note_id=7, note=Note(text="hi"))  # type: ignore[attr-defined]
    assert unbound.task.http_request.url == "http://testserver/notes/7"
    assert deliver(app, unbound).status_code == 404  # what issue #13 reported: retried until the queue gives up

    check_app(
        app, declared_in=declared_in(test_outer_include_router_prefixes_are_found_and_the_task_reaches_its_endpoint)
    )
    request = save.options().request(note_id=7, note=Note(text="hi"))  # type: ignore[attr-defined]
    assert request.task.http_request.url == "http://testserver/v1/outer/notes/7"
    response = deliver(app, request)
    assert response.status_code == 200, response.text
    assert record.last == {"note_id": 7, "note": Note(text="hi")}


def test_mounts_of_sub_apps_routers_and_starlette_apps_are_found() -> None:
    record = Recorder()
    in_sub_app = delayed_router()
    in_router = delayed_router()

    @in_sub_app.post("/a")
    def a(n: int) -> None:
        record(a=n)

    @in_router.put("/b/{key}")
    def b(key: str) -> None:
        record(b=key)

    sub = FastAPI()
    sub.include_router(in_sub_app, prefix="/v2")
    api = FastAPI()
    api.mount("/sub", sub)
    api.mount("/plain", in_router)  # an APIRouter is an ASGI app too
    root = Starlette(routes=[Mount("/api", app=api)])

    check_app(root, declared_in=declared_in(test_mounts_of_sub_apps_routers_and_starlette_apps_are_found))
    assert url_of(a, n=1) == "http://testserver/api/sub/v2/a?n=1"
    assert url_of(b, key="k") == "http://testserver/api/plain/b/k"
    assert deliver(root, a.options().request(n=1)).status_code == 200  # type: ignore[attr-defined]
    assert deliver(root, b.options().request(key="k")).status_code == 200  # type: ignore[attr-defined]
    assert record.calls == [{"a": 1}, {"b": "k"}]


def test_the_servers_root_path_is_part_of_the_url() -> None:
    record = Recorder()
    tasks = delayed_router()

    @tasks.post("/x")
    def x() -> None:
        record(x=True)

    app = FastAPI()
    app.include_router(tasks, prefix="/v1")
    check_app(app, root_path="/svc", declared_in=declared_in(test_the_servers_root_path_is_part_of_the_url))
    request = x.options().request()  # type: ignore[attr-defined]
    assert request.task.http_request.url == "http://testserver/svc/v1/x"
    # uvicorn --root-path /svc behind a proxy that strips /svc: the app sees the path with root_path in front
    assert deliver(app, request, root_path="/svc").status_code == 200
    assert record.calls == [{"x": True}]


def test_a_fastapi_root_path_is_read_from_the_app() -> None:
    tasks = delayed_router()

    @tasks.post("/x")
    def x() -> None: ...

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated since FastAPI 0.16x in favour of the server's root path
        app = FastAPI(root_path="/svc")
    app.include_router(tasks, prefix="/v1")
    check_app(app, declared_in=declared_in(test_a_fastapi_root_path_is_read_from_the_app))
    request = x.options().request()  # type: ignore[attr-defined]
    assert request.task.http_request.url == "http://testserver/svc/v1/x"
    assert deliver(app, request).status_code == 200


@pytest.mark.parametrize(
    ("base_url", "root_path"),
    [("http://testserver/v1", ""), ("http://testserver/v1/", ""), ("http://testserver/svc/v1", "/svc")],
)
def test_a_callback_base_url_that_already_ends_with_the_prefix_keeps_working(base_url: str, root_path: str) -> None:
    tasks = delayed_router(base_url=base_url)

    @tasks.post("/x")
    def x() -> None: ...

    app = FastAPI()
    app.include_router(tasks, prefix="/v1")
    check_app(app, root_path=root_path, declared_in=())  # the cases share endpoint names: none is checked
    request = x.options().request()  # type: ignore[attr-defined]
    assert request.task.http_request.url == base_url.rstrip("/") + "/x"
    assert deliver(app, request, root_path=root_path).status_code == 200


def test_scheduled_routes_get_the_prefix_too() -> None:
    record = Recorder()
    crons = APIRouter(route_class=ScheduledRouteBuilder(location_path=LOCATION, callback_base_url=BASE))

    @crons.post("/cleanup")
    def cleanup(days: int) -> None:
        record(days=days)

    sub = FastAPI()
    sub.include_router(crons, prefix="/cron")
    app = FastAPI()
    app.mount("/jobs", sub)
    check_app(app, declared_in=declared_in(test_scheduled_routes_get_the_prefix_too))
    job = cleanup.scheduler(name="reach-cleanup", schedule="0 3 * * *").job(days=3)  # type: ignore[attr-defined]
    assert job.http_target.uri == "http://testserver/jobs/cron/cleanup?days=3"
    assert deliver_job(app, job).status_code == 200
    assert record.calls == [{"days": 3}]


# --- what check_app refuses ------------------------------------------------------------------------------


def test_a_route_reachable_at_two_paths_is_a_clear_error() -> None:
    tasks = delayed_router()

    @tasks.post("/x")
    def twice() -> None: ...

    app = FastAPI()
    app.include_router(tasks, prefix="/a")
    app.include_router(tasks, prefix="/b")
    with pytest.raises(RouteDefinitionError, match=r"twice \(POST /x\) is reachable at 2 paths \('/a/x', '/b/x'\)"):
        check_app(app, declared_in=declared_in(test_a_route_reachable_at_two_paths_is_a_clear_error))
    assert url_of(twice) == "http://testserver/x"  # left alone: no guess between the two


def test_a_sub_app_mounted_twice_is_a_clear_error_and_one_prefix_included_twice_is_not() -> None:
    tasks = delayed_router()

    @tasks.post("/x")
    def job() -> None: ...

    sub = FastAPI()
    sub.include_router(tasks)
    sub.include_router(tasks)  # the same path twice: one URL reaches it
    check_app(
        sub, declared_in=declared_in(test_a_sub_app_mounted_twice_is_a_clear_error_and_one_prefix_included_twice_is_not)
    )
    app = FastAPI()
    app.mount("/one", sub)
    app.mount("/two", sub)
    with pytest.raises(RouteDefinitionError, match=r"'/one/x', '/two/x'"):
        check_app(app, declared_in=())


def test_a_never_included_router_is_named() -> None:
    included = delayed_router()
    forgotten = delayed_router("/emails")

    @included.post("/kept")
    def kept() -> None: ...

    @forgotten.post("/send")
    def send_email() -> None: ...

    app = FastAPI()
    app.include_router(included)
    with pytest.raises(
        RouteDefinitionError, match=r"send_email \(POST /emails/send\), declared in .*, is not reachable"
    ):
        check_app(app, declared_in=declared_in(test_a_never_included_router_is_named))
    app.include_router(forgotten)
    check_app(app, declared_in=declared_in(test_a_never_included_router_is_named))
    assert url_of(send_email) == "http://testserver/emails/send"


def test_by_default_the_modules_of_the_reached_task_endpoints_must_all_be_reached() -> None:
    def included() -> None: ...

    def forgotten() -> None: ...

    def elsewhere() -> None: ...

    included.__module__ = "reachpkg.jobs"
    forgotten.__module__ = "reachpkg.jobs"
    elsewhere.__module__ = "reachpkg.worker"
    routers = [delayed_router(), delayed_router(), delayed_router()]
    for router, endpoint in zip(routers, (included, forgotten, elsewhere), strict=True):
        router.add_api_route(f"/{endpoint.__name__}", endpoint, methods=["POST"])
    app = FastAPI()
    app.include_router(routers[0])
    with pytest.raises(RouteDefinitionError) as refused:
        check_app(app)
    assert "declared in reachpkg.jobs." in str(refused.value)
    assert "forgotten" in str(refused.value)
    assert "reachpkg.worker" not in str(refused.value)
    with pytest.raises(RouteDefinitionError, match=r"declared in reachpkg\.worker\."):
        check_app(app, declared_in="reachpkg")
    check_app(app, declared_in=())  # nothing else is required


def test_a_mount_with_a_path_parameter_is_refused_and_no_request_binds_its_value() -> None:
    tasks = delayed_router()

    @tasks.post("/x")
    def per_tenant() -> None: ...

    sub = FastAPI()
    sub.include_router(tasks)
    app = FastAPI()
    app.mount("/t/{tenant}", sub)
    with pytest.raises(RouteDefinitionError, match=r"reachable only under '/t/\{tenant\}'"):
        check_app(app, declared_in=())
    # A delivery into the sub-app must not make every later task go to this one tenant.
    assert send(app, "POST", "/t/acme/x").status_code == 200
    assert url_of(per_tenant) == "http://testserver/x"


def test_a_task_route_hidden_behind_an_earlier_mount_or_catch_all_is_named() -> None:
    tasks = delayed_router()

    @tasks.post("/x")
    def hidden() -> None: ...

    app = FastAPI()

    @app.get("/{anything:path}")
    def spa(anything: str) -> str:  # GET only: a POST task passes it by
        return anything

    app.mount("/", Starlette(routes=[]))
    app.include_router(tasks, prefix="/v1")
    with pytest.raises(RouteDefinitionError, match=r"'/v1/x' is answered by the mount at '/'"):
        check_app(app, declared_in=())
    assert deliver(app, hidden.options().request()).status_code == 404  # type: ignore[attr-defined]


def test_a_callback_base_url_repeating_part_of_the_prefix_is_named() -> None:
    tasks = delayed_router(base_url="http://testserver/api")

    @tasks.post("/x")
    def doubled() -> None: ...

    app = FastAPI()
    app.include_router(tasks, prefix="/api/v1")
    with pytest.raises(RouteDefinitionError, match=r"ends with '/api'.*'http://testserver/api/api/v1/x'"):
        check_app(app, declared_in=())


# --- the automatic triggers ------------------------------------------------------------------------------


def test_a_request_through_a_task_route_binds_the_other_task_routes_of_its_app() -> None:
    tasks = delayed_router()

    @tasks.post("/ping")
    def ping() -> None: ...

    @tasks.post("/pong")
    def pong() -> None: ...

    sub = FastAPI()
    sub.include_router(tasks, prefix="/w")
    app = FastAPI()
    app.mount("/sub", sub)
    assert url_of(pong) == "http://testserver/pong"
    assert send(app, "POST", "/sub/w/ping").status_code == 200
    request = pong.options().request()  # type: ignore[attr-defined]
    assert request.task.http_request.url == "http://testserver/sub/w/pong"
    assert deliver(app, request).status_code == 200


def test_a_request_through_a_router_mounted_inside_the_app_binds_with_the_apps_own_root_path() -> None:
    tasks = delayed_router()

    @tasks.post("/b")
    def b() -> None: ...

    @tasks.post("/c")
    def c() -> None: ...

    app = FastAPI()
    app.mount("/plain", tasks)  # the route sees root_path "/svc/plain", the app "/svc"
    assert send(app, "POST", "/svc/plain/b", root_path="/svc").status_code == 200
    request = c.options().request()  # type: ignore[attr-defined]
    assert request.task.http_request.url == "http://testserver/svc/plain/c"
    assert deliver(app, request, root_path="/svc").status_code == 200


def test_a_request_with_the_servers_root_path_binds_with_it() -> None:
    tasks = delayed_router()

    @tasks.post("/a")
    def a() -> None: ...

    @tasks.post("/b")
    def b() -> None: ...

    app = FastAPI()
    app.include_router(tasks, prefix="/v1")
    assert send(app, "POST", "/svc/v1/a", root_path="/svc").status_code == 200
    assert url_of(b) == "http://testserver/svc/v1/b"


def test_the_buffer_middleware_binds_at_lifespan_startup() -> None:
    tasks = delayed_router()

    @tasks.post("/x")
    def x() -> None: ...

    app = FastAPI()
    app.include_router(tasks, prefix="/v1")
    app.add_middleware(TaskBufferMiddleware)
    assert url_of(x) == "http://testserver/x"
    assert at_startup(app, lambda: url_of(x)) == "http://testserver/v1/x"  # startup only, no request


def test_the_buffer_middleware_binds_on_any_request() -> None:
    tasks = delayed_router()

    @tasks.post("/x")
    def x() -> None: ...

    app = FastAPI()

    @app.get("/health")
    def health() -> str:
        return "ok"

    app.include_router(tasks, prefix="/v1")
    app.add_middleware(TaskBufferMiddleware)
    assert send(app, "GET", "/health").status_code == 200
    assert url_of(x) == "http://testserver/v1/x"


def test_a_binding_problem_never_fails_a_request_and_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    tasks = delayed_router()

    @tasks.post("/x")
    def logged_once() -> None: ...

    app = FastAPI()
    app.include_router(tasks, prefix="/a")
    app.include_router(tasks, prefix="/b")
    with caplog.at_level(logging.ERROR, logger="fastapi_gcp_tasks.reach"):
        assert send(app, "POST", "/a/x").status_code == 200
        assert send(app, "POST", "/b/x").status_code == 200
    errors = [r for r in caplog.records if "logged_once" in r.getMessage()]
    assert len(errors) == 1, errors
    assert errors[0].levelno == logging.ERROR


def test_an_app_is_walked_once_then_a_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    tasks = delayed_router()

    @tasks.post("/x")
    def x() -> None: ...

    app = FastAPI()
    app.include_router(tasks, prefix="/v1")
    app.add_middleware(TaskBufferMiddleware)
    walks: list[Any] = []
    walk = _reach._routing_table

    def counting(app: Any) -> Any:
        walks.append(app)
        return walk(app)

    monkeypatch.setattr(_reach, "_routing_table", counting)
    for _ in range(3):
        assert send(app, "POST", "/v1/x").status_code == 200
    assert walks == [app]


def test_a_failing_walk_is_logged_and_the_request_served(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    tasks = delayed_router()

    @tasks.post("/x")
    def x() -> None: ...

    app = FastAPI()
    app.include_router(tasks)

    def broken(app: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(_reach, "_routing_table", broken)
    with caplog.at_level(logging.ERROR, logger="fastapi_gcp_tasks.reach"):
        assert send(app, "POST", "/x").status_code == 200
        assert send(app, "POST", "/x").status_code == 200
    failures = [r for r in caplog.records if r.exc_info]
    assert len(failures) == 1, failures  # once: the app is not walked again on every request
    assert "boom" in str(failures[0].exc_info[1])  # type: ignore[index]


def test_bound_apps_are_held_weakly() -> None:
    tasks = delayed_router()

    @tasks.post("/x")
    def x() -> None: ...

    app = FastAPI()
    app.include_router(tasks, prefix="/v1")
    check_app(app, declared_in=())
    gone = weakref.ref(app)
    del app
    gc.collect()
    assert gone() is None
    assert all(entry.app() is not None for entry in _reach._bound.values())


# --- the pytest plugin -----------------------------------------------------------------------------------


def test_the_pytest_plugin_checks_the_apps_named_in_gcp_tasks_apps(tmp_path: Path) -> None:
    (tmp_path / "goodapp.py").write_text(
        textwrap.dedent(
            """
            from fastapi import APIRouter, FastAPI
            from fastapi_gcp_tasks import DelayedRouteBuilder

            tasks = APIRouter(route_class=DelayedRouteBuilder(queue_path="projects/p/locations/l/queues/q",
                                                              callback_base_url="https://w.example"))

            @tasks.post("/hello")
            def hello() -> None: ...

            app = FastAPI()
            app.include_router(tasks, prefix="/v1")
            """
        )
    )
    (tmp_path / "badapp.py").write_text(
        textwrap.dedent(
            """
            from fastapi import APIRouter, FastAPI
            from fastapi_gcp_tasks import DelayedRouteBuilder

            tasks = APIRouter(route_class=DelayedRouteBuilder(queue_path="projects/p/locations/l/queues/q",
                                                              callback_base_url="https://w.example"))

            @tasks.post("/bye")
            def bye() -> None: ...

            app = FastAPI()
            app.include_router(tasks, prefix="/a")
            app.include_router(tasks, prefix="/b")
            """
        )
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\npythonpath = .\ngcp_tasks_apps = goodapp:app badapp:app\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rf"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "1 failed, 1 passed" in output, output
    assert "bye (POST /bye) is reachable at 2 paths ('/a/bye', '/b/bye')" in output, output
    assert "Traceback" not in output, output
