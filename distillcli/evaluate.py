"""Returns, agreement and KL against the teacher, parameter counts and inference latency."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.vec_env import VecEnv
from torch import Tensor

from distillcli.rollout import PolicyFn, to_env_actions


@dataclass
class EvalResult:
    returns: list[float]
    kl_teacher_student: float  # mean KL(pi || pi_th) over the evaluated policy's own states
    kl_student_teacher: float  # mean KL(pi_th || pi) over the same states
    agreement: float  # fraction of those states where the deterministic actions coincide

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        return float(np.std(self.returns))


@torch.inference_mode()
def evaluate(
    policy: PolicyFn,
    make_env: Callable[[int], VecEnv],
    episodes: int,
    device: torch.device,
    *,
    teacher: PolicyFn | None = None,
    deterministic: bool = True,
    max_envs: int = 16,
) -> EvalResult:
    """Run ``episodes`` episodes of ``policy``, batched over up to ``max_envs`` environments.

    Each environment runs a fixed share of the episodes (as SB3's ``evaluate_policy``), so short episodes are
    not over-counted. Returns come from the Monitor wrapper, i.e. the unnormalised environment reward.
    """
    n_envs = max(1, min(episodes, max_envs))
    venv = make_env(n_envs)
    targets = np.array([(episodes + i) // n_envs for i in range(n_envs)])
    counts = np.zeros(n_envs, dtype=int)
    returns: list[float] = []
    kl_ts: list[Tensor] = []
    kl_st: list[Tensor] = []
    agree: list[Tensor] = []
    obs = venv.reset()
    try:
        while (counts < targets).any():
            obs_tensor = torch.as_tensor(obs, device=device)
            dist, _ = policy(obs_tensor)
            action = dist.mode() if deterministic else dist.sample()
            active = torch.as_tensor(counts < targets)
            if teacher is not None:
                teacher_dist, _ = teacher(obs_tensor)
                dist_cpu = dist.map(lambda p: p.cpu())
                teacher_cpu = teacher_dist.map(lambda p: p.cpu())
                kl_ts.append(teacher_cpu.kl(dist_cpu)[active])
                kl_st.append(dist_cpu.kl(teacher_cpu)[active])
                same = (teacher_cpu.mode() == dist_cpu.mode()).reshape(n_envs, -1).all(-1)
                agree.append(same[active].float())
            obs, _, dones, infos = venv.step(to_env_actions(action, venv.action_space))
            for i in np.flatnonzero(dones):
                if counts[i] < targets[i] and "episode" in infos[i]:
                    returns.append(float(infos[i]["episode"]["r"]))
                    counts[i] += 1
    finally:
        venv.close()

    def mean_of(chunks: list[Tensor]) -> float:
        return float(torch.cat(chunks).mean()) if chunks else float("nan")

    return EvalResult(returns, mean_of(kl_ts), mean_of(kl_st), mean_of(agree))


def latency_us(policy: BasePolicy, observation: np.ndarray, repeats: int = 200) -> float:
    """Median wall time of one ``policy.predict`` on a single observation, in microseconds."""
    policy.predict(observation, deterministic=True)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        policy.predict(observation, deterministic=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6
