"""Train the teachers of `distill study` once: the LunarLander-v3 teacher's recipe again (bench/train_teacher.py,
same seed) with checkpoints at about 25/50/75% of its training (the "early" teachers), a teacher trained on the
negated reward (the "adversarial" one), and a PPO teacher for distillcli/GridWorldWindow-v0.

    python bench/study_teachers.py lunar          # 1M steps, about 15 min on one core
    python bench/study_teachers.py adversarial    # 300k steps on -r
    python bench/study_teachers.py grid           # GridWorldWindow-v0

Each writes its zips into distillcli/data/study/ (shipped with the package, about 140 kB each) and its returns
(100 deterministic episodes, the random policy's too) into bench/results/study-teachers.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv

OUT = Path("distillcli/data/study")
RESULTS = Path("bench/results/study-teachers.json")
LUNAR = "LunarLander-v3"
GRID = "distillcli/GridWorldWindow-v0"
FRACTIONS = (0.25, 0.5, 0.75)


class Checkpoints(BaseCallback):
    """Save the model at the first rollout end past each fraction of the budget."""

    def __init__(self, total: int, prefix: str) -> None:
        super().__init__()
        self.targets = [int(f * total) for f in FRACTIONS]
        self.prefix = prefix
        self.saved: list[tuple[float, int, Path]] = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        while self.targets and self.num_timesteps >= self.targets[0]:
            fraction = FRACTIONS[len(self.saved)]
            path = OUT / f"{self.prefix}-early{int(fraction * 100)}.zip"
            self.model.save(path)
            self.saved.append((fraction, self.num_timesteps, path))
            self.targets.pop(0)


def returns(env_id: str, model: PPO | None, episodes: int = 100) -> dict[str, float]:
    venv = make_vec_env(env_id, n_envs=4, seed=10_000)
    if model is None:  # the uniform-random policy, the score's zero
        rng = np.random.default_rng(0)
        env = gym.make(env_id)
        totals = []
        for episode in range(episodes):
            env.reset(seed=10_000 + episode)
            done, total = False, 0.0
            while not done:
                _, r, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
                total += float(r)
                done = terminated or truncated
            totals.append(total)
        return {"mean": float(np.mean(totals)), "std": float(np.std(totals))}
    mean, std = evaluate_policy(model, venv, n_eval_episodes=episodes)
    return {"mean": float(mean), "std": float(std)}


def record(key: str, entry: dict[str, Any]) -> None:
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[key] = entry
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")
    print(key, json.dumps(entry))


class Negated(gym.RewardWrapper):
    def reward(self, reward: float) -> float:
        return -reward


def lunar_ppo(venv: Any, seed: int) -> PPO:
    # rl-baselines3-zoo's hyperparameters for PPO on LunarLander, as bench/train_teacher.py
    return PPO(
        "MlpPolicy", venv, n_steps=1024, batch_size=64, gae_lambda=0.98, gamma=0.999, n_epochs=4, ent_coef=0.01,
        seed=seed, device="cpu",
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=["lunar", "adversarial", "grid"])
    parser.add_argument("--steps", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from distillcli.gridworld import register

    register()  # the grid worlds

    OUT.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if args.which == "lunar":
        steps = args.steps or 1_000_000
        model = lunar_ppo(make_vec_env(LUNAR, n_envs=16, seed=args.seed, vec_env_cls=DummyVecEnv), args.seed)
        callback = Checkpoints(steps, "ppo-LunarLander-v3")
        model.learn(total_timesteps=steps, callback=callback)
        wall = time.perf_counter() - started
        entry: dict[str, Any] = {"steps": steps, "seed": args.seed, "wall_seconds": wall}
        entry["random"] = returns(LUNAR, None)
        for fraction, at, path in callback.saved:
            early = returns(LUNAR, PPO.load(path))
            entry[f"early{int(fraction * 100)}"] = {"file": path.name, "env_steps": at, **early}
        # The end of this rerun is not shipped: "strong" is the bundled teacher, made by the same recipe and seed.
        entry["final"] = {"env_steps": steps, **returns(LUNAR, model)}
        bundled = PPO.load("distillcli/data/ppo-LunarLander-v3.zip")
        entry["bundled"] = {"file": "distillcli/data/ppo-LunarLander-v3.zip", **returns(LUNAR, bundled)}
        record("LunarLander-v3", entry)
    elif args.which == "adversarial":
        steps = args.steps or 300_000
        venv = make_vec_env(LUNAR, n_envs=16, seed=args.seed, vec_env_cls=DummyVecEnv, wrapper_class=Negated)
        model = lunar_ppo(venv, args.seed)
        model.learn(total_timesteps=steps)
        path = OUT / "ppo-LunarLander-v3-adversarial.zip"
        model.save(path)
        wall = time.perf_counter() - started
        entry = {"file": path.name, "steps": steps, "seed": args.seed, "wall_seconds": wall, "reward": "-r"}
        entry.update(returns(LUNAR, model))
        record("LunarLander-v3-adversarial", entry)
    else:
        steps = args.steps or 300_000
        venv = make_vec_env(GRID, n_envs=16, seed=args.seed, vec_env_cls=DummyVecEnv)
        model = PPO(
            "MlpPolicy", venv, n_steps=256, batch_size=256, n_epochs=4, ent_coef=0.01, gamma=0.99, seed=args.seed,
            device="cpu",
        )  # fmt: skip
        model.learn(total_timesteps=steps)
        path = OUT / "ppo-GridWorldWindow-v0.zip"
        model.save(path)
        wall = time.perf_counter() - started
        entry = {"file": path.name, "steps": steps, "seed": args.seed, "wall_seconds": wall}
        entry.update(random=returns(GRID, None), **returns(GRID, model))
        record(GRID, entry)


if __name__ == "__main__":
    main()
