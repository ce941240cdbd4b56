"""Dispatch: what happens to a built task. Sent now, buffered until the request succeeds, or written to the outbox.

`.delay()` hands its request to the current `TaskSink` (`_sink.py`) when there is one (the request's
buffer, `_buffer*.py`; the transactional outbox, `fastapi_gcp_tasks.outbox`), and otherwise sends it
immediately through the transport.
"""
