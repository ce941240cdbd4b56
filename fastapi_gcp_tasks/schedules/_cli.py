"""`fastapi-gcp-tasks schedules`: plan, sync, pause, resume and run an app's declared Cloud Scheduler jobs.

APP is `module:attribute`, where the attribute is a `Schedules` registry or an app whose
`state.schedules` is one; `module` alone means `module:schedules`. Every option can also come from an
environment variable (`FASTAPI_GCP_TASKS_SCHEDULES_...`).

Exit status (the convention of every command, docs/cli.md): 0 done; 1 a failure (Cloud Scheduler refused
the request or could not be reached within `--timeout` seconds, every call and its retries included), or the
plan is not empty (`plan --exit-code`, and `sync --dry-run`, which implies it); 2 a usage or configuration
error (a bad option, APP cannot be loaded, a declaration refused, no such job, no Google credentials).
An error is one line of stderr without a traceback (`--debug` adds it).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi_gcp_tasks._cli_options import EMULATOR_HOST_ENV, FAILURE, OK, USAGE, ProgressLine, env_option, one_line

__all__ = ["register"]

_ENV = "FASTAPI_GCP_TASKS_SCHEDULES_"
PROG = "fastapi-gcp-tasks schedules"
PENDING = FAILURE
"""`--exit-code`: the plan is not empty."""
DEFAULT_TIMEOUT = 60.0
"""Seconds the whole command may take by default (`--timeout`)."""
WATCHDOG_GRACE = 5.0
"""Seconds after `--timeout` before a command stuck outside a call (importing APP, finding credentials) is stopped."""
SERVICE_ADDRESS = "cloudscheduler.googleapis.com"


class _CommandError(Exception):
    """A usage or configuration error to report on one line and exit with status 2."""


class LoadError(_CommandError):
    """APP could not be imported, or does not name a `Schedules` registry; the cause is `__cause__`."""

    def __init__(self, app: str, cause: BaseException) -> None:
        super().__init__(f"cannot load APP {app!r}: {type(cause).__name__}: {cause}")
        self.app = app
        self.cause = cause


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def register(subparsers: Any) -> None:
    """Add the `schedules` subcommand and its `plan`, `sync`, `pause`, `resume` and `run` subcommands."""
    parser = subparsers.add_parser(
        "schedules",
        help="plan and sync the declared Cloud Scheduler jobs of an app; pause, resume or run one",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=lambda _: (parser.print_help(), USAGE)[1])
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
    env_option(
        common,
        "--timeout",
        env=_ENV + "TIMEOUT",
        default=DEFAULT_TIMEOUT,
        type=_seconds,
        metavar="SECONDS",
        help=f"seconds the whole command may take, every call to Cloud Scheduler and its retries included; "
        f"an unreachable service is reported within it (default: {DEFAULT_TIMEOUT:g})",
    )
    env_option(
        common,
        "--format",
        env=_ENV + "FORMAT",
        default="text",
        choices=("text", "json"),
        help="output: text for people (default), json for machines (see the schedules guide for the schema)",
    )
    env_option(
        common,
        "--debug",
        env=_ENV + "DEBUG",
        action="store_true",
        help="print the traceback of an error too (FASTAPI_GCP_TASKS_DEBUG=1 too)",
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
        help="print the plan, write nothing, exit with status 1 when it is not empty (as plan --exit-code)",
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
        _emit(args, plan.render(verbose=args.verbose), plan.to_dict)
        return PENDING if args.exit_code and not plan.empty else OK

    return _guarded(args, run)


def _sync(args: argparse.Namespace) -> int:
    def run(schedules: Any) -> int:
        with ProgressLine(PROG) as progress:
            plan = schedules.sync(dry_run=args.dry_run, progress=progress)
        if args.dry_run:
            text = f"{plan.render(verbose=args.verbose)}\nDry run: nothing was written."
        else:
            text = (
                f"{plan.render(verbose=args.verbose)}\nSynced: {len(plan.creates)} created, "
                f"{len(plan.updates)} updated, {len(plan.deletes)} deleted, {len(plan.unchanged)} unchanged."
            )
        _emit(args, text, lambda: {**plan.to_dict(), "dry_run": bool(args.dry_run)})
        if args.dry_run:
            return OK if plan.empty else PENDING
        return OK

    return _guarded(args, run)


def _operate(args: argparse.Namespace) -> int:
    def run(schedules: Any) -> int:
        action = args.schedules_command
        job = getattr(schedules, action)(args.name)
        state = type(job).State(job.state).name
        text = f"{job.name}: {state if action != 'run' else 'started a run'}"
        _emit(args, text, lambda: {"job": job.name, "action": action, "state": state})
        return 0

    return _guarded(args, run)


def _emit(args: argparse.Namespace, text: str, data: Callable[[], dict[str, Any]]) -> None:
    if args.format == "json":
        print(json.dumps(data(), indent=2, ensure_ascii=False))
    else:
        print(text)


def _guarded(args: argparse.Namespace, run: Callable[[Any], int]) -> int:
    """Load APP and run the command within `--timeout`; any error is one line on stderr and exit status 1 or 2."""
    from fastapi_gcp_tasks.transport._scheduler import deadline

    watchdog = _Watchdog(args.timeout)
    schedules: Any = None
    try:
        with watchdog.armed(), deadline(args.timeout):
            watchdog.doing = f"loading APP {_shown(args.app)!r}"
            schedules = load(args.app, app_dir=args.app_dir, emulator_host=args.emulator_host)
            watchdog.doing = f"calling {_service(schedules)}"
            return int(run(schedules))
    except Exception as exc:  # noqa: BLE001 - every error is one line and a status; --debug adds the traceback
        if args.debug:
            traceback.print_exception(exc, file=sys.stderr)
        status, message = _describe(exc, schedules, args.timeout)
        print(f"{PROG}: {one_line(message)}", file=sys.stderr)
        return status


def _describe(exc: Exception, schedules: Any, timeout: float) -> tuple[int, str]:
    """The exit status and the one line that says what went wrong, where, and what to do."""
    from google.auth.exceptions import DefaultCredentialsError

    from fastapi_gcp_tasks.exception import FastAPIGCPTasksError, SendError, TaskArgumentError
    from fastapi_gcp_tasks.transport._errors import classify

    if isinstance(exc, _CommandError):
        return USAGE, str(exc)
    credentials = exc if isinstance(exc, DefaultCredentialsError) else exc.__cause__
    if isinstance(credentials, DefaultCredentialsError):
        return USAGE, (
            f"no Google credentials to call {_service(schedules)} ({type(credentials).__name__}: {credentials}). "
            "Run `gcloud auth application-default login` (or set GOOGLE_APPLICATION_CREDENTIALS), "
            f"or point the CLI at the emulator with --emulator-host or {EMULATOR_HOST_ENV}"
        )
    if isinstance(exc, SendError):
        code = classify(exc.__cause__) if isinstance(exc.__cause__, Exception) else None
        if code is not None and code.name in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
            return FAILURE, f"cannot reach {_service(schedules)} (timeout {timeout:g}s): {exc}"
        return FAILURE, f"{_service(schedules)}: {exc}"
    if isinstance(exc, TaskArgumentError):
        return USAGE, str(exc)
    if isinstance(exc, FastAPIGCPTasksError):
        return FAILURE, str(exc)
    return FAILURE, f"unexpected {type(exc).__name__}: {exc} (a bug? --debug shows the traceback)"


def _service(schedules: Any) -> str:
    """Cloud Scheduler and its address: the emulator's when one is set, else Google's."""
    from fastapi_gcp_tasks.transport import _clients

    if schedules is not None and getattr(schedules, "_client", None) not in (None, _clients._shared_scheduler):
        return "Cloud Scheduler (through the registry's own client)"
    emulator = os.environ.get(EMULATOR_HOST_ENV)
    return f"the Cloud Scheduler emulator at {emulator}" if emulator else f"Cloud Scheduler at {SERVICE_ADDRESS}"


def _shown(app: str | None) -> str:
    module_name, _, attribute = (app or "").partition(":")
    return f"{module_name}:{attribute or 'schedules'}"


class _Watchdog:
    """Stops the process with status 1 when the command outlives `--timeout` by `WATCHDOG_GRACE` seconds.

    Calls to Cloud Scheduler end by the deadline on their own; this catches what no deadline reaches
    (an import that hangs, a credentials lookup probing for a metadata server).
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.doing = "starting"

    @contextmanager
    def armed(self) -> Iterator[None]:
        timer = threading.Timer(self.timeout + WATCHDOG_GRACE, self._expire)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    def _expire(self) -> None:
        sys.stdout.flush()
        print(f"{PROG}: timed out after {self.timeout:g}s (--timeout) while {self.doing}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(FAILURE)


def load(app: str | None, *, app_dir: str = ".", emulator_host: str | None = None) -> Any:
    """Import APP and return the `Schedules` registry it names.

    Raises `LoadError` (the cause chained) for any failure: the module cannot be imported or raises while
    importing (a syntax error, a declaration refused, ...), the attribute is missing or is not a registry.
    """
    from fastapi_gcp_tasks.schedules._schedules import Schedules

    if not app:
        raise _CommandError(f"APP is required (module:attribute, or env {_ENV}APP)")
    if emulator_host:
        os.environ[EMULATOR_HOST_ENV] = emulator_host
    module_name, _, attribute = app.partition(":")
    attribute = attribute or "schedules"
    shown = f"{module_name}:{attribute}"
    path = os.path.abspath(app_dir)
    if path not in sys.path:
        sys.path.insert(0, path)
    try:
        target: Any = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:
        raise LoadError(shown, exc) from exc
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise LoadError(shown, exc) from exc
    if isinstance(target, Schedules):
        return target
    found = getattr(getattr(target, "state", None), "schedules", None)
    if isinstance(found, Schedules):
        return found
    wrong = TypeError(f"{type(target).__name__} object, neither a Schedules registry nor an app with state.schedules")
    raise LoadError(shown, wrong)
