"""The student: an SB3 actor-critic policy, trained by our loop and saved as an ordinary SB3 model.

Building it inside a ``PPO`` object means ``PPO.load("student.zip")`` opens the result and ``predict`` acts in
the teacher's action space (Box actions clipped like the teacher's PPO), and the student can be fine-tuned
with RL afterwards (it has a critic).
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.dqn.policies import DQNPolicy
from torch import Tensor, nn

from distillcli.distributions import ActionDist, actor_critic_outputs
from distillcli.errors import DistillError
from distillcli.metrics import atomic_write_bytes


def hidden_widths(policy: BasePolicy) -> list[int]:
    """The hidden layer widths of a teacher's actor (what ``--student-net auto`` halves)."""
    if isinstance(policy, ActorCriticPolicy):
        network: nn.Module = policy.mlp_extractor.policy_net
        return [m.out_features for m in network.modules() if isinstance(m, nn.Linear)]
    if isinstance(policy, DQNPolicy):
        linears = [m for m in policy.q_net.q_net.modules() if isinstance(m, nn.Linear)]
        return [m.out_features for m in linears[:-1]]
    return [64, 64]


def parse_net(spec: str, teacher_policy: BasePolicy) -> list[int]:
    """``32,32`` -> [32, 32]; ``auto`` -> half the teacher's widths (about a quarter of its parameters)."""
    if spec.strip().lower() == "auto":
        return [max(1, w // 2) for w in hidden_widths(teacher_policy)] or [32, 32]
    try:
        widths = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        raise DistillError(
            f"--student-net must be comma-separated layer widths like 32,32 or 'auto', got {spec!r}"
        ) from None
    if not widths or any(w <= 0 for w in widths):
        raise DistillError(f"--student-net needs positive layer widths like 32,32, got {spec!r}")
    return widths


class Student:
    """The SB3 model being distilled, seen as ``obs -> (pi_th(.|s), V_th(s))`` with gradients."""

    def __init__(self, model: PPO) -> None:
        self.model = model
        self.policy: ActorCriticPolicy = model.policy

    @classmethod
    def build(
        cls,
        venv: VecEnv,
        net: list[int],
        activation: type[nn.Module],
        *,
        learning_rate: float,
        n_steps: int,
        minibatch_size: int,
        epochs: int,
        gamma: float,
        gae_lambda: float,
        device: torch.device,
        seed: int,
        zero_critic: bool = False,
    ) -> Student:
        # The PPO hyperparameters are stored in student.zip so that RL fine-tuning starts from ours.
        model = PPO(
            "MlpPolicy",
            venv,
            learning_rate=learning_rate,
            n_steps=n_steps,
            batch_size=minibatch_size,
            n_epochs=epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            policy_kwargs={"net_arch": {"pi": net, "vf": net}, "activation_fn": activation},
            device=device,
            seed=seed,
        )
        if zero_critic:
            with torch.no_grad():
                model.policy.value_net.weight.zero_()
                model.policy.value_net.bias.zero_()
        return cls(model)

    def __call__(self, obs: Tensor) -> tuple[ActionDist, Tensor | None]:
        return actor_critic_outputs(self.policy, obs)

    @property
    def parameters(self) -> list[nn.Parameter]:
        return list(self.policy.parameters())

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.policy.optimizer

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.policy.parameters())

    def save(self, path: Path, env_steps: int) -> None:
        """Write an ordinary SB3 zip, atomically."""
        self.model.num_timesteps = env_steps
        buffer = io.BytesIO()
        self.model.save(buffer)
        atomic_write_bytes(path, buffer.getvalue())
