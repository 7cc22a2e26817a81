"""Time `distill paper <study> --scale paper` per study, extrapolated from two short runs.

A full paper-scale run (1000 MDPs, 30,000 iterations per student) takes hours per study on a laptop CPU. Each
study's time is linear in the iterations (every student's update costs the same; evaluations are a fixed
number per student), so two runs at the paper's MDPs and a few iterations give the slope and the fixed part:
    T(30000) = T(a) + (T(b) - T(a)) / (b - a) * (30000 - a)
Usage: python bench/paper_scale.py [--studies a,b] [--mdps 1000] [--device cpu] [--out bench/results/paper-scale.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

from distillcli.paper import STUDIES, PaperOptions, run_study, write

PAPER_ITERATIONS = 30_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", default=",".join(STUDIES))
    parser.add_argument("--mdps", type=int, default=1000)
    parser.add_argument("--points", default="40,120", help="the two short iteration counts")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench/results/paper-scale.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    a, b = (int(p) for p in args.points.split(","))
    results = {}
    for study in args.studies.split(","):
        seconds = []
        for iterations in (a, b):
            options = PaperOptions.at_scale("paper", mdps=args.mdps, iterations=iterations, device=args.device)
            started = time.perf_counter()
            result = run_study(study, options, lambda _: None)
            with TemporaryDirectory() as tmp:
                write(result, Path(tmp))
            seconds.append(time.perf_counter() - started)
        slope = (seconds[1] - seconds[0]) / (b - a)
        estimate = seconds[0] + slope * (PAPER_ITERATIONS - a)
        results[study] = {
            f"seconds_at_{a}": round(seconds[0], 1),
            f"seconds_at_{b}": round(seconds[1], 1),
            "seconds_per_iteration": round(slope, 4),
            "estimated_seconds_at_30000": round(estimate),
        }
        print(study, results[study], flush=True)
    report = {
        "command": "python bench/paper_scale.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s), "
        f"torch {torch.__version__}, device {args.device}",
        "mdps": args.mdps,
        "studies": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
