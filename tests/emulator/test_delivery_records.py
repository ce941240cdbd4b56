"""What a delivery record keeps: the start of the worker's answer, a give-up mark, and a bounded request body."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler

import pytest
from fastapi import FastAPI, Response

from fastapi_gcp_tasks.emulator import Emulator
from fastapi_gcp_tasks.emulator._types import RESPONSE_EXCERPT_BYTES
from fastapi_gcp_tasks.receive._retries import GAVE_UP_HEADER
from tests._support import wait_for

from ._tasks_support import QUEUE, http_server, http_task

_ANSWER = b"refused: " + b"r" * (3 * RESPONSE_EXCERPT_BYTES)


class _Refusing(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(500)
        self.send_header("Content-Length", str(len(_ANSWER)))
        self.end_headers()
        self.wfile.write(_ANSWER)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_record_over_http_keeps_the_start_of_the_answer_and_of_a_bounded_body() -> None:
    with http_server(_Refusing) as base, Emulator(queues=[QUEUE], keep_deliveries=10) as emulator:
        emulator.server.recorder.body_limit = 16
        emulator.tasks_client().create_task(parent=QUEUE, task=http_task(f"{base}/work", body=b"b" * 100))
        wait_for(lambda: emulator.deliveries, "a delivery")
        record = emulator.deliveries[0]
    assert record.status == 500
    assert record.response_excerpt == _ANSWER[:RESPONSE_EXCERPT_BYTES]
    assert record.body == b"b" * 16
    assert not record.gave_up


def _app() -> FastAPI:
    app = FastAPI()

    @app.post("/gave-up")
    def gave_up() -> Response:
        return Response(b"acknowledged", headers={GAVE_UP_HEADER: "3"})

    @app.post("/fine")
    def fine() -> Response:
        return Response(b"done")

    return app


@pytest.mark.parametrize(
    ("path", "gave_up", "answer"), [("/gave-up", True, b"acknowledged"), ("/fine", False, b"done")]
)
def test_an_asgi_record_marks_a_max_retries_acknowledgement(path: str, gave_up: bool, answer: bytes) -> None:
    with Emulator(queues=[QUEUE], deliver_to=_app()) as emulator:
        emulator.tasks_client().create_task(parent=QUEUE, task=http_task(f"http://app.test{path}"))
        wait_for(lambda: emulator.deliveries, "a delivery")
        (record,) = emulator.deliveries
    assert record.status == 200
    assert record.gave_up is gave_up
    assert record.response_excerpt == answer
