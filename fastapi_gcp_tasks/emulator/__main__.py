"""`python -m fastapi_gcp_tasks.emulator [options]`: the same as `fastapi-gcp-tasks emulator [options]`."""

from __future__ import annotations

import argparse
import sys

from fastapi_gcp_tasks.emulator import _cli


def main(argv: list[str] | None = None) -> int:
    """Parse the emulator's options and serve until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m fastapi_gcp_tasks.emulator")
    _cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["emulator", *(sys.argv[1:] if argv is None else argv)])
    return _cli.run(args)


if __name__ == "__main__":
    sys.exit(main())
