"""The `fastapi-gcp-tasks` command.

Each subcommand lives beside the feature it drives and registers itself through a `register(subparsers)`
function; this module only wires them together. It imports a subcommand's module only when that
subcommand is run, so `--help` and `--version` stay fast, and a missing optional extra breaks only its
own subcommand (with an install hint), never the others. Every command follows one convention
(`_cli_options`, docs/cli.md): exit 0 success, 1 failure, 2 usage or configuration error, one line of
stderr for an error, its traceback only with `--debug`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from fastapi_gcp_tasks._cli_options import DEBUG_ENV, TRUE_WORDS, USAGE, env_value, report

PROG = "fastapi-gcp-tasks"

# subcommand -> (module with `register(subparsers) -> None`, extra it needs, one-line help for the command list)
_SUBCOMMANDS: dict[str, tuple[str, str | None, str]] = {
    "emulator": (
        "fastapi_gcp_tasks.emulator._cli",
        "emulator",
        "run the local Cloud Tasks + Cloud Scheduler emulator",
    ),
    "schedules": (
        "fastapi_gcp_tasks.schedules._cli",
        None,
        "plan and sync the declared Cloud Scheduler jobs of an app; pause, resume or run one",
    ),
    "relay": ("fastapi_gcp_tasks.outbox._cli", "outbox", "send committed outbox rows to Cloud Tasks until stopped"),
    "outbox": ("fastapi_gcp_tasks.outbox._cli", "outbox", "migrate, inspect and repair the transactional outbox"),
    "history": ("fastapi_gcp_tasks.history._cli", "history", "migrate, prune and inspect the task history"),
}

_EPILOG = """\
exit status: 0 success, 1 failure, 2 usage or configuration error (docs/cli.md).
Every option can also be set by the environment variable shown as [env: NAME]."""


class _Parser(argparse.ArgumentParser):
    """Every command's parser, subcommands' included: one help layout, the same epilog."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        kwargs.setdefault("epilog", _EPILOG)
        super().__init__(*args, **kwargs)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fastapi-gcp-tasks")
    except PackageNotFoundError:
        return str(getattr(sys.modules.get("fastapi_gcp_tasks"), "__version__", "unknown"))


class _VersionAction(argparse.Action):
    """`--version`, computed only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        print(f"{PROG} {_version()}")
        parser.exit()


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with `only`, just that subcommand's module is imported, the others are listed."""
    parser = _Parser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--version", action=_VersionAction)
    parser.add_argument(
        "--debug",
        dest="debug_all",
        action="store_true",
        help=f"print the traceback of an error too [env: {DEBUG_ENV}]",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = _SUBCOMMANDS[only][0] if only in _SUBCOMMANDS else None
    imported: set[str] = set()
    for command, (module_name, extra, help_text) in _SUBCOMMANDS.items():
        if only is not None and module_name != chosen:
            subparsers.add_parser(command, help=help_text, add_help=False)
            continue
        if module_name in imported:
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            hint = f"pip install 'fastapi-gcp-tasks[{extra}]'" if extra else "reinstall fastapi-gcp-tasks"
            missing = subparsers.add_parser(command, help=f"(unavailable: {exc}; {hint})")
            missing.set_defaults(func=_unavailable(command, str(exc), hint), unavailable=True)
            continue
        imported.add(module_name)
        module.register(subparsers)
    return parser


def _unavailable(command: str, reason: str, hint: str) -> object:
    def run(_: argparse.Namespace) -> int:
        print(f"{PROG} {command}: unavailable ({reason}). Install it with: {hint}", file=sys.stderr)
        return USAGE

    return run


def _chosen(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line (the first word that is not an option), if any."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in _SUBCOMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code (never raises for a user error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _chosen(argv)
    parser = build_parser(only=command or "")
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "unavailable", False):
        parser.parse_args(argv)  # the usual usage error, naming the unknown arguments
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return USAGE
    debug = bool(args.debug_all or getattr(args, "debug", False)) or (env_value(DEBUG_ENV) or "").lower() in TRUE_WORDS
    args.debug = debug
    prog = f"{PROG} {command}" if command else PROG
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - every error is one line and an exit status; --debug adds the traceback
        return report(prog, exc, debug=debug)


if __name__ == "__main__":
    sys.exit(main())
