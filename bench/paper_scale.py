"""Estimate `distill paper <study> --scale medium|paper` time per study from short runs of the study itself.

A study at its scale's MDPs (and action sizes) is run twice with few iterations, ``n`` and ``3 n``, and two
evaluations each; the difference is 2 n iterations of every student run of the study, so

    estimated seconds = setup + (scale's iterations) x (seconds per iteration, all runs)
                        + (scale's evaluations) x (seconds per evaluation, all runs)

where setup (teachers, exact values) and one evaluation round come from the same two runs. CPU time of this
process is reported beside wall time: on a shared machine the wall time says little.
Usage: python bench/paper_scale.py [--scale medium] [--iterations 20] [--studies ...] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch

from distillcli.studies import STUDIES, run_study
from distillcli.studies.common import PaperOptions


def timed(options: PaperOptions, name: str) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    run_study(name, options, lambda _: None)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="medium", choices=("small", "medium", "paper"))
    parser.add_argument("--iterations", type=int, default=20, help="n: the runs take n and 3n iterations")
    parser.add_argument("--studies", nargs="+", default=[s for s in STUDIES if s not in ("counterexample",)])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench/results/paper-scale.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    full = PaperOptions.at_scale(args.scale, device=args.device)
    n = args.iterations
    studies: dict[str, dict[str, float]] = {}
    for name in args.studies:
        runs = [replace(full, iterations=i, evaluations=2, early_evaluations=0) for i in (1, n, 3 * n)]
        timed(runs[0], name)  # warm: the teachers are learned (and cached) once
        times = [timed(options, name) for options in runs[1:]]
        (wall_n, cpu_n), (wall_3n, cpu_3n) = times
        per_iteration_wall, per_iteration_cpu = (wall_3n - wall_n) / (2 * n), (cpu_3n - cpu_n) / (2 * n)
        evaluations = full.evaluations + full.early_evaluations
        # the n-iteration run is setup + 2 evaluations + n iterations
        fixed_cpu = max(cpu_n - n * per_iteration_cpu, 0.0)
        total_cpu = fixed_cpu * evaluations / 2 + full.iterations * per_iteration_cpu
        studies[name] = {
            "cpu_seconds_per_iteration_all_runs": round(per_iteration_cpu, 4),
            "wall_seconds_per_iteration_all_runs": round(per_iteration_wall, 4),
            "cpu_seconds_fixed_per_two_evaluations": round(fixed_cpu, 2),
            "estimated_cpu_hours": round(total_cpu / 3600, 2),
        }
        print(name, studies[name], flush=True)
    report = {
        "command": "python bench/paper_scale.py "
        + " ".join(f"--{k} {' '.join(v) if isinstance(v, list) else v}" for k, v in vars(args).items() if k != "out"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}, "
        f"device {args.device}",
        "scale": args.scale,
        "studies": studies,
        "estimated_cpu_hours_all": round(sum(s["estimated_cpu_hours"] for s in studies.values()), 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
