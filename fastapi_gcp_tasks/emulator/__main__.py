"""`python -m fastapi_gcp_tasks.emulator [options]`: the same as `fastapi-gcp-tasks emulator [options]`.

It runs through the command line's entry point, so it parses, reports errors (one line, `--debug` for the
traceback) and exits (0, 1, 2, 130 on Ctrl-C) exactly as the `fastapi-gcp-tasks emulator` command does.
"""

from __future__ import annotations

import sys

from fastapi_gcp_tasks.cli import main as _cli_main


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM; returns the exit status of `fastapi-gcp-tasks emulator`."""
    return _cli_main(["emulator", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
