"""Run the quickstart on the embedded emulator: `python -m examples.simple [--once]`.

Starts the emulator of Cloud Tasks and Cloud Scheduler in this process, serves the app with uvicorn,
calls `POST /trigger` (one task now, one with a 2 s countdown), schedules the `tick` job every minute,
and shows the tasks executing. Without `--once` it keeps serving until Ctrl-C.
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
    parser.add_argument("--once", action="store_true", help="exit once the demo tasks have run")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)-28s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    base_url = f"http://127.0.0.1:{args.port}"
    with Emulator(auto_create_queues=True) as emulator:
        os.environ["FASTAPI_GCP_TASKS_EMULATOR_HOST"] = emulator.address
        os.environ["APP_URL"] = base_url
        from examples.simple.app import app, tick

        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        logging.info("app on %s, emulator on %s", base_url, emulator.address)

        job = tick.scheduler(name="tick", schedule="* * * * *").schedule()
        logging.info("scheduled %s (%s)", job.name, job.schedule)
        with httpx.Client(base_url=base_url) as client:
            demo: list[dict[str, str | int]] = [{"name": "Ada"}, {"name": "Grace", "lang": "fr", "countdown": 2}]
            for params in demo:
                response = client.post("/trigger", params=params)
                response.raise_for_status()
                logging.info("POST /trigger %s -> %s", params, response.json()["task"].rsplit("/", 1)[1])
        time.sleep(2.5)
        emulator.wait_until_idle(timeout=10)
        delivered = [d for d in emulator.deliveries if "/tasks/hello/" in d.url]
        logging.info("%d hello tasks delivered, statuses %s", len(delivered), [d.status for d in delivered])
        try:
            while not args.once:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        server.should_exit = True
        thread.join()
        return 0 if len(delivered) == 2 and all(d.status == 200 for d in delivered) else 1


if __name__ == "__main__":
    raise SystemExit(main())
