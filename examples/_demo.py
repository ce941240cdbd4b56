"""What the runnable examples share: arguments, logging, the embedded emulator and the app served in a thread."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from fastapi_gcp_tasks.emulator import Emulator
from fastapi_gcp_tasks.transport._clients import EMULATOR_HOST_ENV


def demo_arguments(description: str) -> argparse.Namespace:
    """Parse `--once` and `--port`, and set up readable logs; exit at once (status 1) when the port is taken."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--once", action="store_true", help="exit once the demo tasks have run")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("PORT", "8000")),
        help="port of the app on 127.0.0.1 (default 8000) [env: PORT]",
    )
    args = parser.parse_args()
    if not 0 < args.port < 65536:
        parser.error(f"--port must be 1 to 65535, not {args.port}")
    ensure_free(args.port)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)-32s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return args


def ensure_free(port: int) -> None:
    """Exit with status 1 and one line naming the way out when 127.0.0.1:`port` cannot be bound."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            sys.exit(f"port {port} on 127.0.0.1 is taken ({exc.strerror}): choose another with --port N (or PORT=N)")


@contextlib.contextmanager
def embedded_emulator(*, port: int, base_url_env: str) -> Iterator[tuple[Emulator, str]]:
    """Start the emulator and point the default clients at it; the app's URL goes in `base_url_env`.

    Import the example's app inside this block: its builders read the URL when they are created.
    """
    base_url = f"http://127.0.0.1:{port}"
    with Emulator(auto_create_queues=True) as emulator:
        os.environ[EMULATOR_HOST_ENV] = emulator.address
        os.environ[base_url_env] = base_url
        yield emulator, base_url


@contextlib.contextmanager
def serving(app: Any, *, port: int, once: bool) -> Iterator[None]:
    """Serve `app` with uvicorn in a thread; on leaving, keep serving until Ctrl-C unless `once`."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():  # uvicorn could not bind (the port was taken meanwhile): never wait forever
            sys.exit(f"the app could not be served on 127.0.0.1:{port}: choose another port with --port N")
        time.sleep(0.01)
    try:
        yield
        with contextlib.suppress(KeyboardInterrupt):
            while not once:
                time.sleep(3600)
    finally:
        server.should_exit = True
        thread.join()
