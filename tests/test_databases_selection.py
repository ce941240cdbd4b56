"""Where the database tests find their servers (tests/_databases.py), decided without any Docker engine.

`choose` is pure: these tests feed it what the probes would have found. The probes themselves are checked against
things that exist on every machine: a listening socket, a closed port, a fake Docker engine on a Unix socket.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._databases import LOCAL_URLS, URL_VARIABLES, Choice, choose, docker_answers, in_ci

BACKENDS = sorted(URL_VARIABLES)


def decide(
    backend: str,
    *,
    environ: dict[str, str] | None = None,
    local: bool = False,
    docker: bool = False,
    installed: bool = True,
) -> Choice:
    return choose(
        backend,
        environ=environ or {},
        local_answers=local,
        docker_answers=docker,
        testcontainers_installed=installed,
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_environment_url_wins_over_everything(backend: str) -> None:
    url = f"{backend}://elsewhere/db"
    choice = decide(backend, environ={URL_VARIABLES[backend]: url, "CI": "true"}, local=True, docker=True)
    assert (choice.source, choice.url) == ("environment", url)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_local_server_is_preferred_to_a_container(backend: str) -> None:
    choice = decide(backend, local=True, docker=True)
    assert (choice.source, choice.url) == ("local", LOCAL_URLS[backend])


@pytest.mark.parametrize("backend", BACKENDS)
def test_docker_without_a_local_server_means_a_container(backend: str) -> None:
    choice = decide(backend, docker=True)
    assert (choice.source, choice.url) == ("container", None)


def test_an_empty_environment_url_counts_as_unset() -> None:
    assert decide("postgres", environ={URL_VARIABLES["postgres"]: "  "}, local=True).source == "local"


@pytest.mark.parametrize("backend", BACKENDS)
def test_with_neither_ci_fails_and_a_local_run_says_what_to_install(backend: str) -> None:
    local = decide(backend)
    ci = decide(backend, environ={"CI": "true"})
    assert (local.source, local.url, local.fail) == ("none", None, False)
    assert (ci.source, ci.fail) == ("none", True)
    name = {"postgres": "PostgreSQL", "mariadb": "MariaDB"}[backend]
    for needed in (f"Install {name}", "scripts/services.sh", "Docker", URL_VARIABLES[backend]):
        assert needed in local.message


def test_docker_without_testcontainers_says_how_to_install_it() -> None:
    choice = decide("mariadb", docker=True, installed=False)
    assert (choice.source, choice.fail) == ("none", False)
    assert "testcontainers is not installed" in choice.message
    assert "scripts/bootstrap.sh" in choice.message


def test_ci_flag_values() -> None:
    assert [in_ci({"CI": value}) for value in ("true", "1", "yes", "", "false", "0")] == [True] * 3 + [False] * 3
    assert not in_ci({})


def test_an_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="backend must be one of"):
        decide("sqlite", local=True)


@pytest.fixture
def fake_docker(tmp_path: Path) -> Iterator[tuple[str, list[bytes]]]:
    """A Unix socket answering one HTTP request with `200 OK` (what the engine's `/_ping` returns)."""
    path = str(tmp_path / "docker.sock")
    requests: list[bytes] = []
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def answer() -> None:
        connection, _ = server.accept()
        with connection:
            requests.append(connection.recv(1024))
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield path, requests
    finally:
        server.close()
        thread.join(timeout=10)


def test_docker_probe_pings_the_engine_named_by_docker_host(fake_docker: tuple[str, list[bytes]]) -> None:
    path, requests = fake_docker
    assert docker_answers({"DOCKER_HOST": f"unix://{path}"})
    assert requests[0].startswith(b"GET /_ping ")


def test_docker_probe_is_false_without_an_engine(tmp_path: Path) -> None:
    assert not docker_answers({"DOCKER_HOST": f"unix://{tmp_path / 'missing.sock'}"})
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert not docker_answers({"DOCKER_HOST": f"tcp://127.0.0.1:{port}"})
    assert not docker_answers({"DOCKER_HOST": "ssh://somewhere"})
