"""Run the quickstart on the embedded emulator: `python -m examples.simple [--once] [--port N]`.

Starts the emulator of Cloud Tasks and Cloud Scheduler in this process, serves the app with uvicorn,
calls `POST /trigger` (one task now, one with a 2 s countdown), schedules the `tick` job every minute,
and shows the tasks executing. Without `--once` it keeps serving until Ctrl-C.
"""

from __future__ import annotations

import logging
import time

import httpx

from examples._demo import demo_arguments, embedded_emulator, serving


def main() -> int:
    args = demo_arguments(__doc__.splitlines()[0])
    with embedded_emulator(port=args.port, base_url_env="APP_URL") as (emulator, base_url):
        from examples.simple.app import app, tick

        with serving(app, port=args.port, once=args.once):
            logging.info("app on %s, emulator on %s", base_url, emulator.address)
            logging.info("emulator console: %s/", emulator.http_url)
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
        return 0 if len(delivered) == 2 and all(d.status == 200 for d in delivered) else 1


if __name__ == "__main__":
    raise SystemExit(main())
