"""Train the bundled default teacher: PPO on CartPole-v1 with SB3's default 64x64 actor-critic.

Run from the repository root: ``python scripts/train_teacher.py``. The result is shipped as package data
(``distillcli/data/ppo-CartPole-v1.zip``); the file name carries the env id, which is how ``distill run``
infers the environment for a bare zip. Hyperparameters are rl-baselines3-zoo's tuned CartPole-v1 PPO ones,
with constant schedules so the checkpoint holds no pickled lambdas.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("distillcli/data/ppo-CartPole-v1.zip"))
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(1)
    env = make_vec_env("CartPole-v1", n_envs=8, seed=args.seed)
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=32,
        batch_size=256,
        gae_lambda=0.8,
        gamma=0.98,
        n_epochs=20,
        ent_coef=0.0,
        learning_rate=1e-3,
        clip_range=0.2,
        seed=args.seed,
        device="cpu",
    )
    model.learn(total_timesteps=args.steps)
    mean, std = evaluate_policy(model, make_vec_env("CartPole-v1", n_envs=1, seed=1000), n_eval_episodes=20)
    print(f"deterministic return over 20 episodes: {mean:.1f} +- {std:.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out)
    print(f"saved {args.out} ({args.out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
