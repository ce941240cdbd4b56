"""Which PostgreSQL and MariaDB servers the tests use, decided in one place.

In order of preference:

1. the URL in `FASTAPI_GCP_TASKS_TEST_POSTGRES_URL` / `FASTAPI_GCP_TASKS_TEST_MYSQL_URL` (SQLAlchemy URLs);
2. the local server (`127.0.0.1:5432`, `127.0.0.1:3306`), when it answers: the default on the project's machines;
3. a container started with testcontainers (the `dev` extra), when a Docker engine answers: a laptop with Docker
   and no local databases; it is started once per test session, on first use, and stopped when the session ends;
4. none: the tests that need the server fail in CI and are skipped elsewhere, with a message saying what to
   install or run.

`choose()` is the decision, a pure function of what was probed (tested in `tests/test_databases_selection.py`);
`server_url()` probes, decides once per process and starts the container when that is the decision.
"""

from __future__ import annotations

import atexit
import dataclasses
import importlib.util
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from testcontainers.core.generic import DbContainer

__all__ = [
    "LOCAL_URLS",
    "URL_VARIABLES",
    "Choice",
    "choose",
    "docker_answers",
    "in_ci",
    "local_server_answers",
    "postgres_conninfo",
    "server_url",
]

URL_VARIABLES: dict[str, str] = {
    "postgres": "FASTAPI_GCP_TASKS_TEST_POSTGRES_URL",
    "mariadb": "FASTAPI_GCP_TASKS_TEST_MYSQL_URL",
}
LOCAL_URLS: dict[str, str] = {
    "postgres": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "mariadb": "mysql+pymysql://root@127.0.0.1:3306/test",
}
_LOCAL_ADDRESSES: dict[str, tuple[str, int]] = {"postgres": ("127.0.0.1", 5432), "mariadb": ("127.0.0.1", 3306)}
_SERVER_NAMES: dict[str, str] = {"postgres": "PostgreSQL", "mariadb": "MariaDB"}
_CONTAINER_IMAGES: dict[str, str] = {"postgres": "postgres:16-alpine", "mariadb": "mariadb:11"}


@dataclasses.dataclass(frozen=True)
class Choice:
    """Where one backend's tests find their server.

    `source` is "environment", "local", "container" or "none". `url` is set for the first two; "container"
    means: start one. For "none", `fail` says whether the tests fail (CI) or skip, and `message` says why
    and what to do.
    """

    backend: str
    source: Literal["environment", "local", "container", "none"]
    url: str | None = None
    fail: bool = False
    message: str = ""


def in_ci(environ: Mapping[str, str]) -> bool:
    """CI runs set `CI` (to `true` in `.ci/run`); `false` and `0` mean a local run, as for the CI providers."""
    return environ.get("CI", "").strip().lower() not in ("", "false", "0")


def choose(
    backend: str,
    *,
    environ: Mapping[str, str],
    local_answers: bool,
    docker_answers: bool,
    testcontainers_installed: bool,
) -> Choice:
    """Decide where `backend`'s tests find their server, from the environment and what the probes found."""
    if backend not in URL_VARIABLES:
        raise ValueError(f"backend must be one of {sorted(URL_VARIABLES)}, not {backend!r}")
    variable = URL_VARIABLES[backend]
    if url := environ.get(variable, "").strip():
        return Choice(backend, "environment", url=url)
    if local_answers:
        return Choice(backend, "local", url=LOCAL_URLS[backend])
    if docker_answers and testcontainers_installed:
        return Choice(backend, "container")
    name = _SERVER_NAMES[backend]
    host, port = _LOCAL_ADDRESSES[backend]
    if docker_answers:
        remedy = (
            "A Docker engine answers but testcontainers is not installed: run scripts/bootstrap.sh "
            "(or `.venv/bin/uv pip install 'testcontainers[postgres,mysql]'`) to let the tests start a container."
        )
    else:
        remedy = (
            f"Install {name} and run scripts/services.sh (it starts a local server that is down; see "
            f"CONTRIBUTING.md for the user and database), or start a Docker engine so the tests run {name} in a "
            f"container, or set {variable} to a server of yours."
        )
    message = f"no {name} for the tests: nothing answers on {host}:{port}, {variable} is unset. {remedy}"
    return Choice(backend, "none", fail=in_ci(environ), message=message)


def local_server_answers(backend: str, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on the backend's local address."""
    try:
        with socket.create_connection(_LOCAL_ADDRESSES[backend], timeout=timeout):
            return True
    except OSError:
        return False


def _docker_sockets(environ: Mapping[str, str]) -> list[str | tuple[str, int]]:
    host = environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        return [host.removeprefix("unix://")]
    if host.startswith("tcp://"):
        address, _, port = host.removeprefix("tcp://").rstrip("/").rpartition(":")
        return [(address, int(port))] if port.isdigit() else []
    if host:
        return []
    return ["/var/run/docker.sock", str(Path.home() / ".docker" / "run" / "docker.sock")]


def docker_answers(environ: Mapping[str, str], timeout: float = 2.0) -> bool:
    """Whether a Docker engine answers its ping (`DOCKER_HOST`, or the usual socket paths)."""
    for address in _docker_sockets(environ):
        try:
            if isinstance(address, str):
                if not os.path.exists(address):
                    continue
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                sock.connect(address)
            else:
                sock = socket.create_connection(address, timeout=timeout)
            with sock:
                sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                reply = sock.recv(1024)
        except OSError:
            continue
        if reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n", 1)[0]:
            return True
    return False


_choices: dict[str, Choice] = {}


def _start_container(backend: str) -> str:
    """Start a throw-away server (testcontainers, imported only here) and return its SQLAlchemy URL."""
    container: DbContainer
    if backend == "postgres":
        from testcontainers.community.postgres import PostgresContainer

        container = PostgresContainer(_CONTAINER_IMAGES[backend], username="postgres", dbname="test", driver="psycopg")
    else:
        from testcontainers.community.mysql import MySqlContainer

        container = MySqlContainer(_CONTAINER_IMAGES[backend], dialect="pymysql", username="root", dbname="test")
    container.start()
    atexit.register(container.stop)
    return container.get_connection_url()


def server_url(backend: str) -> Choice:
    """Probe, decide (once per process) and, for a container, start it: a choice with a URL, or "none"."""
    if backend not in URL_VARIABLES:
        raise ValueError(f"backend must be one of {sorted(URL_VARIABLES)}, not {backend!r}")
    if backend in _choices:
        return _choices[backend]
    from_environment = bool(os.environ.get(URL_VARIABLES[backend], "").strip())
    local = not from_environment and local_server_answers(backend)
    choice = choose(
        backend,
        environ=os.environ,
        local_answers=local,
        docker_answers=not from_environment and not local and docker_answers(os.environ),
        testcontainers_installed=importlib.util.find_spec("testcontainers") is not None,
    )
    if choice.source == "container":
        choice = dataclasses.replace(choice, url=_start_container(backend))
    _choices[backend] = choice
    return choice


def postgres_conninfo() -> str:
    """The PostgreSQL server as a libpq URL for `psycopg.connect`; skips locally, fails in CI, when there is none."""
    import pytest
    from sqlalchemy import make_url

    choice = server_url("postgres")
    if choice.url is None:
        if choice.fail:
            pytest.fail(choice.message)
        pytest.skip(choice.message)
    return make_url(choice.url).set(drivername="postgresql").render_as_string(hide_password=False)
