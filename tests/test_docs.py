"""The documentation's examples run against the emulator, so the docs cannot drift from the code.

Each page with examples runs in its own process (see `tests/_docs_runner.py` for the block markers).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests._docs_runner import extract_blocks

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
