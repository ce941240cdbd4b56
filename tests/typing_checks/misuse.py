"""Wrong uses: each line marked `# error:` must be a mypy error (checked by test_typing.py)."""

from __future__ import annotations

from tests.typing_checks.typed_app import Payload, async_task, cleanup, job, notify, report, rollup, task


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


def misuse_injected() -> None:
    report.delay(key=1, payload=Payload(n=1))  # error: arg-type
    report.delay(payload=Payload(n=1))  # error: call-arg
    report.delay(key="k", payload=Payload(n=1), nope=True)  # error: call-arg
    report.delay(key="k", payload=Payload(n=1), request=None)  # error: call-arg
    report.delay("k", Payload(n=1))  # error: call-arg
    report.options(countdown_seconds=3).delay(key="k", payload=Payload(n=1))  # error: call-arg
    report.options().delay(key="k", payload=Payload(n=1), settings=None)  # error: call-arg
    report(key="k", payload=Payload(n=1))  # error: call-arg
    cleanup.scheduler(name="c", schedule="0 3 * * *").schedule(region=3)  # error: arg-type
    cleanup.scheduler(name="c", schedule="0 3 * * *").schedule(region="eu", zone="b")  # error: call-arg
    cleanup.scheduler(name="c", schedule="0 3 * * *", timezone="UTC")  # error: call-arg
    cleanup.scheduler(name="c", schedule="0 3 * * *").schedule(background=None)  # error: call-arg


async def misuse_injected_async() -> None:
    await notify.delay(payload="x")  # error: arg-type
    await notify.delay(urgent=True)  # error: call-arg
    await notify.delay(payload=Payload(n=1), nope=1)  # error: call-arg
    await notify.delay(payload=Payload(n=1), meta=None)  # error: call-arg
    await notify.options(countdown_seconds=3).delay(payload=Payload(n=1))  # error: call-arg
    print(notify.delay(payload=Payload(n=1)).name)  # error: attr-defined
    await rollup.scheduler(name="r", schedule="0 1 * * *").schedule(day=1)  # error: arg-type
    await rollup.scheduler(name="r", schedule="0 1 * * *").schedule()  # error: call-arg
    await rollup.scheduler(name="r", schedule="0 1 * * *", retries=2).schedule(day="d")  # error: call-arg
    await rollup.scheduler(name="r", schedule="0 1 * * *").schedule(day="d", request=None)  # error: call-arg
