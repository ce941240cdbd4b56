"""Wrong uses: each line marked `# error:` must be a mypy error (checked by test_typing.py)."""

from __future__ import annotations

from tests.typing_checks.typed_app import Payload, async_task, job, task


def misuse() -> None:
    task.delay(key=1, payload=Payload(n=1))  # error: arg-type
    task.delay(key="k")  # error: call-arg
    task.delay(key="k", payload=Payload(n=1), nope=True)  # error: call-arg
    task.options(countdown_seconds=3)  # error: call-arg
    task.options(countdown="soon")  # error: arg-type
    job.scheduler(name="j", schedule="* * * * *").schedule(region=3)  # error: arg-type
    job.scheduler(schedule="* * * * *")  # error: call-arg


async def misuse_async() -> None:
    print(async_task.delay(payload=Payload(n=1)).name)  # error: attr-defined
    await async_task.delay(payload="x")  # error: arg-type
