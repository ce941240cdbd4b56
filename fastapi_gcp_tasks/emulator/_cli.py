"""`fastapi-gcp-tasks emulator`: serve Cloud Tasks and Cloud Scheduler locally until SIGINT or SIGTERM.

Every option can also come from an environment variable (`FASTAPI_GCP_TASKS_EMULATOR_...`); the
bind address uses `..._BIND_HOST` because `FASTAPI_GCP_TASKS_EMULATOR_HOST` is where clients find it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import Any

__all__ = ["register"]

_ENV = "FASTAPI_GCP_TASKS_EMULATOR_"


def _env(name: str) -> str | None:
    value = os.environ.get(_ENV + name)
    return value if value else None


def _env_int(name: str, default: int | None) -> int | None:
    value = _env(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"{_ENV}{name}={value!r} is not an integer") from None


def register(subparsers: Any) -> None:
    """Add the `emulator` subcommand."""
    parser = subparsers.add_parser(
        "emulator",
        help="run the local Cloud Tasks + Cloud Scheduler emulator",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument(
        "--host",
        default=_env("BIND_HOST") or "127.0.0.1",
        help=f"address to bind (env {_ENV}BIND_HOST; default 127.0.0.1)",
    )
    parser.add_argument(
        "--port", type=int, default=_env_int("PORT", 8123), help=f"gRPC port (env {_ENV}PORT; default 8123)"
    )
    parser.add_argument(
        "--http-port",
        type=int,
        default=_env_int("HTTP_PORT", None),
        help=f"port of the OIDC discovery document and JWKS (env {_ENV}HTTP_PORT; default: gRPC port + 1)",
    )
    env_queues = (_env("QUEUES") or "").replace(",", " ").split()
    parser.add_argument(
        "--queue",
        action="append",
        dest="queues",
        metavar="PATH",
        default=None,
        help=f"create this queue (projects/P/locations/L/queues/Q) at start; repeatable (env {_ENV}QUEUES,"
        " comma-separated)",
    )
    parser.add_argument(
        "--auto-create-queues",
        action="store_true",
        default=(_env("AUTO_CREATE_QUEUES") or "").lower() in ("1", "true", "yes"),
        help=f"create a missing queue on its first task instead of NOT_FOUND (env {_ENV}AUTO_CREATE_QUEUES=1)",
    )
    parser.add_argument(
        "--tombstone-seconds",
        type=float,
        default=float(_env("TOMBSTONE_SECONDS") or 3600),
        help=f"how long a finished task's name stays taken (env {_ENV}TOMBSTONE_SECONDS; default 3600)",
    )
    parser.add_argument(
        "--log-level",
        default=_env("LOG_LEVEL") or "INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help=f"log level of the delivery log (env {_ENV}LOG_LEVEL; default INFO)",
    )
    parser.set_defaults(func=run, env_queues=env_queues)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; returns the exit code."""
    logging.basicConfig(
        level=getattr(logging, args.log_level), format="%(asctime)s %(levelname)-7s %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from fastapi_gcp_tasks.emulator._server import EmulatorServer, is_loopback

    log = logging.getLogger("fastapi_gcp_tasks.emulator")
    if not is_loopback(args.host):
        log.warning(
            "binding %s: anyone who can reach this address can create tasks that make HTTP requests from this"
            " machine. The emulator has no authentication; use it only on a trusted network.",
            args.host,
        )
    queues = list(args.queues or []) or list(args.env_queues)
    try:
        server = EmulatorServer(
            host=args.host,
            port=args.port,
            http_port=args.http_port,
            queues=queues,
            auto_create_queues=args.auto_create_queues,
            tombstone_seconds=args.tombstone_seconds,
        )
    except ValueError as exc:
        print(f"fastapi-gcp-tasks emulator: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(server, queues, log))
    except OSError as exc:
        print(f"fastapi-gcp-tasks emulator: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(server: Any, queues: list[str], log: logging.Logger) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    try:
        await server.start()
        log.info("Cloud Tasks + Cloud Scheduler emulator on %s (gRPC)", server.address)
        log.info("OIDC issuer %s (JWKS at %s/jwks)", server.issuer, server.issuer)
        for queue in queues:
            log.info("queue %s", queue)
        log.info("point clients at it with: export FASTAPI_GCP_TASKS_EMULATOR_HOST=%s", server.address)
        await stop.wait()
        log.info("stopping")
    finally:
        await server.stop(grace=None)
