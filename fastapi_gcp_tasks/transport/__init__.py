"""Transport: the only code that calls Cloud Tasks, Cloud Scheduler or the emulator.

One table of clients (service x sync/async, the emulator when `FASTAPI_GCP_TASKS_EMULATOR_HOST` is set),
one error policy (`_errors.py`: which status codes are retried, final, or mean "already created"), used
alike by the immediate path, the buffer and the outbox relay. Sync and async differ only here.
"""
