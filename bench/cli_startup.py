"""CLI start-up time: how long the installed ``distill`` takes for commands that do no work, and which imports cost.

For each command below, the console script of this environment runs ``--runs`` times after one warm-up run
(which fills the OS file cache), from a temporary directory; the median wall time is reported, with the min and
max. Then ``python -X importtime -c "import distillcli.cli"`` runs (after a warm-up) and its ten largest
cumulative import times are listed. Nothing here imports distillcli itself, so the numbers are what a user waits.

    python bench/cli_startup.py                  # make bench-startup
    python bench/cli_startup.py --runs 9 --exe ~/.local/bin/distill
Prints markdown tables and writes bench/results/cli_startup.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

COMMANDS = [
    ["--help"],
    ["run", "--help"],
    ["methods"],
    ["recommend", "--improve", "--weak-teacher"],
    ["--version"],
]
# One line of `-X importtime`: "import time:  self [us] | cumulative | imported package" (a header line too).
IMPORTTIME = re.compile(r"^import time:\s*(\d+)\s*\|\s*(\d+)\s*\|(\s*)(\S.*)$")
ENV = {**os.environ, "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "120"}


def time_command(exe: str, args: list[str], runs: int, cwd: str) -> dict[str, Any]:
    """Median (and min, max) wall seconds of `exe args` over `runs` runs after one warm-up; and its exit code."""

    def once() -> tuple[float, int]:
        start = time.perf_counter()
        done = subprocess.run(
            [exe, *args], cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False
        )
        return time.perf_counter() - start, done.returncode

    _, code = once()
    seconds = [once()[0] for _ in range(runs)]
    return {
        "command": " ".join(["distill", *args]),
        "exit_code": code,
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "max_s": max(seconds),
        "runs_s": seconds,
    }


def import_times(python: str, module: str, top: int, cwd: str) -> list[dict[str, Any]]:
    """The `top` largest cumulative import times of `import module` (one run, after a warm-up)."""
    command = [python, "-X", "importtime", "-c", f"import {module}"]
    subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, check=False)
    done = subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"`{' '.join(command)}` failed:\n{done.stderr[-2000:]}")
    rows = []
    for line in done.stderr.splitlines():
        match = IMPORTTIME.match(line)
        if match:
            self_us, cumulative_us, indent, name = match.groups()
            rows.append(
                {
                    "module": name.strip(),
                    "cumulative_ms": int(cumulative_us) / 1000,
                    "self_ms": int(self_us) / 1000,
                    "depth": len(indent) // 2,  # 0: imported by `import module` itself
                }
            )
    rows.sort(key=lambda row: row["cumulative_ms"], reverse=True)
    return rows[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exe", default=str(Path(sys.executable).with_name("distill")), help="the distill to time")
    parser.add_argument("--python", default=sys.executable, help="the interpreter for -X importtime")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per command, after one warm-up")
    parser.add_argument("--top", type=int, default=10, help="import entries to list")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "cli_startup.json")
    args = parser.parse_args()
    if not Path(args.exe).exists():
        raise SystemExit(f"no distill at {args.exe}: install distillcli (make install) or pass --exe")

    with tempfile.TemporaryDirectory() as cwd:
        commands = [time_command(args.exe, command, args.runs, cwd) for command in COMMANDS]
        imports = import_times(args.python, "distillcli.cli", args.top, cwd)
    version = subprocess.run([args.exe, "--version"], env=ENV, capture_output=True, text=True, check=False)
    document = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "distill": version.stdout.strip() if version.returncode == 0 else None,
        "exe": Path(args.exe).name,  # which console script, not where this machine keeps it
        "runs": args.runs,
        "commands": commands,
        "imports": {"statement": "import distillcli.cli", "top_cumulative": imports},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")

    machine = f"{os.cpu_count()} CPUs, Python {platform.python_version()}"
    print(f"## distill start-up ({args.runs} runs after a warm-up; {machine})\n")
    print("| command | median s | min s | max s | exit |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in commands:
        print(
            f"| `{row['command']}` | {row['median_s']:.3f} | {row['min_s']:.3f} | {row['max_s']:.3f} | "
            f"{row['exit_code']} |"
        )
    print(f"\n## `import distillcli.cli`: the {len(imports)} largest cumulative import times\n")
    print("| module | cumulative ms | self ms |")
    print("| --- | ---: | ---: |")
    for row in imports:
        print(f"| `{row['module']}` | {row['cumulative_ms']:.1f} | {row['self_ms']:.1f} |")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
