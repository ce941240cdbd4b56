"""`fastapi-gcp-tasks schedules`: plan, sync, pause, resume and run an app's declared Cloud Scheduler jobs.

APP is `module:attribute`, where the attribute is a `Schedules` registry or an app whose
`state.schedules` is one; `module` alone means `module:schedules`. Every option can also come from an
environment variable (`FASTAPI_GCP_TASKS_SCHEDULES_...`).

Exit codes: 0 done or nothing to do; 1 the plan is not empty (`plan --exit-code`, `sync --dry-run`);
2 an error (APP not found, a declaration refused, Cloud Scheduler refused or unreachable).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any

from fastapi_gcp_tasks._cli_options import env_option
from fastapi_gcp_tasks.transport._clients import EMULATOR_HOST_ENV

__all__ = ["register"]

_ENV = "FASTAPI_GCP_TASKS_SCHEDULES_"
PENDING = 1
ERROR = 2


class _CommandError(Exception):
    """A failure to report on one line and exit with status 2."""


def register(subparsers: Any) -> None:
    """Add the `schedules` subcommand and its `plan`, `sync`, `pause`, `resume` and `run` subcommands."""
    parser = subparsers.add_parser(
        "schedules",
        help="plan and sync the declared Cloud Scheduler jobs of an app; pause, resume or run one",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=lambda _: (parser.print_help(), ERROR)[1])
    commands = parser.add_subparsers(dest="schedules_command", metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    env_option(
        common,
        "app",
        env=_ENV + "APP",
        metavar="APP",
        help="module:attribute of the Schedules registry or of an app holding it in state.schedules",
    )
    env_option(
        common,
        "--app-dir",
        env=_ENV + "APP_DIR",
        default=".",
        help="directory put first on sys.path to import APP (default: the current one)",
    )
    env_option(
        common,
        "--emulator-host",
        env=EMULATOR_HOST_ENV,
        help="host:port of the emulator, for registries using the default client",
    )

    plan = commands.add_parser("plan", parents=[common], help="show what a sync would create, update and delete")
    env_option(
        plan,
        "--exit-code",
        env=_ENV + "EXIT_CODE",
        action="store_true",
        help="exit with status 1 when the plan is not empty, for CI",
    )
    env_option(
        plan,
        "-v",
        "--verbose",
        env=_ENV + "VERBOSE",
        action="store_true",
        help="list unchanged jobs too",
    )
    plan.set_defaults(func=_plan)

    sync = commands.add_parser("sync", parents=[common], help="create, update and delete jobs to match the app")
    env_option(
        sync,
        "--dry-run",
        env=_ENV + "DRY_RUN",
        action="store_true",
        help="print the plan, write nothing, exit with status 1 when it is not empty",
    )
    env_option(
        sync,
        "-v",
        "--verbose",
        env=_ENV + "VERBOSE",
        action="store_true",
        help="list unchanged jobs too",
    )
    sync.set_defaults(func=_sync)

    for name, what in (
        ("pause", "pause a declared job (a sync leaves it paused)"),
        ("resume", "resume a paused declared job"),
        ("run", "run a declared job now"),
    ):
        operate = commands.add_parser(name, parents=[common], help=what)
        operate.add_argument("name", metavar="NAME", help="the declared name, without the registry's prefix")
        operate.set_defaults(func=_operate)


def _plan(args: argparse.Namespace) -> int:
    def run(schedules: Any) -> int:
        plan = schedules.plan()
        print(plan.render(verbose=args.verbose))
        return PENDING if args.exit_code and not plan.empty else 0

    return _guarded(args, run)


def _sync(args: argparse.Namespace) -> int:
    def run(schedules: Any) -> int:
        plan = schedules.sync(dry_run=args.dry_run)
        print(plan.render(verbose=args.verbose))
        if args.dry_run:
            print("Dry run: nothing was written.")
            return 0 if plan.empty else PENDING
        print(
            f"Synced: {len(plan.creates)} created, {len(plan.updates)} updated, "
            f"{len(plan.deletes)} deleted, {len(plan.unchanged)} unchanged."
        )
        return 0

    return _guarded(args, run)


def _operate(args: argparse.Namespace) -> int:
    def run(schedules: Any) -> int:
        method = getattr(schedules, args.schedules_command)
        job = method(args.name)
        state = type(job).State(job.state).name if args.schedules_command != "run" else "started a run"
        print(f"{job.name}: {state}")
        return 0

    return _guarded(args, run)


def _guarded(args: argparse.Namespace, run: Any) -> int:
    from fastapi_gcp_tasks.exception import FastAPIGCPTasksError

    try:
        return int(run(load(args.app, app_dir=args.app_dir, emulator_host=args.emulator_host)))
    except (_CommandError, FastAPIGCPTasksError) as exc:
        print(f"fastapi-gcp-tasks schedules {args.schedules_command}: {exc}", file=sys.stderr)
        return ERROR


def load(app: str | None, *, app_dir: str = ".", emulator_host: str | None = None) -> Any:
    """Import APP and return the `Schedules` registry it names."""
    from fastapi_gcp_tasks.schedules._schedules import Schedules

    if not app:
        raise _CommandError(f"APP is required (module:attribute, or env {_ENV}APP)")
    if emulator_host:
        os.environ[EMULATOR_HOST_ENV] = emulator_host
    module_name, _, attribute = app.partition(":")
    attribute = attribute or "schedules"
    path = os.path.abspath(app_dir)
    if path not in sys.path:
        sys.path.insert(0, path)
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise _CommandError(f"cannot import {module_name!r} from {path}: {exc}") from exc
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise _CommandError(f"{module_name!r} has no attribute {attribute!r}") from None
    if isinstance(target, Schedules):
        return target
    found = getattr(getattr(target, "state", None), "schedules", None)
    if isinstance(found, Schedules):
        return found
    raise _CommandError(
        f"{app!r} is {type(target).__name__}, neither a Schedules registry nor an app with state.schedules"
    )
