"""sb3-contrib teachers and students: RecurrentPPO (an LSTM state per environment) and MaskablePPO (action masks).

Imported only when a checkpoint names an sb3-contrib policy or a masked student is built, so sb3-contrib stays
the optional ``contrib`` extra.

- RecurrentPPO: pi(.|s_t) depends on the episode so far through the LSTM state. Whoever steps environments opens
  a :class:`RecurrentSession` (one state per environment, zeroed at episode starts, as SB3's own collection and
  ``predict`` do); the Collector and ``evaluate`` do so through ``rollout.open_session``. The student stays a
  feed-forward PPO: it learns the teacher's per-step distribution on the states it visits, which is exact only
  where the observation tells the whole state (CartPole, not a partially observed task).
- MaskablePPO: the environment's ``action_masks()`` restrict pi and pi_th to the valid actions
  (``rollout.masked``); the student is a ``MaskablePPO`` so ``predict(obs, action_masks=...)`` honours them too.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from sb3_contrib import MaskablePPO
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common import distributions as sb3_dist
from stable_baselines3.common.policies import BasePolicy
from torch import Tensor

from distillcli.distributions import ActionDist, Categorical, MultiCategorical, actor_critic_latent, from_sb3
from distillcli.errors import DistillError
from distillcli.students import Student
from distillcli.teachers import Teacher

Output = tuple[ActionDist, Tensor | None]


# --- RecurrentPPO ---------------------------------------------------------------------------------------


class RecurrentTeacher(Teacher):
    """A RecurrentPPO policy; called statelessly it sees every observation as the first of an episode."""

    policy: RecurrentActorCriticPolicy

    def initial_state(self, n_envs: int) -> RNNStates:
        layers, _, hidden = self.policy.lstm_hidden_state_shape
        zeros = torch.zeros((layers, n_envs, hidden), device=self.device)
        # SB3 keeps a critic state even without a critic LSTM; it is unused then.
        return RNNStates((zeros, zeros.clone()), (zeros.clone(), zeros.clone()))

    @torch.no_grad()
    def forward(self, obs: Tensor, states: RNNStates, episode_starts: Tensor) -> tuple[ActionDist, Tensor, RNNStates]:
        """One step of every environment: (pi, V, next state); the same modules as ``policy.forward``."""
        policy = self.policy
        process: Any = policy._process_sequence  # SB3 annotates its (h, c) states loosely
        features = policy.extract_features(obs)
        pi_features, vf_features = (features, features) if policy.share_features_extractor else features
        latent_pi, states_pi = process(pi_features, states.pi, episode_starts, policy.lstm_actor)
        if policy.lstm_critic is not None:
            latent_vf, states_vf = process(vf_features, states.vf, episode_starts, policy.lstm_critic)
        elif policy.shared_lstm:
            latent_vf, states_vf = latent_pi, states_pi
        else:
            assert policy.critic is not None
            latent_vf, states_vf = policy.critic(vf_features), states_pi
        latent_pi = policy.mlp_extractor.forward_actor(latent_pi)
        values = policy.value_net(policy.mlp_extractor.forward_critic(latent_vf)).squeeze(-1)
        if isinstance(policy.action_dist, sb3_dist.CategoricalDistribution):  # skip torch's argument checks
            dist: ActionDist = Categorical.from_logits(policy.action_net(latent_pi), self.log_prob_floor)
        else:
            dist = from_sb3(policy._get_action_dist_from_latent(latent_pi), self.log_prob_floor, self._bounds)
        return self.tempered(dist), values, RNNStates(states_pi, states_vf)

    def __call__(self, obs: Tensor) -> Output:
        if obs.shape[0] == 0:  # an LSTM cannot run on an empty batch
            dist, values = self(torch.zeros((1, *obs.shape[1:]), dtype=obs.dtype, device=obs.device))
            return dist[:0], None if values is None else values[:0]
        starts = torch.ones(obs.shape[0], device=obs.device)
        dist, values, _ = self.forward(obs, self.initial_state(obs.shape[0]), starts)
        return dist, values

    def session(self, n_envs: int) -> RecurrentSession:
        return RecurrentSession(self, n_envs)


def _select(states: RNNStates, index: Tensor) -> RNNStates:
    (h_pi, c_pi), (h_vf, c_vf) = states.pi, states.vf  # each [layers, n_envs, hidden]
    return RNNStates((h_pi[:, index], c_pi[:, index]), (h_vf[:, index], c_vf[:, index]))


def _cat(parts: list[RNNStates]) -> RNNStates:
    def cat(role: int, which: int) -> Tensor:
        return torch.cat([part[role][which] for part in parts], dim=1)

    return RNNStates((cat(0, 0), cat(0, 1)), (cat(1, 0), cat(1, 1)))


class RecurrentSession:
    """The LSTM state of a RecurrentTeacher in each of ``n_envs`` environments stepped together."""

    def __init__(self, teacher: RecurrentTeacher, n_envs: int) -> None:
        self.teacher = teacher
        self.states = teacher.initial_state(n_envs)
        self._marked: list[RNNStates] = []

    def step(self, obs: Tensor, episode_starts: Tensor) -> Output:
        """pi(.|s_t) given the episode so far, advancing the state; ``episode_starts`` (1.0) zero it first."""
        dist, values, self.states = self.teacher.forward(obs, self.states, episode_starts)
        return dist, values

    def peek(self, obs: Tensor, episode_starts: Tensor) -> Output:
        """pi(.|s_t) without advancing (a segment's last observation is stepped by the next segment)."""
        dist, values, _ = self.teacher.forward(obs, self.states, episode_starts)
        return dist, values

    def mark(self, index: np.ndarray) -> None:
        """Remember the state of these environments: their episodes just ended, their final obs come later."""
        self._marked.append(_select(self.states, torch.as_tensor(index, device=self.teacher.device)))

    def peek_marked(self, final_obs: Tensor) -> Output:
        """pi on the final observations, in marking order, each on its episode's state; forgets the marks."""
        marked, self._marked = self._marked, []
        if not marked:
            assert final_obs.shape[0] == 0, "every final observation needs its environment marked"
            return self.teacher(final_obs)
        starts = torch.zeros(final_obs.shape[0], device=final_obs.device)
        dist, values, _ = self.teacher.forward(final_obs, _cat(marked), starts)
        return dist, values


# --- MaskablePPO ----------------------------------------------------------------------------------------


def _action_sizes(space: gym.Space) -> list[int]:
    if isinstance(space, gym.spaces.Discrete):
        return [int(space.n)]
    if isinstance(space, gym.spaces.MultiDiscrete) and space.nvec.ndim == 1:
        return [int(n) for n in space.nvec]
    raise DistillError(
        f"MaskablePPO with {type(space).__name__} actions is not supported (Discrete and MultiDiscrete are)"
    )


def maskable_outputs(
    policy: MaskableActorCriticPolicy, obs: Tensor, log_prob_floor: float | None = None
) -> tuple[ActionDist, Tensor]:
    """(pi(.|s) before masking, V(s)) of a MaskablePPO policy, with the same modules as its ``forward``."""
    latent_pi, values = actor_critic_latent(policy, obs)
    flat = policy.action_net(latent_pi)
    if isinstance(policy.action_space, gym.spaces.Discrete):
        return Categorical.from_logits(flat, log_prob_floor), values
    return MultiCategorical.from_flat(flat, _action_sizes(policy.action_space), log_prob_floor), values


class MaskableTeacher(Teacher):
    """A MaskablePPO policy; callers mask its distribution with the environment's ``action_masks()``."""

    policy: MaskableActorCriticPolicy
    uses_action_masks = True

    @property
    def has_value(self) -> bool:
        return True

    @torch.no_grad()
    def __call__(self, obs: Tensor) -> Output:
        dist, values = maskable_outputs(self.policy, obs, self.log_prob_floor)
        return self.tempered(dist), values


class MaskableStudent(Student):
    """The student as a ``MaskablePPO``: ``MaskablePPO.load(student.zip).predict(obs, action_masks=m)``."""

    uses_action_masks = True

    def __init__(self, model: MaskablePPO) -> None:
        _action_sizes(model.action_space)
        super().__init__(model)  # type: ignore[arg-type]

    def __call__(self, obs: Tensor) -> Output:
        return maskable_outputs(self.policy, obs)  # type: ignore[arg-type]


# --- dispatch -------------------------------------------------------------------------------------------


def teacher_class(policy: BasePolicy) -> type[Teacher]:
    """The Teacher an sb3-contrib policy needs: stateful (RecurrentPPO) or masked (MaskablePPO)."""
    if isinstance(policy, RecurrentActorCriticPolicy):
        return RecurrentTeacher
    if isinstance(policy, MaskableActorCriticPolicy):
        _action_sizes(policy.action_space)  # refuse MultiBinary before anything runs
        return MaskableTeacher
    return Teacher
