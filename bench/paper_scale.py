"""Estimate `distill paper <study> --scale paper` time per study from its measured parts, at 1000 MDPs.

A full paper-scale study (1000 MDPs, 30,000 iterations per student) takes hours on a laptop CPU, so it is
timed by parts, each measured at the paper's number of MDPs with the study's own code:
    teacher learning (Q-learning on all MDPs, timed once)
    + for each student: 30,000 x (its measured seconds per iteration)    [timed over a few iterations]
    + for each student: 25 evaluations x (exact solves per evaluation) x (one exact solve, timed)
Usage: python bench/paper_scale.py [--mdps 1000] [--iterations 20] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch

from distillcli.gridworld import GridBatch, chain_layout
from distillcli.methods import get_method
from distillcli.studies import run_study
from distillcli.studies.action_space import ACTION_SPACE_METHODS
from distillcli.studies.chain import CHAIN_METHODS
from distillcli.studies.common import PaperOptions, grid_batch, q_rows
from distillcli.studies.counterexample import COUNTEREXAMPLE_METHODS, Counterexample
from distillcli.studies.imperfect_teacher import COPYING, VALUE_BASED, WITH_REWARD
from distillcli.studies.tabular import TabularTeacher, train_tabular
from distillcli.studies.teachers import action_values, softmax_policy

PAPER_ITERATIONS = 30_000


def _timed(fn: object) -> float:
    started = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - started


def per_iteration(batch: GridBatch, q: torch.Tensor, options: PaperOptions, name: str, control: str | None) -> float:
    """Seconds per training iteration of one method on the whole batch: the slope between n and 3n iterations."""
    teacher = TabularTeacher(batch, softmax_policy(action_values(batch, q), 0.01), options.settings(0))
    seconds = []
    for iterations in (options.iterations, 3 * options.iterations):
        settings = replace(options.settings(0), iterations=iterations, evaluations=2)
        seconds.append(
            _timed(lambda s=settings: train_tabular(get_method(name), batch, teacher, s, lambda *_: None, control))
        )
    return max(seconds[1] - seconds[0], 0.0) / (2 * options.iterations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mdps", type=int, default=1000)
    parser.add_argument("--iterations", type=int, default=20, help="iterations timed per method")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench/results/paper-scale.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = PaperOptions.at_scale("paper", mdps=args.mdps, iterations=args.iterations, device=args.device)
    evaluations = options.evaluations
    batch = grid_batch(options, 0, 0, options.mdps)
    teacher_seconds = _timed(lambda: q_rows(options, 0, 0, options.mdps))
    q = q_rows(options, 0, 0, options.mdps)
    solve = _timed(lambda: batch.evaluate(torch.full((batch.reward.shape[0], 4), 0.25, device=batch.device)))
    print(f"Q-learning teachers: {teacher_seconds:.0f} s; one exact solve of {args.mdps} MDPs: {solve:.2f} s")
    studies: dict[str, dict[str, float]] = {}

    def record(study: str, iteration_seconds: float, solves: float, fixed: float = 0.0) -> None:
        total = fixed + PAPER_ITERATIONS * iteration_seconds + evaluations * solves * solve
        studies[study] = {
            "seconds_per_iteration_all_students": round(iteration_seconds, 3),
            "exact_solves": solves * evaluations,
            "estimated_hours": round(total / 3600, 2),
        }
        print(study, studies[study], flush=True)

    # control-policy: 3 temperatures x 3 control policies of on-policy-distill; return + student occupancy.
    control = sum(per_iteration(batch, q, options, "on-policy-distill", c) for c in ("student", "teacher", "uniform"))
    record("control-policy", 3 * control, solves=9 * 2, fixed=teacher_seconds)
    # action-space: 4 methods at each |A|, large |A| in chunks of MDPs (time is linear in the chunks).
    action = 0.0
    for n_actions in options.action_sizes:
        sub = replace(options, mdps=max(1, min(args.mdps, options.max_table // (400 * n_actions))))
        wide = grid_batch(sub, 0, 0, sub.mdps, n_actions=n_actions)
        chunk_q = q_rows(options, 0, 0, sub.mdps)
        for name in ACTION_SPACE_METHODS:
            action += per_iteration(wide, chunk_q, sub, name, None) * args.mdps / sub.mdps
    record("action-space", action, solves=16, fixed=teacher_seconds)
    # imperfect-teacher: 13 methods x 2 estimators x 3 noise levels.
    imperfect = sum(per_iteration(batch, q, options, n, None) for n in (*COPYING, *WITH_REWARD, *VALUE_BASED))
    record("imperfect-teacher", 6 * imperfect, solves=78, fixed=teacher_seconds)
    # chain: 8 methods x 2 teachers on 1000 copies of an 11-cell chain.
    chain_options = replace(options, grid=replace(options.grid, size=options.chain_length))
    chain = GridBatch.from_layouts([chain_layout(options.chain_length)] * args.mdps, chain_options.grid, args.device)
    chain_q = chain.optimal_q()
    per_chain = sum(per_iteration(chain, chain_q, chain_options, n, None) for n in CHAIN_METHODS)
    record("chain", 2 * per_chain, solves=0)  # an 11-state solve per evaluation is negligible
    # counterexample: exact expected updates, independent of --mdps.
    example = Counterexample()
    per_update = sum(_timed(lambda n=n: example.path(get_method(n), 200)) / 200 for n in COUNTEREXAMPLE_METHODS)
    record("counterexample", per_update * 1.5, solves=0)  # the damped variant is a third path
    gradient = _timed(lambda: run_study("gradient-field", options, lambda _: None))
    studies["gradient-field"] = {"measured_seconds": round(gradient, 1), "estimated_hours": round(gradient / 3600, 3)}
    print("gradient-field", studies["gradient-field"])
    report = {
        "command": "python bench/paper_scale.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}, "
        f"device {args.device}",
        "mdps": args.mdps,
        "teacher_seconds": round(teacher_seconds, 1),
        "exact_solve_seconds": round(solve, 2),
        "studies": studies,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
