"""Train the LunarLander-v3 teacher of the benchmarks: SB3 PPO, 64x64, rl-baselines3-zoo's hyperparameters.

    python bench/train_teacher.py                  # 1M steps (about 15 min on one CPU core)
    python bench/train_teacher.py --steps 2000000 --out ~/.cache/distillcli/ppo-LunarLander-v3.zip

The result (about 140 kB) is shipped as distillcli/data/ppo-LunarLander-v3.zip, so the benchmarks need no
training; this script is how it was made. It prints the teacher's deterministic return over 100 episodes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv

ENV_ID = "LunarLander-v3"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("distillcli/data/ppo-LunarLander-v3.zip"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    venv = make_vec_env(ENV_ID, n_envs=16, seed=args.seed, vec_env_cls=DummyVecEnv)
    # rl-baselines3-zoo's hyperparameters for PPO on LunarLander (hyperparams/ppo.yml); net 64x64 (SB3 default).
    model = PPO(
        "MlpPolicy",
        venv,
        n_steps=1024,
        batch_size=64,
        gae_lambda=0.98,
        gamma=0.999,
        n_epochs=4,
        ent_coef=0.01,
        seed=args.seed,
        device="cpu",
    )
    started = time.perf_counter()
    model.learn(total_timesteps=args.steps)
    args.out.expanduser().parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out.expanduser())
    mean, std = evaluate_policy(model, make_vec_env(ENV_ID, n_envs=4, seed=10_000), n_eval_episodes=100)
    print(f"{args.out}: {args.steps} steps in {time.perf_counter() - started:.0f} s, return {mean:.1f} +- {std:.1f}")


if __name__ == "__main__":
    main()
