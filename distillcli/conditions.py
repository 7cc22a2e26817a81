"""Teacher conditions that the tool builds from a teacher, for robustness tests and ``distill study``.

- ``--teacher-corrupt p``: the teacher is replaced by the uniform policy on a fraction p of states. Which states is
  fixed by a hash of the observation, so one state is always corrupted or always clean (an imperfect teacher that
  is consistent, as the paper's are), and a run is reproducible from its config alone.
- ``--extra-actions K:repeat|K:noop``: each of the env's n discrete actions appears K times (``repeat``), or the
  n actions are kept and n(K - 1) no-ops (action 0) are added (``noop``): the action space of the paper's Fig. 4
  grown K-fold. The teacher behaves exactly as before: it spreads each action's probability evenly over the
  actions that do the same thing.

Both act on the teacher's pi(.|s) (a :class:`Categorical`), so its returns, the student's KL and every pseudo-reward
see the same teacher.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from distillcli.distributions import ActionDist, Categorical
from distillcli.errors import DistillError

_FNV_OFFSET, _FNV_PRIME = np.uint64(0xCBF29CE484222325), np.uint64(0x100000001B3)


def state_hash(obs: Tensor) -> Tensor:
    """A number in [0, 1) per observation, a function of its bytes alone (FNV-1a over its 32-bit words): the same
    state gets the same number in every run, process and batch."""
    flat = obs.detach().reshape(obs.shape[0], -1).to("cpu")
    words = flat.to(torch.float32).numpy().view(np.uint32) if flat.is_floating_point() else flat.numpy()
    h = np.full(words.shape[0], _FNV_OFFSET, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in words.astype(np.uint64).T:
            h = (h ^ column) * _FNV_PRIME
        h ^= h >> np.uint64(29)
        h = h * _FNV_PRIME
    return torch.from_numpy((h >> np.uint64(11)).astype(np.float64) / float(1 << 53)).to(obs.device)


class GroupedCategorical(Categorical):
    """pi(.|s) over a grown action space whose mode is the teacher's own: the env action with the most probability
    summed over its copies (its first copy, which is the env action itself). A subclass per condition holds the
    grouping, so the fields (and indexing, stacking, detaching) stay Categorical's."""

    groups: Tensor
    n_base: int

    def mode(self) -> Tensor:
        probs = self.probs
        summed = torch.zeros(*probs.shape[:-1], self.n_base, dtype=probs.dtype, device=probs.device)
        return summed.index_add_(-1, self.groups.to(probs.device), probs).argmax(-1)


class TeacherCondition:
    """pi(.|s) -> the condition's pi(.|s): the teacher's corrupted states, then its extra actions."""

    def __init__(self, corrupt: float = 0.0, extra: tuple[int, str] | None = None, n_actions: int = 0) -> None:
        self.corrupt = corrupt
        self.index: Tensor | None = None
        self.offset: Tensor | None = None
        self.dist_class: type[Categorical] = Categorical
        if extra is not None:
            base = extended_actions(n_actions, *extra)
            counts = np.bincount(base, minlength=n_actions)
            self.index = torch.as_tensor(base, dtype=torch.long)
            self.offset = torch.as_tensor(-np.log(counts[base]), dtype=torch.float32)
            attributes = {"groups": self.index, "n_base": n_actions}
            self.dist_class = type("GroupedCategorical", (GroupedCategorical,), attributes)

    def __call__(self, obs: Tensor, dist: ActionDist) -> ActionDist:
        if not isinstance(dist, Categorical):
            raise DistillError("--teacher-corrupt and --extra-actions need a teacher with discrete actions")
        logits = dist.logits
        if self.corrupt > 0.0:
            u = state_hash(obs).to(logits.dtype)
            corrupted = u < self.corrupt
            # Uniform up to 1e-6: the tilt makes its mode (a deterministic evaluation's action) a random action
            # fixed by the same hash, not always action 0.
            n = logits.shape[-1]
            pick = (u / self.corrupt * n).long().clamp(max=n - 1)
            tilt = 1e-6 * torch.nn.functional.one_hot(pick, n).to(logits.dtype)
            uniform = torch.log_softmax(tilt, dim=-1)
            logits = torch.where(corrupted.unsqueeze(-1), uniform, logits)
        if self.index is not None and self.offset is not None:
            index, offset = self.index.to(logits.device), self.offset.to(logits.device)
            logits = logits[..., index] + offset
        return self.dist_class(logits)


def extended_actions(n_actions: int, copies: int, form: str) -> np.ndarray:
    """For each action of the grown space, the env action it does."""
    if form == "repeat":
        return np.tile(np.arange(n_actions), copies)
    return np.concatenate([np.arange(n_actions), np.zeros(n_actions * (copies - 1), dtype=np.int64)])


class ExtraActions(gym.ActionWrapper[Any, int, int]):
    """The env with ``copies`` times its discrete actions (see the module doc); env.json records it, so
    ``distill eval`` and deployment rebuild the student's env."""

    def __init__(self, env: gym.Env[Any, Any], copies: int = 1, form: str = "repeat") -> None:
        super().__init__(env)
        space = env.action_space
        if not isinstance(space, gym.spaces.Discrete):
            raise DistillError(f"--extra-actions needs discrete actions, not {type(space).__name__}")
        self.base = extended_actions(int(space.n), copies, form)
        self.action_space = gym.spaces.Discrete(len(self.base))  # type: ignore[assignment]

    def action(self, action: int) -> int:
        return int(self.base[int(action)])
