"""The `fastapi-gcp-tasks` command.

Each subcommand lives beside the feature it drives and registers itself through a `register(subparsers)`
function; this module only wires them together, importing each lazily so that a missing optional extra
breaks only its own subcommand (with an install hint), never the others.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> module with `register(subparsers) -> None`; the module sets `func` on its parser(s)
_SUBCOMMANDS: dict[str, tuple[str, str | None]] = {
    "emulator": ("fastapi_gcp_tasks.emulator._cli", "emulator"),
    "schedules": ("fastapi_gcp_tasks.schedules._cli", None),
    "relay": ("fastapi_gcp_tasks.outbox._cli", "outbox"),
    "outbox": ("fastapi_gcp_tasks.outbox._cli", "outbox"),
}


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every subcommand whose module can be imported."""
    parser = argparse.ArgumentParser(prog="fastapi-gcp-tasks", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    registered: set[str] = set()
    for command, (module_name, extra) in _SUBCOMMANDS.items():
        if module_name in registered:
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            hint = f"pip install 'fastapi-gcp-tasks[{extra}]'" if extra else "reinstall fastapi-gcp-tasks"
            missing = subparsers.add_parser(command, help=f"(unavailable: {exc}; {hint})")
            missing.set_defaults(func=_unavailable(command, str(exc), hint))
            continue
        registered.add(module_name)
        module.register(subparsers)
    return parser


def _unavailable(command: str, reason: str, hint: str) -> object:
    def run(_: argparse.Namespace) -> int:
        print(f"fastapi-gcp-tasks {command}: unavailable ({reason}). Install it with: {hint}", file=sys.stderr)
        return 2

    return run


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    return int(func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
