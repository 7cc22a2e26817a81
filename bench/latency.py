"""Inference latency of a distilled 32x32 student in every runtime, side by side in one process (``make
bench-latency``; ``make bench`` runs it too): SB3's ``predict`` (teacher and student), the exported graph in eager
torch, TorchScript, onnxruntime and onnxruntime int8, one observation and a batch of 256, one CPU thread.

The students are distilled here (``distill run --steps 8192 --student-net 32,32``) from the bundled CartPole and
LunarLander teachers; the table goes to stdout as markdown and to bench/results/latency.json.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from distillcli.export.evaluate import latency_rows
from distillcli.export.source import load_source
from distillcli.metrics import atomic_write_json
from distillcli.run.pipeline import versions
from distillcli.run.setup import prepare

ROOT = Path(__file__).resolve().parent
TEACHERS = {"CartPole-v1": "bundled:ppo-CartPole-v1", "LunarLander-v3": "bundled:ppo-LunarLander-v3"}


def distill(teacher: str, out: Path, steps: int) -> None:
    command = [sys.executable, "-m", "distillcli", "run", "--teacher", teacher, "--student-net", "32,32"]
    command += ["--steps", str(steps), "--out", str(out), "--quiet"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def measure(env_id: str, teacher: str, folder: Path, steps: int) -> dict[str, Any]:
    run = folder / env_id
    distill(teacher, run, steps)
    source = load_source(run, None, False)
    setup = prepare(teacher, None, "cpu")
    rows = latency_rows(source, setup.teacher)
    return {
        "env_id": env_id,
        "teacher": teacher,
        "student_params": source.student.n_params,
        "teacher_params": setup.teacher.n_params,
        "rows": [row.to_json() for row in rows],
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"{result['env_id']} (student 32x32, {result['student_params']:,} parameters; teacher "
        f"{result['teacher_params']:,}):",
        "",
        "| runtime | model | 1 observation (us) | batch of 256 (us) | per observation in the batch (us) |",
        "|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['runtime']} | {row['model']} | {row['single_us']:,.1f} | {row['batch_us']:,.1f} | "
            f"{row['batch_per_observation_us']:,.2f} |"
        )
    rows = {(r["runtime"], r["model"]): r for r in result["rows"]}
    speedup = rows[("sb3 predict", "student")]["single_us"] / rows[("onnxruntime", "student")]["single_us"]
    lines += ["", f"onnxruntime is {speedup:.1f}x faster than SB3's predict on one observation."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8192, help="distillation budget of each student")
    parser.add_argument("--envs", default=",".join(TEACHERS), help="comma-separated: " + ", ".join(TEACHERS))
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "latency.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = []
    with tempfile.TemporaryDirectory(prefix="distill-latency-") as folder:
        for env_id in args.envs.split(","):
            result = measure(env_id, TEACHERS[env_id], Path(folder), args.steps)
            print(markdown(result) + "\n", flush=True)
            results.append(result)
    document = {"machine": platform.processor() or platform.machine(), "versions": versions(), "results": results}
    atomic_write_json(args.out, document)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
