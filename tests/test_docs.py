"""The documentation's examples run against the emulator, so the docs cannot drift from the code.

Each page with examples runs in its own process (see `tests/_docs_runner.py` for the block markers). Examples that
cannot run here (they need Google) are compiled and type-checked with mypy, and every Python block of `docs/` must
be one or the other.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests._docs_runner import TypecheckModule, extract_blocks, typecheck_modules, unmarked_python_blocks

ROOT = Path(__file__).resolve().parents[1]

OWN_PAGES = [
    "docs/index.md",
    "docs/delayed-tasks.md",
    "docs/scheduled-tasks.md",
    "docs/async.md",
    "docs/options-and-limits.md",
    "docs/hooks.md",
    "docs/typing.md",
    "docs/errors.md",
    "docs/migrating.md",
]
"""Pages that must keep runnable examples; any other page with markers is run too."""


def _pages_with_examples() -> list[str]:
    marked = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "docs").glob("*.md")
        if "<!-- run -->" in (text := path.read_text(encoding="utf-8")) or "<!-- check" in text
    }
    return sorted(marked | set(OWN_PAGES))


@pytest.mark.slow
@pytest.mark.parametrize("page", _pages_with_examples())
def test_page_examples_run(page: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests._docs_runner", page],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("page", OWN_PAGES)
def test_page_has_visible_runnable_examples(page: str) -> None:
    blocks = extract_blocks((ROOT / page).read_text(encoding="utf-8"))
    assert any(not block.hidden for block in blocks), f"{page} lost its `<!-- run -->` markers"


def test_extracts_run_blocks_and_hidden_checks_in_order() -> None:
    page = "\n".join(
        [
            "# Title",
            "```python",
            "not_run = 1",
            "```",
            "<!-- run -->",
            "",
            "```python",
            "x = 1",
            "```",
            "<!-- check assert x == 1",
            "y = 2",
            "-->",
            "<!-- a plain comment -->",
        ]
    )
    blocks = extract_blocks(page)
    assert [(b.line, b.code, b.hidden) for b in blocks] == [(8, "x = 1", False), (10, "assert x == 1\ny = 2", True)]


def test_a_run_marker_without_a_code_block_is_an_error() -> None:
    with pytest.raises(ValueError, match="must be followed"):
        extract_blocks("<!-- run -->\ntext\n")


ALL_PAGES = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "docs").glob("*.md"))

# What a reader's project would use: the library's own types, no --strict demands on example code (a test
# function in an example needs no annotations), the bodies of unannotated functions checked all the same.
_MYPY_CONFIG = """\
[mypy]
python_version = 3.11
check_untyped_defs = True
warn_unused_ignores = True
plugins = pydantic.mypy
# a page may define a name again, as a reader's session would
disable_error_code = no-redef

[mypy-google.cloud.*,google.api_core.*,google.protobuf.*,grpc.*,proto.*]
ignore_missing_imports = True
"""


@pytest.mark.parametrize("page", ALL_PAGES)
def test_every_python_block_is_run_or_type_checked(page: str) -> None:
    unmarked = unmarked_python_blocks((ROOT / page).read_text(encoding="utf-8"))
    assert not unmarked, (
        f"{page}: the Python blocks at lines {unmarked} have no `<!-- run -->` or `<!-- typecheck -->` marker "
        "(see CONTRIBUTING.md, 'Docs that run')"
    )


def test_check_only_examples_compile_and_type_check(tmp_path: Path) -> None:
    modules: dict[str, tuple[str, TypecheckModule]] = {}
    for page in ALL_PAGES:
        for module in typecheck_modules((ROOT / page).read_text(encoding="utf-8")):
            compile(module.code, f"{page}:{module.line}", "exec", dont_inherit=True)
            file = tmp_path / f"{Path(page).stem.replace('-', '_')}_{module.line}.py"
            file.write_text(module.code, encoding="utf-8")
            modules[str(file)] = (page, module)
    assert modules, "no `<!-- typecheck -->` examples found"
    config = tmp_path / "mypy.ini"
    config.write_text(_MYPY_CONFIG, encoding="utf-8")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(config),
            "--cache-dir",
            os.devnull,
            "--no-error-summary",
            *modules,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    reported: dict[str, set[int]] = {path: set() for path in modules}
    problems: list[str] = []
    for line in result.stdout.splitlines():
        name, _, rest = line.partition(":")
        number, _, message = rest.partition(":")
        if name not in modules or not number.isdigit():
            problems.append(line)
            continue
        page, module = modules[name]
        if ": note:" in line:
            continue
        reported[name].add(int(number))
        if int(number) not in module.expected_errors | module.context_lines:
            problems.append(f"{page}:{module.page_lines[int(number) - 1]}:{message}")
    for name, (page, module) in modules.items():
        problems += [
            f"{page}:{module.page_lines[number - 1]}: mypy reports no error on a line marked `# error:`"
            for number in sorted(module.expected_errors - reported[name])
        ]
    assert not result.stderr, result.stderr
    assert not problems, "\n".join(problems)


def test_typecheck_blocks_get_the_earlier_setup_and_unmarked_blocks_are_found() -> None:
    page = textwrap.dedent(
        """\
        ```python
        shown_only = 1
        ```
        <!-- typecheck-setup
        from fastapi import FastAPI
        app = FastAPI()
        -->
        <!-- typecheck -->
        ```python
        app.title = "x"
        ```
        <!-- run -->
        ```py
        ran = 1
        ```
        <!-- typecheck -->

        ```python
        app.version = "1"  # error: not really
        ```
        """
    )
    modules = typecheck_modules(page)
    setup = "from fastapi import FastAPI\napp = FastAPI()\n"
    assert [(m.line, m.code) for m in modules] == [
        (10, setup + 'app.title = "x"\n'),
        (19, setup + 'app.title = "x"\nran = 1\napp.version = "1"  # error: not really\n'),
    ]
    assert modules[1].page_lines == (5, 6, 10, 14, 19)
    assert modules[1].expected_errors == {5}
    assert modules[1].context_lines == {3, 4}
    assert unmarked_python_blocks(page) == [1]


def test_a_typecheck_marker_without_a_code_block_is_an_error() -> None:
    with pytest.raises(ValueError, match="must be followed"):
        typecheck_modules("<!-- typecheck -->\ntext\n")
