"""`fastapi-gcp-tasks relay` and `fastapi-gcp-tasks outbox migrate | status | dead-letters | requeue`.

Every option can also be set through the environment variable shown in its help. A database error is one
line and an exit status (docs/cli.md): 2 when the URL, its driver or the schema needs fixing (an outbox that
was never migrated says to run `outbox migrate`), 1 when the database could not be reached or failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import signal
from collections.abc import Iterator
from typing import Any

from fastapi_gcp_tasks._cli_options import (
    EMULATOR_HOST_ENV,
    ConfigError,
    ProgressLine,
    add_debug_option,
    add_logging_options,
    database_errors,
    env_option,
    port,
    setup_logging,
)

__all__ = ["register"]


def _database_option(parser: argparse.ArgumentParser) -> None:
    env_option(
        parser,
        "--database-url",
        env="FASTAPI_GCP_TASKS_DATABASE_URL",
        required=True,
        help="SQLAlchemy URL of the database holding the outbox",
    )
    add_debug_option(parser)


def register(subparsers: Any) -> None:
    """Add the `relay` and `outbox` subcommands to the `fastapi-gcp-tasks` parser."""
    relay = subparsers.add_parser("relay", help="send committed outbox rows to Cloud Tasks until stopped")
    _database_option(relay)
    env = "FASTAPI_GCP_TASKS_RELAY_"
    env_option(relay, "--emulator-host", env=EMULATOR_HOST_ENV, help="send to the emulator at HOST:PORT")
    env_option(
        relay,
        "--send-mode",
        env=env + "SEND_MODE",
        default="concurrent",
        choices=["batch", "concurrent"],
        help="batch_create_tasks (100 per call) or concurrent create_task calls",
    )
    env_option(
        relay,
        "--send-concurrency",
        env=env + "SEND_CONCURRENCY",
        default=32,
        type=int,
        help="create_task calls in flight in concurrent mode",
    )
    env_option(
        relay,
        "--auto-create-queue",
        env=env + "AUTO_CREATE_QUEUE",
        default=True,
        action=argparse.BooleanOptionalAction,
        help="create a task's queue on its first send when it is missing (needs roles/cloudtasks.queueAdmin; "
        "without it the queue is assumed to exist); --no-auto-create-queue never creates one",
    )
    env_option(relay, "--batch-size", env=env + "BATCH_SIZE", default=100, type=int, help="rows per claim")
    env_option(relay, "--concurrency", env=env + "CONCURRENCY", default=4, type=int, help="claimed batches in flight")
    env_option(
        relay, "--poll-interval", env=env + "POLL_INTERVAL", default=1.0, type=float, help="seconds between idle polls"
    )
    env_option(relay, "--no-listen", env=env + "NO_LISTEN", action="store_true", help="poll only, no LISTEN/NOTIFY")
    env_option(relay, "--lease-seconds", env=env + "LEASE_SECONDS", default=60.0, type=float, help="lease of a claim")
    env_option(
        relay, "--send-timeout", env=env + "SEND_TIMEOUT", default=20.0, type=float, help="deadline of each send"
    )
    env_option(
        relay, "--max-attempts", env=env + "MAX_ATTEMPTS", default=25, type=int, help="attempts before dead letter"
    )
    env_option(
        relay, "--backoff-initial", env=env + "BACKOFF_INITIAL", default=1.0, type=float, help="first retry delay"
    )
    env_option(relay, "--backoff-max", env=env + "BACKOFF_MAX", default=600.0, type=float, help="longest retry delay")
    env_option(
        relay,
        "--outage-pause-max",
        env=env + "OUTAGE_PAUSE_MAX",
        default=10.0,
        type=float,
        help="longest pause of claims after a batch in which every send failed",
    )
    env_option(
        relay,
        "--retention-seconds",
        env=env + "RETENTION_SECONDS",
        default=0.0,
        type=float,
        help="keep delivered rows this long (0 deletes them)",
    )
    env_option(
        relay,
        "--shutdown-timeout",
        env=env + "SHUTDOWN_TIMEOUT",
        default=30.0,
        type=float,
        help="on SIGTERM, wait this long for batches in flight",
    )
    env_option(
        relay,
        "--stats-interval",
        env=env + "STATS_INTERVAL",
        default=10.0,
        type=float,
        help="seconds between backlog snapshots",
    )
    env_option(
        relay, "--metrics-port", env=env + "METRICS_PORT", type=port, help="serve Prometheus metrics on this port"
    )
    env_option(
        relay,
        "--max-database-failures",
        env=env + "MAX_DATABASE_FAILURES",
        default=0,
        type=int,
        help="exit with status 1 after this many failed claims in a row (a wrong URL, a database down); "
        "0 (default) retries forever",
    )
    add_logging_options(relay, env)
    relay.set_defaults(func=_run_relay)

    outbox = subparsers.add_parser("outbox", help="migrate, inspect and repair the transactional outbox")
    commands = outbox.add_subparsers(dest="outbox_command", metavar="ACTION", required=True)

    migrate = commands.add_parser("migrate", help="create or upgrade the outbox tables")
    _database_option(migrate)
    env_option(
        migrate,
        "--revision",
        env="FASTAPI_GCP_TASKS_OUTBOX_REVISION",
        default="head",
        help="target revision (default: head; 'base' drops all)",
    )
    migrate.set_defaults(func=_migrate)

    status = commands.add_parser("status", help="backlog, age of the oldest row, dead letters")
    _database_option(status)
    env_option(status, "--json", env="FASTAPI_GCP_TASKS_OUTBOX_JSON", action="store_true", help="print JSON")
    status.set_defaults(func=_status)

    dead = commands.add_parser("dead-letters", help="list the tasks the relay gave up on")
    _database_option(dead)
    env_option(dead, "--queue", env="FASTAPI_GCP_TASKS_OUTBOX_QUEUE", help="only this queue path")
    env_option(
        dead, "--limit", env="FASTAPI_GCP_TASKS_OUTBOX_LIMIT", type=int, default=50, help="at most this many (50)"
    )
    env_option(dead, "--json", env="FASTAPI_GCP_TASKS_OUTBOX_JSON", action="store_true", help="print JSON lines")
    dead.set_defaults(func=_dead_letters)

    requeue = commands.add_parser("requeue", help="move dead letters back to the outbox")
    _database_option(requeue)
    which = requeue.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", type=int, action="append", dest="ids", help="a dead letter id (repeatable)")
    which.add_argument("--all", action="store_true", help="every dead letter (of --queue, if given)")
    env_option(requeue, "--queue", env="FASTAPI_GCP_TASKS_OUTBOX_QUEUE", help="only this queue path")
    env_option(
        requeue,
        "--batch-size",
        env="FASTAPI_GCP_TASKS_OUTBOX_BATCH_SIZE",
        type=_positive_int,
        default=1000,
        help="rows moved per transaction (1000); an interrupted run leaves whole batches moved, run it again",
    )
    requeue.set_defaults(func=_requeue)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _run_relay(args: argparse.Namespace) -> int:
    from fastapi_gcp_tasks.outbox._client import CloudTasksRelayClient
    from fastapi_gcp_tasks.outbox._relay import Relay, RelaySettings

    setup_logging(args.log_format, args.log_level)
    with _usage_errors():
        settings = RelaySettings(
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            poll_interval=args.poll_interval,
            listen=not args.no_listen,
            lease_seconds=args.lease_seconds,
            send_timeout=args.send_timeout,
            max_attempts=args.max_attempts,
            backoff_initial=args.backoff_initial,
            backoff_max=args.backoff_max,
            outage_pause_max=args.outage_pause_max,
            retention_seconds=args.retention_seconds,
            shutdown_timeout=args.shutdown_timeout,
            stats_interval=args.stats_interval,
        )
    if args.emulator_host:
        client = CloudTasksRelayClient.for_emulator(
            args.emulator_host,
            mode=args.send_mode,
            concurrency=args.send_concurrency,
            auto_create_queue=args.auto_create_queue,
        )
    else:
        client = CloudTasksRelayClient(
            mode=args.send_mode, concurrency=args.send_concurrency, auto_create_queue=args.auto_create_queue
        )
    with _database_errors():
        relay = Relay(args.database_url, client, settings)
    if args.metrics_port is not None:
        from fastapi_gcp_tasks.outbox._metrics import serve_metrics

        serve_metrics(relay, args.metrics_port)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, relay.stop)
        try:
            await relay.run(max_database_failures=args.max_database_failures or None)
        finally:
            await client.close()

    try:
        with _database_errors():
            asyncio.run(main())
    finally:
        relay.engine.dispose()
    return 0


@contextlib.contextmanager
def _usage_errors() -> Iterator[None]:
    """A setting refused by the library (ValueError) is a usage error, status 2."""
    try:
        yield
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _database_errors() -> contextlib.AbstractContextManager[None]:
    """The CLI's database errors (`database_errors`), worded for the outbox."""
    return database_errors("--database-url", "outbox", "fastapi-gcp-tasks outbox migrate")


@contextlib.contextmanager
def _store(args: argparse.Namespace) -> Iterator[Any]:
    """The outbox store of `--database-url`, its database errors translated, its engine disposed after."""
    from fastapi_gcp_tasks.outbox._engine import relay_engine
    from fastapi_gcp_tasks.outbox._sql import OutboxStore

    with _database_errors():
        store = OutboxStore(relay_engine(args.database_url))
        try:
            yield store
        finally:
            store.engine.dispose()


def _migrate(args: argparse.Namespace) -> int:
    from fastapi_gcp_tasks.outbox._migrate import migrate

    with _database_errors():
        revision = migrate(args.database_url, args.revision)
    print(f"outbox schema at revision {revision or 'base'}")
    return 0


def _status(args: argparse.Namespace) -> int:
    with _store(args) as store:
        stats = store.stats()
    if args.json:
        print(json.dumps(dataclasses.asdict(stats)))
    else:
        age = "-" if stats.oldest_age_seconds is None else f"{stats.oldest_age_seconds:.1f}s"
        print(
            f"pending {stats.pending} (ready {stats.ready}, retrying {stats.retrying}), oldest {age}, "
            f"retained {stats.retained}, dead letters {stats.dead_letters}"
        )
        if stats.last_error:
            print(f"last error: {stats.last_error}")
    return 0


def _dead_letters(args: argparse.Namespace) -> int:
    with _store(args) as store:
        letters = store.dead_letters(limit=args.limit, queue_path=args.queue)
    for letter in letters:
        if args.json:
            print(json.dumps(dataclasses.asdict(letter), default=str))
        else:
            print(f"{letter.id}\t{letter.dead_at:%Y-%m-%d %H:%M:%S}\t{letter.task_name}\t{letter.reason}")
    if not letters and not args.json:
        print("no dead letters")
    return 0


def _requeue(args: argparse.Namespace) -> int:
    with _store(args) as store, ProgressLine("fastapi-gcp-tasks outbox requeue") as progress:
        moved = store.requeue(
            None if args.all else args.ids, queue_path=args.queue, batch_size=args.batch_size, progress=progress
        )
    print(f"requeued {moved} dead letter(s)")
    return 0
