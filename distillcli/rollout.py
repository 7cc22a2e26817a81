"""Collect trajectories with the control policy q (teacher, student, uniform, or a teacher/student mix).

A :class:`Rollout` is a time-major segment of ``T`` steps from ``N`` environments. Besides what the
environments returned it keeps the teacher's distribution on every state (computed once, batched over the
environments), and the real last observation of every episode that ended inside the segment, because the
paper's pseudo-rewards look at ``s_{t+1}``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv
from torch import Tensor

from distillcli.choices import Control
from distillcli.distributions import ActionDist, Categorical, MultiCategorical, stack
from distillcli.envs import ConcatVecEnv
from distillcli.errors import DistillError

# obs -> (action distribution, value or None); the teacher and the student both look like this.
PolicyFn = Callable[[Tensor], tuple[ActionDist, Tensor | None]]

# sb3-contrib's policies add two optional hooks to a PolicyFn (see distillcli/contrib.py): a recurrent one
# opens a Session per batch of environments; a masked one sets ``uses_action_masks``.
MASKED_LOGIT = -1e8  # as sb3-contrib: exp gives exactly 0, and 0 * -1e8 = 0 keeps every cross-entropy finite


class Session(Protocol):
    """A stateful policy's state in ``n_envs`` environments stepped together."""

    def step(self, obs: Tensor, episode_starts: Tensor) -> tuple[ActionDist, Tensor | None]: ...
    def peek(self, obs: Tensor, episode_starts: Tensor) -> tuple[ActionDist, Tensor | None]: ...
    def mark(self, index: np.ndarray) -> None: ...
    def peek_marked(self, final_obs: Tensor) -> tuple[ActionDist, Tensor | None]: ...
    def grow(self, n_envs: int) -> None: ...


def open_session(policy: PolicyFn, n_envs: int) -> Session | None:
    session = getattr(policy, "session", None)
    return None if session is None else session(n_envs)  # type: ignore[no-any-return]


def uses_masks(policy: PolicyFn | None) -> bool:
    return bool(getattr(policy, "uses_action_masks", False))


def read_masks(venv: VecEnv, device: torch.device) -> Tensor:
    """The valid actions of every environment now, shaped like the distribution's logits."""
    try:
        raw = venv.env_method("action_masks")
    except AttributeError:
        raise DistillError(
            "a MaskablePPO policy needs an environment with an action_masks() method; this one has none"
        ) from None
    masks = torch.as_tensor(np.stack([np.asarray(m, dtype=bool).reshape(-1) for m in raw]), device=device)
    space = venv.action_space
    if isinstance(space, gym.spaces.MultiDiscrete):  # flat [sum(nvec)] -> MultiCategorical's padded layout
        sizes = [int(n) for n in space.nvec.reshape(-1)]
        padded = torch.zeros((masks.shape[0], len(sizes), max(sizes)), dtype=torch.bool, device=device)
        for dim, chunk in enumerate(torch.split(masks, sizes, dim=-1)):
            padded[:, dim, : chunk.shape[-1]] = chunk
        return padded
    return masks


def masked(dist: ActionDist, masks: Tensor | None) -> ActionDist:
    """``dist`` restricted to the valid actions and renormalised (no mask: unchanged)."""
    if masks is None:
        return dist
    if not isinstance(dist, Categorical | MultiCategorical):
        raise DistillError(f"action masks need discrete actions, not {type(dist).__name__}")
    logits = torch.where(masks, dist.logits, torch.full_like(dist.logits, MASKED_LOGIT))
    return replace(dist, logits=torch.log_softmax(logits, dim=-1))


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
    # Valid actions, [T + 1, N, *logits_shape], for masked policies (``teacher`` is masked with them already).
    # Final observations have none: the env has reset before its mask can be read, so pi and pi_th are unmasked there.
    masks: Tensor | None = None

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
        if self.final_index.numel() == 0:
            return per_state[1:]  # no episode ended inside the segment (or it is seen as continuing)
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
    if isinstance(space, gym.spaces.MultiDiscrete):
        nvec = torch.as_tensor(space.nvec.reshape(-1), device=device)
        return (torch.rand((n, len(nvec)), device=device) * nvec).long()
    if isinstance(space, gym.spaces.MultiBinary):
        return torch.randint(2, (n, *space.shape), device=device).float()
    raise NotImplementedError(f"uniform control for {type(space).__name__}")


def to_env_actions(actions: Tensor, space: gym.Space) -> np.ndarray:
    """What the environment receives: Box actions clipped to the bounds, as SB3's own PPO does."""
    array = actions.cpu().numpy()
    if isinstance(space, gym.spaces.Box):
        return np.clip(array, space.low, space.high)
    return array


class Collector:
    """Steps a VecEnv across segments, keeping the current observations and episode statistics.

    With ``more_envs`` (a function making ``n`` further environments, the first of them the ``index``-th), the
    collector can :meth:`grow_to` more environments between segments; the running ones keep their episodes.
    """

    def __init__(
        self,
        venv: VecEnv,
        teacher: PolicyFn,
        device: torch.device,
        teacher_values: bool = True,
        more_envs: Callable[[int, int], VecEnv] | None = None,
    ) -> None:
        self.venv = venv
        self.more_envs = more_envs
        self.teacher = teacher
        self.device = device
        # Without V_pi (no method but the value-based ones reads it), an actor-critic teacher skips its critic.
        actor = getattr(teacher, "actor", None)
        self._teacher_actor: Callable[[Tensor], ActionDist] | None = None if teacher_values else actor
        self.action_space = venv.action_space
        self._obs = self._to_tensor(venv.reset())
        self._returns = np.zeros(venv.num_envs)
        self._lengths = np.zeros(venv.num_envs, dtype=np.int64)
        # sb3-contrib teachers: the valid actions now, and the LSTM state with which envs start an episode now.
        self._masks = read_masks(venv, device) if uses_masks(teacher) else None
        self._session = open_session(teacher, venv.num_envs)
        self._starts = torch.ones(venv.num_envs, device=device)

    def grow_to(self, n_envs: int) -> None:
        """Add environments until there are ``n_envs``: new episodes beside the running ones."""
        extra = n_envs - self.venv.num_envs
        if extra <= 0:
            return
        if self.more_envs is None or not isinstance(self.venv, ConcatVecEnv):
            raise ValueError("this collector's environments cannot grow")
        added = self.more_envs(extra, self.venv.num_envs)
        self.venv.append(added)
        self._obs = torch.cat([self._obs, self._to_tensor(added.reset())])
        self._returns = np.concatenate([self._returns, np.zeros(extra)])
        self._lengths = np.concatenate([self._lengths, np.zeros(extra, dtype=np.int64)])
        self._starts = torch.cat([self._starts, torch.ones(extra, device=self.device)])
        if self._masks is not None:
            self._masks = read_masks(self.venv, self.device)
        if self._session is not None:
            self._session.grow(extra)

    def _teacher(self, obs: Tensor) -> tuple[ActionDist, Tensor | None]:
        if self._teacher_actor is not None:
            return self._teacher_actor(obs), None
        return self.teacher(obs)

    def _to_tensor(self, obs: object) -> Tensor:
        if not isinstance(obs, np.ndarray):
            raise DistillError("dict and tuple observation spaces are not supported yet")
        return torch.as_tensor(obs, device=self.device)

    # no_grad, not inference_mode: the segment's tensors are inputs of the student's backward pass later.
    @torch.no_grad()
    def collect(self, n_steps: int, control: Control, student: PolicyFn | None, teacher_share: float = 0.0) -> Rollout:
        n_envs = self.venv.num_envs
        session = self._session
        # The teacher is needed at every step only to act (teacher or mix control) or when its LSTM state or the
        # action masks move with the episode; otherwise one forward over the whole segment afterwards costs a
        # fraction of T + 1 small ones.
        per_step = control in ("teacher", "mix") or session is not None or self._masks is not None
        obs, actions, teacher_dists, teacher_values = [self._obs], [], [], []
        rewards = np.zeros((n_steps, n_envs), dtype=np.float32)
        dones = np.zeros((n_steps, n_envs), dtype=bool)
        truncated = np.zeros((n_steps, n_envs), dtype=bool)
        final_obs: list[np.ndarray] = []
        final_index: list[int] = []
        episode_returns: list[float] = []
        episode_lengths: list[int] = []
        masks = None if self._masks is None else [self._masks]
        for t in range(n_steps + 1):
            dist: ActionDist | None = None
            if per_step:
                if session is None:
                    dist, value = self._teacher(self._obs)
                elif t < n_steps:
                    dist, value = session.step(self._obs, self._starts)
                else:  # the next segment steps this observation
                    dist, value = session.peek(self._obs, self._starts)
                dist = masked(dist, self._masks)
                teacher_dists.append(dist)
                teacher_values.append(value)
            if t == n_steps:
                break
            action = self._act(control, dist, student, teacher_share, n_envs)
            next_obs, reward, done, infos = self.venv.step(to_env_actions(action, self.action_space))
            rewards[t] = reward
            dones[t] = done
            self._returns += reward
            self._lengths += 1
            ended = np.flatnonzero(done)
            if ended.size:
                for i in ended:
                    truncated[t, i] = bool(infos[i].get("TimeLimit.truncated", False))
                    final_obs.append(infos[i]["terminal_observation"])
                    final_index.append(t * n_envs + int(i))
                    episode_returns.append(float(self._returns[i]))
                    episode_lengths.append(int(self._lengths[i]))
                self._returns[done] = 0.0
                self._lengths[done] = 0
            if session is not None:
                if ended.size:
                    session.mark(ended)  # the final obs below is seen with this episode's state
                self._starts = torch.as_tensor(done, dtype=torch.float32, device=self.device)
            actions.append(action)
            self._obs = self._to_tensor(next_obs)
            obs.append(self._obs)
            if masks is not None:
                self._masks = read_masks(self.venv, self.device)
                masks.append(self._masks)

        obs_shape = self._obs.shape[1:]
        final = (
            self._to_tensor(np.stack(final_obs))
            if final_obs
            else torch.zeros((0, *obs_shape), dtype=self._obs.dtype, device=self.device)
        )
        all_obs = torch.stack(obs)
        if per_step:
            teacher_final, teacher_final_values = (
                self._teacher(final) if session is None else session.peek_marked(final)
            )
            teacher = stack(teacher_dists)
            values = None if teacher_values[0] is None else torch.stack(teacher_values)  # type: ignore[arg-type]
        else:  # one batched forward: the segment's T + 1 rows of states and the episodes' final states
            flat = torch.cat([all_obs.reshape(-1, *obs_shape), final])
            dist_all, values_all = self._teacher(flat)
            rows = all_obs.shape[0] * n_envs
            teacher = dist_all[:rows].map(lambda p: p.reshape(n_steps + 1, n_envs, *p.shape[1:]))
            teacher_final = dist_all[rows:]
            values = None if values_all is None else values_all[:rows].reshape(n_steps + 1, n_envs)
            teacher_final_values = None if values_all is None else values_all[rows:]
        done_t = torch.as_tensor(dones, device=self.device)
        trunc_t = torch.as_tensor(truncated, device=self.device)
        return Rollout(
            obs=all_obs,
            actions=torch.stack(actions),
            env_rewards=torch.as_tensor(rewards, device=self.device),
            terminated=done_t & ~trunc_t,
            truncated=trunc_t,
            final_obs=final,
            final_index=torch.as_tensor(final_index, dtype=torch.long, device=self.device),
            teacher=teacher,
            teacher_values=values,
            teacher_final=teacher_final,
            teacher_final_values=teacher_final_values,
            episode_returns=episode_returns,
            episode_lengths=episode_lengths,
            masks=None if masks is None else torch.stack(masks),
        )

    def _act(
        self, control: Control, teacher: ActionDist | None, student: PolicyFn | None, share: float, n_envs: int
    ) -> Tensor:
        if control == "teacher":
            assert teacher is not None
            return teacher.sample()
        if control == "uniform":
            if self._masks is not None:  # uniform over the valid actions
                assert teacher is not None
                return masked(teacher.map(torch.zeros_like), self._masks).sample()
            return uniform_actions(self.action_space, n_envs, self.device)
        assert student is not None, "student control needs the student"
        act = getattr(student, "act", None)  # the student's own sampler skips its critic (Student.act)
        if act is not None and self._masks is None:
            student_action: Tensor = act(self._obs)
        else:
            student_action = masked(student(self._obs)[0], self._masks).sample()
        if control == "student":
            return student_action
        assert teacher is not None
        # mix: each environment acts with the teacher with probability `share` at each step (DAgger's beta)
        use_teacher = torch.rand(n_envs, device=self.device) < share
        mask = use_teacher.view(-1, *([1] * (student_action.dim() - 1)))
        return torch.where(mask, teacher.sample(), student_action)
