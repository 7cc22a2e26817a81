"""Calibrate the random grid worlds' free cell probabilities against the paper's reference lines.

The paper's appendix gives the generator's procedure but not its probabilities. Its figures give two numbers
that depend on them: a uniform policy's return (about -2.3, Fig. 4's lower line) and the Q-learning teacher's
(6.6-7.3 across Figs. 3-5). For each candidate (wall_prob, terminal_prob, negative_prob) this draws ``--mdps``
MDPs, evaluates the uniform policy exactly and the teachers (30,000 Q-learning steps per learner, as the
studies use) exactly, and writes a table; the search is staged: negative_prob first at the old defaults, then
walls and terminals around the best. The chosen candidate is the smallest change that meets the bar (both lines
within 0.5 of the paper's), checked again on other seeds.

Usage: python bench/calibrate_grid.py [--mdps 100] [--out bench/results/grid-calibration.json]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from distillcli.gridworld import GridBatch, GridOptions, random_layout
from distillcli.studies.common import policy_returns
from distillcli.studies.teachers import effect_values, q_learning, softmax_policy, uniform_policy

PAPER_UNIFORM = -2.3
PAPER_TEACHER = (6.6, 7.3)


def measure(grid: GridOptions, mdps: int, steps: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    batch = GridBatch.from_layouts([random_layout(grid, rng) for _ in range(mdps)], grid)
    started = time.perf_counter()
    q = effect_values(batch, q_learning(batch, steps, seed=seed))
    optimal = effect_values(batch, batch.optimal_q())
    row = {
        "uniform": float(policy_returns(batch, uniform_policy(batch)).mean()),
        "teacher_T0": float(policy_returns(batch, softmax_policy(batch, q, 0.0)).mean()),
        "teacher_T0.01": float(policy_returns(batch, softmax_policy(batch, q, 0.01)).mean()),
        "teacher_T0.1": float(policy_returns(batch, softmax_policy(batch, q, 0.1)).mean()),
        "optimal": float(policy_returns(batch, softmax_policy(batch, optimal, 0.0)).mean()),
        "seconds": time.perf_counter() - started,
    }
    middle = sum(PAPER_TEACHER) / 2
    row["distance"] = abs(row["uniform"] - PAPER_UNIFORM) + abs(row["teacher_T0.01"] - middle)
    return row


def _meets(row: dict[str, float]) -> bool:
    low, high = PAPER_TEACHER
    teacher_ok = all(low - 0.5 <= row[k] <= high + 0.5 for k in ("teacher_T0", "teacher_T0.01"))
    return abs(row["uniform"] - PAPER_UNIFORM) <= 0.5 and teacher_ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mdps", type=int, default=100)
    parser.add_argument("--steps", type=int, default=30000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench/results/grid-calibration.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    old = GridOptions(wall_prob=0.1, terminal_prob=0.02, negative_prob=0.1)
    rows: list[dict[str, float]] = []

    def run(grid: GridOptions, seed: int = 0) -> dict[str, float]:
        row = {"wall_prob": grid.wall_prob, "terminal_prob": grid.terminal_prob, "negative_prob": grid.negative_prob}
        row |= measure(grid, args.mdps, args.steps, seed) | {"seed": seed}
        rows.append(row)
        print(json.dumps({k: round(v, 3) for k, v in row.items()}), flush=True)
        return row

    stage1 = [run(replace(old, negative_prob=p)) for p in (0.1, 0.07, 0.05, 0.04, 0.03, 0.02)]
    best = min(stage1, key=lambda r: r["distance"])
    stage2 = [
        run(replace(old, wall_prob=w, terminal_prob=t, negative_prob=best["negative_prob"]))
        for w in (0.05, 0.1, 0.15)
        for t in (0.015, 0.02, 0.025)
        if not (w == 0.1 and t == 0.02)
    ]
    # The smallest change from the old defaults that meets the bar (both lines within 0.5 of the paper's):
    # stage 1's best when it does, else the closest of stage 2.
    chosen = best if _meets(best) else min([best, *stage2], key=lambda r: r["distance"])
    grid = GridOptions(
        wall_prob=chosen["wall_prob"], terminal_prob=chosen["terminal_prob"], negative_prob=chosen["negative_prob"]
    )
    checks = [run(grid, seed) for seed in (1, 2)]
    report = {
        "command": "python bench/calibrate_grid.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
        "paper": {"uniform": PAPER_UNIFORM, "teacher": PAPER_TEACHER},
        "candidates": rows,
        "chosen": {k: chosen[k] for k in ("wall_prob", "terminal_prob", "negative_prob")},
        "chosen_other_seeds": checks,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
