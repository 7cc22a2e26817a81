"""The default command on every rl-zoo run folder under DIR: does `distill run --teacher <folder>` copy each one?

    python bench/corpus.py DIR [--out bench/results/corpus] [--only REGEX] [--skip REGEX] [--seed 0]
    make bench-corpus CORPUS=../shared/teachers/rl-trained-agents

DIR is laid out as rl-baselines3-zoo writes logs (``<algo>/<Env>_<N>/<Env>.zip`` and ``<Env>/args.yml``), e.g. a full
clone of DLR-RM/rl-trained-agents. Each folder is distilled exactly as a user would, with nothing but
``distill run --teacher <folder>`` (plus ``--out``, ``--seed`` and ``--json``), in its own process; the table has the
folder, algorithm, env, the teacher's, the student's and a random policy's return, the normalised score, the env
steps at the first evaluation with score >= 0.9, the seconds taken and any notice (a mapped env id). Writes
``table.md`` and ``corpus.json`` into --out and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

THRESHOLD = 0.9


def run_folders(root: Path) -> list[Path]:
    """Every rl-zoo run folder under root: ``<Env>_<N>/`` holding ``<Env>.zip`` and ``<Env>/args.yml``."""
    found = []
    for args in sorted(root.rglob("args.yml")):
        stats = args.parent
        folder = stats.parent
        if (folder / f"{stats.name}.zip").is_file() and re.fullmatch(rf"{re.escape(stats.name)}_\d+", folder.name):
            found.append(folder)
    return found


def steps_to(run_dir: Path, teacher: float, random: float, threshold: float) -> int | None:
    """Env steps at the first evaluation whose normalised score reached ``threshold``."""
    if not math.isfinite(teacher - random) or teacher <= random:
        return None
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        student = row.get("student_return")
        if (
            row.get("kind") == "eval"
            and isinstance(student, int | float)
            and (student - random) / (teacher - random) >= threshold
        ):
            return int(row["env_steps"])
    return None


def distil(folder: Path, root: Path, out: Path, seed: int, distill: str) -> dict[str, Any]:
    name = str(folder.relative_to(root))
    run_dir = out / "runs" / name.replace("/", "-")
    command = [distill, "run", "--teacher", str(folder), "--out", str(run_dir), "--seed", str(seed), "--json"]
    started = time.perf_counter()
    done = subprocess.run([*command, "--force"], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    notes = [line.removeprefix("note: ") for line in done.stderr.splitlines() if line.startswith("note: ")]
    row: dict[str, Any] = {"folder": name, "seconds": round(seconds, 1), "notice": "; ".join(notes)}
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        return {**row, "status": "failed", "error": errors[-1] if errors else done.stderr.strip()[-300:]}
    summary = json.loads(done.stdout)
    teacher, random = summary["teacher_return"], summary["random_return"]
    return {
        **row,
        "status": summary["status"],
        "algo": summary["teacher_algo"],
        "env": summary["env_id"],
        "method": summary["method"],
        "budget": summary["budget"],
        "teacher": teacher,
        "student": summary["student_return"],
        "random": random,
        "score": summary["score"],
        "steps_to_0.9": steps_to(run_dir, teacher, random, THRESHOLD),
        "kl_start": summary["kl_start"],
        "kl_end": summary["kl_end"],
    }


def table(rows: list[dict[str, Any]]) -> str:
    def cell(value: Any, digits: int = 1) -> str:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "–"
        if isinstance(value, float):
            return f"{value:,.{digits}f}"
        return f"{value:,}" if isinstance(value, int) else str(value)

    head = "| folder | algo | env | teacher | student | random | score | env steps to 0.9 | budget | s | notice |"
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        if r["status"] == "failed":
            lines.append(f"| {r['folder']} | | | | | | **failed** | | | {cell(r['seconds'])} | {r['error']} |")
            continue
        lines.append(
            f"| {r['folder']} | {r['algo']} | {r['env']} | {cell(r['teacher'])} | {cell(r['student'])} | "
            f"{cell(r['random'])} | **{cell(r['score'], 2)}** | {cell(r['steps_to_0.9'])} | {cell(r['budget'])} | "
            f"{cell(r['seconds'])} | {r['notice']} |"
        )
    scored = [r for r in rows if r["status"] != "failed"]
    passed = sum(1 for r in scored if isinstance(r["score"], float) and r["score"] >= THRESHOLD)
    lines += ["", f"{passed} of {len(rows)} folders reach score >= {THRESHOLD} with the default command."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", type=Path, help="a folder of rl-zoo run folders (<algo>/<Env>_<N>/)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/corpus"))
    parser.add_argument("--only", default="", help="regex: distil only folders whose <algo>/<Env>_<N> matches")
    parser.add_argument("--skip", default="", help="regex: leave out folders that match")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    folders = [
        f
        for f in run_folders(args.dir)
        if re.search(args.only, str(f.relative_to(args.dir)))
        and not (args.skip and re.search(args.skip, str(f.relative_to(args.dir))))
    ]
    if not folders:
        sys.exit(f"no rl-zoo run folders under {args.dir}")
    distill = str(Path(sys.executable).with_name("distill"))
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for folder in folders:
        row = distil(folder, args.dir, args.out, args.seed, distill)
        rows.append(row)
        print(f"{row['folder']}: {row.get('score', row['status'])} ({row['seconds']} s)", file=sys.stderr, flush=True)
    text = table(rows)
    (args.out / "table.md").write_text(text)
    meta = {
        "dir": args.dir.name,  # the folder's name, not this machine's path
        "seed": args.seed,
        "cpu_count": os.cpu_count(),
        "threshold": THRESHOLD,
    }
    (args.out / "corpus.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
