"""The teacher: a frozen SB3 policy rebuilt from a checkpoint, seen as ``obs -> (pi(.|s), V_pi(s) or None)``.

The policy class comes from the checkpoint's family (:mod:`distillcli.sb3.families`), its constructor arguments
from the readable ``policy_kwargs``, its weights from ``policy.pth``: the same modules with the same weights as
``Model.load``, so its outputs are identical, without unpickling anything the family does not allow.
"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import torch
from stable_baselines3.common.policies import BasePolicy
from torch import Tensor

from distillcli.distributions import ActionDist
from distillcli.errors import DistillError, short
from distillcli.sb3.checkpoint import Checkpoint, needs_trust, serialized
from distillcli.sb3.families import Family, Noise, family_of, family_of_class
from distillcli.sb3.policies import box_bounds

# A policy_kwargs number past this is no network width, feature size or quantile count a real policy has; it is
# refused before the policy is built (a few such numbers can ask for terabytes).
MAX_KWARG_NUMBER = 65_536
# The network policy_kwargs describe may hold at most this many times the parameters its weights have (plus a
# margin for a small policy's optimiser-free extras), or the two do not belong together.
MAX_SIZE_RATIO = 8


class Teacher:
    """A frozen SB3 policy and its family: ``teacher(obs)`` is ``(pi(.|s), V_pi(s) or None)``.

    ``temperature`` tempers categorical teachers (pi_T = softmax(logits / T)); ``deterministic_std`` is sigma of
    a deterministic actor's Gaussian as a fraction of the action half-range; ``log_prob_floor`` keeps
    log pi(a) finite for near-deterministic teachers.
    """

    def __init__(
        self,
        policy: BasePolicy,
        family: Family,
        algo: str,
        temperature: float = 1.0,
        log_prob_floor: float | None = None,
        deterministic_std: float = 0.1,
    ) -> None:
        self.policy: Any = policy.eval()  # one of several SB3 classes: the family knows which
        self.family = family
        self.algo = algo
        self.temperature = temperature
        self.log_prob_floor = log_prob_floor
        self.deterministic_std = deterministic_std
        self.bounds = box_bounds(policy.action_space, policy.device)
        for parameter in self.policy.parameters():
            parameter.requires_grad_(False)
        # The rollout and evaluation loops ask a PolicyFn for these two hooks (see rollout.open_session).
        self.uses_action_masks = family.masked
        # --teacher-corrupt / --extra-actions (distillcli.conditions): pi(.|s) as the condition changes it
        self.condition: Callable[[Tensor, ActionDist], ActionDist] | None = None
        if family.session is not None:
            self.session = lambda n_envs: family.session(self, n_envs)  # type: ignore[misc]

    # The teacher never needs gradients; no_grad (not inference_mode) so its outputs can enter the student's loss.
    @torch.no_grad()
    def __call__(self, obs: Tensor) -> tuple[ActionDist, Tensor | None]:
        dist, value = self.family.forward(self, obs)
        return (dist if self.condition is None else self.condition(obs, dist)), value

    @torch.no_grad()
    def actor(self, obs: Tensor) -> ActionDist:
        """pi(.|s) alone: a family with a cheaper actor-only pass (an actor-critic's) skips its critic."""
        actor = self.family.actor
        dist = actor(self, obs) if actor is not None else self.family.forward(self, obs)[0]
        return dist if self.condition is None else self.condition(obs, dist)

    @property
    def has_value(self) -> bool:
        return self.family.has_value

    @property
    def n_params(self) -> int:
        """Parameters of the acting network (an off-policy algorithm's critics are training devices)."""
        return sum(p.numel() for module in self.family.acting(self.policy) for p in module.parameters())

    @property
    def device(self) -> torch.device:
        return self.policy.device

    @property
    def noise(self) -> Noise:
        """The kind of Box-action noise the student copies (see ``Student.build``)."""
        return self.family.noise(self.policy)

    def noise_log_std(self) -> Tensor | None:
        """The log std of a Gaussian teacher whose noise does not depend on the state (None otherwise)."""
        return self.family.noise_log_std(self)

    @property
    def hidden_widths(self) -> list[int]:
        """The hidden layer widths of the acting network (what ``--student-net auto`` halves)."""
        return self.family.hidden_widths(self.policy)


def _import_class(module: str, name: str, family: Family) -> type[BasePolicy]:
    try:
        return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]
    except ImportError:
        extra = f"pip install 'distillcli[{family.extra}]'" if family.extra else f"install {module.partition('.')[0]}"
        raise DistillError(f"a {'/'.join(family.algos)} teacher needs an optional dependency: {extra}") from None


def policy_class(checkpoint: Checkpoint, trust: bool) -> tuple[type[BasePolicy], Family]:
    """The policy class the checkpoint names, and its family: by name if a family covers it, by unpickling (and
    then by its SB3 base class) only with ``trust``."""
    payload = serialized(checkpoint.data.get("policy_class"))
    if payload is None:
        raise DistillError(f"{checkpoint.path} is not a readable SB3 checkpoint (no policy class)")
    reference = checkpoint.class_reference()
    if reference is not None:
        family = family_of_class(*reference)
        if family is not None:
            return _import_class(*reference, family), family
    if not trust:
        named = f"policy class {reference[0]}.{reference[1]}" if reference else "its policy class"
        raise needs_trust(checkpoint.path, named)
    import cloudpickle

    try:
        cls = cloudpickle.loads(payload)
    except Exception as error:  # --trust-checkpoint: the file's own code ran and failed
        raise DistillError(f"{checkpoint.path}: unpickling its policy class failed ({short(error)})") from None
    if not (isinstance(cls, type) and issubclass(cls, BasePolicy)):
        raise DistillError(f"{checkpoint.path}: policy_class is not an SB3 policy")
    return cls, family_of(cls)


def _numbers(value: Any) -> list[int]:
    """Every int in nested policy_kwargs (widths, feature sizes, counts)."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list | tuple):
        return [n for v in value for n in _numbers(v)]
    return []


def _widths_products(arch: Any) -> int:
    """A rough count of the weights a net_arch spec implies (products of consecutive widths, per branch)."""
    if isinstance(arch, dict):
        return sum(_widths_products(v) for v in arch.values())
    if isinstance(arch, list | tuple):
        widths = [w for w in arch if isinstance(w, int) and not isinstance(w, bool)]
        nested = sum(_widths_products(v) for v in arch if isinstance(v, dict | list | tuple))
        return sum(a * b for a, b in itertools.pairwise(widths)) + nested
    return 0


# policy_kwargs keys that SB3 0.x-1.x wrote and 2.x no longer takes, with the values that mean "nothing".
OBSOLETE_KWARGS: dict[str, tuple[Any, ...]] = {"device": (), "sde_net_arch": (None, [])}


def without_obsolete(kwargs: dict[str, Any], checkpoint: Checkpoint) -> dict[str, Any]:
    """An old checkpoint's policy_kwargs without the keys SB3 2.x dropped: ``device`` (where to build, which the
    loader decides) and an empty ``sde_net_arch``; a non-empty one described layers that no longer exist."""
    kept = dict(kwargs)
    for key, harmless in OBSOLETE_KWARGS.items():
        if key not in kept:
            continue
        value = kept.pop(key)
        if harmless and value not in harmless:
            raise DistillError(
                f"{checkpoint.path}: policy_kwargs {key}={short(value, 40)} builds layers SB3 "
                "2.x no longer has; this checkpoint cannot be rebuilt"
            )
    return kept


def check_kwargs_size(checkpoint: Checkpoint, kwargs: dict[str, Any]) -> None:
    """Refuse policy_kwargs that would build a network far larger than the checkpoint's own weights."""
    big = [n for n in _numbers(kwargs) if n > MAX_KWARG_NUMBER]
    if big:
        raise DistillError(f"{checkpoint.path}: policy_kwargs holds {big[0]}, no size a policy network has")
    weights = sum(t.numel() for t in checkpoint.policy_state.values() if isinstance(t, Tensor))
    implied = _widths_products(kwargs.get("net_arch"))
    if implied > MAX_SIZE_RATIO * weights + 1_000_000:
        raise DistillError(
            f"{checkpoint.path}: policy_kwargs describes a network of about {implied:,} weights but the checkpoint "
            f"holds {weights:,}: they do not belong together"
        )


def _load_state(policy: BasePolicy, state: dict[str, Tensor], acting_prefixes: tuple[str, ...]) -> None:
    """Every weight, as ``Model.load`` does; failing that, for a family whose acting network is a part of the
    policy (an off-policy actor or Q-network), that part alone: an old checkpoint's critics and target networks
    may be laid out differently, and are never used."""
    try:
        policy.load_state_dict(state)
        return
    except RuntimeError:
        if not acting_prefixes:
            raise
    acting = {k: v for k, v in state.items() if k.startswith(acting_prefixes)}
    result = policy.load_state_dict(acting, strict=False)
    missing = [k for k in result.missing_keys if k.startswith(acting_prefixes)]
    if missing or result.unexpected_keys or not acting:
        raise KeyError(f"missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}")


def load_teacher(
    checkpoint: Checkpoint,
    observation_space: gym.Space,
    action_space: gym.Space,
    device: torch.device,
    *,
    trust: bool = False,
    temperature: float = 1.0,
    log_prob_floor: float | None = None,
    deterministic_std: float = 0.1,
) -> Teacher:
    """Rebuild the checkpoint's policy for these spaces and wrap it as a :class:`Teacher`."""
    cls, family = policy_class(checkpoint, trust)
    family.check_action_space(action_space)
    kwargs = family.policy_kwargs(checkpoint.data, without_obsolete(checkpoint.policy_kwargs(trust), checkpoint))
    check_kwargs_size(checkpoint, kwargs)
    try:
        policy = family.build(cls, observation_space, action_space, kwargs)
        _load_state(policy, checkpoint.policy_state, family.acting_prefixes)
    except (RuntimeError, TypeError, ValueError, KeyError, AssertionError, AttributeError) as error:
        raise DistillError(
            f"{checkpoint.path}: the weights do not fit a {cls.__name__} for these spaces ({short(error, 160)})"
        ) from None
    broken = [name for name, tensor in policy.state_dict().items() if not torch.isfinite(tensor).all()]
    if broken:
        raise DistillError(f"{checkpoint.path}: the weights contain NaN or infinite values ({broken[0]})")
    algo = family.algo_of(checkpoint.data)
    return Teacher(policy.to(device), family, algo, temperature, log_prob_floor, deterministic_std)


def checkpoint_family(checkpoint: Checkpoint) -> Family | None:
    """The family a checkpoint names, read without importing or running anything (None if no family covers it)."""
    reference = checkpoint.class_reference()
    return None if reference is None else family_of_class(*reference)


def check_spaces(checkpoint: Checkpoint, observation_space: gym.Space, action_space: gym.Space, env_id: str) -> None:
    """Compare the spaces the zip records (readable attributes) with the environment's."""
    for key, space in (("observation_space", observation_space), ("action_space", action_space)):
        recorded = checkpoint.space_summary(key)
        recorded_type = str(recorded.get(":type:", ""))
        if recorded_type and type(space).__name__ not in recorded_type:
            raise DistillError(
                f"teacher {key} is {short(recorded_type.split('.')[-1].rstrip(chr(39) + '>'), 40)} but {env_id} has "
                f"{type(space).__name__}: the teacher was not trained on this environment (use --env)"
            )
        shape = checkpoint.recorded_shape(key)
        if shape is not None and list(shape) != list(space.shape or ()):
            raise DistillError(
                f"teacher {key} has shape {tuple(shape)} but {env_id} has {tuple(space.shape or ())}: "
                "the teacher was not trained on this environment (use --env)"
            )
        n = recorded.get("n")
        if (n is not None and not isinstance(n, int | str)) or (isinstance(n, str) and not n.isdigit()):
            raise DistillError(f"{checkpoint.path}: the recorded {key} size {short(n, 40)} is not a number")
        if n is not None and isinstance(space, gym.spaces.Discrete) and int(n) != int(space.n):
            raise DistillError(
                f"teacher {key} has {n} actions but {env_id} has {space.n}: "
                "the teacher was not trained on this environment (use --env)"
            )
