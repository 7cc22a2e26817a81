"""Collect trajectories with the control policy q (teacher, student, uniform, or a teacher/student mix).

A :class:`Rollout` is a time-major segment of ``T`` steps from ``N`` environments. Besides what the
environments returned it keeps the teacher's distribution on every state (computed once, batched over the
environments), and the real last observation of every episode that ended inside the segment, because the
paper's pseudo-rewards look at ``s_{t+1}``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv
from torch import Tensor

from distillcli.distributions import ActionDist, stack
from distillcli.errors import DistillError
from distillcli.methods import Control

# obs -> (action distribution, value or None); the teacher and the student both look like this.
PolicyFn = Callable[[Tensor], tuple[ActionDist, Tensor | None]]


@dataclass
class Rollout:
    obs: Tensor  # [T + 1, N, *obs_shape]; obs[T] is where the next segment starts
    actions: Tensor  # [T, N, *action_shape], as sampled (before clipping to the action space)
    env_rewards: Tensor  # [T, N]
    terminated: Tensor  # [T, N]: the episode ended in an absorbing state after step t
    truncated: Tensor  # [T, N]: the episode was cut (time limit) after step t; s_{t+1} is final_obs
    final_obs: Tensor  # [K, *obs_shape]: real last observation of each episode that ended in the segment
    final_index: Tensor  # [K]: flat index t * N + n of those steps
    teacher: ActionDist  # pi(obs), [T + 1, N]
    teacher_values: Tensor | None  # V_pi(obs), [T + 1, N]
    teacher_final: ActionDist  # pi(final_obs), [K]
    teacher_final_values: Tensor | None
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.env_rewards.shape[0]), int(self.env_rewards.shape[1])

    @property
    def episode_ends(self) -> Tensor:
        return self.terminated | self.truncated

    @property
    def next_action_known(self) -> Tensor:
        """a_{t+1} was drawn in the same episode (not past the segment's end, not after an episode end)."""
        known = torch.zeros_like(self.terminated)
        known[:-1] = ~self.episode_ends[:-1]
        return known

    def as_continuing(self) -> Rollout:
        """The same segment seen as one continuing process: each reset state follows the previous episode.

        Pure distillation objectives use this view (``--episode-ends continue``): the loss does not stop when
        the environment resets, so a student gains nothing by ending episodes early.
        """
        no_end = torch.zeros_like(self.terminated)
        empty = self.final_index[:0]
        return replace(
            self,
            terminated=no_end,
            truncated=no_end,
            final_obs=self.final_obs[:0],
            final_index=empty,
            teacher_final=self.teacher_final[:0],
            teacher_final_values=None if self.teacher_final_values is None else self.teacher_final_values[:0],
        )

    def next_state(self, per_state: Tensor, per_final: Tensor) -> Tensor:
        """Values at ``s_{t+1}`` from values on ``obs`` ([T+1, N, ...]) and on ``final_obs`` ([K, ...])."""
        nxt = per_state[1:].clone()
        flat = nxt.view(-1, *nxt.shape[2:])
        flat[self.final_index] = per_final.to(flat.dtype)
        return nxt


def uniform_actions(space: gym.Space, n: int, device: torch.device) -> Tensor:
    if isinstance(space, gym.spaces.Discrete):
        return torch.randint(int(space.n), (n,), device=device)
    if isinstance(space, gym.spaces.Box):
        low = torch.as_tensor(np.where(np.isfinite(space.low), space.low, -1.0), device=device)
        high = torch.as_tensor(np.where(np.isfinite(space.high), space.high, 1.0), device=device)
        return low + (high - low) * torch.rand((n, *space.shape), device=device)
    raise NotImplementedError(f"uniform control for {type(space).__name__}")


def to_env_actions(actions: Tensor, space: gym.Space) -> np.ndarray:
    """What the environment receives: Box actions clipped to the bounds, as SB3's own PPO does."""
    array = actions.cpu().numpy()
    if isinstance(space, gym.spaces.Box):
        return np.clip(array, space.low, space.high)
    return array


class Collector:
    """Steps a VecEnv across segments, keeping the current observations and episode statistics."""

    def __init__(self, venv: VecEnv, teacher: PolicyFn, device: torch.device) -> None:
        self.venv = venv
        self.teacher = teacher
        self.device = device
        self.action_space = venv.action_space
        self._obs = self._to_tensor(venv.reset())
        self._returns = np.zeros(venv.num_envs)
        self._lengths = np.zeros(venv.num_envs, dtype=np.int64)

    def _to_tensor(self, obs: object) -> Tensor:
        if not isinstance(obs, np.ndarray):
            raise DistillError("dict and tuple observation spaces are not supported yet")
        return torch.as_tensor(obs, device=self.device)

    # no_grad, not inference_mode: the segment's tensors are inputs of the student's backward pass later.
    @torch.no_grad()
    def collect(self, n_steps: int, control: Control, student: PolicyFn | None, teacher_share: float = 0.0) -> Rollout:
        n_envs = self.venv.num_envs
        obs, actions, teacher_dists, teacher_values = [self._obs], [], [], []
        rewards, terminated, truncated = [], [], []
        final_obs: list[np.ndarray] = []
        final_index: list[int] = []
        episode_returns: list[float] = []
        episode_lengths: list[int] = []
        for t in range(n_steps + 1):
            dist, value = self.teacher(self._obs)
            teacher_dists.append(dist)
            teacher_values.append(value)
            if t == n_steps:
                break
            action = self._act(control, dist, student, teacher_share, n_envs)
            next_obs, reward, done, infos = self.venv.step(to_env_actions(action, self.action_space))
            self._returns += reward
            self._lengths += 1
            trunc = np.zeros(n_envs, dtype=bool)
            for i in np.flatnonzero(done):
                trunc[i] = bool(infos[i].get("TimeLimit.truncated", False))
                final_obs.append(infos[i]["terminal_observation"])
                final_index.append(t * n_envs + int(i))
                episode_returns.append(float(self._returns[i]))
                episode_lengths.append(int(self._lengths[i]))
                self._returns[i] = 0.0
                self._lengths[i] = 0
            actions.append(action)
            rewards.append(torch.as_tensor(reward, dtype=torch.float32, device=self.device))
            terminated.append(torch.as_tensor(done & ~trunc, device=self.device))
            truncated.append(torch.as_tensor(trunc, device=self.device))
            self._obs = self._to_tensor(next_obs)
            obs.append(self._obs)

        obs_shape = self._obs.shape[1:]
        final = (
            self._to_tensor(np.stack(final_obs))
            if final_obs
            else torch.zeros((0, *obs_shape), dtype=self._obs.dtype, device=self.device)
        )
        teacher_final, teacher_final_values = self.teacher(final)
        values = None if teacher_values[0] is None else torch.stack(teacher_values)  # type: ignore[arg-type]
        return Rollout(
            obs=torch.stack(obs),
            actions=torch.stack(actions),
            env_rewards=torch.stack(rewards),
            terminated=torch.stack(terminated),
            truncated=torch.stack(truncated),
            final_obs=final,
            final_index=torch.as_tensor(final_index, dtype=torch.long, device=self.device),
            teacher=stack(teacher_dists),
            teacher_values=values,
            teacher_final=teacher_final,
            teacher_final_values=teacher_final_values,
            episode_returns=episode_returns,
            episode_lengths=episode_lengths,
        )

    def _act(
        self, control: Control, teacher: ActionDist, student: PolicyFn | None, share: float, n_envs: int
    ) -> Tensor:
        if control == "teacher":
            return teacher.sample()
        if control == "uniform":
            return uniform_actions(self.action_space, n_envs, self.device)
        assert student is not None, "student control needs the student"
        student_action = student(self._obs)[0].sample()
        if control == "student":
            return student_action
        # mix: each environment acts with the teacher with probability `share` at each step (DAgger's beta)
        use_teacher = torch.rand(n_envs, device=self.device) < share
        mask = use_teacher.view(-1, *([1] * (student_action.dim() - 1)))
        return torch.where(mask, teacher.sample(), student_action)
