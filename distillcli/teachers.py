"""Load a teacher checkpoint safely and give it one interface: action distribution and value per state.

An SB3 ``.zip`` stores its tensors as weights-only ``.pth`` members (safe) and its Python objects (policy
class, spaces, policy_kwargs) as base64 cloudpickle inside the JSON ``data`` member (unsafe: unpickling runs
code). By default nothing is unpickled: the policy class is read from the pickle's opcodes without executing
them, ``policy_kwargs`` go through an allow-listing unpickler, the spaces come from the environment (checked
against the readable attributes the zip stores beside each pickle), and only the weights are loaded. The
rebuilt policy is the same modules with the same weights as ``Model.load``, so its outputs are identical.
``trust_checkpoint=True`` unpickles with SB3 for checkpoints the safe path cannot read.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import io
import json
import pickle
import pickletools
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import torch
from stable_baselines3.common.distributions import DiagGaussianDistribution
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.dqn.policies import DQNPolicy
from stable_baselines3.sac.policies import SACPolicy
from stable_baselines3.td3.policies import TD3Policy
from torch import Tensor, nn

from distillcli.distributions import (
    MC_SAMPLES,
    ActionDist,
    Categorical,
    DiagGaussian,
    MultiCategorical,
    actor_critic_outputs,
    actor_outputs,
    box_bounds,
    from_sb3,
)
from distillcli.errors import DistillError

# Classes a checkpoint may name without --trust-checkpoint: SB3's own policies, torch activations and
# optimisers, SB3's feature extractors. Naming a class imports it; nothing else from the pickle runs.
POLICY_CLASSES = {
    ("stable_baselines3.common.policies", "ActorCriticPolicy"),
    ("stable_baselines3.common.policies", "ActorCriticCnnPolicy"),
    ("stable_baselines3.common.policies", "MultiInputActorCriticPolicy"),
    ("stable_baselines3.dqn.policies", "DQNPolicy"),
    ("stable_baselines3.dqn.policies", "CnnPolicy"),
    ("stable_baselines3.dqn.policies", "MultiInputPolicy"),
    ("stable_baselines3.sac.policies", "SACPolicy"),
    ("stable_baselines3.sac.policies", "CnnPolicy"),
    ("stable_baselines3.sac.policies", "MultiInputPolicy"),
    ("stable_baselines3.td3.policies", "TD3Policy"),
    ("stable_baselines3.td3.policies", "CnnPolicy"),
    ("stable_baselines3.td3.policies", "MultiInputPolicy"),
    # sb3-contrib (the `contrib` extra); TRPO's policies are SB3's ActorCriticPolicy classes.
    ("sb3_contrib.qrdqn.policies", "QRDQNPolicy"),
    ("sb3_contrib.qrdqn.policies", "CnnPolicy"),
    ("sb3_contrib.qrdqn.policies", "MultiInputPolicy"),
    ("sb3_contrib.common.recurrent.policies", "RecurrentActorCriticPolicy"),
    ("sb3_contrib.common.recurrent.policies", "RecurrentActorCriticCnnPolicy"),
    ("sb3_contrib.common.recurrent.policies", "RecurrentMultiInputActorCriticPolicy"),
    ("sb3_contrib.common.maskable.policies", "MaskableActorCriticPolicy"),
    ("sb3_contrib.common.maskable.policies", "MaskableActorCriticCnnPolicy"),
    ("sb3_contrib.common.maskable.policies", "MaskableMultiInputActorCriticPolicy"),
}
_SAFE_MODULE_PREFIXES = ("torch.nn.modules.activation", "torch.optim.", "stable_baselines3.common.torch_layers")
_SAFE_BUILTINS = {("builtins", "dict"), ("builtins", "list"), ("builtins", "tuple"), ("collections", "OrderedDict")}


# Box-action noise: a Gaussian with one log-std parameter, gSDE's state-dependent Gaussian, or either squashed
# by tanh into the action box (SAC).
Noise = Literal["plain", "sde", "squashed"]


@dataclass(frozen=True)
class Family:
    """How one SB3 algorithm's checkpoint becomes the teacher pi of Table 1 (``distill methods`` prints these;
    docs/teachers/ says more)."""

    algos: str
    policy: str  # pi(.|s) as the losses see it
    value: str  # V_pi(s), for the methods that need it
    estimated: str  # how the losses are computed
    student: str  # the SB3 class that opens student.zip


FAMILIES = (
    Family("PPO, A2C, TRPO", "its own (gSDE: per-state std)", "critic", "exact", "PPO (gSDE if teacher)"),
    Family("DQN, QR-DQN", "softmax(Q / T)", "sum_a pi(a) Q(a)", "exact", "PPO"),
    Family("SAC", "tanh-squashed Gaussian", "none", f"Monte-Carlo, {MC_SAMPLES} samples", "PPO, squashed gSDE"),
    Family("TD3, DDPG", "N(mu(s), sigma^2), --teacher-noise", "none", "exact", "PPO"),
    Family("RecurrentPPO", "given its LSTM state", "critic", "exact", "PPO (feed-forward)"),
    Family("MaskablePPO", "masked categorical", "critic", "exact", "MaskablePPO"),
)


class NeedsTrust(DistillError):
    """The checkpoint holds pickled objects the safe loader will not execute."""


def _needs_trust(path: Path, what: str) -> NeedsTrust:
    return NeedsTrust(
        f"{path}: {what} can only be read by unpickling, which runs code from the file; "
        "pass --trust-checkpoint if you trust its source"
    )


class _AllowListUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        # A dotted name is an attribute chain (``torch.os.system`` from an allowed module): never follow one.
        allowed = (module, name) in _SAFE_BUILTINS or (
            module.startswith(_SAFE_MODULE_PREFIXES) and not name.startswith("_") and "." not in name
        )
        if not allowed:
            raise pickle.UnpicklingError(f"{module}.{name} is not allow-listed")
        return super().find_class(module, name)


def global_reference(payload: bytes) -> tuple[str, str] | None:
    """The (module, name) a pickle refers to, if the pickle is nothing but one class reference."""
    strings: list[str] = []
    found: tuple[str, str] | None = None
    try:
        for opcode, arg, _ in pickletools.genops(payload):
            name = opcode.name
            if name in ("PROTO", "FRAME", "MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT", "STOP"):
                continue
            if name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
                strings.append(str(arg))
            elif name == "STACK_GLOBAL" and len(strings) >= 2 and found is None:
                found = (strings[-2], strings[-1])
            elif name == "GLOBAL" and found is None:
                module, _, qualname = str(arg).partition(" ")
                found = (module, qualname)
            else:
                return None  # anything that builds or calls something is not a bare reference
    except (ValueError, EOFError, pickle.UnpicklingError):
        return None
    return found


@dataclass
class Checkpoint:
    """The readable contents of an SB3 zip."""

    path: Path
    data: dict[str, Any]
    policy_state: dict[str, Tensor]

    @property
    def algo(self) -> str:
        """The SB3 algorithm that wrote the zip, from the readable keys each one stores."""
        module = str(self.data.get("policy_class", {}).get("__module__", ""))
        if module.startswith("stable_baselines3.dqn"):
            return "DQN"
        if module.startswith("sb3_contrib.qrdqn"):
            return "QRDQN"
        if module.startswith("stable_baselines3.sac"):
            return "SAC"
        if module.startswith("stable_baselines3.td3"):
            return "DDPG" if self.data.get("policy_delay") == 1 and self.data.get("target_noise_clip") == 0 else "TD3"
        if module.startswith("sb3_contrib.common.recurrent"):
            return "RecurrentPPO"
        if module.startswith("sb3_contrib.common.maskable"):
            return "MaskablePPO"
        if "cg_max_steps" in self.data:
            return "TRPO"
        if "clip_range" in self.data:
            return "PPO"
        if "n_steps" in self.data:
            return "A2C"
        return "unknown"

    def space_summary(self, key: str) -> dict[str, Any]:
        entry = self.data.get(key)
        return entry if isinstance(entry, dict) else {}


def read_checkpoint(path: Path, role: str = "teacher") -> Checkpoint:
    """Open an SB3 zip without unpickling anything; every failure is a one-line DistillError."""
    if not path.exists():
        raise DistillError(f"{role} checkpoint not found: {path}")
    if path.is_dir():
        raise DistillError(f"{path} is a folder, not an SB3 .zip checkpoint")
    if path.stat().st_size == 0:
        raise DistillError(f"{role} checkpoint is empty: {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "data" not in names or "policy.pth" not in names:
                raise DistillError(f"{path} is a zip but not an SB3 checkpoint (no 'data' or 'policy.pth' inside)")
            data = json.loads(archive.read("data"))
            state = torch.load(io.BytesIO(archive.read("policy.pth")), map_location="cpu", weights_only=True)
    except DistillError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        raise DistillError(f"{path} is not a readable SB3 checkpoint (not a valid zip: {error})") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DistillError(f"{path} is not a readable SB3 checkpoint (its 'data' member is not JSON)") from None
    except (pickle.UnpicklingError, RuntimeError) as error:
        raise DistillError(f"{path}: its weights cannot be loaded safely ({str(error).splitlines()[0]})") from None
    except Exception as error:
        raise DistillError(f"{path} is not a readable SB3 checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(data, dict) or not isinstance(state, dict):
        raise DistillError(f"{path} is not a readable SB3 checkpoint (unexpected contents)")
    return Checkpoint(path, data, state)


def _serialized(entry: Any) -> bytes | None:
    if isinstance(entry, dict) and ":serialized:" in entry:
        try:
            return base64.b64decode(entry[":serialized:"].encode())
        except (binascii.Error, AttributeError):
            return None
    return None


def _policy_class(checkpoint: Checkpoint, trust: bool) -> type[BasePolicy]:
    payload = _serialized(checkpoint.data.get("policy_class"))
    if payload is None:
        raise DistillError(f"{checkpoint.path} is not a readable SB3 checkpoint (no policy class)")
    reference = global_reference(payload)
    if reference is not None and reference in POLICY_CLASSES:
        module, name = reference
        return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]
    if not trust:
        named = f"policy class {reference[0]}.{reference[1]}" if reference else "its policy class"
        raise _needs_trust(checkpoint.path, named)
    import cloudpickle

    cls = cloudpickle.loads(payload)
    if not (isinstance(cls, type) and issubclass(cls, BasePolicy)):
        raise DistillError(f"{checkpoint.path}: policy_class is not an SB3 policy")
    return cls


def _policy_kwargs(checkpoint: Checkpoint, trust: bool) -> dict[str, Any]:
    entry = checkpoint.data.get("policy_kwargs", {})
    payload = _serialized(entry)
    if payload is None:
        return dict(entry) if isinstance(entry, dict) else {}
    try:
        kwargs = _AllowListUnpickler(io.BytesIO(payload)).load()
    except (pickle.UnpicklingError, AttributeError, ImportError, EOFError, ValueError) as error:
        if not trust:
            raise _needs_trust(checkpoint.path, f"its policy_kwargs ({error})") from None
        import cloudpickle

        kwargs = cloudpickle.loads(payload)
    if not isinstance(kwargs, dict):
        raise DistillError(f"{checkpoint.path}: policy_kwargs is not a dict")
    return kwargs


def check_spaces(checkpoint: Checkpoint, observation_space: gym.Space, action_space: gym.Space, env_id: str) -> None:
    """Compare the spaces the zip records (readable attributes) with the environment's."""
    for key, space in (("observation_space", observation_space), ("action_space", action_space)):
        recorded = checkpoint.space_summary(key)
        recorded_type = str(recorded.get(":type:", ""))
        if recorded_type and type(space).__name__ not in recorded_type:
            raise DistillError(
                f"teacher {key} is {recorded_type.split('.')[-1].rstrip(chr(39) + '>')} but {env_id} has "
                f"{type(space).__name__}: the teacher was not trained on this environment (use --env)"
            )
        shape = recorded.get("_shape")
        if shape is not None and not (isinstance(shape, list) and all(isinstance(d, int) for d in shape)):
            raise DistillError(f"{checkpoint.path}: the recorded {key} shape {shape!r} is not a list of sizes")
        if shape is not None and list(shape) != list(space.shape or ()):
            raise DistillError(
                f"teacher {key} has shape {tuple(shape)} but {env_id} has {tuple(space.shape or ())}: "
                "the teacher was not trained on this environment (use --env)"
            )
        n = recorded.get("n")
        if (n is not None and not isinstance(n, int | str)) or (isinstance(n, str) and not n.isdigit()):
            raise DistillError(f"{checkpoint.path}: the recorded {key} size {n!r} is not a number")
        if n is not None and isinstance(space, gym.spaces.Discrete) and int(n) != int(space.n):
            raise DistillError(
                f"teacher {key} has {n} actions but {env_id} has {space.n}: "
                "the teacher was not trained on this environment (use --env)"
            )


# Each SB3 family's acting network: what the teacher's parameter count (and latency) means. Target networks
# and critics of off-policy algorithms are training devices, not the policy.
def _acting_modules(policy: BasePolicy) -> list[nn.Module]:
    if isinstance(policy, DQNPolicy):
        return [policy.q_net]
    if isinstance(policy, SACPolicy | TD3Policy):
        return [policy.actor]
    if _is_qrdqn(policy):
        return [policy.quantile_net]  # type: ignore[list-item]
    return [policy]


def _is_qrdqn(policy: BasePolicy) -> bool:
    return type(policy).__module__.startswith("sb3_contrib.qrdqn")


class Teacher:
    """A frozen SB3 policy seen as ``obs -> (pi(.|s), V_pi(s) or None)``, one form per family:

    - actor-critic (PPO, A2C, TRPO): its own distribution (Categorical, DiagGaussian incl. gSDE, MultiCategorical,
      Bernoulli) and V_pi;
    - DQN / QR-DQN: softmax(Q / T), with V = sum_a pi(a) Q(a) (QR-DQN's Q is the mean of its quantiles);
    - SAC: its squashed Gaussian in the env's action units; no V (SB3 keeps only Q(s, a) critics);
    - TD3 / DDPG: the deterministic actor mu(s) seen as N(mu(s), sigma^2), sigma = ``deterministic_std`` times the
      half-range of the action box, as TD3's own exploration noise; every loss is then analytic.
    """

    def __init__(
        self,
        policy: BasePolicy,
        algo: str,
        temperature: float,
        log_prob_floor: float | None,
        deterministic_std: float = 0.1,
    ) -> None:
        self.policy = policy.eval()
        self.algo = algo
        self.temperature = temperature
        self.log_prob_floor = log_prob_floor
        self.deterministic_std = deterministic_std
        self._bounds = box_bounds(policy.action_space, policy.device)
        for parameter in self.policy.parameters():
            parameter.requires_grad_(False)

    @property
    def has_value(self) -> bool:
        return isinstance(self.policy, ActorCriticPolicy | DQNPolicy) or _is_qrdqn(self.policy)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for module in _acting_modules(self.policy) for p in module.parameters())

    @property
    def device(self) -> torch.device:
        return self.policy.device

    @property
    def noise(self) -> Noise:
        """What kind of Box-action noise the teacher has, which the student copies (see ``Student.build``)."""
        policy = self.policy
        if isinstance(policy, SACPolicy) or (isinstance(policy, ActorCriticPolicy) and policy.squash_output):
            return "squashed"
        return "sde" if isinstance(policy, ActorCriticPolicy) and policy.use_sde else "plain"

    def noise_log_std(self) -> Tensor | None:
        """The log std of a Gaussian teacher whose noise does not depend on the state (None otherwise)."""
        policy = self.policy
        if isinstance(policy, TD3Policy) and self._bounds is not None:
            return torch.log(self.deterministic_std * self._bounds[1])
        if isinstance(policy, ActorCriticPolicy) and type(policy.action_dist) is DiagGaussianDistribution:
            return policy.log_std.detach()
        return None

    def _soft_q(self, q_values: Tensor) -> tuple[ActionDist, Tensor]:
        # Value-based teachers have no policy: use softmax(Q / T), and V = sum_a pi(a) Q(a).
        soft_q = Categorical.from_logits(q_values / self.temperature, self.log_prob_floor)
        return soft_q, (soft_q.probs * q_values).sum(-1)

    # The teacher never needs gradients; no_grad (not inference_mode) so its outputs can enter the student's loss.
    @torch.no_grad()
    def __call__(self, obs: Tensor) -> tuple[ActionDist, Tensor | None]:
        policy = self.policy
        if isinstance(policy, DQNPolicy):
            return self._soft_q(policy.q_net(obs))
        if _is_qrdqn(policy):
            return self._soft_q(policy.quantile_net(obs).mean(dim=1))  # type: ignore[operator]
        if isinstance(policy, SACPolicy):
            mean, log_std, extra = policy.actor.get_action_dist_params(obs)
            distribution = policy.actor.action_dist.proba_distribution(mean, log_std, **extra)
            return from_sb3(distribution, self.log_prob_floor, self._bounds), None
        if isinstance(policy, TD3Policy):
            center, half = self._bounds if self._bounds is not None else (torch.zeros(()), torch.ones(()))
            mean = center + half * policy.actor(obs)  # tanh output in [-1, 1], unscaled as TD3's predict does
            return DiagGaussian(mean, torch.log(self.deterministic_std * half).expand_as(mean)), None
        assert isinstance(policy, ActorCriticPolicy)
        dist, values = actor_critic_outputs(policy, obs, self.log_prob_floor)
        return self.tempered(dist), values

    @torch.no_grad()
    def actor(self, obs: Tensor) -> ActionDist:
        """pi(.|s) alone: an actor-critic teacher skips its critic (most methods never read V_pi)."""
        if isinstance(self.policy, ActorCriticPolicy) and type(self).__call__ is Teacher.__call__:
            return self.tempered(actor_outputs(self.policy, obs, self.log_prob_floor))
        return self(obs)[0]

    def tempered(self, dist: ActionDist) -> ActionDist:
        """pi_T = softmax(logits / T) for categorical teachers; other families are returned as they are."""
        if self.temperature != 1.0 and isinstance(dist, Categorical):
            return Categorical.from_logits(dist.logits / self.temperature, self.log_prob_floor)
        if self.temperature != 1.0 and isinstance(dist, MultiCategorical):
            return MultiCategorical(torch.log_softmax(dist.logits / self.temperature, dim=-1))
        return dist


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
    policy_class = _policy_class(checkpoint, trust)
    kwargs = _policy_kwargs(checkpoint, trust)
    if issubclass(policy_class, ActorCriticPolicy | SACPolicy):
        kwargs.setdefault("use_sde", bool(checkpoint.data.get("use_sde", False)))
    if policy_class.__module__.startswith("sb3_contrib.qrdqn") and isinstance(checkpoint.data.get("n_quantiles"), int):
        kwargs.setdefault("n_quantiles", checkpoint.data["n_quantiles"])
    try:
        policy = policy_class(observation_space, action_space, lambda _: 0.0, **kwargs)
        policy.load_state_dict(checkpoint.policy_state)
    except (RuntimeError, TypeError, ValueError, KeyError) as error:
        raise DistillError(
            f"{checkpoint.path}: the weights do not fit a {policy_class.__name__} for these spaces "
            f"({str(error).splitlines()[0][:160]})"
        ) from None
    broken = [name for name, tensor in policy.state_dict().items() if not torch.isfinite(tensor).all()]
    if broken:
        raise DistillError(f"{checkpoint.path}: the weights contain NaN or infinite values ({broken[0]})")
    cls = Teacher
    if type(policy).__module__.startswith("sb3_contrib.common."):  # RecurrentPPO, MaskablePPO: stateful or masked
        from distillcli.contrib import teacher_class

        cls = teacher_class(policy)
    return cls(policy.to(device), checkpoint.algo, temperature, log_prob_floor, deterministic_std)


def infer_env_id(path: Path) -> str | None:
    """The env id a checkpoint's file name carries (``ppo-CartPole-v1.zip``, rl-zoo's ``ALE-Pong-v5.zip``)."""
    text = " ".join([path.stem, path.parent.name])
    matches = [
        env_id for env_id in gym.registry if env_id in text or ("/" in env_id and env_id.replace("/", "-") in text)
    ]
    return max(matches, key=len) if matches else None
