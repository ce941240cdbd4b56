"""Static typing: correct calls type-check, wrong types, missing arguments and unknown options do not."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_mypy(*files: str) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--show-error-codes", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


@pytest.mark.slow
def test_correct_uses_type_check() -> None:
    code, output = run_mypy("tests/typing_checks/typed_app.py")
    assert code == 0, output


@pytest.mark.slow
def test_each_misuse_is_a_type_error() -> None:
    source = (ROOT / "tests/typing_checks/misuse.py").read_text().splitlines()
    expected = {
        number: match.group(1)
        for number, line in enumerate(source, start=1)
        if (match := re.search(r"# error: ([\w-]+)", line))
    }
    _, output = run_mypy("tests/typing_checks/misuse.py")
    found: dict[int, set[str]] = {}
    for match in re.finditer(r"misuse\.py:(\d+): error: .*\[([\w-]+)\]", output):
        found.setdefault(int(match.group(1)), set()).add(match.group(2))
    missing = {line: code for line, code in expected.items() if code not in found.get(line, set())}
    assert not missing, f"expected errors not reported: {missing}\n{output}"
    unexpected = set(found) - set(expected)
    assert not unexpected, f"errors on lines not marked: {sorted(unexpected)}\n{output}"
