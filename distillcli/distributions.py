"""Action distributions of teacher and student, in the one form the objectives need.

SB3 hands back its own distribution objects (per policy family); the paper's losses need cross-entropies
between two of them, per state. These small classes hold only the parameters, so a batch can be indexed,
shifted in time and detached like a tensor, and they implement ``Hx(p || q) = -E_{a~p}[log q(a)]``
analytically where it exists.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any, Self

import torch
import torch.nn.functional as F
from stable_baselines3.common import distributions as sb3_dist
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import Tensor

from distillcli.errors import DistillError

_LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class ActionDist:
    """Base class: a batch of action distributions (leading dims are the batch)."""

    def map(self, fn: Callable[[Tensor], Tensor]) -> Self:
        """Apply ``fn`` to every parameter tensor (indexing, reshaping, detaching, moving)."""
        return replace(self, **{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def map2(self, other: Self, fn: Callable[[Tensor, Tensor], Tensor]) -> Self:
        """Combine the parameters of two batches of the same family, tensor by tensor."""
        return replace(self, **{f.name: fn(getattr(self, f.name), getattr(other, f.name)) for f in fields(self)})

    def detach(self) -> Self:
        return self.map(lambda t: t.detach())

    def __getitem__(self, index: Any) -> Self:
        return self.map(lambda t: t[index])

    def log_prob(self, actions: Tensor) -> Tensor:
        raise NotImplementedError

    def entropy(self) -> Tensor:
        raise NotImplementedError

    def cross_entropy(self, other: Self) -> Tensor:
        """``Hx(self || other) = -E_{a~self}[log other(a)]``, one value per state."""
        raise NotImplementedError

    def kl(self, other: Self) -> Tensor:
        """``KL(self || other) = Hx(self || other) - H(self)``."""
        return self.cross_entropy(other) - self.entropy()

    def sample(self) -> Tensor:
        raise NotImplementedError

    def mode(self) -> Tensor:
        raise NotImplementedError

    def max_log_prob(self) -> Tensor:
        """``max_a log p(a)``: the log-probability (density) of the mode."""
        return self.log_prob(self.mode())


@dataclass(frozen=True)
class Categorical(ActionDist):
    """Discrete actions; ``logits`` are normalised log-probabilities, shape ``(*batch, n_actions)``."""

    logits: Tensor

    @classmethod
    def from_logits(cls, logits: Tensor, log_prob_floor: float | None = None) -> Categorical:
        log_probs = F.log_softmax(logits, dim=-1)
        if log_prob_floor is not None:
            # A (near-)deterministic teacher has log pi = -inf on some actions: floor it, then renormalise,
            # so every cross-entropy and pseudo-reward stays finite.
            log_probs = F.log_softmax(log_probs.clamp(min=log_prob_floor), dim=-1)
        return cls(log_probs)

    @property
    def probs(self) -> Tensor:
        return self.logits.exp()

    def log_prob(self, actions: Tensor) -> Tensor:
        return self.logits.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> Tensor:
        return -(self.probs * self.logits).sum(-1)

    def cross_entropy(self, other: Categorical) -> Tensor:  # type: ignore[override]
        return -(self.probs * other.logits).sum(-1)

    def sample(self) -> Tensor:
        flat = self.probs.reshape(-1, self.logits.shape[-1])
        return torch.multinomial(flat, 1).reshape(self.logits.shape[:-1])

    def mode(self) -> Tensor:
        return self.logits.argmax(-1)

    def max_log_prob(self) -> Tensor:
        return self.logits.max(-1).values


@dataclass(frozen=True)
class DiagGaussian(ActionDist):
    """Continuous actions: independent Gaussians per action dimension, shape ``(*batch, action_dim)``."""

    mean: Tensor
    log_std: Tensor

    def log_prob(self, actions: Tensor) -> Tensor:
        z = (actions - self.mean) * torch.exp(-self.log_std)
        return (-0.5 * z.pow(2) - self.log_std - 0.5 * _LOG_2PI).sum(-1)

    def entropy(self) -> Tensor:
        return (0.5 + 0.5 * _LOG_2PI + self.log_std).expand_as(self.mean).sum(-1)

    def cross_entropy(self, other: DiagGaussian) -> Tensor:  # type: ignore[override]
        var_ratio = torch.exp(2 * (self.log_std - other.log_std))
        mean_term = (self.mean - other.mean).pow(2) * torch.exp(-2 * other.log_std)
        return (other.log_std + 0.5 * _LOG_2PI + 0.5 * (var_ratio + mean_term)).sum(-1)

    def sample(self) -> Tensor:
        return self.mean + torch.exp(self.log_std) * torch.randn_like(self.mean)

    def mode(self) -> Tensor:
        return self.mean


def from_sb3(distribution: sb3_dist.Distribution, log_prob_floor: float | None = None) -> ActionDist:
    """Convert an SB3 distribution object (after ``proba_distribution``) to ours."""
    if isinstance(distribution, sb3_dist.CategoricalDistribution):
        return Categorical.from_logits(distribution.distribution.logits, log_prob_floor)
    if isinstance(distribution, sb3_dist.DiagGaussianDistribution) and not isinstance(
        distribution, sb3_dist.SquashedDiagGaussianDistribution
    ):
        normal = distribution.distribution
        mean = normal.mean
        return DiagGaussian(mean, torch.log(normal.stddev).expand_as(mean))
    raise DistillError(
        f"action distribution {type(distribution).__name__} is not supported yet "
        "(supported: Discrete and Box actions of actor-critic policies)"
    )


def stack(dists: list[ActionDist]) -> ActionDist:
    """Stack a list of same-family batches along a new leading (time) dimension."""
    first = dists[0]
    return replace(first, **{f.name: torch.stack([getattr(d, f.name) for d in dists]) for f in fields(first)})


def actor_critic_outputs(
    policy: ActorCriticPolicy, obs: Tensor, log_prob_floor: float | None = None
) -> tuple[ActionDist, Tensor]:
    """One forward pass of an SB3 actor-critic policy: (pi(.|s), V(s)), with the same modules as SB3 uses."""
    features = policy.extract_features(obs)
    if policy.share_features_extractor:
        latent_pi, latent_vf = policy.mlp_extractor(features)
    else:
        pi_features, vf_features = features
        latent_pi = policy.mlp_extractor.forward_actor(pi_features)
        latent_vf = policy.mlp_extractor.forward_critic(vf_features)
    values = policy.value_net(latent_vf).squeeze(-1)
    # The two common families are built directly from the action head: torch.distributions objects
    # validate their arguments on every call, which costs more than the small networks themselves.
    action_dist = policy.action_dist
    if isinstance(action_dist, sb3_dist.CategoricalDistribution):
        return Categorical.from_logits(policy.action_net(latent_pi), log_prob_floor), values
    if type(action_dist) is sb3_dist.DiagGaussianDistribution:
        mean = policy.action_net(latent_pi)
        return DiagGaussian(mean, policy.log_std.expand_as(mean)), values
    distribution = policy._get_action_dist_from_latent(latent_pi)
    return from_sb3(distribution, log_prob_floor), values
