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

from distillcli.rollout import PolicyFn, masked, open_session, read_masks, to_env_actions, uses_masks


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
    A recurrent policy or teacher carries its state per environment; a masked one acts on the valid actions,
    and agreement and KL then compare the masked distributions.
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
    use_masks = uses_masks(policy) or uses_masks(teacher)
    policy_session = open_session(policy, n_envs)
    teacher_session = None if teacher is None else open_session(teacher, n_envs)
    starts = torch.ones(n_envs, device=device)  # 1.0 where an episode starts: a recurrent state is zeroed
    try:
        while (counts < targets).any():
            obs_tensor = torch.as_tensor(obs, device=device)
            masks = read_masks(venv, device) if use_masks else None
            dist, _ = policy(obs_tensor) if policy_session is None else policy_session.step(obs_tensor, starts)
            dist = masked(dist, masks)
            action = dist.mode() if deterministic else dist.sample()
            active = torch.as_tensor(counts < targets)
            if teacher is not None:
                if teacher_session is None:
                    teacher_dist, _ = teacher(obs_tensor)
                else:
                    teacher_dist, _ = teacher_session.step(obs_tensor, starts)
                teacher_dist = masked(teacher_dist, masks)
                dist_cpu = dist.map(lambda p: p.cpu())
                teacher_cpu = teacher_dist.map(lambda p: p.cpu())
                kl_ts.append(teacher_cpu.kl(dist_cpu)[active])
                kl_st.append(dist_cpu.kl(teacher_cpu)[active])
                same = (teacher_cpu.mode() == dist_cpu.mode()).reshape(n_envs, -1).all(-1)
                agree.append(same[active].float())
            obs, _, dones, infos = venv.step(to_env_actions(action, venv.action_space))
            starts = torch.as_tensor(dones, dtype=torch.float32, device=device)
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
