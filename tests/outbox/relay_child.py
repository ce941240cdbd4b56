"""A relay in a process of its own, for tests that measure the process (its CPU time during an outage).

Usage: `python -m tests.outbox.relay_child DATABASE_URL EMULATOR_HOST SETTINGS_JSON`. It prints `started` once
the relay runs, and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from fastapi_gcp_tasks.outbox import CloudTasksRelayClient, Relay, RelaySettings


def main() -> None:
    url, host, settings_json = sys.argv[1:4]
    client = CloudTasksRelayClient.for_emulator(host, mode="concurrent")
    relay = Relay(url, client, RelaySettings(**json.loads(settings_json)))

    async def run() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, relay.stop)
        print("started", flush=True)
        try:
            await relay.run()
        finally:
            await client.close()

    try:
        asyncio.run(run())
    finally:
        relay.engine.dispose()


if __name__ == "__main__":
    main()
