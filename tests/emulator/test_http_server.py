"""The emulator's HTTP port: routes generated from the clients' HTTP rules, the router, mounted apps, limits."""

from __future__ import annotations

import inspect
import logging
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from google.cloud import tasks_v2
from google.cloud.scheduler_v1.services.cloud_scheduler.transports import grpc as scheduler_grpc
from google.cloud.tasks_v2.services.cloud_tasks.transports import grpc as tasks_grpc
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from fastapi_gcp_tasks.emulator._http_server import HttpServer
from fastapi_gcp_tasks.emulator._oidc import TokenSigner
from fastapi_gcp_tasks.emulator._rest import compile_route, service_routes
from fastapi_gcp_tasks.emulator._rpc import Method
from fastapi_gcp_tasks.emulator._server import EmulatorServer

QUEUE = "projects/p/locations/l/queues/q"


def _grpc_methods(module: Any) -> set[tuple[str, str]]:
    """Every (service, method) whose stub the official gRPC transport creates."""
    found = re.findall(r'"/([\w.]+)/(\w+)"', inspect.getsource(module))
    return set(found)


def test_the_route_table_covers_every_method_of_both_services() -> None:
    """A new RPC in the clients gets a route without anyone writing one (UNIMPLEMENTED until served)."""
    routed = {(route.service, route.name) for route in service_routes()}
    for module in (tasks_grpc, scheduler_grpc):
        methods = _grpc_methods(module)
        assert methods
        assert methods <= routed, methods - routed
    served = {(method.service, method.name) for method in EmulatorServer().methods}
    assert ("google.longrunning.Operations", "GetOperation") in served
    assert len({service for service, _ in served}) == 3
    assert served <= routed, served - routed


def test_routes_follow_the_http_rules() -> None:
    by_name = {route.name: route for route in service_routes() if route.service.startswith("google.cloud.tasks")}
    update = by_name["UpdateQueue"]
    assert (update.verb, update.fields, update.body) == ("PATCH", ("queue.name",), "queue")
    pause = by_name["PauseQueue"]
    assert pause.pattern.fullmatch(f"/v2/{QUEUE}:pause")
    assert not by_name["GetQueue"].pattern.fullmatch(f"/v2/{QUEUE}:pause")
    assert not by_name["GetQueue"].pattern.fullmatch(f"/v2/{QUEUE}/extra")
    listed = by_name["ListTasks"].pattern.fullmatch(f"/v2/{QUEUE}/tasks")
    assert listed is not None
    assert listed.groups() == (QUEUE,)


def test_templates_compile_with_double_wildcards_and_literals() -> None:
    route = compile_route("s.S", "Get", "get", "/v1/{name=operations/**}/x/{id}:do", None)
    match = route.pattern.fullmatch("/v1/operations/a/b/c/x/7:do")
    assert match is not None
    assert match.groups() == ("operations/a/b/c", "7")
    assert route.fields == ("name", "id")
    assert not route.pattern.fullmatch("/v1/operations/a/x/7")
    assert not route.pattern.fullmatch("/v1/other/a/x/7:do")


# -- the router ----------------------------------------------------------------------------------------------------


def _broken(request: Any) -> Any:
    raise RuntimeError("handler bug")


def _echo(request: Any) -> Any:
    return request


METHODS = [
    Method("google.cloud.tasks.v2.CloudTasks", "GetQueue", _echo, tasks_v2.GetQueueRequest),
    Method("google.cloud.tasks.v2.CloudTasks", "PauseQueue", _broken, tasks_v2.PauseQueueRequest),
]


async def _console(scope: Scope, receive: Receive, send: Send) -> None:
    await PlainTextResponse(f"console {scope['path']}")(scope, receive, send)


async def _ui(scope: Scope, receive: Receive, send: Send) -> None:
    await PlainTextResponse(f"ui {scope['path']}")(scope, receive, send)


@pytest.fixture
async def http() -> AsyncIterator[tuple[HttpServer, httpx.AsyncClient]]:
    server = HttpServer(TokenSigner("http://issuer.test"), METHODS)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(server.app), base_url="http://emulator.test") as client:
        yield server, client


async def test_without_a_mounted_app_other_paths_are_json_404s(http: tuple[HttpServer, httpx.AsyncClient]) -> None:
    _, client = http
    response = await client.get("/console")
    assert response.status_code == 404
    assert response.json()["error"]["status"] == "NOT_FOUND"


async def test_a_mounted_app_gets_everything_but_oidc_and_rest(http: tuple[HttpServer, httpx.AsyncClient]) -> None:
    server, client = http
    server.mount("/", _console)
    server.mount("/ui", _ui)
    assert (await client.get("/")).text == "console /"
    assert (await client.get("/tasks/x")).text == "console /tasks/x"
    assert (await client.get("/ui/page")).text == "ui /ui/page"  # Starlette keeps the path, sets root_path
    assert (await client.get("/jwks")).json()["keys"]
    assert (await client.get("/.well-known/openid-configuration")).json()["issuer"] == "http://issuer.test"
    assert (await client.post("/jwks")).status_code == 405
    assert (await client.get(f"/v2/{QUEUE}")).json() == {"name": QUEUE}
    unknown = await client.get("/v2/projects/p/unknown")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["status"] == "NOT_FOUND"
    unserved = await client.get(f"/v2/{QUEUE}/tasks")  # a route whose method this server was not given
    assert unserved.status_code == 501
    assert unserved.json()["error"]["status"] == "UNIMPLEMENTED"


async def test_a_handler_bug_is_a_json_internal_error(
    http: tuple[HttpServer, httpx.AsyncClient], caplog: pytest.LogCaptureFixture
) -> None:
    _, client = http
    with caplog.at_level(logging.ERROR, logger="fastapi_gcp_tasks.emulator"):
        response = await client.post(f"/v2/{QUEUE}:pause", json={})
    assert response.status_code == 500
    assert response.json()["error"]["status"] == "INTERNAL"
    assert "handler bug" in caplog.text


async def test_a_streamed_body_over_the_limit_is_413(http: tuple[HttpServer, httpx.AsyncClient]) -> None:
    server, client = http
    server.gateway.max_body = 1_000

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 200

    response = await client.post(f"/v2/{QUEUE}:pause", content=chunks())
    assert response.status_code == 413
    assert response.json()["error"]["code"] == 413


# -- the socket ----------------------------------------------------------------------------------------------------


async def test_it_serves_on_a_real_port_and_stops_closing_idle_connections() -> None:
    server = HttpServer(TokenSigner("http://issuer.test"), METHODS)
    port = await server.start("127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get(f"/v2/{QUEUE}")).json() == {"name": QUEUE}
            assert (await client.get("/jwks")).json()["keys"]
            await server.stop(grace=1.0)
            with pytest.raises(httpx.TransportError):
                await client.get(f"/v2/{QUEUE}")
    finally:
        await server.stop()


async def test_a_busy_port_is_an_oserror() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        server = HttpServer(TokenSigner("http://issuer.test"), METHODS)
        with pytest.raises(OSError, match="in use"):
            await server.start("127.0.0.1", busy.getsockname()[1])
        await server.stop()
