"""`fastapi-gcp-tasks schedules` in a CI pipeline: broken apps, an unreachable service, stable and JSON plans.

The CLI runs in a subprocess, as a pipeline runs it: exit status, stdout and stderr are what is checked.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions as core
from google.cloud import scheduler_v1

from fastapi_gcp_tasks.emulator import Emulator
from fastapi_gcp_tasks.exception import SendError
from fastapi_gcp_tasks.schedules._flows import plan_flow
from fastapi_gcp_tasks.transport._clients import ASYNC_SCHEDULER, SCHEDULER
from fastapi_gcp_tasks.transport._flows import CreateJob, Flow, ListJobs
from fastapi_gcp_tasks.transport._scheduler import deadline, run_flow, run_flow_async
from tests._support import free_port

ROOT = Path(__file__).resolve().parents[2]
LOCATION = "projects/demo-project/locations/europe-west1"
PREFIX = "ci-"


def cli(*args: str, app_dir: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FASTAPI_GCP_TASKS_")}
    environment.update(env, PYTHONPATH=str(ROOT))
    extra = ["--app-dir", str(app_dir)] if app_dir is not None else []
    return subprocess.run(
        [sys.executable, "-m", "fastapi_gcp_tasks", "schedules", *args, *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str], *, status: int = 2) -> str:
    """The one line of stderr of a failed command; `status` 2 is a usage or configuration error, 1 a failure."""
    assert result.returncode == status, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fastapi-gcp-tasks schedules: ")
    return lines[0]


# loading APP ---------------------------------------------------------------------------------------------------

BROKEN = {
    "raises": 'raise RuntimeError("database unreachable\\nat import")\n',
    "syntax": "def broken(:\n    pass\n",
    "needs": "import a_dependency_that_is_not_installed\n",
    "empty": "VALUE = 1\n",
    "hangs": "import time\n\ntime.sleep(120)\n",
}


@pytest.fixture
def broken_apps(tmp_path: Path) -> Path:
    for name, source in BROKEN.items():
        (tmp_path / f"{name}.py").write_text(source)
    return tmp_path


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        ("raises:app", "cannot load APP 'raises:app': RuntimeError: database unreachable at import"),
        ("syntax:app", "cannot load APP 'syntax:app': SyntaxError: invalid syntax (syntax.py, line 1)"),
        (
            "needs",
            "cannot load APP 'needs:schedules': ModuleNotFoundError: "
            "No module named 'a_dependency_that_is_not_installed'",
        ),
        ("empty:app", "cannot load APP 'empty:app': AttributeError: module 'empty' has no attribute 'app'"),
        (
            "empty:VALUE",
            "cannot load APP 'empty:VALUE': TypeError: int object, neither a Schedules registry nor an app with "
            "state.schedules",
        ),
        ("nowhere:app", "cannot load APP 'nowhere:app': ModuleNotFoundError: No module named 'nowhere'"),
    ],
)
def test_an_app_that_cannot_be_loaded_is_one_line_and_status_2(broken_apps: Path, app: str, expected: str) -> None:
    line = one_error_line(cli("plan", app, "--exit-code", app_dir=broken_apps))
    assert line == f"fastapi-gcp-tasks schedules: {expected}"


def test_debug_adds_the_traceback(broken_apps: Path) -> None:
    flagged = cli("sync", "raises:app", "--debug", app_dir=broken_apps)
    from_env = cli("sync", "raises:app", app_dir=broken_apps, FASTAPI_GCP_TASKS_SCHEDULES_DEBUG="1")
    for result in (flagged, from_env):
        assert result.returncode == 2
        assert "Traceback (most recent call last)" in result.stderr
        assert 'raise RuntimeError("database unreachable' in result.stderr
        assert result.stderr.strip().splitlines()[-1] == (
            "fastapi-gcp-tasks schedules: cannot load APP 'raises:app': RuntimeError: database unreachable at import"
        )


@pytest.mark.slow
def test_an_import_that_hangs_is_stopped_after_the_timeout(broken_apps: Path) -> None:
    started = time.monotonic()
    line = one_error_line(cli("plan", "hangs:app", "--timeout", "1", app_dir=broken_apps), status=1)
    assert line == "fastapi-gcp-tasks schedules: timed out after 1s (--timeout) while loading APP 'hangs:app'"
    assert time.monotonic() - started < 60


def test_a_bad_timeout_or_format_is_a_usage_error() -> None:
    for result in (
        cli("plan", "examples.schedules.app:app", "--timeout", "0"),
        cli("plan", "examples.schedules.app:app", FASTAPI_GCP_TASKS_SCHEDULES_TIMEOUT="soon"),
        cli("plan", "examples.schedules.app:app", FASTAPI_GCP_TASKS_SCHEDULES_FORMAT="yaml"),
    ):
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        assert "usage:" in result.stderr
    assert "invalid choice: 'yaml' (choose from 'text', 'json') [env: FASTAPI_GCP_TASKS_SCHEDULES_FORMAT]" in (
        result.stderr
    )


# reaching Cloud Scheduler --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_unreachable_emulator_is_reported_within_the_timeout_naming_the_address() -> None:
    port = free_port()
    started = time.monotonic()
    flagged = cli("plan", "examples.schedules.app:app", "--emulator-host", f"127.0.0.1:{port}", "--timeout", "5")
    elapsed = time.monotonic() - started
    line = one_error_line(flagged, status=1)
    assert f"cannot reach the Cloud Scheduler emulator at 127.0.0.1:{port} (timeout 5s)" in line
    assert f"listing jobs in {LOCATION} failed: UNAVAILABLE: failed to connect" in line
    assert elapsed < 60  # not the client's default retry of 600 s

    from_env = cli(
        "sync",
        FASTAPI_GCP_TASKS_SCHEDULES_APP="examples.schedules.app:app",
        FASTAPI_GCP_TASKS_EMULATOR_HOST=f"127.0.0.1:{port}",
        FASTAPI_GCP_TASKS_SCHEDULES_TIMEOUT="3",
    )
    assert f"cannot reach the Cloud Scheduler emulator at 127.0.0.1:{port} (timeout 3s)" in one_error_line(
        from_env, status=1
    )


def test_missing_google_credentials_name_the_fix(tmp_path: Path) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    environment = {k: v for k, v in os.environ.items() if k != "GOOGLE_APPLICATION_CREDENTIALS"}
    result = subprocess.run(
        [sys.executable, "-m", "fastapi_gcp_tasks", "schedules", "plan", "examples.schedules.app:app"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={
            **{k: v for k, v in environment.items() if not k.startswith("FASTAPI_GCP_TASKS_")},
            "PYTHONPATH": str(ROOT),
            "HOME": str(tmp_path),
            "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
            "GCE_METADATA_HOST": nowhere,
            "GCE_METADATA_IP": nowhere,
            "FASTAPI_GCP_TASKS_SCHEDULES_TIMEOUT": "20",
        },
    )
    line = one_error_line(result)
    assert "no Google credentials to call Cloud Scheduler at cloudscheduler.googleapis.com" in line
    assert "gcloud auth application-default login" in line
    assert "--emulator-host or FASTAPI_GCP_TASKS_EMULATOR_HOST" in line


def test_the_runners_bound_each_call_retries_included() -> None:
    port = free_port()
    flow = plan_flow(location_path=LOCATION, prefix=PREFIX, desired={})
    started = time.monotonic()
    with pytest.raises(SendError, match="UNAVAILABLE") as raised:
        run_flow(flow, SCHEDULER.connect(f"127.0.0.1:{port}"), timeout=1.5)
    assert time.monotonic() - started < 15
    assert raised.value.retryable

    async def unreachable() -> None:
        with deadline(1.0):
            await run_flow_async(
                plan_flow(location_path=LOCATION, prefix=PREFIX, desired={}),
                ASYNC_SCHEDULER.connect(f"127.0.0.1:{port}"),
                timeout=30,
            )

    started = time.monotonic()
    with pytest.raises(SendError, match="UNAVAILABLE"):
        asyncio.run(unreachable())
    assert time.monotonic() - started < 15


class Flaky:
    """Fails every call with `error`; counts the calls."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, rpc: str) -> Any:
        def call(**kwargs: Any) -> Any:
            self.calls.append((rpc, kwargs))
            raise self.error

        return call


def test_reads_are_retried_until_the_timeout_writes_are_not() -> None:
    reads = Flaky(core.ServiceUnavailable("down"))  # type: ignore[no-untyped-call]
    with pytest.raises(SendError, match=r"listing jobs in .* failed: UNAVAILABLE: down"):
        run_flow(plan_flow(location_path=LOCATION, prefix=PREFIX, desired={}), reads, timeout=0.5)  # type: ignore[arg-type]
    assert len(reads.calls) > 1
    assert reads.calls[0][1]["timeout"] == 0.5
    assert all(0 < kwargs["timeout"] <= 0.5 for _, kwargs in reads.calls)
    assert "retry" not in reads.calls[0][1]  # an imitation of the client gets only timeout=

    def create() -> Flow[Any]:
        return (yield CreateJob(parent=LOCATION, job=scheduler_v1.Job(), what="creating"))

    writes = Flaky(core.ServiceUnavailable("down"))  # type: ignore[no-untyped-call]
    with pytest.raises(SendError, match="creating failed: UNAVAILABLE"):
        run_flow(create(), writes, timeout=5)  # type: ignore[arg-type]
    assert len(writes.calls) == 1  # not idempotent: not retried

    final = Flaky(core.PermissionDenied("no"))  # type: ignore[no-untyped-call]
    with pytest.raises(SendError, match="PERMISSION_DENIED"):
        run_flow(plan_flow(location_path=LOCATION, prefix=PREFIX, desired={}), final, timeout=5)  # type: ignore[arg-type]
    assert len(final.calls) == 1


def test_a_deadline_bounds_every_call_inside_it() -> None:
    def page() -> Flow[Any]:
        return (yield ListJobs(parent=LOCATION, page_size=1, what="listing"))

    reads = Flaky(core.ServiceUnavailable("down"))  # type: ignore[no-untyped-call]
    with deadline(0.0), pytest.raises(SendError, match="listing failed: DEADLINE_EXCEEDED"):
        run_flow(page(), reads, timeout=30)  # type: ignore[arg-type]
    assert reads.calls == []
    with deadline(0.3), deadline(60):  # the earliest wins
        started = time.monotonic()
        with pytest.raises(SendError):
            run_flow(page(), reads, timeout=30)  # type: ignore[arg-type]
        assert time.monotonic() - started < 5
    assert all(kwargs["timeout"] <= 0.3 for _, kwargs in reads.calls)


# a stable, diffable plan ---------------------------------------------------------------------------------------

APP = '''
"""Jobs declared in an order that depends on the hash seed (a set), with headers built from a set too."""
from fastapi import APIRouter, FastAPI

from fastapi_gcp_tasks import ScheduledRouteBuilder
from fastapi_gcp_tasks.schedules import Schedules

LOCATION = "{location}"
schedules = Schedules(prefix="{prefix}", location_path=LOCATION, time_zone="Europe/Paris")
router = APIRouter(route_class=ScheduledRouteBuilder(location_path=LOCATION, callback_base_url="http://w.example"))


@router.post("/report")
def report(region: str, days: int = 1) -> None:
    """A report."""


NAMES = {{"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"}}
HEADERS = {{f"X-{{word}}": word for word in {{"one", "two", "three", "four", "five"}}}}
for index, name in enumerate(NAMES):
    schedules.add(report, name=name, schedule="0 6 * * *", args={{"region": name}}, headers=HEADERS)

app = FastAPI()
app.include_router(router)
app.state.schedules = schedules
'''


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


@pytest.mark.slow
def test_the_plan_is_the_same_in_every_process_in_text_and_json(emulator: Emulator, tmp_path: Path) -> None:
    (tmp_path / "ci_app.py").write_text(APP.format(location=LOCATION, prefix=PREFIX))
    host = {"FASTAPI_GCP_TASKS_EMULATOR_HOST": emulator.address}
    synced = cli("sync", "ci_app:app", app_dir=tmp_path, **host)
    assert synced.returncode == 0, synced.stderr

    # then the jobs drift: one changed, one gone, one paused, one extra with the prefix, one foreign
    client = emulator.scheduler_client()
    changed = client.get_job(name=f"{LOCATION}/jobs/{PREFIX}charlie")
    changed.schedule = "0 7 * * *"
    changed.http_target.headers = {**dict(changed.http_target.headers), "X-one": "uno", "X-zz": "extra"}
    client.update_job(job=changed)
    client.delete_job(name=f"{LOCATION}/jobs/{PREFIX}echo")
    client.pause_job(name=f"{LOCATION}/jobs/{PREFIX}golf")
    for job_id in (f"{PREFIX}zulu", "other-job"):
        client.create_job(
            parent=LOCATION,
            job=scheduler_v1.Job(
                name=f"{LOCATION}/jobs/{job_id}", schedule="*/5 * * * *", http_target={"uri": "http://w.example/x"}
            ),
        )

    runs = {
        (output, seed): cli(
            "plan", "ci_app:app", "-v", "--format", output, app_dir=tmp_path, PYTHONHASHSEED=seed, **host
        )
        for output in ("text", "json")
        for seed in ("1", "2")
    }
    for result in runs.values():
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
    assert runs["text", "1"].stdout == runs["text", "2"].stdout
    assert runs["json", "1"].stdout == runs["json", "2"].stdout

    text = runs["text", "1"].stdout.splitlines()
    assert text[0] == f"Cloud Scheduler jobs {PREFIX}* in {LOCATION}:"
    heads = [line.split()[1:3] for line in text[1:-1] if not line.startswith("    ")]
    assert heads == sorted(heads, key=lambda head: head[1])
    assert text[-1] == "Plan: 1 to create, 1 to update, 1 to delete, 6 unchanged."
    update = text.index(f"~ update    {PREFIX}charlie")
    assert text[update + 1 : update + 4] == [
        "    http_target.headers.X-one: 'uno' -> 'one'",
        "    http_target.headers.X-zz: 'extra' -> (unset)",
        "    schedule: '0 7 * * *' -> '0 6 * * *'",
    ]
    assert any(line.startswith(f"= unchanged {PREFIX}golf") and line.endswith("[paused]") for line in text)

    plan = json.loads(runs["json", "1"].stdout)
    assert list(plan) == ["version", "location", "prefix", "changes", "summary"]
    assert plan["version"] == 1
    assert plan["location"] == LOCATION
    assert plan["prefix"] == PREFIX
    assert plan["summary"] == {"create": 1, "update": 1, "delete": 1, "unchanged": 6, "empty": False}
    ids = [change["job_id"] for change in plan["changes"]]
    assert ids == sorted(ids)
    assert "other-job" not in ids
    by_id = {change["job_id"]: change for change in plan["changes"]}
    for change in plan["changes"]:
        assert list(change) == ["action", "job_id", "paused", "fields"]
        for field in change["fields"]:
            assert list(field) == ["field", "current", "desired"]
        paths = [field["field"] for field in change["fields"]]
        assert paths == sorted(paths)
    assert by_id[f"{PREFIX}charlie"]["action"] == "update"
    assert by_id[f"{PREFIX}charlie"]["fields"] == [
        {"field": "http_target.headers.X-one", "current": "uno", "desired": "one"},
        {"field": "http_target.headers.X-zz", "current": "extra", "desired": None},
        {"field": "schedule", "current": "0 7 * * *", "desired": "0 6 * * *"},
    ]
    created = by_id[f"{PREFIX}echo"]
    assert created["action"] == "create"
    assert {"field": "schedule", "current": None, "desired": "0 6 * * *"} in created["fields"]
    assert {"field": "time_zone", "current": None, "desired": "Europe/Paris"} in created["fields"]
    deleted = by_id[f"{PREFIX}zulu"]
    assert deleted["action"] == "delete"
    assert {"field": "http_target.uri", "current": "http://w.example/x", "desired": None} in deleted["fields"]
    assert not any(field["field"] in ("state", "user_update_time", "name") for field in deleted["fields"])
    assert by_id[f"{PREFIX}golf"] == {"action": "unchanged", "job_id": f"{PREFIX}golf", "paused": True, "fields": []}

    dry = cli("sync", "ci_app:app", "--dry-run", "--format", "json", app_dir=tmp_path, **host)
    assert dry.returncode == 1, dry.stderr
    carried = json.loads(dry.stdout)
    assert carried["dry_run"] is True
    assert {key: value for key, value in carried.items() if key != "dry_run"} == plan

    paused = cli("pause", "ci_app:app", "alpha", "--format", "json", app_dir=tmp_path, **host)
    assert paused.returncode == 0, paused.stderr
    assert json.loads(paused.stdout) == {"job": f"{LOCATION}/jobs/{PREFIX}alpha", "action": "pause", "state": "PAUSED"}
