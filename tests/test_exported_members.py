"""The public surface: every name of fastapi-gcp-tasks 0.3 still importable where it was, and `__all__` honest."""

from __future__ import annotations

import ast
import importlib
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

import fastapi_gcp_tasks

COMPAT = {
    "fastapi_gcp_tasks.delayed_route": ["DelayedRouteBuilder"],
    "fastapi_gcp_tasks.scheduled_route": ["ScheduledRouteBuilder"],
    "fastapi_gcp_tasks.async_delayed_route": ["AsyncDelayedRouteBuilder"],
    "fastapi_gcp_tasks.async_scheduled_route": ["AsyncScheduledRouteBuilder"],
    "fastapi_gcp_tasks.decorators": ["task_default_options"],
    "fastapi_gcp_tasks.dependencies": ["CloudTasksHeaders", "max_retries"],
    "fastapi_gcp_tasks.hooks": [
        "noop_hook",
        "chained_hook",
        "oidc_delayed_hook",
        "oidc_scheduled_hook",
        "oauth_delayed_hook",
        "oauth_scheduled_hook",
        "deadline_delayed_hook",
        "deadline_scheduled_hook",
        "DelayedTaskHook",
        "ScheduledHook",
    ],
    "fastapi_gcp_tasks.utils": [
        "queue_path",
        "location_path",
        "ensure_queue",
        "ensure_queue_async",
        "emulator_client",
        "async_emulator_client",
    ],
    "fastapi_gcp_tasks.exception": ["MissingParamError", "WrongTypeError", "BadMethodError"],
    "fastapi_gcp_tasks.protocols": [
        "DelayedTask",
        "AsyncDelayedTask",
        "ScheduledTask",
        "AsyncScheduledTask",
        "DelayOptions",
        "AsyncDelayOptions",
        "SchedulerOptions",
        "AsyncSchedulerOptions",
        "TaskDefaultOptions",
        "as_delayed_task",
        "as_async_delayed_task",
        "as_scheduled_task",
        "as_async_scheduled_task",
    ],
}


@pytest.mark.parametrize(("module", "names"), COMPAT.items())
def test_compatibility_names_are_importable_from_their_module_and_the_root(module: str, names: list[str]) -> None:
    loaded = importlib.import_module(module)
    for name in names:
        assert getattr(loaded, name) is getattr(fastapi_gcp_tasks, name), name


def test_root_all_is_sorted_and_complete() -> None:
    exported = fastapi_gcp_tasks.__all__
    assert exported == sorted(exported)
    for name in exported:
        assert hasattr(fastapi_gcp_tasks, name), name
    public = {
        name
        for name, value in vars(fastapi_gcp_tasks).items()
        if not name.startswith("_") and not isinstance(value, type(importlib))
    }
    assert public - set(exported) == set(), "public names missing from __all__"
    assert set(fastapi_gcp_tasks._LAZY) == set(exported), "every public name is loaded on first use"


def test_the_core_imports_without_the_outbox_and_emulator_extras() -> None:
    code = (
        "import sys; sys.modules['sqlalchemy'] = None; sys.modules['alembic'] = None; sys.modules['hpack'] = None\n"
        "import fastapi_gcp_tasks, fastapi_gcp_tasks.cli\n"
        "assert not [m for m in sys.modules if m.split('.')[:2] == ['fastapi_gcp_tasks', 'outbox']]\n"
        "assert 'outbox' not in sys.modules and 'fastapi_gcp_tasks.emulator' not in sys.modules\n"
        "print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.stdout.strip() == "ok", result.stderr


ROOT_REEXPORTS = [
    "async_delayed_route",
    "async_scheduled_route",
    "buffering",
    "decorators",
    "delayed_route",
    "dependencies",
    "hooks",
    "oidc",
    "poison",
    "protocols",
    "scheduled_route",
    "utils",
]


@pytest.mark.parametrize("module", ROOT_REEXPORTS)
def test_the_public_modules_at_the_root_only_re_export(module: str) -> None:
    path = pathlib.Path(fastapi_gcp_tasks.__file__).parent / f"{module}.py"
    tree = ast.parse(path.read_text())

    def allowed(node: ast.stmt) -> bool:
        if isinstance(node, ast.Import | ast.ImportFrom):
            return True
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):  # the docstring
            return True
        return isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["__all__"]

    own = [ast.unparse(node).splitlines()[0] for node in tree.body if not allowed(node)]
    assert own == [], f"{module}.py holds {own}: implementation belongs in a stage folder"
    loaded = importlib.import_module(f"fastapi_gcp_tasks.{module}")
    assert all(hasattr(loaded, name) for name in loaded.__all__)


def test_the_wheel_ships_the_outbox_inside_the_package_and_no_top_level_outbox(tmp_path: pathlib.Path) -> None:
    uv = shutil.which("uv") or str(pathlib.Path(sys.executable).parent / "uv")
    root = pathlib.Path(fastapi_gcp_tasks.__file__).parent.parent
    subprocess.run([uv, "build", "--wheel", "--quiet", "-o", str(tmp_path), str(root)], check=True, timeout=300)
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"fastapi_gcp_tasks", "fastapi_cloud_tasks"}
    assert "fastapi_gcp_tasks/outbox/_migrations/versions/0001_outbox_tables.py" in names
    assert "fastapi_gcp_tasks/py.typed" in names
    # Every module of the source tree is shipped (an ignore rule once kept the whole build/ folder out).
    package = root / "fastapi_gcp_tasks"
    sources = {
        f"fastapi_gcp_tasks/{path.relative_to(package).as_posix()}"
        for path in package.rglob("*.py")
        if "__pycache__" not in path.parts
    }
    sources |= {
        f"fastapi_gcp_tasks/outbox/{path.relative_to(root / 'outbox').as_posix()}"
        for path in (root / "outbox").glob("*.py")
    }
    assert sources - set(names) == set()


def test_fastapi_cloud_tasks_users_keep_their_imports() -> None:
    from fastapi_cloud_tasks import DelayedRouteBuilder, ScheduledRouteBuilder
    from fastapi_cloud_tasks.dependencies import CloudTasksHeaders, max_retries
    from fastapi_cloud_tasks.hooks import chained_hook, oidc_delayed_hook
    from fastapi_cloud_tasks.utils import emulator_client, location_path, queue_path

    assert DelayedRouteBuilder is fastapi_gcp_tasks.DelayedRouteBuilder
    assert ScheduledRouteBuilder is fastapi_gcp_tasks.ScheduledRouteBuilder
    assert CloudTasksHeaders is fastapi_gcp_tasks.CloudTasksHeaders
    assert max_retries is fastapi_gcp_tasks.max_retries
    assert chained_hook is fastapi_gcp_tasks.chained_hook
    assert oidc_delayed_hook is fastapi_gcp_tasks.oidc_delayed_hook
    assert emulator_client is fastapi_gcp_tasks.emulator_client
    path = queue_path(project="p", location="l", queue="q")
    parts = {"project": "p", "location": "l", "queue": "q"}
    assert location_path(**parts) == "projects/p/locations/l"
    assert path == "projects/p/locations/l/queues/q"
