"""The emulator's HTTP port: the OIDC documents, the REST transport of both services, and room for more.

One ASGI app (a Starlette router) served by uvicorn on the emulator's own event loop, so a REST call runs
its handler on the same loop as a gRPC call. The OIDC paths and every path under the services' API versions
(`/v1/`, `/v2/`) always win; everything else goes to the apps given to `mount()` (a console at `/`), or
is a JSON 404.

uvicorn runs without its signal handlers (the CLI and the `Emulator` thread own those) and without
lifespan; the socket is bound here, so port 0 and the "cannot listen" message work as for the gRPC port.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from typing import Any

import grpc
import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Mount, NoMatchFound, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from fastapi_gcp_tasks.emulator._oidc import TokenSigner
from fastapi_gcp_tasks.emulator._rest import RestGateway, error_response
from fastapi_gcp_tasks.emulator._rpc import Method

__all__ = ["HttpServer"]

_VERBS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_POLL = 0.005
"""How often `stop()` looks whether the connections it asked to close are gone."""


class _GatewayRoute(BaseRoute):
    """Hands every request under the services' API versions (`/v1/...`, `/v2/...`; any verb) to the gateway."""

    def __init__(self, gateway: RestGateway) -> None:
        self.gateway = gateway

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        return (Match.FULL, {}) if self.gateway.serves(scope) else (Match.NONE, {})

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        raise NoMatchFound(name, path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.gateway(scope, receive, send)


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    response = error_response(grpc.StatusCode.NOT_FOUND, f"nothing is served at {scope['path']}")
    await response(scope, receive, send)


class HttpServer:
    """The OIDC discovery document and JWKS, the REST gateway, and mounted apps, on one HTTP/1.1 port."""

    def __init__(self, signer: TokenSigner, methods: Iterable[Method]) -> None:
        """Serve `signer`'s documents and `methods` over REST; nothing is bound until `start()`."""
        self.signer = signer
        self.gateway = RestGateway(methods)
        self._builtin: list[BaseRoute] = [
            Route("/.well-known/openid-configuration", self._discovery, methods=_VERBS),
            Route("/jwks", self._jwks, methods=_VERBS),
            _GatewayRoute(self.gateway),
        ]
        self._mounts: list[Mount] = []
        self.app = Router(routes=list(self._builtin), redirect_slashes=False, default=_not_found)
        self._server: uvicorn.Server | None = None

    def mount(self, path: str, app: ASGIApp) -> None:
        """Serve `app` under `path` (`/` for everything the emulator does not answer itself).

        The OIDC and REST paths stay the emulator's; among mounted apps the longest path wins.
        """
        self._mounts.append(Mount(path.rstrip("/"), app=app))
        self._mounts.sort(key=lambda mount: len(mount.path), reverse=True)
        self.app.routes[:] = [*self._builtin, *self._mounts]

    async def _discovery(self, request: Request) -> Response:
        return self._document(request, self.signer.discovery)

    async def _jwks(self, request: Request) -> Response:
        return self._document(request, self.signer.jwks)

    def _document(self, request: Request, document: Any) -> Response:
        if request.method not in ("GET", "HEAD"):
            return error_response(grpc.StatusCode.INVALID_ARGUMENT, "only GET is served here", status=405)
        return JSONResponse(document(), headers={"Cache-Control": "no-store"})

    async def start(self, host: str, port: int) -> int:
        """Listen on `host:port` (0 picks a free port); returns the port. OSError when it cannot bind."""
        sock = _bind(host, port)
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_config=None,
            access_log=False,
            http="h11",
            ws="none",
            proxy_headers=False,
            server_header=False,
            date_header=False,
        )
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)  # `serve()` sets it; startup() needs it
        try:
            await server.startup(sockets=[sock])
        except BaseException:
            sock.close()
            raise
        self._server = server
        return int(sock.getsockname()[1])

    async def stop(self, grace: float | None = 0.5) -> None:
        """Stop listening, let responses in flight finish for up to `grace` seconds, then close every connection.

        Not uvicorn's `shutdown()`: it always sleeps 0.1 s and polls at 100 ms, which every test's
        emulator would pay.
        """
        server, self._server = self._server, None
        if server is None:
            return
        state = server.server_state
        for listener in server.servers:
            listener.close()
        for connection in list(state.connections):
            connection.shutdown()
        for _ in range(round((grace or 0.0) / _POLL)):
            if not state.connections:
                break
            await asyncio.sleep(_POLL)
        for task in list(state.tasks):
            task.cancel()
        for connection in list(state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        for listener in server.servers:
            await listener.wait_closed()


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on the first address `host` resolves to (as asyncio would bind it)."""
    family, kind, protocol, _, address = socket.getaddrinfo(
        host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, protocol)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(2048)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
