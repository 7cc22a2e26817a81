"""Benchmarks: sample efficiency against PPO from scratch and imitation, throughput against raw env stepping.

Per environment (CartPole-v1 with the bundled teacher, LunarLander-v3 with distillcli/data/ppo-LunarLander-v3.zip):

- speed: the default command's env steps to 95% of the teacher (32x32 student, seeds 0-2, an evaluation every
  256 steps);
- each distillation method x seed, with a quarter-size student (``auto``: half the teacher's widths) and, for the
  default method, a same-size one: env steps and wall seconds until the student's mean return (deterministic,
  10 episodes, checked every ``--eval-every`` steps) first reaches 95% of the teacher's, the final return ratio,
  parameter counts and per-step latency;
- baselines in the same run: ``bc`` and ``dagger`` (hard-label imitation, through the same trainer), our ``rl``
  method (no teacher: policy gradient on the student network) and SB3's PPO from scratch on the same student
  network with rl-baselines3-zoo's tuned hyperparameters, evaluated the same way, up to ``--ppo-steps``;
- throughput: the distillation loop's env steps/s with default settings (no evaluations) beside raw vectorised
  stepping of the same env with random actions (same number of envs), medians of ``--repeats`` runs, and a
  breakdown of where the loop's time goes (timers around its parts).

    python bench/bench.py                      # make bench: about 10 min on 2 CPU cores
    python bench/bench.py --full               # make bench-full: every method, 5 seeds, PPO to 1.5M steps
Writes bench/results/bench.json (or --out) and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from distillcli import trainer
from distillcli.config import DEFAULT_METHOD, RunConfig
from distillcli.envs import make_env
from distillcli.methods import method_names
from distillcli.rollout import Collector
from distillcli.run import EVAL_SEED_OFFSET, evaluate, prepare, versions
from distillcli.run import run as run_distillation

HERE = Path(__file__).parent


@dataclass(frozen=True)
class Env:
    env_id: str
    teacher: str | None  # None: the bundled teacher
    steps: int  # distillation budget per run
    eval_every: int
    ppo_steps: int  # PPO-from-scratch budget (make bench); --full uses ppo_steps_full
    ppo_steps_full: int
    ppo_eval_every: int
    ppo: dict[str, Any]  # rl-baselines3-zoo's hyperparameters (hyperparams/ppo.yml)


ENVS = {
    "CartPole-v1": Env(
        "CartPole-v1",
        None,
        50_000,
        2_048,
        200_000,
        500_000,
        5_000,
        {"n_envs": 8, "n_steps": 32, "batch_size": 256, "gae_lambda": 0.8, "gamma": 0.98, "n_epochs": 20,
         "ent_coef": 0.0, "learning_rate": 1e-3, "clip_range": 0.2},
    ),
    "LunarLander-v3": Env(
        "LunarLander-v3",
        str(HERE.parent / "distillcli" / "data" / "ppo-LunarLander-v3.zip"),
        100_000,
        8_192,
        400_000,
        1_500_000,
        20_000,
        {"n_envs": 16, "n_steps": 1024, "batch_size": 64, "gae_lambda": 0.98, "gamma": 0.999, "n_epochs": 4,
         "ent_coef": 0.01},
    ),
}  # fmt: skip
DEFAULT_METHODS = [DEFAULT_METHOD, "expected-entropy", "n-distill", "teacher-distill", "bc", "dagger", "rl"]
SPEED_SEEDS = (0, 1, 2)
SPEED_EVAL_EVERY = 256  # an evaluation after every early update: the bars are 1,024-10,000 env steps
SPEED_STEPS = 12_288


def first_reach(run_dir: Path, target: float) -> tuple[float | None, float | None]:
    """Env steps and training seconds at the first evaluation whose mean return reaches ``target``."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    walls = {row["env_steps"]: row["wall_seconds"] for row in rows if row["kind"] == "train"}
    for row in rows:
        if row["kind"] == "eval" and row["student_return"] >= target:
            return row["env_steps"], walls.get(row["env_steps"], 0.0)
    return None, None


def speed_runs(env: Env, scratch: Path) -> list[dict[str, Any]]:
    """The default command's env steps to 95% of the teacher, 32x32 student, seeds 0-2, evaluated every 256 steps
    (the speed bar: the bundled CartPole teacher and the LunarLander bench teacher)."""
    runs = []
    for seed in SPEED_SEEDS:
        out = scratch / f"{env.env_id}-speed-{seed}"
        config = RunConfig(
            teacher=env.teacher, seed=seed, steps=SPEED_STEPS, eval_every=SPEED_EVAL_EVERY, out=str(out),
            student_net="32,32",
        )  # fmt: skip
        summary = run_distillation(config, force=True).to_json()
        steps95, wall95 = first_reach(out, target_of(summary["teacher_return"]))
        runs.append({"seed": seed, "steps_to_95": steps95, "wall_to_95": wall95, "score": summary["score"]})
        print(f"  speed, {DEFAULT_METHOD} seed {seed}: steps to 95% {steps95}", flush=True)
    return runs


def target_of(teacher_return: float) -> float:
    """95% of the teacher's return (for a negative return: within 5% of it, as return_ratio counts)."""
    return 0.95 * teacher_return if teacher_return > 0 else teacher_return / 0.95


def distill_runs(env: Env, methods: list[str], seeds: list[int], scratch: Path) -> list[dict[str, Any]]:
    runs = []
    jobs = [(m, s, "auto") for m in methods for s in seeds] + [(DEFAULT_METHOD, s, "same") for s in seeds]
    for method, seed, size in jobs:
        out = scratch / f"{env.env_id}-{method}-{seed}-{size}"
        config = RunConfig(
            teacher=env.teacher,
            method=method,
            seed=seed,
            steps=env.steps,
            eval_every=env.eval_every,
            out=str(out),
            student_net="auto" if size == "auto" else "64,64",
        )
        summary = run_distillation(config).to_json()
        steps95, wall95 = first_reach(out, target_of(summary["teacher_return"]))
        runs.append(
            {
                "method": method,
                "seed": seed,
                "student": size,
                "steps_to_95": steps95,
                "wall_to_95": wall95,
                **{k: summary[k] for k in ("teacher_return", "student_return", "return_ratio", "kl_end", "agreement")},
                **{k: summary[k] for k in ("student_params", "teacher_params", "param_ratio", "student_net")},
                **{k: summary[k] for k in ("student_latency_us", "teacher_latency_us", "wall_seconds")},
            }
        )
        print(f"  {env.env_id} {method} seed {seed} ({size}): ratio {summary['return_ratio']:.3f}, "
              f"steps to 95% {steps95}", flush=True)  # fmt: skip
    return runs


def ppo_from_scratch(env: Env, seed: int, target: float, budget: int, net: list[int]) -> dict[str, Any]:
    """SB3 PPO with rl-zoo's hyperparameters on the student's network, until it reaches ``target`` or ``budget``."""
    options = dict(env.ppo)
    n_envs = options.pop("n_envs")
    venv = make_env(env.env_id, n_envs, seed)
    model = PPO(
        "MlpPolicy", venv, seed=seed, device="cpu", policy_kwargs={"net_arch": {"pi": net, "vf": net}}, **options
    )
    curve: list[tuple[int, float]] = []
    reached: int | None = None
    wall = 0.0
    while model.num_timesteps < budget:
        started = time.perf_counter()
        model.learn(env.ppo_eval_every, reset_num_timesteps=False)
        wall += time.perf_counter() - started
        result = evaluate(
            _sb3_policy(model), lambda n: make_env(env.env_id, n, seed + EVAL_SEED_OFFSET), 10, torch.device("cpu")
        )
        curve.append((model.num_timesteps, result.mean))
        if result.mean >= target:
            reached = model.num_timesteps
            break
    venv.close()
    return {"seed": seed, "steps_to_95": reached, "wall_to_95": wall if reached else None, "budget": budget,
            "curve": curve}  # fmt: skip


def _sb3_policy(model: PPO) -> Callable[[torch.Tensor], Any]:
    from distillcli.sb3.policies import actor_critic_outputs

    return lambda obs: actor_critic_outputs(model.policy, obs)


def raw_steps_per_second(env_id: str, n_envs: int, steps: int) -> float:
    """Raw vectorised stepping with random actions: the same DummyVecEnv (Monitor-wrapped) the loop uses."""
    venv: VecEnv = make_env(env_id, n_envs, 0)
    venv.reset()
    actions = [np.stack([venv.action_space.sample() for _ in range(n_envs)]) for _ in range(64)]
    started = time.perf_counter()
    for i in range(steps // n_envs):
        venv.step(actions[i % 64])
    elapsed = time.perf_counter() - started
    venv.close()
    return steps / elapsed


def teacher_steps_per_second(env: Env, n_envs: int, steps: int) -> float:
    """Raw stepping along the teacher's own trajectories: only ``venv.step`` is timed, the teacher's forward is
    not. Where an env's step cost depends on the state (LunarLander's contacts), this is the like-for-like
    yardstick for a loop whose student acts like the teacher; random actions crash early and step cheaply."""
    setup = prepare(env.teacher, env.env_id, "cpu")
    venv = make_env(env.env_id, n_envs, 0)
    obs = venv.reset()
    elapsed = 0.0
    for _ in range(steps // n_envs):
        with torch.no_grad():
            actions = setup.teacher(torch.as_tensor(obs))[0].sample().numpy()
        started = time.perf_counter()
        obs, *_ = venv.step(actions)
        elapsed += time.perf_counter() - started
    venv.close()
    return steps / elapsed


# The loop's settings measured for throughput: the defaults; the defaults with 4 epochs (more gradient steps per
# env step: fewer env steps to 95% for expected-entropy); and the defaults before this benchmark (8 envs x 64 steps,
# 4 epochs of 256 states at lr 1e-3), where the networks' per-call cost was shared by 8 env steps instead of 64.
LOOP_SETTINGS: dict[str, dict[str, Any]] = {
    "default": {},
    "epochs-4": {"epochs": 4},
    "previous": {"n_envs": 8, "n_steps": 64, "minibatch_size": 256, "epochs": 4, "lr": 1e-3},
}


def loop_throughput(
    env: Env, steps: int, scratch: Path, settings: dict[str, Any], profile: bool = False
) -> tuple[float, dict[str, float]]:
    """Env steps/s of ``distill run`` (default method) with no evaluations during training; with ``profile``,
    the shares of the training time each part of the loop took."""
    out = str(scratch / "throughput")
    config = RunConfig(teacher=env.teacher, steps=steps, eval_every=0, out=out, **settings)
    if not profile:
        summary = run_distillation(config, force=True).to_json()
        return summary["env_steps"] / summary["wall_seconds"], {}
    # Timers around the loop's parts, counted only inside collection and training (the evaluations before and
    # after training step the env and call the teacher too). Cheaper and more faithful than cProfile, which
    # slows Python-heavy code (the env) far more than torch calls.
    seconds: dict[str, float] = dict.fromkeys(("collect", "env", "teacher", "act", "update"), 0.0)
    inside = [False]

    def timed(name: str, function: Callable[..., Any], only_inside: bool = True) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if only_inside and not inside[0]:
                return function(*args, **kwargs)
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[name] += time.perf_counter() - started

        return wrapper

    def collect(*args: Any, **kwargs: Any) -> Any:
        inside[0] = True
        try:
            return timed("collect", original["collect"], only_inside=False)(*args, **kwargs)
        finally:
            inside[0] = False

    original = {"collect": Collector.collect, "env": DummyVecEnv.step_wait, "teacher": Collector._teacher,
                "act": Collector._act, "update": trainer.update}  # fmt: skip
    try:
        Collector.collect = collect  # type: ignore[method-assign]
        DummyVecEnv.step_wait = timed("env", original["env"])  # type: ignore[method-assign]
        Collector._teacher = timed("teacher", original["teacher"])  # type: ignore[method-assign]
        Collector._act = timed("act", original["act"])  # type: ignore[method-assign]
        trainer.update = timed("update", original["update"], only_inside=False)
        summary = run_distillation(config, force=True).to_json()
    finally:
        Collector.collect = original["collect"]  # type: ignore[method-assign]
        DummyVecEnv.step_wait = original["env"]  # type: ignore[method-assign]
        Collector._teacher = original["teacher"]  # type: ignore[method-assign]
        Collector._act = original["act"]  # type: ignore[method-assign]
        trainer.update = original["update"]
    total = summary["wall_seconds"]
    shares = {
        "env step (VecEnv.step)": seconds["env"],
        "teacher forward": seconds["teacher"],
        "student acting (forward + sample)": seconds["act"],
        "collection bookkeeping": seconds["collect"] - seconds["env"] - seconds["teacher"] - seconds["act"],
        "update (targets + epochs)": seconds["update"],
    }
    shares["other"] = max(0.0, total - sum(shares.values()))
    return summary["env_steps"] / total, {k: v / total for k, v in shares.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default=",".join(ENVS))
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS), help="comma-separated, or 'all'")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--ppo-seeds", default="0")
    parser.add_argument("--full", action="store_true", help="every method, 5 seeds, 3 PPO seeds, long PPO budget")
    parser.add_argument("--repeats", type=int, default=3, help="throughput measurements per env (median)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: speed,distill,ppo,throughput")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "bench.json")
    args = parser.parse_args()
    if args.full:
        args.methods, args.seeds, args.ppo_seeds = "all", "0,1,2,3,4", "0,1,2"
    methods = method_names() if args.methods == "all" else args.methods.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    skip = set(filter(None, args.skip.split(",")))
    torch.set_num_threads(1)

    results: dict[str, Any] = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": _cores(), **versions()},
        "command": "python bench/bench.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("out", "full") and v),
        "envs": {},
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        for name in args.envs.split(","):
            env = ENVS[name]
            print(f"{name}:", flush=True)
            entry: dict[str, Any] = {"budget": env.steps, "eval_every": env.eval_every}
            if "speed" not in skip:
                entry["speed"] = speed_runs(env, scratch)
            if "distill" not in skip:
                entry["runs"] = distill_runs(env, methods, seeds, scratch)
            if "ppo" not in skip:
                teacher_return = _teacher_return(env, scratch)
                budget = env.ppo_steps_full if args.full else env.ppo_steps
                entry["ppo_from_scratch"] = [
                    ppo_from_scratch(env, int(seed), target_of(teacher_return), budget, [32, 32])
                    for seed in args.ppo_seeds.split(",")
                ]
                for row in entry["ppo_from_scratch"]:
                    print(f"  PPO from scratch seed {row['seed']}: steps to 95% {row['steps_to_95']}", flush=True)
            if "throughput" not in skip:
                entry["throughput"] = {}
                for label, settings in LOOP_SETTINGS.items():
                    n_envs = settings.get("n_envs", RunConfig.n_envs)
                    raw, along, loop = [], [], []
                    for _ in range(args.repeats):  # interleaved, so all see the same machine load
                        raw.append(raw_steps_per_second(name, n_envs, 40_000))
                        along.append(teacher_steps_per_second(env, n_envs, 40_000))
                        loop.append(loop_throughput(env, 40_000, scratch, settings)[0])
                    _, shares = loop_throughput(env, 40_000, scratch, settings, profile=True)
                    entry["throughput"][label] = {
                        "settings": settings,
                        "n_envs": n_envs,
                        "raw_steps_per_second": statistics.median(raw),
                        "loop_steps_per_second": statistics.median(loop),
                        "ratio": statistics.median(loop) / statistics.median(raw),
                        "raw_along_teacher_steps_per_second": statistics.median(along),
                        "ratio_to_teacher_trajectories": statistics.median(loop) / statistics.median(along),
                        "profile_shares": shares,
                    }
            results["envs"][name] = entry
    results["seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print_tables(results)


def _teacher_return(env: Env, scratch: Path) -> float:
    probe = RunConfig(teacher=env.teacher, steps=512, eval_every=0, out=str(scratch / "probe"))
    summary = run_distillation(probe, force=True).to_json()
    return float(summary["teacher_return"])


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)


def print_tables(results: dict[str, Any]) -> None:
    for name, entry in results["envs"].items():
        print(f"\n### {name}\n")
        if "speed" in entry:
            steps = [r["steps_to_95"] for r in entry["speed"]]
            shown = " / ".join(f"{s:,}" if s is not None else "-" for s in steps)
            reached = [s for s in steps if s is not None]
            median = f"{statistics.median(reached):,.0f}" if len(reached) == len(steps) else "not all seeds"
            print(f"default command ({DEFAULT_METHOD}, 32x32), env steps to 95%, seeds 0/1/2: {shown} "
                  f"(median {median})\n")  # fmt: skip
        if "runs" in entry:
            print("| method | student | return ratio (mean) | reached 95% | env steps to 95% (median) | "
                  "s to 95% (median) |")  # fmt: skip
            print("|---|---|---|---|---|---|")
            keys = dict.fromkeys((r["method"], r["student"]) for r in entry["runs"])
            for method, size in keys:
                rows = [r for r in entry["runs"] if r["method"] == method and r["student"] == size]
                reached = [r for r in rows if r["steps_to_95"] is not None]
                steps = statistics.median(r["steps_to_95"] for r in reached) if reached else float("nan")
                wall = statistics.median(r["wall_to_95"] for r in reached) if reached else float("nan")
                ratio = statistics.mean(r["return_ratio"] for r in rows)
                net = "x".join(map(str, rows[0]["student_net"]))
                print(f"| {method} | {net} | {ratio:.3f} | {len(reached)}/{len(rows)} | {steps:,.0f} | {wall:.1f} |")
            first = entry["runs"][0]
            print(f"\nteacher return {first['teacher_return']:.1f}; params student {first['student_params']:,} / "
                  f"teacher {first['teacher_params']:,}; latency (us) student {first['student_latency_us']:.0f} / "
                  f"teacher {first['teacher_latency_us']:.0f}")  # fmt: skip
        for row in entry.get("ppo_from_scratch", []):
            reached = f"{row['steps_to_95']:,}" if row["steps_to_95"] else f"not within {row['budget']:,}"
            print(f"PPO from scratch (SB3, rl-zoo hyperparameters, 32x32), seed {row['seed']}: steps to 95% {reached}")
        for label, t in entry.get("throughput", {}).items():
            print(f"\nthroughput, {label} settings ({t['n_envs']} envs): raw {t['raw_steps_per_second']:,.0f} steps/s, "
                  f"loop {t['loop_steps_per_second']:,.0f} steps/s = {t['ratio']:.0%} of raw; raw along the teacher's "
                  f"trajectories {t['raw_along_teacher_steps_per_second']:,.0f} steps/s "
                  f"(loop = {t['ratio_to_teacher_trajectories']:.0%} of it)")  # fmt: skip
            for part, share in t["profile_shares"].items():
                print(f"  {part}: {share:.0%}")


if __name__ == "__main__":
    main()
