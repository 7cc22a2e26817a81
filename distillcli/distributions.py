"""Action distributions of teacher and student, in the one form the objectives need.

The paper's losses need cross-entropies between teacher and student, per state. These small classes hold only
the parameters, so a batch can be indexed, shifted in time and detached like a tensor, and they implement
``Hx(p || q) = -E_{a~p}[log q(a)]`` analytically where it exists. Turning SB3's own distribution objects into
these is :mod:`distillcli.sb3.policies`' job; nothing here knows SB3.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any, Self

import torch
import torch.nn.functional as F
from torch import Tensor

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
        return gumbel_max(self.logits)

    def mode(self) -> Tensor:
        return self.logits.argmax(-1)

    def max_log_prob(self) -> Tensor:
        return self.logits.max(-1).values


def gumbel_max(logits: Tensor) -> Tensor:
    """One sample per row of softmax(logits): argmax(logits + Gumbel noise), a third of multinomial's time."""
    # E ~ Exp(1) is exactly 0 with probability ~1e-8 per draw; -log(0) = inf would pick an impossible action.
    return (logits - torch.empty_like(logits).exponential_().clamp_(min=1e-30).log_()).argmax(-1)


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

    def cross_entropy(self, other: ActionDist) -> Tensor:
        if not isinstance(other, DiagGaussian):
            return _sampled_cross_entropy(self, other)  # e.g. Hx(pi_th || pi) against a squashed (SAC) teacher
        var_ratio = torch.exp(2 * (self.log_std - other.log_std))
        mean_term = (self.mean - other.mean).pow(2) * torch.exp(-2 * other.log_std)
        return (other.log_std + 0.5 * _LOG_2PI + 0.5 * (var_ratio + mean_term)).sum(-1)

    def sample(self) -> Tensor:
        return self.mean + torch.exp(self.log_std) * torch.randn_like(self.mean)

    def mode(self) -> Tensor:
        return self.mean


# Where no closed form exists (a squashed Gaussian), expectations are Monte-Carlo over this many samples per
# state: reparameterised, so gradients flow into the student's parameters.
MC_SAMPLES = 16
_PAD = -1e9  # log-probability of the padding entries of a MultiCategorical: exactly zero probability


@dataclass(frozen=True)
class MultiCategorical(ActionDist):
    """MultiDiscrete actions: independent categoricals per dimension, padded to one width.

    ``logits`` are normalised log-probabilities ``(*batch, n_dims, max_n)``; entries past a dimension's size
    hold ``_PAD`` so they carry no probability and add nothing to entropies.
    """

    logits: Tensor

    @classmethod
    def from_flat(cls, flat: Tensor, sizes: list[int], log_prob_floor: float | None = None) -> MultiCategorical:
        """From SB3's flat action-head output (the dimensions' logits concatenated)."""
        width = max(sizes)
        parts = []
        for chunk in torch.split(flat, sizes, dim=-1):
            log_probs = Categorical.from_logits(chunk, log_prob_floor).logits
            parts.append(F.pad(log_probs, (0, width - chunk.shape[-1]), value=_PAD))
        return cls(torch.stack(parts, dim=-2))

    @property
    def probs(self) -> Tensor:
        return self.logits.exp()

    def log_prob(self, actions: Tensor) -> Tensor:
        return self.logits.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1).sum(-1)

    def entropy(self) -> Tensor:
        return -(self.probs * self.logits).sum((-2, -1))

    def cross_entropy(self, other: MultiCategorical) -> Tensor:  # type: ignore[override]
        return -(self.probs * other.logits).sum((-2, -1))

    def sample(self) -> Tensor:
        return gumbel_max(self.logits)  # padding has log-probability -1e9: never drawn

    def mode(self) -> Tensor:
        return self.logits.argmax(-1)

    def max_log_prob(self) -> Tensor:
        return self.logits.max(-1).values.sum(-1)


@dataclass(frozen=True)
class Bernoulli(ActionDist):
    """MultiBinary actions: independent Bernoullis, ``logits`` of P(a_i = 1), shape ``(*batch, n)``."""

    logits: Tensor

    @classmethod
    def from_logits(cls, logits: Tensor, log_prob_floor: float | None = None) -> Bernoulli:
        # log sigmoid(l) >= floor for |l| <= -floor: a deterministic bit keeps finite cross-entropies.
        return cls(logits if log_prob_floor is None else logits.clamp(log_prob_floor, -log_prob_floor))

    def _log_p(self) -> tuple[Tensor, Tensor]:
        return F.logsigmoid(self.logits), F.logsigmoid(-self.logits)

    def log_prob(self, actions: Tensor) -> Tensor:
        on, off = self._log_p()
        return (actions * on + (1 - actions) * off).sum(-1)

    def entropy(self) -> Tensor:
        return self.cross_entropy(self)

    def cross_entropy(self, other: Bernoulli) -> Tensor:  # type: ignore[override]
        p = torch.sigmoid(self.logits)
        on, off = other._log_p()
        return -(p * on + (1 - p) * off).sum(-1)

    def sample(self) -> Tensor:
        return torch.bernoulli(torch.sigmoid(self.logits))

    def mode(self) -> Tensor:
        return (self.logits > 0).to(self.logits.dtype)

    def max_log_prob(self) -> Tensor:
        return F.logsigmoid(self.logits.abs()).sum(-1)


@dataclass(frozen=True)
class SquashedGaussian(ActionDist):
    """SAC's policy: ``a = center + half * tanh(u)``, ``u ~ N(mean, exp(log_std)^2)``, in the env's units.

    The Box bounds are held per state (``center``, ``half``, broadcast views) so that the batch can be indexed
    like any other. Entropy and cross-entropies have no closed form: they are Monte-Carlo estimates.
    """

    mean: Tensor
    log_std: Tensor
    center: Tensor
    half: Tensor

    _EPS = 1e-6

    def log_prob(self, actions: Tensor) -> Tensor:
        # Actions outside the box (a Gaussian student's samples before clipping) count as at its edge.
        y = ((actions - self.center) / self.half).clamp(-1 + self._EPS, 1 - self._EPS)
        u = torch.atanh(y)
        z = (u - self.mean) * torch.exp(-self.log_std)
        normal = -0.5 * z.pow(2) - self.log_std - 0.5 * _LOG_2PI
        return (normal - torch.log1p(-y.pow(2)) - torch.log(self.half)).sum(-1)

    def rsample(self, n: int) -> Tensor:
        noise = torch.randn((n, *self.mean.shape), dtype=self.mean.dtype, device=self.mean.device)
        return self.center + self.half * torch.tanh(self.mean + torch.exp(self.log_std) * noise)

    def sample(self) -> Tensor:
        return self.rsample(1)[0]

    def mode(self) -> Tensor:
        return self.center + self.half * torch.tanh(self.mean)

    def entropy(self) -> Tensor:
        return -self.log_prob(self.rsample(MC_SAMPLES)).mean(0)

    def cross_entropy(self, other: ActionDist) -> Tensor:
        return -other.log_prob(self.rsample(MC_SAMPLES)).mean(0)


def _sampled_cross_entropy(p: DiagGaussian, q: ActionDist) -> Tensor:
    noise = torch.randn((MC_SAMPLES, *p.mean.shape), dtype=p.mean.dtype, device=p.mean.device)
    return -q.log_prob(p.mean + torch.exp(p.log_std) * noise).mean(0)


def stack(dists: list[ActionDist]) -> ActionDist:
    """Stack a list of same-family batches along a new leading (time) dimension."""
    first = dists[0]
    return replace(first, **{f.name: torch.stack([getattr(d, f.name) for d in dists]) for f in fields(first)})
