"""pytest plugin (entry point `fastapi_gcp_tasks`): fixtures running the Cloud Tasks / Cloud Scheduler emulator.

* `gcp_tasks_emulator`: a fresh `Emulator` per test, on an ephemeral port, in a background thread.
* `gcp_tasks_shared_emulator`: the session's emulator, reset before the test (no task, job or delivery
  of an earlier test; builders create their queues again).
* `gcp_tasks_emulator_session`: one `Emulator` for the whole session, as it is (`reset()` it yourself).

While one of them is in use, the default clients and every builder of the process talk to that emulator
(`FASTAPI_GCP_TASKS_EMULATOR_HOST` set, `fastapi_gcp_tasks.testing.reset_clients()` called); afterwards
the variable and the clients are as before. They deliver over real HTTP to the tasks' URLs. To deliver
into an app without sockets, or to control time, build your own fixture around
`Emulator(deliver_to=app, clock=ManualClock())` and `fastapi_gcp_tasks.testing.use_emulator`.

The ini option `gcp_tasks_apps` names apps to check before deploying, as `module:attribute`
(`gcp_tasks_apps = myproj.main:app myproj.worker:app`): each becomes one test item, run first, that imports
the app and calls `fastapi_gcp_tasks.check_app` on it, failing with the list of task routes whose callback
URL would not reach them. Deselect them with `-k "not gcp_tasks_check_app"`.

The plugin imports nothing heavy until a fixture or a check is used, and needs no async pytest plugin.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from _pytest._code.code import TerminalRepr, TracebackStyle

    from fastapi_gcp_tasks.emulator import Emulator

__all__ = ["AppCheckItem", "gcp_tasks_emulator", "gcp_tasks_emulator_session", "gcp_tasks_shared_emulator"]

APPS_OPTION = "gcp_tasks_apps"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        APPS_OPTION,
        type="args",
        default=[],
        help="apps to check with fastapi_gcp_tasks.check_app before deploying, as module:attribute",
    )


@pytest.hookimpl(tryfirst=True)  # before -k / -m deselection, which then applies to these items too
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put one `AppCheckItem` per `gcp_tasks_apps` entry in front of the collected tests."""
    specs: list[str] = config.getini(APPS_OPTION)
    checks = [
        AppCheckItem.from_parent(
            session, name=f"gcp_tasks_check_app[{spec}]", nodeid=f"gcp_tasks_check_app[{spec}]", spec=spec
        )
        for spec in specs
    ]
    items[:0] = checks


class _AppSpecError(Exception):
    """A `gcp_tasks_apps` entry that is not `module:attribute`."""


def load_app(spec: str) -> Any:
    """The object `module:attribute` names (the attribute may be dotted: `module:holder.app`)."""
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise _AppSpecError(f"{APPS_OPTION}: {spec!r} is not module:attribute (for example myproj.main:app)")
    target: Any = importlib.import_module(module_name)
    for name in attribute.split("."):
        target = getattr(target, name)
    return target


class AppCheckItem(pytest.Item):
    """One `gcp_tasks_apps` entry: imports the app and runs `check_app` on it."""

    def __init__(self, *, spec: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec

    def runtest(self) -> None:
        from fastapi_gcp_tasks.build._reach import check_app

        check_app(load_app(self.spec))

    def repr_failure(
        self, excinfo: pytest.ExceptionInfo[BaseException], style: TracebackStyle | None = None
    ) -> str | TerminalRepr:
        from fastapi_gcp_tasks.exception import FastAPIGCPTasksError

        if isinstance(excinfo.value, FastAPIGCPTasksError | _AppSpecError):
            return f"check_app({self.spec}): {excinfo.value}"  # a user error: the message, no traceback
        return super().repr_failure(excinfo, style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.config.inipath or self.config.rootpath, None, f"check_app({self.spec})"


@pytest.fixture
def gcp_tasks_emulator() -> Iterator[Emulator]:
    """A running emulator for one test (ephemeral ports, real HTTP delivery, real time) that the default
    clients and every builder point at during the test."""
    from fastapi_gcp_tasks.emulator import Emulator
    from fastapi_gcp_tasks.testing._env import use_emulator

    with Emulator(port=0) as emulator, use_emulator(emulator):
        yield emulator


@pytest.fixture(scope="session")
def gcp_tasks_emulator_session() -> Iterator[Emulator]:
    """A running emulator shared by the whole test session, that the default clients point at meanwhile."""
    from fastapi_gcp_tasks.emulator import Emulator
    from fastapi_gcp_tasks.testing._env import use_emulator

    with Emulator(port=0) as emulator, use_emulator(emulator):
        yield emulator


SHARED_SETTLE_SECONDS = 10.0
"""How long `gcp_tasks_shared_emulator` lets an earlier test's deliveries finish before resetting."""


@pytest.fixture
def gcp_tasks_shared_emulator(gcp_tasks_emulator_session: Emulator) -> Iterator[Emulator]:
    """The session's emulator, reset for this test: no task, job or delivery of an earlier test is left, and
    builders create their queues again; the default clients and every builder point at it during the test."""
    from fastapi_gcp_tasks.testing._env import use_emulator

    emulator = gcp_tasks_emulator_session
    if not emulator.is_idle():  # let an earlier test's attempts in flight end before they are forgotten
        with contextlib.suppress(TimeoutError):  # endless retries must not block this test
            emulator.wait_until_idle(timeout=SHARED_SETTLE_SECONDS)
    emulator.reset()
    with use_emulator(emulator):
        yield emulator
