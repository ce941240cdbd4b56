"""Run the console example on the embedded emulator: `python -m examples.console [--once] [--port N]`.

Starts the emulator in this process, serves the app with uvicorn, calls `POST /demo` and waits for the
tasks to settle: three thumbnails succeed, two charges fail once then succeed, one feed import is given up
into the dead-letter store. Prints the console's URL (and the emulator's own console); without `--once`
it keeps serving until Ctrl-C.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable

import httpx

from examples._demo import demo_arguments, embedded_emulator, serving
from fastapi_gcp_tasks.emulator import Emulator
from fastapi_gcp_tasks.history import DeadLetterStore, migrate


def main() -> int:
    args = demo_arguments(__doc__.splitlines()[0])
    with (
        tempfile.TemporaryDirectory(prefix="console-example-") as folder,
        embedded_emulator(port=args.port, base_url_env="APP_URL") as (emulator, base_url),
    ):
        os.environ.setdefault("CONSOLE_DATABASE_URL", f"sqlite:///{folder}/history.db")
        migrate(os.environ["CONSOLE_DATABASE_URL"])
        from examples.console.app import app, history, letters

        with serving(app, port=args.port, once=args.once):
            with httpx.Client(base_url=base_url) as client:
                response = client.post("/demo")
                response.raise_for_status()
                logging.info("POST /demo created %d tasks", len(response.json()["tasks"]))
            settled = wait_until(lambda: _settled(emulator, letters), timeout=30)
            history.flush()
            statuses = [record.status for record in emulator.deliveries]
            open_letters = letters.count()
            logging.info(
                "%d attempts made (statuses %s); %d dead letter(s) open", len(statuses), statuses, open_letters
            )
            print(f"console: {base_url}/console/", flush=True)
            print(f"emulator console: {emulator.server.http_url}/", flush=True)
            if not args.once:
                print("serving until Ctrl-C", file=sys.stderr, flush=True)
        history.close()
    return 0 if settled else 1


def _settled(emulator: Emulator, letters: DeadLetterStore) -> bool:
    """Every demo task came to its end: five successes (two after a retry) and the feed import given up."""
    statuses = [record.status for record in emulator.deliveries]
    return statuses.count(200) >= 6 and letters.count() == 1


def wait_until(condition: Callable[[], bool], *, timeout: float) -> bool:
    """Poll `condition` (the retries wait out their backoff) until it holds or `timeout` seconds passed."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            logging.error("the demo tasks did not settle within %g s", timeout)
            return False
        time.sleep(0.05)
    return True


if __name__ == "__main__":
    raise SystemExit(main())
