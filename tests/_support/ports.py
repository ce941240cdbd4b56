"""Loopback ports: a free one for a process that binds it itself, or a listening socket handed to a server."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback TCP port nothing listens on right now.

    For a child process that binds the port itself, or as an address where nothing answers. Another process
    could take it in between; prefer `listening_socket` when the server can be handed a socket.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening_socket(backlog: int = 2048) -> socket.socket:
    """A socket listening on a free loopback port, so an app can know its own URL before it is served.

    IPPROTO_TCP explicitly: asyncio turns Nagle's algorithm off only on sockets that say they are TCP; with
    proto 0 every response waits for the client's delayed ACK (40 ms a request). The backlog is large so that
    a burst of connections on a loaded machine is queued, not refused.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket) -> str:
    """The base URL of a listening loopback socket."""
    host, port = sock.getsockname()[:2]
    return f"http://{host}:{port}"
