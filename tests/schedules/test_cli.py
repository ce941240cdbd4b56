"""`fastapi-gcp-tasks schedules` on the example app: in a subprocess against a running emulator, and in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud import scheduler_v1

from fastapi_gcp_tasks.cli import main
from fastapi_gcp_tasks.emulator import Emulator

ROOT = Path(__file__).resolve().parents[2]
APP = "examples.schedules.app:app"
LOCATION = "projects/demo-project/locations/europe-west1"


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    from examples.schedules.app import app

    with Emulator(deliver_to=app) as emu:
        yield emu


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FASTAPI_GCP_TASKS_")}
    environment.update(env, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "fastapi_gcp_tasks", "schedules", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        check=False,
    )


def job_ids(emulator: Emulator) -> set[str]:
    return {job.name.rsplit("/", 1)[1] for job in emulator.scheduler_client().list_jobs(parent=LOCATION)}


@pytest.mark.slow
def test_plan_sync_and_operate_in_a_subprocess(emulator: Emulator) -> None:
    host = ["--emulator-host", emulator.address]
    client = emulator.scheduler_client()
    client.create_job(
        parent=LOCATION,
        job=scheduler_v1.Job(
            name=f"{LOCATION}/jobs/shipping-labels",
            schedule="0 * * * *",
            http_target=scheduler_v1.HttpTarget(uri="http://shipping.example/labels"),
        ),
    )

    planned = cli("plan", APP, "--exit-code", *host)
    assert planned.returncode == 1, planned.stderr
    assert "+ create    billing-cleanup  */30 * * * * (UTC) GET http://127.0.0.1:8000/cron/cleanup" in planned.stdout
    assert "Plan: 3 to create, 0 to update, 0 to delete, 0 unchanged." in planned.stdout

    dry = cli("sync", APP, "--dry-run", *host)
    assert dry.returncode == 1, dry.stderr
    assert "Dry run: nothing was written." in dry.stdout
    assert job_ids(emulator) == {"shipping-labels"}

    synced = cli("sync", APP, *host)
    assert synced.returncode == 0, synced.stderr
    assert "Synced: 3 created, 0 updated, 0 deleted, 0 unchanged." in synced.stdout
    assert job_ids(emulator) == {"shipping-labels", "billing-cleanup", "billing-invoices-eu", "billing-reminders"}

    # everything from the environment this time; APP_URL moves every job's target
    env = {"FASTAPI_GCP_TASKS_SCHEDULES_APP": APP, "FASTAPI_GCP_TASKS_EMULATOR_HOST": emulator.address}
    clean = cli("plan", "--exit-code", **env, FASTAPI_GCP_TASKS_SCHEDULES_VERBOSE="1")
    assert clean.returncode == 0, clean.stderr
    assert "= unchanged billing-reminders" in clean.stdout
    moved = cli("plan", **env, FASTAPI_GCP_TASKS_SCHEDULES_EXIT_CODE="1", APP_URL="https://billing.example")
    assert moved.returncode == 1, moved.stderr
    assert (
        "    http_target.uri: 'http://127.0.0.1:8000/cron/reminders?days_overdue=7' -> "
        "'https://billing.example/cron/reminders?days_overdue=7'"
    ) in moved.stdout

    paused = cli("pause", "examples.schedules.app", "reminders", *host)  # module alone: its `schedules`
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.strip() == f"{LOCATION}/jobs/billing-reminders: PAUSED"
    assert client.get_job(name=f"{LOCATION}/jobs/billing-reminders").state == scheduler_v1.Job.State.PAUSED
    resumed = cli("resume", "examples.schedules.app:schedules", "reminders", *host)
    assert resumed.stdout.strip() == f"{LOCATION}/jobs/billing-reminders: ENABLED"

    ran = cli("run", APP, "cleanup", *host)
    assert ran.returncode == 0, ran.stderr
    emulator.wait_until_idle(timeout=10)
    (delivery,) = [d for d in emulator.deliveries if d.source.endswith("/jobs/billing-cleanup")]
    assert delivery.status == 200

    unknown = cli("run", APP, "nope", *host)
    assert unknown.returncode == 2
    assert "no schedule named 'nope' is declared (declared: invoices-eu, reminders, cleanup)" in unknown.stderr
    assert job_ids(emulator) >= {"shipping-labels"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["plan", "examples.schedules.nowhere"],
            "cannot load APP 'examples.schedules.nowhere:schedules': ModuleNotFoundError: No module named",
        ),
        (
            ["plan", "examples.schedules.app:nothing"],
            "cannot load APP 'examples.schedules.app:nothing': AttributeError: module 'examples.schedules.app' "
            "has no attribute 'nothing'",
        ),
        (
            ["plan", "examples.schedules.app:logger"],
            "cannot load APP 'examples.schedules.app:logger': TypeError: Logger object, neither a Schedules "
            "registry nor an app with state.schedules",
        ),
    ],
)
def test_a_bad_app_is_an_error_with_status_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    assert main(["schedules", *argv]) == 2
    assert message in capsys.readouterr().err


def test_schedules_without_a_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schedules"]) == 2
    assert "plan" in capsys.readouterr().out
