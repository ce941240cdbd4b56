"""Run the buffered-mode example on the embedded emulator: `python -m examples.buffered [--once]`.

Starts the emulator in this process, serves the app with uvicorn, signs Ada up twice (the second
request answers 409, so its task is dropped) and shows that exactly one welcome task ran, after the
commit. Without `--once` it keeps serving until Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time

import httpx
import uvicorn

from fastapi_gcp_tasks.emulator import Emulator


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="exit once the demo task has run")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)-32s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    base_url = f"http://127.0.0.1:{args.port}"
    with Emulator(auto_create_queues=True) as emulator:
        os.environ["FASTAPI_GCP_TASKS_EMULATOR_HOST"] = emulator.address
        os.environ["EXAMPLE_BASE_URL"] = base_url
        from examples.buffered.app import app, db

        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
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
        logging.info("welcome mails sent: %s; deliveries: %s", db.mails_sent, [d.status for d in emulator.deliveries])
        try:
            while not args.once:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        server.should_exit = True
        thread.join()
        return 0 if db.mails_sent == ["ada@example.com"] and len(emulator.deliveries) == 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
