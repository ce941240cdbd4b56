"""`fastapi-gcp-tasks history migrate | prune | stats`: the task history's tables from the command line.

Every option can also be set through the environment variable shown in its help. A database error is one line
and an exit status (docs/cli.md): 2 when the URL, its driver or the schema needs fixing (a database that was never
migrated says to run `history migrate`), 1 when the database could not be reached or failed. Nothing heavy is
imported until a command runs, so `history --help` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import json
import re
from collections.abc import Iterator
from typing import Any

from fastapi_gcp_tasks._cli_options import ConfigError, add_debug_option, database_errors, env_option

__all__ = ["register"]

_missing = [name for name in ("sqlalchemy", "alembic") if importlib.util.find_spec(name) is None]
if _missing:  # pragma: no cover - depends on the installed extras
    raise ImportError(f"the task history needs SQLAlchemy and alembic (not installed: {', '.join(_missing)})")

ENV = "FASTAPI_GCP_TASKS_HISTORY_"
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def duration(text: str) -> dt.timedelta:
    """`30d`, `12h`, `90m`, `45s` (or a plain number of days) as a timedelta."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([dhms]?)\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration (30d, 12h, 90m, 45s): {text!r}")
    return dt.timedelta(seconds=float(match[1]) * _UNITS[match[2] or "d"])


def _database_option(parser: argparse.ArgumentParser) -> None:
    env_option(
        parser,
        "--database",
        "--database-url",
        dest="database",
        env=ENV + "DATABASE_URL",
        required=True,
        help="SQLAlchemy URL of the database holding the task history",
    )
    add_debug_option(parser)


def register(subparsers: Any) -> None:
    """Add the `history` subcommand to the `fastapi-gcp-tasks` parser."""
    history = subparsers.add_parser("history", help="migrate, prune and inspect the task history")
    commands = history.add_subparsers(dest="history_command", metavar="ACTION", required=True)

    migrate = commands.add_parser(
        "migrate", help="create or upgrade the history tables (the one schema shared with the outbox)"
    )
    _database_option(migrate)
    env_option(
        migrate,
        "--revision",
        env=ENV + "REVISION",
        default="head",
        help="target revision (default: head; 'base' drops all)",
    )
    migrate.set_defaults(func=_migrate)

    prune = commands.add_parser("prune", help="delete attempts and tasks older than --older-than")
    _database_option(prune)
    env_option(
        prune,
        "--older-than",
        env=ENV + "OLDER_THAN",
        default="30d",
        type=duration,
        help="age of what is deleted: 30d, 12h, 90m, 45s (default 30d)",
    )
    prune.set_defaults(func=_prune)

    stats = commands.add_parser("stats", help="tasks per status, attempts, open dead letters")
    _database_option(stats)
    env_option(stats, "--json", env=ENV + "JSON", action="store_true", help="print JSON")
    stats.set_defaults(func=_stats)


@contextlib.contextmanager
def _database_errors() -> Iterator[None]:
    """The CLI's database errors (`database_errors`), worded for the history; a schema too old is status 2."""
    from fastapi_gcp_tasks.history._errors import HistorySchemaError

    with database_errors("--database", "history", "fastapi-gcp-tasks history migrate"):
        try:
            yield
        except HistorySchemaError as exc:
            raise ConfigError(str(exc)) from exc


@contextlib.contextmanager
def _history(args: argparse.Namespace) -> Iterator[Any]:
    """A `TaskHistory` on `--database` whose schema was checked, closed after."""
    from fastapi_gcp_tasks.history._history import TaskHistory
    from fastapi_gcp_tasks.history._migrate import require_schema

    with _database_errors():
        history = TaskHistory(args.database, retention=None)
        try:
            require_schema(history.engine)
            yield history
        finally:
            history.close()


def _migrate(args: argparse.Namespace) -> int:
    from fastapi_gcp_tasks.history._migrate import migrate

    with _database_errors():
        revision = migrate(args.database, args.revision)
    print(f"history schema at revision {revision or 'base'}")
    return 0


def _prune(args: argparse.Namespace) -> int:
    with _history(args) as history:
        deleted = history.prune(args.older_than)
    print(f"pruned {deleted} row(s) older than {args.older_than}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    with _history(args) as history:
        counts = history.counts()
    if args.json:
        print(json.dumps(counts, default=str))
        return 0
    statuses = ", ".join(f"{status} {count}" for status, count in counts["by_status"].items()) or "none"
    letters = counts["open_dead_letters"]
    print(f"tasks {counts['tasks']} ({statuses}), attempts {counts['attempts']}, open dead letters {letters}")
    if counts["oldest"] is not None:
        print(f"first seen {counts['oldest']:%Y-%m-%d %H:%M:%S}, last seen {counts['newest']:%Y-%m-%d %H:%M:%S} UTC")
    return 0
