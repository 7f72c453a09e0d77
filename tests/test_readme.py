"""The README's Python examples run as written, so the README cannot go stale.

Every ```python block of README.md runs, in the README's order and in one fresh Python process,
as a reader pasting the examples one after another into a session would: later blocks use what
earlier ones defined (``to``, ``SupportAgent``, ``evaluate``). They run offline in a temporary
directory: **a real model string such as ``openai/gpt-4o-mini`` is replaced by the simulated
model** ``simulated/feedback-follower`` (no key, no network), and no provider key is passed on.

A block that cannot run offline says so on the line just above its fence, with the reason:

    <!-- readme-test: skip: why it cannot run here -->

The script keeps the README's line numbers (every other line is blank), so a failure's
traceback points at the README line that raised.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
import re
import subprocess
import sys

import pytest

README = Path(__file__).parent.parent / "README.md"
SIMULATED = "simulated/feedback-follower"
# Model strings of real providers the examples use; each is replaced by the simulated model.
REAL_MODEL = re.compile(r"""(?<=["'])(?:openai|anthropic|gemini|azure)/[\w.:-]+(?=["'])""")
SKIP = re.compile(r"^<!--\s*readme-test:\s*skip:\s*(?P<reason>\S.*?)\s*-->$")
FENCE = re.compile(r"^```(?P<info>\S*)\s*$")


@dataclasses.dataclass(frozen=True)
class Block:
    line: int  # the README line of the first line of code (1-based)
    code: str
    skip: str | None  # why it does not run, or None


def python_blocks(text: str) -> list[Block]:
    """The ```python blocks of a Markdown text, with their skip markers."""
    lines = text.splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        if opening.group("info") == "python":
            above = lines[index - 1].strip() if index > 0 else ""
            skip = SKIP.match(above)
            blocks.append(
                Block(index + 2, "\n".join(lines[index + 1 : end]), skip and skip["reason"])
            )
        elif lines[index - 1 : index] and "readme-test" in lines[index - 1]:
            raise AssertionError(
                f"README.md:{index}: a readme-test marker above a non-Python fence"
            )
        index = end + 1
    return blocks


def offline(code: str) -> str:
    return REAL_MODEL.sub(SIMULATED, code)


def script(blocks: list[Block]) -> str:
    """The runnable blocks as one script whose line numbers are the README's."""
    lines: list[str] = []
    for block in blocks:
        if block.skip is not None:
            continue
        lines += [""] * (block.line - 1 - len(lines))
        lines += offline(block.code).splitlines()
    return "\n".join(lines) + "\n"


def test_the_parser_finds_blocks_and_skip_markers() -> None:
    text = (
        "# Title\n"
        "```python\nx = 1\n```\n"
        "```bash\nmake demo\n```\n"
        "<!-- readme-test: skip: needs a person -->\n"
        "```python\nwait_for_a_person()\n```\n"
        '```python\nllm = "openai/gpt-4o-mini"\n```\n'
    )
    blocks = python_blocks(text)
    assert [(b.line, b.code, b.skip) for b in blocks] == [
        (3, "x = 1", None),
        (10, "wait_for_a_person()", "needs a person"),
        (13, 'llm = "openai/gpt-4o-mini"', None),
    ]
    assert script(blocks).splitlines()[12] == f'llm = "{SIMULATED}"'
    assert script(blocks).splitlines()[2] == "x = 1"


def test_every_skipped_block_says_why() -> None:
    text = README.read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), start=1):
        if "readme-test" in line:
            assert SKIP.match(line.strip()), f"README.md:{number}: malformed marker {line!r}"
    blocks = python_blocks(text)
    assert blocks and blocks[0].skip is None, "the first example must run"


@pytest.mark.slow
def test_the_readme_examples_run_offline(tmp_path: Path) -> None:
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    runnable = [block for block in blocks if block.skip is None]
    assert len(runnable) >= 2, blocks
    source = tmp_path / "readme_examples.py"
    source.write_text(script(blocks), encoding="utf-8")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.endswith("_API_KEY") and key != "TRACE_OPTUNA_STORAGE"
    }
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    result = subprocess.run(
        [sys.executable, source.name],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    # Tracebacks name readme_examples.py with the README's own line numbers.
    assert result.returncode == 0, (
        f"a README example raised (line numbers are README.md's):\n{result.stderr[-4000:]}"
    )
