"""Real HTTP servers on loopback in a thread: an ASGI app under uvicorn, and a worker recording what it gets."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import uvicorn

from tests._support.ports import listening_socket, url_of
from tests._support.waiting import TIMEOUT, wait_for


class _SignallingServer(uvicorn.Server):
    """A uvicorn server that sets an event once it listens, so a thread waits on it instead of polling a flag."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.ready.set()


@contextlib.contextmanager
def serve_asgi(app: Any, sock: socket.socket | None = None, **config: Any) -> Iterator[str]:
    """Serve `app` with uvicorn on `sock` (a fresh loopback listener by default) until the block ends.

    Yields the base URL. The server stops gracefully (requests in flight finish), the socket is closed, and a
    server that failed to start or to stop fails the test. `config` goes to `uvicorn.Config`; the lifespan is
    off unless asked for.
    """
    sock = sock if sock is not None else listening_socket()
    settings: dict[str, Any] = {
        "log_level": "warning",
        "access_log": False,
        "lifespan": "off",
        "timeout_graceful_shutdown": 10,
    }
    settings.update(config)
    server = _SignallingServer(uvicorn.Config(app, **settings))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as error:  # noqa: BLE001 - reported by the test thread
            failure.append(error)

    url = url_of(sock)
    thread = threading.Thread(target=run, name=f"uvicorn {url}", daemon=True)
    with sock:
        thread.start()
        try:
            wait_for(lambda: server.ready.is_set() or not thread.is_alive(), f"uvicorn to listen on {url}")
            if not server.ready.is_set():
                raise RuntimeError(f"uvicorn did not start on {url}: {failure or 'it exited'}")
            yield url
        finally:
            server.should_exit = True
            thread.join(timeout=TIMEOUT)
    assert not thread.is_alive(), f"uvicorn on {url} did not stop within {TIMEOUT:g}s"
    assert not failure, failure


@dataclass(frozen=True)
class Received:
    """One request as the worker saw it; header names lower-cased."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class RecordingWorker:
    """An HTTP/1.1 worker on loopback that records every request and answers from a script.

    `statuses[path]` lists the statuses to answer in order (200 once it is empty or absent). Use it as a context
    manager: the server starts on entry and is shut down, its socket closed, on exit.
    """

    statuses: dict[str, list[int]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def __enter__(self) -> RecordingWorker:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = TIMEOUT  # an idle keep-alive connection never holds its thread forever

            def _record(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                request = Received(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with owner._lock:
                    owner.received.append(request)
                    script = owner.statuses.get(self.path)
                    status = script.pop(0) if script else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                self._record()

            def do_POST(self) -> None:
                self._record()

            def do_PUT(self) -> None:
                self._record()

            def do_PATCH(self) -> None:
                self._record()

            def do_DELETE(self) -> None:
                self._record()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"worker {self.url}", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._server is not None
        assert self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=TIMEOUT)

    def requests(self) -> list[Received]:
        """A snapshot of what was received so far."""
        with self._lock:
            return list(self.received)

    def wait_for_requests(self, count: int, *, timeout: float = TIMEOUT) -> list[Received]:
        """Wait until at least `count` requests arrived; returns them."""
        wait_for(
            lambda: len(self.received) >= count,
            lambda: f"{count} requests at {self.url}; got {len(self.received)}",
            timeout=timeout,
        )
        return self.requests()
