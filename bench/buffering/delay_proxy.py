"""A TCP proxy that puts a network delay in front of a server: Cloud Tasks "20 ms away" for the emulator.

`python delay_proxy.py LISTEN_PORT TARGET_HOST:PORT RTT_MS` forwards every connection to the target and
delays each chunk by half the round trip in each direction, in order, without limiting bandwidth, as a
long link would. A unary gRPC call on a warm HTTP/2 channel then takes one round trip more than without
the proxy. Run by run.py; plain asyncio, no dependencies.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                writer.close()
                return
            writer.write(data)
            await writer.drain()

    delivering = asyncio.create_task(deliver())
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            queue.put_nowait((loop.time() + delay, data))
    queue.put_nowait((loop.time() + delay, b""))
    with contextlib.suppress(ConnectionError):
        await delivering


async def main(port: int, target: str, rtt_ms: float) -> None:
    host, target_port = target.rsplit(":", 1)
    one_way = rtt_ms / 2000

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(host, int(target_port))
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            pipe(client_reader, server_writer, one_way),
            pipe(server_reader, client_writer, one_way),
            return_exceptions=True,
        )

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print(f"delaying 127.0.0.1:{port} -> {target} by {rtt_ms:g} ms a round trip", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], float(sys.argv[3])))
