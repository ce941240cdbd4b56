"""Runs the Python examples of one documentation page against a fresh emulator: `python -m tests._docs_runner PAGE`.

Two kinds of blocks run, in the order they appear, in one namespace (a page reads like one session):

* a fenced ```` ```python ```` block right after the line `<!-- run -->` (shown on the site);
* the body of an HTML comment opening with `<!-- check` (hidden on the site): assertions, or set-up the
  reader does not need to see. It can use `docs_emulator` (the `Emulator`), `docs_clock` (its
  `ManualClock`) and `docs_client()` (a `TestClient` of the page's `app`).

An example that cannot run here (it needs Google, or it is a fragment of a larger app) follows the line
`<!-- typecheck -->` instead: it is compiled and type-checked with mypy (`typecheck_modules()`, run by
`tests/test_docs.py`) as a module of its own that starts with the page's earlier `run` examples (what the
reader has seen) and hidden HTML comments opening with `<!-- typecheck-setup` (imports, `app = FastAPI()`,
`engine: Engine`, ... that the fragment takes from elsewhere). A line of a `typecheck` block whose comment
says `# error: ...` shows a mistake: mypy must report an error on it, and on no other line. A Python block
with neither marker is an error (`unmarked_python_blocks()`), so no example is forgotten.

Before the first block, an emulator of Cloud Tasks and Cloud Scheduler starts in this process and
`FASTAPI_GCP_TASKS_EMULATOR_HOST` points the library's default clients at it, so the examples keep their
production look (`https://worker.example.com`, no `client=`). Tasks and jobs are delivered straight into
the page's `app` (whatever the name `app` holds at delivery time). The page fails if a block raises, or if
any delivery was not acknowledged, unless a check block sets `docs_expect_failures = True`.

Each page runs in its own process because default clients are per process.
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import inspect
import os
import re
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

__all__ = ["Block", "TypecheckModule", "extract_blocks", "run_page", "typecheck_modules", "unmarked_python_blocks"]

_RUN_MARKER = re.compile(r"^<!--\s*run\s*-->\s*$")
_TYPECHECK_MARKER = re.compile(r"^<!--\s*typecheck\s*-->\s*$")
_TYPECHECK_SETUP_OPEN = re.compile(r"^<!--\s*typecheck-setup\b(.*)$")
_FENCE_OPEN = re.compile(r"^(\s*)(`{3,}|~{3,})\s*(?:python|py)\b.*$")
_CHECK_OPEN = re.compile(r"^<!--\s*check\b(.*)$")


@dataclasses.dataclass(frozen=True)
class Block:
    """One piece of code to run, with the line of the page where it starts (for tracebacks)."""

    line: int
    code: str
    hidden: bool


def extract_blocks(text: str) -> list[Block]:
    """The runnable blocks of a Markdown page, in order."""
    lines = text.splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if _RUN_MARKER.match(line):
            index += 1
            while index < len(lines) and not lines[index].strip():
                index += 1
            if index == len(lines) or _FENCE_OPEN.match(lines[index]) is None:
                raise ValueError(f"line {index + 1}: `<!-- run -->` must be followed by a ```python block")
            start, index, body = _fence_body(lines, index)
            blocks.append(Block(line=start + 1, code="\n".join(body), hidden=False))
        elif match := _CHECK_OPEN.match(line):
            start = index + 1
            body = [match.group(1).strip()]
            index += 1
            while index < len(lines) and lines[index].strip() != "-->":
                body.append(lines[index])
                index += 1
            if index == len(lines):
                raise ValueError(f"line {start}: unclosed `<!-- check` comment")
            blocks.append(Block(line=start, code="\n".join(body), hidden=True))
        index += 1
    return blocks


@dataclasses.dataclass(frozen=True)
class TypecheckModule:
    """A `typecheck` block as a module of its own, after what the reader has seen before it on the page.

    `code` is the page's earlier examples and `typecheck-setup` blocks, then the block; `page_lines[i]` is
    the line of the page that line `i + 1` of `code` comes from. `expected_errors` are the lines of `code` whose
    comment announces a type error (`# error: ...`): mypy must report one there, and nowhere else but on the
    `context_lines` (the earlier examples: they are run or checked on their own, and are context here).
    """

    line: int
    code: str
    page_lines: tuple[int, ...]
    expected_errors: frozenset[int]
    context_lines: frozenset[int]


def _fence_body(lines: list[str], index: int) -> tuple[int, int, list[str]]:
    """The code of the fence opening at `index`: (its first line's index, the closing line's index, its lines)."""
    opening = _FENCE_OPEN.match(lines[index])
    assert opening is not None
    indent, fence = opening.group(1), opening.group(2)
    start = index + 1
    end = start
    while end < len(lines) and lines[end].strip() != fence:
        end += 1
    if end == len(lines):
        raise ValueError(f"line {start}: unclosed code block")
    return start, end, [text_line.removeprefix(indent) for text_line in lines[start:end]]


def _marker_before(lines: list[str], index: int) -> str:
    """The non-blank line above line `index`, stripped."""
    above = index - 1
    while above >= 0 and not lines[above].strip():
        above -= 1
    return lines[above].strip() if above >= 0 else ""


def unmarked_python_blocks(text: str) -> list[int]:
    """The (1-based) lines of Python fences that are neither `<!-- run -->` nor `<!-- typecheck -->` examples."""
    lines = text.splitlines()
    unmarked: list[int] = []
    index = 0
    while index < len(lines):
        if _FENCE_OPEN.match(lines[index]):
            marker = _marker_before(lines, index)
            if not (_RUN_MARKER.match(marker) or _TYPECHECK_MARKER.match(marker)):
                unmarked.append(index + 1)
            index = _fence_body(lines, index)[1]
        index += 1
    return unmarked


def typecheck_modules(text: str) -> list[TypecheckModule]:
    """One module per `<!-- typecheck -->` block of a page, each after the page's earlier examples and set-up."""
    lines = text.splitlines()
    context: list[tuple[int, str]] = []
    seen: set[int] = set()
    modules: list[TypecheckModule] = []
    index = 0
    while index < len(lines):
        line = lines[index].strip()  # markers may be indented, inside a content tab
        if _RUN_MARKER.match(line) or _TYPECHECK_MARKER.match(line):
            typecheck = bool(_TYPECHECK_MARKER.match(line))
            index += 1
            while index < len(lines) and not lines[index].strip():
                index += 1
            if index == len(lines) or not _FENCE_OPEN.match(lines[index]):
                raise ValueError(f"line {index + 1}: `{line.strip()}` must be followed by a ```python block")
            start, index, body = _fence_body(lines, index)
            numbered = [(start + 1 + offset, code_line) for offset, code_line in enumerate(body)]
            earlier = set(seen)
            seen.update(page_line for page_line, _ in numbered)
            if not typecheck:
                context.extend(numbered)
                continue
            code = [*context, *numbered]
            modules.append(
                TypecheckModule(
                    line=start + 1,
                    code="\n".join(code_line for _, code_line in code) + "\n",
                    page_lines=tuple(page_line for page_line, _ in code),
                    expected_errors=frozenset(
                        number
                        for number, (page_line, code_line) in enumerate(code, start=1)
                        if page_line > start and "# error:" in code_line
                    ),
                    context_lines=frozenset(
                        number for number, (page_line, _) in enumerate(code, start=1) if page_line in earlier
                    ),
                )
            )
            context.extend(numbered)
        elif match := _TYPECHECK_SETUP_OPEN.match(line):
            start = index + 1
            if first := match.group(1).strip():
                context.append((start, first))
            index += 1
            while index < len(lines) and lines[index].strip() != "-->":
                context.append((index + 1, lines[index]))
                index += 1
            if index == len(lines):
                raise ValueError(f"line {start}: unclosed `<!-- typecheck-setup` comment")
        index += 1
    return modules


def _execute(block: Block, namespace: dict[str, Any], filename: str) -> None:
    # Line numbers in tracebacks point into the page.
    source = "\n" * (block.line - 1) + block.code
    code = compile(source, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    result = eval(code, namespace)
    if inspect.iscoroutine(result):
        asyncio.run(result)


def _warnings_as_errors() -> None:
    """The same warning policy as the test suite (pyproject's `filterwarnings`)."""
    warnings.simplefilter("error")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"google\..*")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"proto\..*")
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")


def run_page(path: Path) -> int:
    """Run every block of the page; 0 when all of them passed."""
    _warnings_as_errors()
    from fastapi.testclient import TestClient

    from fastapi_gcp_tasks.emulator import Emulator, ManualClock

    blocks = extract_blocks(path.read_text(encoding="utf-8"))
    if not blocks:
        print(f"{path}: no runnable blocks", file=sys.stderr)
        return 1
    namespace: dict[str, Any] = {"__name__": "__docs__"}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await namespace["app"](scope, receive, send)

    def docs_client() -> TestClient:
        return TestClient(namespace["app"])

    clock = ManualClock()
    with Emulator(clock=clock, deliver_to=app, auto_create_queues=True) as emulator:
        os.environ["FASTAPI_GCP_TASKS_EMULATOR_HOST"] = emulator.address
        namespace.update(docs_emulator=emulator, docs_clock=clock, docs_client=docs_client)
        for block in blocks:
            try:
                _execute(block, namespace, str(path))
            except BaseException:  # noqa: BLE001 - reported with the page's line numbers, then the page fails
                kind = "check" if block.hidden else "example"
                print(f"{path}:{block.line}: the {kind} block failed", file=sys.stderr)
                traceback.print_exc()
                return 1
        emulator.wait_until_idle(timeout=10)
        failed = [d for d in emulator.deliveries if not d.ok]
        if failed and not namespace.get("docs_expect_failures"):
            for delivery in failed:
                print(f"{path}: {delivery.method} {delivery.url} -> {delivery.status} {delivery.error or ''}")
            return 1
    print(f"{path}: {len(blocks)} blocks passed, {len(emulator.deliveries)} deliveries")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_page(Path(sys.argv[1])))
