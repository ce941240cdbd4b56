"""gcloud-tasks-emulator 0.6.2 (the peer) in its own venv, started as a process on a free port."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests._support import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
PEER_SCRIPT = ROOT / "bench" / "emulator" / "peer.sh"


def peer_python() -> str:
    """The peer venv's python, creating the venv on first use (needs PyPI)."""
    result = subprocess.run([str(PEER_SCRIPT)], capture_output=True, text=True, timeout=600, check=True)
    return result.stdout.strip().splitlines()[-1]


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@contextmanager
def run_peer(queues: list[str], port: int | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run the peer with `queues` created; yields its address and process."""
    port = port or free_port()
    args = [peer_python(), "-m", "gcloud_tasks_emulator", "start", "-p", str(port), "-q"]
    for queue in queues:
        args += ["-d", queue]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _answers(port) or process.poll() is not None, f"gcloud-tasks-emulator on port {port}")
        if process.poll() is not None:
            raise RuntimeError(f"gcloud-tasks-emulator exited with {process.returncode}")
        yield f"127.0.0.1:{port}", process
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
