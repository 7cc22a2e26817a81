"""What the extra actions of Fig. 4 do to the starting return and to the teacher, per construction and |A|.

The paper says neither how its extra actions act nor its starting returns in numbers; its figure shows the
starting return (a uniform student) changing with |A| while the teacher's line stays put. For each
construction (``repeat``: a copy of a move; ``noop``: stay put; ``random``: a uniformly random move) and each
|A| this evaluates exactly, on the calibrated MDPs, the uniform policy (every student's start) and the
softmax(Q / 0.01) teacher the action-space study distils.

Usage: python bench/extra_actions.py [--mdps 100] [--out bench/results/extra-actions.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from distillcli.studies.common import PaperOptions, grid_batch, policy_returns, q_rows
from distillcli.studies.teachers import effect_values, softmax_policy, uniform_policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mdps", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("bench/results/extra-actions.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    options = PaperOptions.at_scale("medium", mdps=args.mdps)
    q = q_rows(options, 0, 0, args.mdps)
    rows = []
    for extra in ("repeat", "noop", "random"):
        for n_actions in options.action_sizes:
            batch = grid_batch(options, 0, 0, args.mdps, n_actions=n_actions, extra_actions=extra)
            teacher = softmax_policy(batch, effect_values(batch, q), options.teacher_temperature)
            row = {
                "extra_actions": extra,
                "actions": n_actions,
                "uniform": float(policy_returns(batch, uniform_policy(batch)).mean()),
                "teacher": float(policy_returns(batch, teacher).mean()),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"mdps": args.mdps, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
