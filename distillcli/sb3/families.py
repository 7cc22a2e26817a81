"""SB3 algorithm families as data: how each family's checkpoint becomes the teacher pi (and V_pi) of Table 1, and
which student it gets.

A :class:`Family` is a record, as a method of Table 1 is: the policy classes it covers (the safe loader's
allow-list), the forward pass that gives ``(pi(.|s), V_pi(s))``, the acting network, the hidden widths that
``--student-net auto`` halves, the kind of action noise the student copies, the SB3 class that opens the student,
masks and recurrent state. The loader, the teacher and the student dispatch on it; ``distill methods`` prints the
same records. Adding a family is adding one record (here, or registered by a plugin module such as
:mod:`distillcli.sb3.contrib`) plus its test.

Nothing here imports torch or SB3 at module import, so ``distill methods`` stays instant: each adapter imports
what it needs when it first runs.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from distillcli.errors import DistillError

if TYPE_CHECKING:
    from torch import Tensor, nn

    from distillcli.distributions import ActionDist
    from distillcli.rollout import Session
    from distillcli.sb3.teacher import Teacher

# Box-action noise the student copies: one log-std parameter, gSDE's state-dependent std, or either squashed by
# tanh into the action box (SAC, TQC).
Noise = Literal["plain", "sde", "squashed"]
Output = tuple["ActionDist", "Tensor | None"]


def _policy_module(policy: Any) -> list[nn.Module]:
    return [policy]


def _no_noise(policy: Any) -> Noise:
    return "plain"


def _no_log_std(teacher: Teacher) -> Tensor | None:
    return None


def _no_changes(data: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    return kwargs


def _with_schedule(cls: type, observation_space: Any, action_space: Any, kwargs: dict[str, Any]) -> Any:
    """SB3 policies take a learning-rate schedule third; a teacher never trains, so any will do."""
    return cls(observation_space, action_space, lambda _: 0.0, **kwargs)


@dataclass(frozen=True)
class Family:
    """One SB3 algorithm family: how its checkpoints are read, what pi and V_pi are, what student it gets."""

    name: str
    algos: tuple[str, ...]  # the algorithms that write it (what summary.json's teacher_algo can say)
    policy_classes: tuple[str, ...]  # "module.Class" of every policy class it covers (safe to import)
    # The table `distill methods` prints (docs/teachers/ says more):
    pi: str  # pi(.|s) as the losses see it
    value: str  # V_pi(s), for the methods that need it ("none" where the family has none)
    estimated: str  # how the losses are computed
    opens_with: str  # the SB3 class that opens student.zip
    # What the code dispatches on:
    forward: Callable[[Teacher, Tensor], Output]  # obs -> (pi, V_pi or None)
    algo_of: Callable[[dict[str, Any]], str]  # the algorithm, from the checkpoint's readable keys
    has_value: bool = False
    actor: Callable[[Teacher, Tensor], ActionDist] | None = None  # pi alone, where that skips work (a critic)
    acting: Callable[[Any], list[nn.Module]] = _policy_module  # the acting network (size, latency)
    acting_prefixes: tuple[str, ...] = ()  # state-dict keys of the acting network; others may not fit (critics)
    hidden_widths: Callable[[Any], list[int]] = lambda policy: [64, 64]
    noise: Callable[[Any], Noise] = _no_noise
    noise_log_std: Callable[[Teacher], Tensor | None] = _no_log_std  # a state-independent Gaussian's log std
    policy_kwargs: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] = _no_changes  # (data, kwargs)
    build: Callable[[type, Any, Any, dict[str, Any]], Any] = _with_schedule  # (class, obs space, action space, kwargs)
    student_algo: Literal["PPO", "MaskablePPO"] = "PPO"
    masked: bool = False  # pi is restricted by the env's action_masks()
    session: Callable[[Teacher, int], Session] | None = None  # recurrent state per environment
    extra: str | None = None  # the distillcli extra whose package provides the classes
    check_action_space: Callable[[Any], None] = lambda space: None  # refuse a space the family cannot act in

    def covers(self, qualified: str) -> bool:
        return qualified in self.policy_classes


_REGISTRY: list[Family] = []
# Modules that register more families when imported (sb3-contrib's algorithms). Named, not imported, here: a
# base module never imports a plugin, and a plugin's own imports of its library happen only when it acts.
PLUGINS = ("distillcli.sb3.contrib",)
_plugins_loaded = False


def register(family: Family) -> Family:
    """Add a family (a plugin module calls this at import); returns it, so a module can keep a name for it."""
    if any(f.name == family.name for f in _REGISTRY):
        raise ValueError(f"family {family.name} is registered twice")
    _REGISTRY.append(family)
    return family


def families() -> tuple[Family, ...]:
    """Every family, the plugins' included (in registration order: SB3's own first)."""
    global _plugins_loaded
    if not _plugins_loaded:
        _plugins_loaded = True
        for module in PLUGINS:
            importlib.import_module(module)
    return tuple(_REGISTRY)


def family_of_class(module: str, name: str) -> Family | None:
    """The family whose allow-list names this policy class."""
    qualified = f"{module}.{name}"
    return next((f for f in families() if f.covers(qualified)), None)


def family_of(policy_class: type) -> Family:
    """The family of a policy class, or of the nearest base class a family covers (a user's own subclass, loaded
    with --trust-checkpoint, is read as its SB3 base)."""
    for cls in policy_class.__mro__:
        found = family_of_class(cls.__module__, cls.__qualname__)
        if found is not None:
            return found
    raise DistillError(f"policy class {policy_class.__module__}.{policy_class.__qualname__} is not an SB3 family")


def module_available(module: str) -> bool:
    return importlib.util.find_spec(module.partition(".")[0]) is not None


def _classes(module: str, *names: str) -> tuple[str, ...]:
    return tuple(f"{module}.{name}" for name in names)


# --- adapters, shared by several families (they import torch and SB3 when first called) -------------------


def tempered(teacher: Teacher, dist: ActionDist) -> ActionDist:
    """pi_T = softmax(logits / T) for categorical teachers; other distributions are returned as they are."""
    from distillcli.distributions import Categorical, MultiCategorical

    if teacher.temperature == 1.0:
        return dist
    if isinstance(dist, Categorical):
        return Categorical.from_logits(dist.logits / teacher.temperature, teacher.log_prob_floor)
    if isinstance(dist, MultiCategorical):
        import torch

        return MultiCategorical(torch.log_softmax(dist.logits / teacher.temperature, dim=-1))
    return dist


def actor_critic_forward(teacher: Teacher, obs: Tensor) -> Output:
    from distillcli.sb3.policies import actor_critic_outputs

    dist, values = actor_critic_outputs(teacher.policy, obs, teacher.log_prob_floor)
    return tempered(teacher, dist), values


def actor_critic_actor(teacher: Teacher, obs: Tensor) -> ActionDist:
    from distillcli.sb3.policies import actor_outputs

    return tempered(teacher, actor_outputs(teacher.policy, obs, teacher.log_prob_floor))


def actor_critic_widths(policy: Any) -> list[int]:
    from distillcli.sb3.policies import linear_widths

    return linear_widths(getattr(getattr(policy, "mlp_extractor", None), "policy_net", None))


def actor_critic_noise(policy: Any) -> Noise:
    if getattr(policy, "squash_output", False):
        return "squashed"
    return "sde" if getattr(policy, "use_sde", False) else "plain"


def actor_critic_log_std(teacher: Teacher) -> Tensor | None:
    from stable_baselines3.common.distributions import DiagGaussianDistribution

    policy = teacher.policy
    if type(getattr(policy, "action_dist", None)) is DiagGaussianDistribution:
        return policy.log_std.detach()  # type: ignore[no-any-return]
    return None


def with_sde(data: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """gSDE is a constructor argument the zip keeps beside policy_kwargs."""
    return {"use_sde": bool(data.get("use_sde", False)), **kwargs}


def actor_critic_kwargs(data: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """SB3 < 1.8 wrote ``net_arch=[dict(pi=..., vf=...)]`` (a list holding one dict, no shared layers); SB3 2.x takes
    the dict itself. Shared layers before the dict were dropped in 2.0 and cannot be rebuilt."""
    kwargs = with_sde(data, kwargs)
    arch = kwargs.get("net_arch")
    if isinstance(arch, list) and arch and isinstance(arch[-1], dict):
        if len(arch) > 1:
            raise DistillError(
                f"net_arch {arch!r} shares layers between actor and critic, which SB3 2.x no longer builds"
            )
        kwargs = {**kwargs, "net_arch": dict(arch[0])}
    return kwargs


def q_values_to_pi(teacher: Teacher, q_values: Tensor) -> Output:
    """Value-based teachers have no policy: pi = softmax(Q / T), and V = sum_a pi(a) Q(a)."""
    from distillcli.distributions import Categorical

    soft_q = Categorical.from_logits(q_values / teacher.temperature, teacher.log_prob_floor)
    return soft_q, (soft_q.probs * q_values).sum(-1)


def squashed_actor_forward(teacher: Teacher, obs: Tensor) -> Output:
    """SAC-like actors (SAC, TQC): their squashed Gaussian in the env's action units; no V (only Q critics)."""
    from distillcli.sb3.policies import from_sb3

    actor = teacher.policy.actor
    mean, log_std, extra = actor.get_action_dist_params(obs)
    distribution = actor.action_dist.proba_distribution(mean, log_std, **extra)
    return from_sb3(distribution, teacher.log_prob_floor, teacher.bounds), None


def squashed_actor_widths(policy: Any) -> list[int]:
    from distillcli.sb3.policies import linear_widths

    return linear_widths(policy.actor.latent_pi)  # the hidden layers before the mu and log_std heads


def deterministic_gaussian(teacher: Teacher, action: Tensor, squashed: bool = True) -> Output:
    """A deterministic actor's action a(s) seen as N(a(s), sigma^2), sigma = ``--teacher-noise`` times the action
    half-range, as TD3's own exploration noise: every loss is then analytic. ``squashed`` actions lie in [-1, 1]
    and are unscaled to the box as the algorithm's ``predict`` does."""
    import torch

    from distillcli.distributions import DiagGaussian

    center, half = teacher.bounds if teacher.bounds is not None else (torch.zeros(()), torch.ones(()))
    mean = center + half * action if squashed else action
    return DiagGaussian(mean, torch.log(teacher.deterministic_std * half).expand_as(mean)), None


def deterministic_log_std(teacher: Teacher) -> Tensor | None:
    import torch

    return None if teacher.bounds is None else torch.log(teacher.deterministic_std * teacher.bounds[1])


def _trailing_hidden(network: Any) -> list[int]:
    from distillcli.sb3.policies import linear_widths

    return linear_widths(network)[:-1]  # every Linear but the output head


# --- SB3's own families -------------------------------------------------------------------------------------


def _actor_critic_algo(data: dict[str, Any]) -> str:
    if "cg_max_steps" in data:
        return "TRPO"
    if "clip_range" in data:
        return "PPO"
    return "A2C" if "n_steps" in data else "ActorCritic"


ACTOR_CRITIC = register(
    Family(
        name="actor-critic",
        algos=("PPO", "A2C", "TRPO"),
        policy_classes=_classes(
            "stable_baselines3.common.policies",
            "ActorCriticPolicy",
            "ActorCriticCnnPolicy",
            "MultiInputActorCriticPolicy",
        ),
        pi="its own (gSDE: per-state std)",
        value="critic",
        estimated="exact",
        opens_with="PPO (gSDE if teacher)",
        forward=actor_critic_forward,
        actor=actor_critic_actor,
        algo_of=_actor_critic_algo,
        has_value=True,
        hidden_widths=actor_critic_widths,
        noise=actor_critic_noise,
        noise_log_std=actor_critic_log_std,
        policy_kwargs=actor_critic_kwargs,
    )
)


def _dqn_forward(teacher: Teacher, obs: Tensor) -> Output:
    return q_values_to_pi(teacher, teacher.policy.q_net(obs))


DQN = register(
    Family(
        name="q-network",
        algos=("DQN",),
        policy_classes=_classes("stable_baselines3.dqn.policies", "DQNPolicy", "CnnPolicy", "MultiInputPolicy"),
        pi="softmax(Q / T)",
        value="sum_a pi(a) Q(a)",
        estimated="exact",
        opens_with="PPO",
        forward=_dqn_forward,
        algo_of=lambda data: "DQN",
        has_value=True,
        acting=lambda policy: [policy.q_net],
        acting_prefixes=("q_net.",),
        hidden_widths=lambda policy: _trailing_hidden(policy.q_net),
    )
)


def _sac_noise(policy: Any) -> Noise:
    return "squashed"


SAC = register(
    Family(
        name="squashed-actor",
        algos=("SAC",),
        policy_classes=_classes("stable_baselines3.sac.policies", "SACPolicy", "CnnPolicy", "MultiInputPolicy"),
        pi="tanh-squashed Gaussian",
        value="none",
        estimated="Monte-Carlo, 16 samples",
        opens_with="PPO, squashed gSDE",
        forward=squashed_actor_forward,
        algo_of=lambda data: "SAC",
        acting=lambda policy: [policy.actor],
        acting_prefixes=("actor.",),
        hidden_widths=squashed_actor_widths,
        noise=_sac_noise,
        policy_kwargs=with_sde,
    )
)


def _td3_forward(teacher: Teacher, obs: Tensor) -> Output:
    return deterministic_gaussian(teacher, teacher.policy.actor(obs))  # tanh output in [-1, 1]


TD3 = register(
    Family(
        name="deterministic-actor",
        algos=("TD3", "DDPG"),
        policy_classes=_classes("stable_baselines3.td3.policies", "TD3Policy", "CnnPolicy", "MultiInputPolicy"),
        pi="N(mu(s), sigma^2), --teacher-noise",
        value="none",
        estimated="exact",
        opens_with="PPO",
        forward=_td3_forward,
        algo_of=lambda data: "DDPG" if data.get("policy_delay") == 1 and data.get("target_noise_clip") == 0 else "TD3",
        acting=lambda policy: [policy.actor],
        acting_prefixes=("actor.",),
        hidden_widths=lambda policy: _trailing_hidden(policy.actor.mu),
        noise_log_std=deterministic_log_std,
    )
)
