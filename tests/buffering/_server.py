"""The names the buffering tests used before the suite shared one server helper (see `tests._support`)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

from tests._support import listening_socket, serve_asgi
from tests._support.ports import url_of

__all__ = ["bind", "serve", "url_of"]


def bind() -> socket.socket:
    """A listening socket on a free port, so the app can know its own URL before it is built."""
    return listening_socket()


@contextlib.contextmanager
def serve(app: Any, sock: socket.socket, **config: Any) -> Iterator[str]:
    """Serve `app` (lifespan on) on `sock` until the block ends; yields its URL. Requests in flight finish."""
    with serve_asgi(app, sock, **{"lifespan": "on", **config}) as url:
        yield url
