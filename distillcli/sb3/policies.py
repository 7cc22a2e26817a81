"""SB3 adapters: a policy's outputs as :mod:`distillcli.distributions` objects, with the same modules SB3 uses.

SB3 hands back its own distribution objects, one kind per policy family; the losses need ours. Discrete heads are
read from the action space (a Discrete or MultiDiscrete head is logits whatever SB3 class wraps them, sb3-contrib's
maskable ones included); Box heads from SB3's distribution (plain, gSDE, squashed).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common import distributions as sb3_dist
from torch import Tensor, nn

from distillcli.distributions import (
    ActionDist,
    Bernoulli,
    Categorical,
    DiagGaussian,
    MultiCategorical,
    SquashedGaussian,
)
from distillcli.errors import DistillError


def from_sb3(
    distribution: sb3_dist.Distribution,
    log_prob_floor: float | None = None,
    bounds: tuple[Tensor, Tensor] | None = None,
) -> ActionDist:
    """Convert an SB3 distribution object (after ``proba_distribution``) to ours.

    ``bounds`` (center, half-range of the Box) turn a squashed distribution's [-1, 1] into the env's units.
    """
    if isinstance(distribution, sb3_dist.CategoricalDistribution):
        return Categorical.from_logits(distribution.distribution.logits, log_prob_floor)
    if isinstance(distribution, sb3_dist.MultiCategoricalDistribution):
        flat = torch.cat([d.logits for d in distribution.distribution], dim=-1)
        return MultiCategorical.from_flat(flat, list(distribution.action_dims), log_prob_floor)
    if isinstance(distribution, sb3_dist.BernoulliDistribution):
        return Bernoulli.from_logits(distribution.distribution.logits, log_prob_floor)
    squashed = isinstance(distribution, sb3_dist.SquashedDiagGaussianDistribution) or (
        isinstance(distribution, sb3_dist.StateDependentNoiseDistribution) and distribution.bijector is not None
    )
    if isinstance(distribution, sb3_dist.DiagGaussianDistribution | sb3_dist.StateDependentNoiseDistribution):
        # gSDE's noise is state-dependent but, per state, still a diagonal Gaussian.
        normal = distribution.distribution
        mean, log_std = normal.mean, torch.log(normal.stddev).expand_as(normal.mean)
        if not squashed:
            return DiagGaussian(mean, log_std)
        center, half = bounds if bounds is not None else (torch.zeros(()), torch.ones(()))
        return SquashedGaussian(mean, log_std, center.expand_as(mean), half.expand_as(mean))
    raise DistillError(f"action distribution {type(distribution).__name__} is not supported")


def discrete_sizes(space: gym.Space) -> list[int] | None:
    """The categorical sizes of a Discrete or MultiDiscrete action space (None for other spaces)."""
    if isinstance(space, gym.spaces.Discrete):
        return [int(space.n)]
    if isinstance(space, gym.spaces.MultiDiscrete) and space.nvec.ndim == 1:
        return [int(n) for n in space.nvec]
    return None


def logits_distribution(space: gym.Space, flat: Tensor, log_prob_floor: float | None = None) -> ActionDist:
    """A discrete action head's output as a distribution: Categorical, or MultiCategorical per dimension."""
    sizes = discrete_sizes(space)
    if sizes is None:
        raise DistillError(f"{type(space).__name__} actions have no logits head")
    if isinstance(space, gym.spaces.Discrete):
        return Categorical.from_logits(flat, log_prob_floor)
    return MultiCategorical.from_flat(flat, sizes, log_prob_floor)


def actor_critic_latent(policy: Any, obs: Tensor) -> tuple[Tensor, Tensor]:
    """The actor's latent and V(s) of an SB3 actor-critic (sb3-contrib's maskable one has the same modules)."""
    features = policy.extract_features(obs)
    if policy.share_features_extractor:
        latent_pi, latent_vf = policy.mlp_extractor(features)
    else:
        pi_features, vf_features = features
        latent_pi = policy.mlp_extractor.forward_actor(pi_features)
        latent_vf = policy.mlp_extractor.forward_critic(vf_features)
    return latent_pi, policy.value_net(latent_vf).squeeze(-1)


def actor_critic_outputs(policy: Any, obs: Tensor, log_prob_floor: float | None = None) -> tuple[ActionDist, Tensor]:
    """One forward pass of an SB3 actor-critic policy: (pi(.|s), V(s)), with the same modules as SB3 uses."""
    latent_pi, values = actor_critic_latent(policy, obs)
    return policy_distribution(policy, latent_pi, log_prob_floor), values


def actor_outputs(policy: Any, obs: Tensor, log_prob_floor: float | None = None) -> ActionDist:
    """pi(.|s) of an SB3 actor-critic policy without its critic (for a teacher whose V_pi no method reads)."""
    features = policy.extract_features(obs)
    pi_features = features if isinstance(features, Tensor) else features[0]  # (pi, vf) when not shared
    return policy_distribution(policy, policy.mlp_extractor.forward_actor(pi_features), log_prob_floor)


def policy_distribution(policy: Any, latent_pi: Tensor, log_prob_floor: float | None) -> ActionDist:
    """The action distribution an SB3 actor-critic builds from its actor's latent."""
    # Discrete and plain Gaussian heads are built directly from the action head: torch.distributions objects
    # validate their arguments on every call, which costs more than the small networks themselves.
    if discrete_sizes(policy.action_space) is not None:
        return logits_distribution(policy.action_space, policy.action_net(latent_pi), log_prob_floor)
    if type(policy.action_dist) is sb3_dist.DiagGaussianDistribution:
        mean = policy.action_net(latent_pi)
        return DiagGaussian(mean, policy.log_std.expand_as(mean))
    distribution = policy._get_action_dist_from_latent(latent_pi)
    return from_sb3(distribution, log_prob_floor, box_bounds(policy.action_space, latent_pi.device))


def box_bounds(space: object, device: torch.device) -> tuple[Tensor, Tensor] | None:
    """(center, half-range) of a bounded Box action space: how SB3 unscales a squashed action."""
    if not isinstance(space, gym.spaces.Box) or not (np.isfinite(space.low).all() and np.isfinite(space.high).all()):
        return None
    low = torch.as_tensor(space.low, dtype=torch.float32, device=device)
    high = torch.as_tensor(space.high, dtype=torch.float32, device=device)
    return (high + low) / 2, (high - low) / 2


def linear_widths(network: nn.Module | None) -> list[int]:
    """The output widths of a network's Linear layers, in order."""
    return [] if network is None else [m.out_features for m in network.modules() if isinstance(m, nn.Linear)]
