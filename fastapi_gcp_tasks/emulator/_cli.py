"""`fastapi-gcp-tasks emulator`: serve Cloud Tasks and Cloud Scheduler locally until SIGINT or SIGTERM.

Every option can also come from an environment variable (`FASTAPI_GCP_TASKS_EMULATOR_...`); the
bind address uses `..._BIND_HOST` because `FASTAPI_GCP_TASKS_EMULATOR_HOST` is where clients find it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from typing import Any

from fastapi_gcp_tasks._cli_options import (
    CommandError,
    ConfigError,
    add_debug_option,
    add_logging_options,
    env_option,
    env_value,
    port,
    setup_logging,
)

__all__ = ["register"]

_ENV = "FASTAPI_GCP_TASKS_EMULATOR_"
KEPT_DELIVERIES = 1_000
"""Delivery records the command keeps by default, for its console's task pages (each attempt's log line is its
record too)."""
KEPT_BODY_BYTES = 1024
"""How much of each kept record's request body the command keeps: whole bodies made 10,000 records hold 96 MB
after 120 tasks of 900 KB; with this bound 1,000 records hold about 2 MB whatever the tasks weigh."""


def register(subparsers: Any) -> None:
    """Add the `emulator` subcommand."""
    parser = subparsers.add_parser(
        "emulator",
        help="run the local Cloud Tasks + Cloud Scheduler emulator",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    env_option(
        parser, "--host", env=_ENV + "BIND_HOST", default="127.0.0.1", help="address to bind (default 127.0.0.1)"
    )
    env_option(parser, "--port", env=_ENV + "PORT", default=8123, type=port, help="gRPC port (default 8123)")
    env_option(
        parser,
        "--http-port",
        env=_ENV + "HTTP_PORT",
        type=port,
        help="HTTP port of the REST transport and the OIDC discovery document and JWKS (default: gRPC port + 1)",
    )
    env_queues = (env_value(_ENV + "QUEUES") or "").replace(",", " ").split()
    parser.add_argument(
        "--queue",
        action="append",
        dest="queues",
        metavar="PATH",
        default=None,
        help=f"create this queue (projects/P/locations/L/queues/Q) at start; repeatable [env: {_ENV}QUEUES,"
        " comma-separated]",
    )
    env_option(
        parser,
        "--auto-create-queues",
        env=_ENV + "AUTO_CREATE_QUEUES",
        action="store_true",
        help="create a missing queue on its first task instead of NOT_FOUND",
    )
    env_option(
        parser,
        "--tombstone-seconds",
        env=_ENV + "TOMBSTONE_SECONDS",
        default=3600.0,
        type=float,
        help="how long a finished task's name stays taken (default 3600)",
    )
    env_option(
        parser,
        "--queue-tombstone-seconds",
        env=_ENV + "QUEUE_TOMBSTONE_SECONDS",
        default=3600.0,
        type=float,
        help="how long a deleted queue's name cannot be used again (default 3600)",
    )
    env_option(
        parser,
        "--keep-deliveries",
        env=_ENV + "KEEP_DELIVERIES",
        default=KEPT_DELIVERIES,
        type=int,
        help=f"attempts the console shows, newest kept, each with the first {KEPT_BODY_BYTES} bytes of its body"
        f" (default {KEPT_DELIVERIES}; 0 keeps none)",
    )
    add_logging_options(parser, _ENV)
    add_debug_option(parser)
    parser.set_defaults(func=run, env_queues=env_queues)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; returns the exit code."""
    setup_logging(args.log_format, args.log_level)
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
            queue_tombstone_seconds=args.queue_tombstone_seconds,
            keep_deliveries=args.keep_deliveries,
            kept_body_bytes=KEPT_BODY_BYTES,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    try:
        asyncio.run(_serve(server, queues, log))
    except OSError as exc:
        raise CommandError(str(exc)) from exc
    return 0


async def _serve(server: Any, queues: list[str], log: logging.Logger) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    try:
        await server.start()
        log.info("Cloud Tasks + Cloud Scheduler emulator on %s (gRPC) and %s (REST)", server.address, server.http_url)
        log.info("OIDC issuer %s (JWKS at %s/jwks)", server.issuer, server.issuer)
        log.info("console: %s/ (this machine only)", server.http_url)
        for queue in queues:
            log.info("queue %s", queue)
        log.info("point clients at it with: export FASTAPI_GCP_TASKS_EMULATOR_HOST=%s", server.address)
        await stop.wait()
        log.info("stopping")
    finally:
        await server.stop(grace=None)
