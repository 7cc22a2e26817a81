"""sb3-contrib's families (the ``contrib`` extra): QR-DQN, TQC, ARS, RecurrentPPO and MaskablePPO.

Registered when :func:`distillcli.sb3.families.families` loads its plugins; sb3-contrib itself is imported only
when one of these teachers acts, so ``distill methods`` lists them without it.

- QR-DQN: pi = softmax(Q / T) with Q the mean of the quantiles.
- TQC: a SAC-like squashed-Gaussian actor (its quantile critics are not the policy).
- ARS: a deterministic (linear or MLP) policy: for Box actions a Gaussian around its action, as TD3; for Discrete
  actions softmax(logits / T).
- RecurrentPPO: pi(.|s_t) depends on the episode so far through the LSTM state. Whoever steps environments opens
  a :class:`RecurrentSession` (one state per environment, zeroed at episode starts, as SB3's own collection and
  ``predict`` do). The student stays a feed-forward PPO: it learns the teacher's per-step distribution on the
  states it visits, exact only where the observation tells the whole state.
- MaskablePPO: the environment's ``action_masks()`` restrict pi and pi_th to the valid actions
  (``rollout.masked``); the student is a ``MaskablePPO`` so ``predict(obs, action_masks=...)`` honours them too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from distillcli.errors import DistillError
from distillcli.sb3.families import (
    Family,
    actor_critic_forward,
    actor_critic_kwargs,
    actor_critic_widths,
    deterministic_gaussian,
    deterministic_log_std,
    q_values_to_pi,
    register,
    squashed_actor_forward,
    squashed_actor_widths,
    tempered,
    with_sde,
)

if TYPE_CHECKING:
    import numpy as np
    from sb3_contrib.common.recurrent.type_aliases import RNNStates
    from torch import Tensor

    from distillcli.distributions import ActionDist
    from distillcli.sb3.families import Noise, Output
    from distillcli.sb3.teacher import Teacher


def _classes(module: str, *names: str) -> tuple[str, ...]:
    return tuple(f"{module}.{name}" for name in names)


# --- QR-DQN -----------------------------------------------------------------------------------------------


def _qrdqn_forward(teacher: Teacher, obs: Tensor) -> Output:
    return q_values_to_pi(teacher, teacher.policy.quantile_net(obs).mean(dim=1))


def _qrdqn_kwargs(data: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    quantiles = data.get("n_quantiles")
    return {"n_quantiles": quantiles, **kwargs} if isinstance(quantiles, int) else kwargs


def _qrdqn_widths(policy: Any) -> list[int]:
    from distillcli.sb3.policies import linear_widths

    return linear_widths(policy.quantile_net)[:-1]


QRDQN = register(
    Family(
        name="quantile-network",
        algos=("QRDQN",),
        policy_classes=_classes("sb3_contrib.qrdqn.policies", "QRDQNPolicy", "CnnPolicy", "MultiInputPolicy"),
        pi="softmax(mean quantile Q / T)",
        value="sum_a pi(a) Q(a)",
        estimated="exact",
        opens_with="PPO",
        forward=_qrdqn_forward,
        algo_of=lambda data: "QRDQN",
        has_value=True,
        acting=lambda policy: [policy.quantile_net],
        acting_prefixes=("quantile_net.",),
        hidden_widths=_qrdqn_widths,
        policy_kwargs=_qrdqn_kwargs,
        extra="contrib",
    )
)


# --- TQC ---------------------------------------------------------------------------------------------------


def _squashed(policy: Any) -> Noise:
    return "squashed"


TQC = register(
    Family(
        name="squashed-actor (TQC)",
        algos=("TQC",),
        policy_classes=_classes("sb3_contrib.tqc.policies", "TQCPolicy", "CnnPolicy", "MultiInputPolicy"),
        pi="tanh-squashed Gaussian",
        value="none",
        estimated="Monte-Carlo, 16 samples",
        opens_with="PPO, squashed gSDE",
        forward=squashed_actor_forward,
        algo_of=lambda data: "TQC",
        acting=lambda policy: [policy.actor],
        acting_prefixes=("actor.",),
        hidden_widths=squashed_actor_widths,
        noise=_squashed,
        policy_kwargs=with_sde,
        extra="contrib",
    )
)


# --- ARS ---------------------------------------------------------------------------------------------------


def _ars_forward(teacher: Teacher, obs: Tensor) -> Output:
    import gymnasium as gym

    from distillcli.distributions import Categorical

    policy = teacher.policy
    features = policy.extract_features(obs, policy.features_extractor)
    output = policy.action_net(features)
    if isinstance(policy.action_space, gym.spaces.Box):
        # A squashed ARS policy acts in [-1, 1] and predict() unscales it; an unsquashed one acts in env units.
        return deterministic_gaussian(teacher, output, squashed=bool(policy.squash_output))
    return tempered(teacher, Categorical.from_logits(output, teacher.log_prob_floor)), None


def _ars_widths(policy: Any) -> list[int]:
    from distillcli.sb3.policies import linear_widths

    return linear_widths(policy.action_net)[:-1]


def _ars_build(cls: type, observation_space: Any, action_space: Any, kwargs: dict[str, Any]) -> Any:
    return cls(observation_space, action_space, **kwargs)  # ARS never trains by gradient: no schedule argument


ARS = register(
    Family(
        name="deterministic policy (ARS)",
        algos=("ARS",),
        policy_classes=_classes(
            "sb3_contrib.ars.policies", "ARSPolicy", "ARSLinearPolicy", "MlpPolicy", "LinearPolicy"
        ),
        pi="Box: N(a(s), sigma^2), --teacher-noise; Discrete: softmax(logits / T)",
        value="none",
        estimated="exact",
        opens_with="PPO",
        forward=_ars_forward,
        algo_of=lambda data: "ARS",
        hidden_widths=_ars_widths,
        noise_log_std=deterministic_log_std,
        build=_ars_build,
        extra="contrib",
    )
)


# --- RecurrentPPO ------------------------------------------------------------------------------------------


def initial_state(teacher: Teacher, n_envs: int) -> RNNStates:
    import torch
    from sb3_contrib.common.recurrent.type_aliases import RNNStates

    layers, _, hidden = teacher.policy.lstm_hidden_state_shape
    zeros = torch.zeros((layers, n_envs, hidden), device=teacher.device)
    # SB3 keeps a critic state even without a critic LSTM; it is unused then.
    return RNNStates((zeros, zeros.clone()), (zeros.clone(), zeros.clone()))


def recurrent_step(
    teacher: Teacher, obs: Tensor, states: RNNStates, episode_starts: Tensor
) -> tuple[ActionDist, Tensor, RNNStates]:
    """One step of every environment: (pi, V, next state), with the same modules as ``policy.forward``."""
    from sb3_contrib.common.recurrent.type_aliases import RNNStates

    from distillcli.sb3.policies import policy_distribution

    policy = teacher.policy
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
    dist = policy_distribution(policy, latent_pi, teacher.log_prob_floor)
    return tempered(teacher, dist), values, RNNStates(states_pi, states_vf)


def _recurrent_forward(teacher: Teacher, obs: Tensor) -> Output:
    """Called statelessly, a recurrent teacher sees every observation as the first of an episode."""
    import torch

    if obs.shape[0] == 0:  # an LSTM cannot run on an empty batch
        dist, values = _recurrent_forward(teacher, torch.zeros((1, *obs.shape[1:]), dtype=obs.dtype, device=obs.device))
        return dist[:0], None if values is None else values[:0]
    starts = torch.ones(obs.shape[0], device=obs.device)
    dist, values, _ = recurrent_step(teacher, obs, initial_state(teacher, obs.shape[0]), starts)
    return dist, values


def _select(states: RNNStates, index: Tensor) -> RNNStates:
    from sb3_contrib.common.recurrent.type_aliases import RNNStates

    (h_pi, c_pi), (h_vf, c_vf) = states.pi, states.vf  # each [layers, n_envs, hidden]
    return RNNStates((h_pi[:, index], c_pi[:, index]), (h_vf[:, index], c_vf[:, index]))


def _cat(parts: list[RNNStates]) -> RNNStates:
    import torch
    from sb3_contrib.common.recurrent.type_aliases import RNNStates

    def cat(role: int, which: int) -> Tensor:
        return torch.cat([part[role][which] for part in parts], dim=1)

    return RNNStates((cat(0, 0), cat(0, 1)), (cat(1, 0), cat(1, 1)))


class RecurrentSession:
    """The LSTM state of a recurrent teacher in each of ``n_envs`` environments stepped together."""

    def __init__(self, teacher: Teacher, n_envs: int) -> None:
        self.teacher = teacher
        self.states = initial_state(teacher, n_envs)
        self._marked: list[RNNStates] = []

    def step(self, obs: Tensor, episode_starts: Tensor) -> Output:
        """pi(.|s_t) given the episode so far, advancing the state; ``episode_starts`` (1.0) zero it first."""
        dist, values, self.states = recurrent_step(self.teacher, obs, self.states, episode_starts)
        return dist, values

    def peek(self, obs: Tensor, episode_starts: Tensor) -> Output:
        """pi(.|s_t) without advancing (a segment's last observation is stepped by the next segment)."""
        dist, values, _ = recurrent_step(self.teacher, obs, self.states, episode_starts)
        return dist, values

    def mark(self, index: np.ndarray) -> None:
        """Remember the state of these environments: their episodes just ended, their final obs come later."""
        import torch

        self._marked.append(_select(self.states, torch.as_tensor(index, device=self.teacher.device)))

    def grow(self, n_envs: int) -> None:
        """Room for ``n_envs`` more environments, each at an episode's start."""
        self.states = _cat([self.states, initial_state(self.teacher, n_envs)])

    def peek_marked(self, final_obs: Tensor) -> Output:
        """pi on the final observations, in marking order, each on its episode's state; forgets the marks."""
        import torch

        marked, self._marked = self._marked, []
        if not marked:
            assert final_obs.shape[0] == 0, "every final observation needs its environment marked"
            return _recurrent_forward(self.teacher, final_obs)
        starts = torch.zeros(final_obs.shape[0], device=final_obs.device)
        dist, values, _ = recurrent_step(self.teacher, final_obs, _cat(marked), starts)
        return dist, values


RECURRENT = register(
    Family(
        name="recurrent actor-critic",
        algos=("RecurrentPPO",),
        policy_classes=_classes(
            "sb3_contrib.common.recurrent.policies",
            "RecurrentActorCriticPolicy",
            "RecurrentActorCriticCnnPolicy",
            "RecurrentMultiInputActorCriticPolicy",
        ),
        pi="given its LSTM state",
        value="critic",
        estimated="exact",
        opens_with="PPO (feed-forward)",
        forward=_recurrent_forward,
        algo_of=lambda data: "RecurrentPPO",
        has_value=True,
        hidden_widths=actor_critic_widths,
        policy_kwargs=actor_critic_kwargs,
        session=RecurrentSession,
        extra="contrib",
    )
)


# --- MaskablePPO -------------------------------------------------------------------------------------------


def _maskable_kwargs(data: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    return kwargs  # no gSDE: masks need discrete actions


def check_maskable(action_space: Any) -> None:
    """MaskablePPO acts on Discrete and MultiDiscrete actions only: refuse others before anything runs."""
    from distillcli.sb3.policies import discrete_sizes

    if discrete_sizes(action_space) is None:
        raise DistillError(
            f"MaskablePPO with {type(action_space).__name__} actions is not supported (Discrete and MultiDiscrete are)"
        )


MASKABLE = register(
    Family(
        name="masked actor-critic",
        algos=("MaskablePPO",),
        policy_classes=_classes(
            "sb3_contrib.common.maskable.policies",
            "MaskableActorCriticPolicy",
            "MaskableActorCriticCnnPolicy",
            "MaskableMultiInputActorCriticPolicy",
        ),
        pi="masked categorical",
        value="critic",
        estimated="exact",
        opens_with="MaskablePPO",
        forward=actor_critic_forward,
        algo_of=lambda data: "MaskablePPO",
        has_value=True,
        hidden_widths=actor_critic_widths,
        policy_kwargs=_maskable_kwargs,
        student_algo="MaskablePPO",
        masked=True,
        check_action_space=check_maskable,
        extra="contrib",
    )
)
