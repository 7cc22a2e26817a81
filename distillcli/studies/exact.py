"""Exact expected updates on small finite-horizon MDPs, by enumerating every trajectory.

A tabular softmax student is just another parametrisation of the student: ``pi_th(.|s) = softmax(theta[s])``.
Enumerated trajectories are packed into the same :class:`~distillcli.rollout.Rollout` that ``distill run``
collects, and the expected update is the probability-weighted sum of the trainer's own Eq. 1 surrogate, so
what is checked here is exactly what the trainer computes (same method records, losses, pseudo-rewards).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor

from distillcli.distributions import ActionDist, Categorical
from distillcli.methods import Method
from distillcli.objectives import ObjectiveOptions
from distillcli.rollout import PolicyFn, Rollout
from distillcli.trainer import UpdateOptions, segment_surrogate, segment_targets


@dataclass(frozen=True)
class TabularMDP:
    """``n_states`` states, ``n_actions`` actions, episodes of exactly ``horizon`` steps from ``initial``."""

    transitions: Tensor  # [S, A, S]: P(s' | s, a)
    rewards: Tensor  # [S, A]
    initial: Tensor  # [S]
    horizon: int

    @property
    def n_states(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def n_actions(self) -> int:
        return int(self.rewards.shape[1])

    @classmethod
    def random(cls, n_states: int, n_actions: int, horizon: int, seed: int) -> TabularMDP:
        generator = torch.Generator().manual_seed(seed)
        transitions = torch.rand(n_states, n_actions, n_states, generator=generator, dtype=torch.float64)
        transitions /= transitions.sum(-1, keepdim=True)
        rewards = torch.randn(n_states, n_actions, generator=generator, dtype=torch.float64)
        initial = torch.rand(n_states, generator=generator, dtype=torch.float64)
        return cls(transitions, rewards, initial / initial.sum(), horizon)


def tabular_policy(table: Tensor) -> PolicyFn:
    """``obs`` (state indices) -> (softmax(table[obs]), zero value)."""

    def policy(obs: Tensor) -> tuple[ActionDist, Tensor | None]:
        logits = table[obs.long()]
        return Categorical.from_logits(logits), torch.zeros(obs.shape, dtype=table.dtype)

    return policy


@dataclass
class Enumeration:
    """Every trajectory of an MDP as one Rollout column, with the pieces needed to weight it."""

    rollout: Rollout
    states: Tensor  # [H, N]
    actions: Tensor  # [H, N]

    def log_probability(self, mdp: TabularMDP, policy_logits: Tensor) -> Tensor:
        """log p(tau) under the policy softmax(policy_logits[s]) (differentiable in policy_logits)."""
        log_pi = torch.log_softmax(policy_logits, -1)[self.states, self.actions].sum(0)
        log_p = torch.log(mdp.initial[self.states[0]])
        for t in range(1, self.states.shape[0]):
            log_p = log_p + torch.log(mdp.transitions[self.states[t - 1], self.actions[t - 1], self.states[t]])
        return log_pi + log_p


def enumerate_trajectories(
    mdp: TabularMDP, teacher_logits: Tensor, teacher_values: Tensor | None = None
) -> Enumeration:
    """All (s_0, a_0, ..., s_{H-1}, a_{H-1}) sequences; each episode terminates after step H - 1."""
    horizon, n_states, n_actions = mdp.horizon, mdp.n_states, mdp.n_actions
    columns = list(itertools.product(range(n_states), range(n_actions), repeat=horizon))
    sequences = torch.tensor(columns, dtype=torch.long).T  # [2H, N]
    states, actions = sequences[0::2], sequences[1::2]
    n = states.shape[1]
    obs = torch.cat([states, torch.zeros(1, n, dtype=torch.long)])  # obs[H] is never used: the episode ended
    terminated = torch.zeros(horizon, n, dtype=torch.bool)
    terminated[-1] = True
    teacher = tabular_policy(teacher_logits)
    teacher_dist, _ = teacher(obs)
    final_obs = torch.zeros(n, dtype=torch.long)
    values = None if teacher_values is None else teacher_values[obs]
    rollout = Rollout(
        obs=obs,
        actions=actions,
        env_rewards=mdp.rewards[states, actions],
        terminated=terminated,
        truncated=torch.zeros_like(terminated),
        final_obs=final_obs,
        final_index=(horizon - 1) * n + torch.arange(n),
        teacher=teacher_dist,
        teacher_values=values,
        teacher_final=teacher(final_obs)[0],
        teacher_final_values=None if teacher_values is None else teacher_values[final_obs],
    )
    return Enumeration(rollout, states, actions)


def per_trajectory_surrogate(
    method: Method,
    rollout: Rollout,
    student_logits: Tensor,
    options: ObjectiveOptions,
    update: UpdateOptions,
    student_values: Tensor | None = None,
) -> Tensor:
    """The trainer's Eq. 1 surrogate summed over each trajectory's steps: [N], differentiable in the logits.

    The pseudo-returns come from the trainer's ``segment_targets`` (no gradient), the surrogate from its
    ``segment_surrogate`` (Eq. 1 over the segment); ``student_values`` (a table) is the critic baseline if given.
    """
    horizon = rollout.shape[0]

    def student(obs: Tensor) -> tuple[ActionDist, Tensor | None]:
        dist, zeros = tabular_policy(student_logits.detach())(obs)
        return dist, zeros if student_values is None else student_values[obs.long()]

    targets = segment_targets(method, rollout, student, options, update)
    obs = rollout.obs[:horizon].reshape(-1)
    values = torch.zeros(obs.shape, dtype=student_logits.dtype) if student_values is None else student_values[obs]
    dist = Categorical.from_logits(student_logits[obs])
    return segment_surrogate(method, rollout, targets, dist, values, options, value_coef=0.0).sum(0)


def expected_update(
    method: Method,
    mdp: TabularMDP,
    enumeration: Enumeration,
    student_logits: Tensor,
    teacher_logits: Tensor,
    options: ObjectiveOptions,
    update: UpdateOptions,
    student_values: Tensor | None = None,
) -> Tensor:
    """E_{tau ~ q}[Eq. 1's per-trajectory update], exactly; q is the method's control (student or teacher)."""
    logits = student_logits.detach().requires_grad_(True)
    control_logits = teacher_logits if method.control == "teacher" else logits.detach()
    weights = enumeration.log_probability(mdp, control_logits).exp()
    surrogate = per_trajectory_surrogate(method, enumeration.rollout, logits, options, update, student_values)
    (gradient,) = torch.autograd.grad((weights * surrogate).sum(), logits)
    return gradient


def update_jacobian(
    method: Method,
    mdp: TabularMDP,
    enumeration: Enumeration,
    student_logits: Tensor,
    teacher_logits: Tensor,
    options: ObjectiveOptions,
    update: UpdateOptions,
    eps: float = 1e-5,
) -> Tensor:
    """d(expected update)/d(theta) by central differences of the exact update; symmetric iff a gradient field."""
    flat = student_logits.reshape(-1)

    def at(shift: Tensor) -> Tensor:
        theta = (flat + shift).view_as(student_logits)
        return expected_update(method, mdp, enumeration, theta, teacher_logits, options, update).reshape(-1)

    columns = [(at(eps * e) - at(-eps * e)) / (2 * eps) for e in torch.eye(flat.numel(), dtype=flat.dtype)]
    return torch.stack(columns, dim=1)
