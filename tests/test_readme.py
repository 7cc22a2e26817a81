"""The README's commands run as written, in order, in a fresh directory, with DISTILL_SMOKE=1 (tiny budgets).

What runs: every ```bash block of README.md except the one under the "Set up" heading (`make quickstart` /
`make test`, which CI runs itself). Each block runs as one bash script under `set -euo pipefail`, so loops and
`\\` continuations work; comments are stripped; lines that call `make` or `source .venv/bin/activate` are
skipped (the environment running the tests is already set up, and its `distill` is first on PATH). Commands that
change the reader's machine (installs, shell completion) belong in ```console blocks, which are not run.

jq: where it is not installed, a tiny Python stand-in named `jq` goes on PATH (it supports `.`, `.key` and
`{key, ...}`, and fails on anything else); skipping the lines that pipe into jq would break the loops around them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
EXE_DIR = Path(sys.executable).parent  # where this environment's `distill` console script is
SKIPPED_HEADING = re.compile(r"set up\b", re.IGNORECASE)
SKIPPED_LINE = re.compile(r"^(make\b|(source|\.)\s+\S*\.venv/bin/activate\b)")
HEADER = ["set -euo pipefail", "trap 'echo \"__README_FAILED_AT__ $LINENO\" >&2' ERR"]


@dataclass
class Block:
    """One ```bash block: its script and, per script line, the README line it came from (None: added)."""

    heading: str
    script: str
    origin: list[int | None]
    readme_lines: dict[int, str]

    def command_at(self, script_line: int) -> tuple[int, str]:
        """The README line number and full text of the command whose last line is `script_line`."""
        number = self.origin[script_line - 1] if 0 < script_line <= len(self.origin) else None
        if number is None:
            return 0, "?"
        first = number
        while self.readme_lines.get(first - 1, "").rstrip().endswith("\\"):  # back to the continued command's start
            first -= 1
        return first, " ".join(self.readme_lines[n].strip().rstrip("\\").strip() for n in range(first, number + 1))


def strip_comment(line: str) -> str:
    """Drop a `#` comment: a `#` that starts a word, outside quotes (as bash reads it)."""
    quote = ""
    escaped = False
    for i, char in enumerate(line):
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def readme_blocks(text: str) -> list[Block]:
    """The blocks to run, in order, with the rules in this module's docstring."""
    blocks: list[Block] = []
    heading = ""
    fence: list[tuple[int, str]] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if fence is None:
            if line.startswith("#"):
                heading = line.lstrip("#").strip()
            elif line.strip() == "```bash":
                fence = []
        elif line.strip() == "```":
            if not SKIPPED_HEADING.match(heading):
                kept = [(n, strip_comment(raw)) for n, raw in fence]
                kept = [(n, "" if SKIPPED_LINE.match(code.strip()) else code) for n, code in kept]
                if any(code.strip() for _, code in kept):
                    script = "\n".join([*HEADER, *(code for _, code in kept)]) + "\n"
                    origin: list[int | None] = [None] * len(HEADER) + [n for n, _ in kept]
                    blocks.append(Block(heading, script, origin, {n: strip_comment(raw) for n, raw in fence}))
            fence = None
        else:
            fence.append((number, line))
    return blocks


JQ_SHIM = '''\
"""A stand-in for jq in the README test: `.`, `.key` and `{key, ...}` on one JSON document from stdin."""
import json, re, sys
args = [a for a in sys.argv[1:] if not a.startswith("-")]
expression = args[0].strip() if args else "."
data = json.load(sys.stdin)
if expression == ".":
    out = data
elif re.fullmatch(r"\\.[A-Za-z_][A-Za-z0-9_]*", expression):
    out = data.get(expression[1:])
elif re.fullmatch(r"\\{\\s*[A-Za-z_][A-Za-z0-9_]*(\\s*,\\s*[A-Za-z_][A-Za-z0-9_]*)*\\s*\\}", expression):
    out = {key: data.get(key) for key in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", expression)}
else:
    sys.exit(f"jq stand-in: unsupported filter {expression!r} (install jq)")
print(json.dumps(out, indent=2))
'''


def _path_with_jq(tmp_path: Path) -> str:
    entries = [str(EXE_DIR)]
    if shutil.which("jq") is None:
        shim_dir = tmp_path / "jq-shim"
        shim_dir.mkdir()
        shim = shim_dir / "jq"
        shim.write_text(f"#!{sys.executable}\n{JQ_SHIM}")
        shim.chmod(0o755)
        entries.append(str(shim_dir))
    return os.pathsep.join([*entries, os.environ.get("PATH", "")])


# Parsing: fast, and independent of what the README says today.

SAMPLE = """\
# Title

## Set up (two commands)

```bash
make quickstart   # not run
make test
```

## Use

```bash
distill run --json --out 'runs/#1'   # a comment
# a whole-line comment
source .venv/bin/activate
for m in a b; do
  distill run --method $m \\
    --quiet | jq '{method}'
done
```

```console
$ pip install distillcli
```

```bash
make docs
```
"""


def test_blocks_follow_the_rules() -> None:
    (block,) = readme_blocks(SAMPLE)
    assert block.heading == "Use"
    lines = block.script.splitlines()
    assert lines[: len(HEADER)] == HEADER
    assert lines[len(HEADER) :] == [
        "distill run --json --out 'runs/#1'",
        "",
        "",
        "for m in a b; do",
        "  distill run --method $m \\",
        "    --quiet | jq '{method}'",
        "done",
    ]
    assert block.command_at(len(HEADER) + 6) == (17, "distill run --method $m --quiet | jq '{method}'")
    assert block.command_at(len(HEADER) + 1) == (13, "distill run --json --out 'runs/#1'")


def test_strip_comment() -> None:
    assert strip_comment("echo a # b") == "echo a"
    assert strip_comment("echo 'a # b' \"#c\" d#e") == "echo 'a # b' \"#c\" d#e"
    assert strip_comment("echo \\# a") == "echo \\# a"
    assert strip_comment("# all") == ""


def test_jq_shim(tmp_path: Path) -> None:
    shim = tmp_path / "jq"
    shim.write_text(JQ_SHIM)
    doc = '{"method": "bc", "kl_end": 0.5, "other": 1}'

    def jq(expression: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, shim, expression], input=doc, capture_output=True, text=True, check=False
        )

    assert jq("{method, kl_end}").stdout.split() == ["{", '"method":', '"bc",', '"kl_end":', "0.5", "}"]
    assert jq(".method").stdout.strip() == '"bc"'
    assert jq(".[] | select(.x)").returncode != 0


# The README itself.


@pytest.mark.slow
def test_readme_commands_run(tmp_path: Path) -> None:
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    assert blocks, "README.md has no ```bash block to run"
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "DISTILL_SMOKE": "1", "PATH": _path_with_jq(tmp_path), "NO_COLOR": "1", "COLUMNS": "120"}
    env.pop("VIRTUAL_ENV", None)
    for block in blocks:
        done = subprocess.run(
            ["bash", "--norc", "--noprofile", "-c", block.script],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if done.returncode == 0:
            continue
        found = re.findall(r"__README_FAILED_AT__ (\d+)", done.stderr)
        number, command = block.command_at(int(found[0])) if found else (0, "?")
        where = f"README.md line {number}: {command}" if number else f"a block under '{block.heading}'"
        stderr = re.sub(r"__README_FAILED_AT__ \d+\n?", "", done.stderr)
        pytest.fail(
            f"{where}\nexited {done.returncode} (run in {work}, DISTILL_SMOKE=1)\n"
            f"--- stderr (end) ---\n{stderr[-3000:]}\n--- stdout (end) ---\n{done.stdout[-2000:]}"
        )
