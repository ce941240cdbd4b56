"""What the whole test suite shares: waiting on conditions, free ports, and real HTTP servers in a thread.

Every wait in a test goes through `wait_for` / `eventually` / `wait_event`: a generous deadline, and on timeout
a failure that says what was awaited (and, when given a callable, what was seen instead). Never a fixed sleep
before an assertion; an absence check first waits for a positive signal (the emulator idle, a later request
answered) and only then asserts.
"""

from tests._support.ports import free_port, listening_socket
from tests._support.servers import Received, RecordingWorker, serve_asgi
from tests._support.waiting import TIMEOUT, eventually, wait_event, wait_for

__all__ = [
    "TIMEOUT",
    "Received",
    "RecordingWorker",
    "eventually",
    "free_port",
    "listening_socket",
    "serve_asgi",
    "wait_event",
    "wait_for",
]
