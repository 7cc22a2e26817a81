"""Benchmark: distill the bundled CartPole-v1 teacher with several methods and seeds.

Per run: env steps and wall-clock seconds until the student first reaches 95% of the teacher's return (checked
at every evaluation), the final return ratio, parameters and latency. Beside them, raw vectorised env stepping
with random actions (same number of envs), so the loop's throughput can be read as a fraction of it.

    python bench/cartpole.py                         # make bench: 5 methods x 3 seeds, 50k steps
    python bench/cartpole.py --methods all --seeds 0,1,2,3,4   # make bench-full
Writes bench/results/cartpole.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distillcli.config import RunConfig
from distillcli.envs import make_env
from distillcli.methods import method_names
from distillcli.run import run

DEFAULT_METHODS = ["expected-entropy", "n-distill", "on-policy-distill", "bc", "dagger"]


def steps_to_95(run_dir: Path, teacher_return: float) -> tuple[float | None, float | None]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    walls = {row["env_steps"]: row["wall_seconds"] for row in rows if row["kind"] == "train"}
    for row in rows:
        if row["kind"] == "eval" and row["student_return"] >= 0.95 * teacher_return:
            return row["env_steps"], walls.get(row["env_steps"], 0.0)
    return None, None


def raw_steps_per_second(env_id: str, n_envs: int, steps: int) -> float:
    venv = make_env(env_id, n_envs, 0)
    venv.reset()
    actions = np.stack([venv.action_space.sample() for _ in range(64)])
    started = time.perf_counter()
    for i in range(steps // n_envs):
        venv.step(np.repeat(actions[i % 64 : i % 64 + 1], n_envs, axis=0).reshape(n_envs, *venv.action_space.shape))
    venv.close()
    return steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS), help="comma-separated, or 'all'")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--eval-every", type=int, default=5_000)
    parser.add_argument("--out", type=Path, default=Path("bench/results/cartpole.json"))
    args = parser.parse_args()
    methods = method_names() if args.methods == "all" else args.methods.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(1)

    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        for method in methods:
            for seed in seeds:
                out = Path(scratch) / f"{method}-{seed}"
                config = RunConfig(method=method, seed=seed, steps=args.steps, eval_every=args.eval_every, out=str(out))
                summary = run(config)
                steps95, wall95 = steps_to_95(out, summary["teacher_return"])
                runs.append(
                    {
                        "method": method,
                        "seed": seed,
                        "steps_to_95": steps95,
                        "wall_to_95": wall95,
                        "loop_steps_per_second": summary["env_steps"] / summary["wall_seconds"],
                        **{k: summary[k] for k in ("return_ratio", "kl_end", "agreement", "wall_seconds")},
                        **{k: summary[k] for k in ("student_params", "teacher_params")},
                        **{k: summary[k] for k in ("student_latency_us", "teacher_latency_us")},
                    }
                )
                print(f"{method} seed {seed}: ratio {summary['return_ratio']:.3f}, steps to 95% {steps95}", flush=True)
    raw = raw_steps_per_second("CartPole-v1", RunConfig.n_envs, 50_000)
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
        "command": "python bench/cartpole.py " + f"--methods {args.methods} --seeds {args.seeds} --steps {args.steps}",
        "raw_env_steps_per_second": raw,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print("\n| method | return ratio (mean) | reached 95% | steps to 95% (median) | s to 95% (median) | loop steps/s |")
    print("|---|---|---|---|---|---|")
    for method in methods:
        rows = [r for r in runs if r["method"] == method]
        reached = [r for r in rows if r["steps_to_95"] is not None]
        median_steps = statistics.median(r["steps_to_95"] for r in reached) if reached else float("nan")
        median_wall = statistics.median(r["wall_to_95"] for r in reached) if reached else float("nan")
        ratio = statistics.mean(r["return_ratio"] for r in rows)
        speed = statistics.mean(r["loop_steps_per_second"] for r in rows)
        print(
            f"| {method} | {ratio:.3f} | {len(reached)}/{len(rows)} | {median_steps:,.0f} | {median_wall:.1f} | "
            f"{speed:,.0f} |"
        )
    print(f"\nraw vectorised CartPole stepping ({RunConfig.n_envs} envs, random actions): {raw:,.0f} steps/s")


if __name__ == "__main__":
    main()
