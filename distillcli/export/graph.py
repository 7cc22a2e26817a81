"""The deployable graph: the raw env observation in, the env action out, as one torch module.

What SB3 and distill's env stack do between an env and ``predict(obs, deterministic=True)``, in order:

1. frozen ``VecNormalize`` statistics: ``clip((obs - mean) / sqrt(var + epsilon), -clip_obs, clip_obs)``, in float64
   as numpy computes it, then float32 (VecNormalize's own dtypes, so the result is bit-exact);
2. ``VecTransposeImage``: channel-last frames become channel-first;
3. SB3's ``preprocess_obs``: images / 255, one-hot of discrete observations, floats;
4. the actor: features extractor, ``mlp_extractor.forward_actor``, ``action_net``;
5. the distribution's mode and ``predict``'s post-processing: argmax (Discrete, with invalid actions masked to
   -1e8 as MaskablePPO does), per-dimension argmax (MultiDiscrete), round(sigmoid) (MultiBinary), and for Box the
   mean clipped to the bounds, or for a squashed gSDE policy tanh(mean) unscaled to the bounds
   (``low + 0.5 (a + 1) (high - low)``, SB3's ``unscale_action``).

Frame stacking is not in the graph: it takes the stacked observation as SB3's ``VecFrameStack`` gives it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.preprocessing import preprocess_obs
from torch import Tensor, nn

from distillcli.envs import EnvStack, Normalization
from distillcli.errors import DistillError

MASKED_LOGIT = -1e8  # what sb3-contrib's MaskableCategorical puts in place of an invalid action's logit
OBS = "obs"
MASK = "action_mask"
ACTION = "action"


def describe_space(space: gym.Space) -> dict[str, Any]:
    """A space as JSON: type, shape, dtype, and its bounds or sizes (bounds as one number where they are uniform)."""
    out: dict[str, Any] = {"type": type(space).__name__, "shape": list(space.shape or ())}
    dtype = getattr(space, "dtype", None)
    if dtype is not None:
        out["dtype"] = np.dtype(dtype).name
    if isinstance(space, gym.spaces.Box):
        for key in ("low", "high"):
            bound = np.asarray(getattr(space, key), dtype=np.float64)
            flat = bound.reshape(-1)
            value: Any = flat.tolist() if flat.size and not (flat == flat[0]).all() else float(flat[0])
            out[key] = value if np.isfinite(flat).all() else [None if not np.isfinite(v) else v for v in flat.tolist()]
    elif isinstance(space, gym.spaces.Discrete):
        out["n"] = int(space.n)
    elif isinstance(space, gym.spaces.MultiDiscrete):
        out["nvec"] = [int(n) for n in space.nvec.reshape(-1)]
    elif isinstance(space, gym.spaces.MultiBinary):
        out["n"] = int(np.prod(space.shape))
    return out


GRAPH_SPACES = (gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)


def check_observations(observation_space: gym.Space, env_id: str) -> None:
    if not isinstance(observation_space, GRAPH_SPACES):
        raise DistillError(
            f"export supports Box, Discrete, MultiDiscrete and MultiBinary observations (one graph input); {env_id} "
            f"has {type(observation_space).__name__} observations"
        )


def check_exportable_spaces(observation_space: gym.Space, action_space: gym.Space, stack: EnvStack) -> None:
    """Refuse what one graph with one observation input cannot take, in one line."""
    check_observations(observation_space, stack.env_id)
    if not isinstance(action_space, GRAPH_SPACES):
        raise DistillError(f"export cannot act in {type(action_space).__name__} action spaces ({stack.env_id})")
    if isinstance(action_space, gym.spaces.MultiDiscrete) and action_space.nvec.ndim != 1:
        raise DistillError("export supports one-dimensional MultiDiscrete action spaces only")
    if stack.normalization is not None and stack.frame_stack:
        raise DistillError(
            "export of a run with both VecNormalize statistics and frame stacking is not supported: the stack's "
            "padding frames at an episode start are zeros after normalisation, which no graph on raw frames can see"
        )


@dataclass(frozen=True)
class Action:
    """How the graph turns the actor's output into the env action (what the sidecar calls ``action``)."""

    kind: str  # argmax | multi-argmax | threshold | clip | squash
    description: str


def action_kind(policy: Any, masked: bool = False) -> Action:
    space = policy.action_space
    mask = ", after setting the logits of invalid actions to -1e8 (MaskablePPO's masking)" if masked else ""
    if isinstance(space, gym.spaces.Discrete):
        return Action("argmax", f"argmax of the logits{mask}")
    if isinstance(space, gym.spaces.MultiDiscrete):
        return Action("multi-argmax", f"argmax of each dimension's logits{mask}")
    if isinstance(space, gym.spaces.MultiBinary):
        return Action("threshold", "round(sigmoid(logits)): 1 where the logit is positive")
    if getattr(policy, "squash_output", False):
        return Action("squash", "tanh(mean), rescaled to the bounds: low + 0.5 (a + 1) (high - low)")
    return Action("clip", "the Gaussian mean, clipped to the bounds")


class Deployable(nn.Module):
    """Raw observation (and, for a masked policy, the valid actions) -> the deterministic env action."""

    obs_mean: Tensor
    obs_std: Tensor
    low: Tensor
    high: Tensor
    span: Tensor

    def __init__(
        self,
        policy: Any,
        raw_space: gym.Space,
        normalization: Normalization | None,
        transpose: bool,
        masked: bool,
    ) -> None:
        super().__init__()
        if not all(hasattr(policy, name) for name in ("mlp_extractor", "action_net", "pi_features_extractor")):
            raise DistillError(f"export takes an actor-critic policy (PPO's); this is a {type(policy).__name__}")
        self.features = policy.pi_features_extractor
        self.mlp_extractor = policy.mlp_extractor
        self.action_net = policy.action_net
        self.policy_space = policy.observation_space
        self.normalize_images = bool(policy.normalize_images)
        self.action_space = policy.action_space
        self.action = action_kind(policy, masked)
        self.raw_space = raw_space
        self.transpose = transpose
        self.masked = masked
        self.normalized = normalization is not None and normalization.norm_obs
        if normalization is not None and normalization.norm_obs:
            std = np.sqrt(normalization.var.astype(np.float64) + normalization.epsilon)  # VecNormalize's own formula
            self.register_buffer("obs_mean", torch.as_tensor(normalization.mean.astype(np.float64)))
            self.register_buffer("obs_std", torch.as_tensor(std))
            self.clip_obs = float(normalization.clip_obs)
        space = self.action_space
        if isinstance(space, gym.spaces.Box):
            low, high = space.low.astype(np.float32), space.high.astype(np.float32)
            self.register_buffer("low", torch.as_tensor(low))
            self.register_buffer("high", torch.as_tensor(high))
            self.register_buffer("span", torch.as_tensor(high - low))  # float32, as numpy computes high - low
            dist = policy.action_dist
            self.tanh = getattr(dist, "bijector", None) is not None  # gSDE's squashed mode
        self.sizes = [int(n) for n in space.nvec.reshape(-1)] if isinstance(space, gym.spaces.MultiDiscrete) else []

    def forward(self, obs: Tensor, action_mask: Tensor | None = None) -> Tensor:
        x = obs
        if self.normalized:
            x = ((x.to(torch.float64) - self.obs_mean) / self.obs_std).clamp(-self.clip_obs, self.clip_obs)
            x = x.to(torch.float32)
        if self.transpose:
            x = x.permute(0, 3, 1, 2)
        features = self.features(preprocess_obs(x, self.policy_space, normalize_images=self.normalize_images))
        head = self.action_net(self.mlp_extractor.forward_actor(features))
        return self._act(head, action_mask)

    def _act(self, head: Tensor, action_mask: Tensor | None) -> Tensor:
        kind = self.action.kind
        if kind == "argmax":
            if action_mask is not None:
                head = torch.where(action_mask, head, torch.full_like(head, MASKED_LOGIT))
            return head.argmax(dim=1)
        if kind == "multi-argmax":
            chunks = torch.split(head, self.sizes, dim=1)
            masks = torch.split(action_mask, self.sizes, dim=1) if action_mask is not None else [None] * len(chunks)
            picks = []
            for chunk, mask in zip(chunks, masks, strict=True):
                if mask is not None:
                    chunk = torch.where(mask, chunk, torch.full_like(chunk, MASKED_LOGIT))
                picks.append(chunk.argmax(dim=1))
            return torch.stack(picks, dim=1)
        if kind == "threshold":
            return torch.round(torch.sigmoid(head)).reshape((-1, *self.action_space.shape)).to(torch.int64)
        mean = head.reshape((-1, *self.action_space.shape))
        if kind == "squash":
            action = torch.tanh(mean) if self.tanh else mean
            return self.low + (0.5 * (action + 1.0)) * self.span
        return torch.minimum(torch.maximum(mean, self.low), self.high)  # np.clip(a, low, high)

    def example_inputs(self, batch: int = 1) -> tuple[Tensor, ...]:
        """Inputs of the right dtypes and shapes, for tracing."""
        sample = np.stack([np.asarray(self.raw_space.sample()) for _ in range(batch)])
        inputs: tuple[Tensor, ...] = (torch.as_tensor(sample),)
        if self.masked:
            inputs += (torch.ones((batch, mask_size(self.action_space)), dtype=torch.bool),)
        return inputs

    @property
    def input_names(self) -> list[str]:
        return [OBS, MASK] if self.masked else [OBS]


def mask_size(space: gym.Space) -> int:
    """The length of a flat action mask (what ``env.action_masks()`` and MaskablePPO's predict take)."""
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    if isinstance(space, gym.spaces.MultiDiscrete):
        return int(space.nvec.sum())
    if isinstance(space, gym.spaces.MultiBinary):
        return 2 * int(np.prod(space.shape))
    raise DistillError(f"action masks need discrete actions, not {type(space).__name__}")
