"""Run the buffered-mode example on the embedded emulator: `python -m examples.buffered [--once]`.

Starts the emulator in this process, serves the app with uvicorn, signs Ada up twice (the second
request answers 409, so its task is dropped) and shows that exactly one welcome task ran, after the
commit. Without `--once` it keeps serving until Ctrl-C.
"""

from __future__ import annotations

import logging
import time

import httpx

from examples._demo import demo_arguments, embedded_emulator, serving


def main() -> int:
    args = demo_arguments(__doc__.splitlines()[0])
    with embedded_emulator(port=args.port, base_url_env="EXAMPLE_BASE_URL") as (emulator, base_url):
        from examples.buffered.app import app, db

        with serving(app, port=args.port, once=args.once):
            logging.info("app on %s, emulator on %s", base_url, emulator.address)
            with httpx.Client(base_url=base_url) as client:
                for attempt in (1, 2):
                    response = client.post("/signup", params={"email": "ada@example.com"})
                    logging.info("POST /signup #%d -> %d %s", attempt, response.status_code, response.json())
                    deadline = time.monotonic() + 10
                    while attempt == 1 and not db.mails_sent and time.monotonic() < deadline:
                        time.sleep(0.01)
            time.sleep(0.2)
            emulator.wait_until_idle(timeout=10)
            deliveries = [d.status for d in emulator.deliveries]
            logging.info("welcome mails sent: %s; deliveries: %s", db.mails_sent, deliveries)
        return 0 if db.mails_sent == ["ada@example.com"] and len(deliveries) == 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
