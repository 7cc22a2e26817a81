"""The student: an SB3 actor-critic policy, trained by our loop and saved as an ordinary SB3 model.

Building it inside a ``PPO`` object means ``PPO.load("student.zip")`` opens the result and ``predict`` acts in
the teacher's action space (Box actions clipped like the teacher's PPO), and the student can be fine-tuned
with RL afterwards (it has a critic). The one grammar of ``--student-net`` (and of the sweep's
``--student-nets`` lists, and of the names of run directories) lives here too.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.distributions import CategoricalDistribution, DiagGaussianDistribution
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import FlattenExtractor, NatureCNN
from stable_baselines3.common.vec_env import VecEnv
from torch import Tensor, nn
from torch.nn import functional as F

from distillcli.distributions import ActionDist, Categorical, DiagGaussian, gumbel_max
from distillcli.errors import DistillError
from distillcli.metrics import atomic_write_bytes
from distillcli.sb3.netspec import NetSpec, net_label
from distillcli.sb3.policies import actor_critic_outputs, actor_outputs, linear_widths


@dataclass(frozen=True)
class StudentNet:
    """The student's network, resolved: SB3's NatureCNN (``features_dim`` wide) for images, then MLP ``layers``."""

    layers: list[int]
    features_dim: int | None = None  # None: observations are flattened into the MLP

    def __str__(self) -> str:
        widths = ",".join(map(str, self.layers))
        if self.features_dim is None:
            return widths
        return f"cnn:{self.features_dim}" + (f"/{widths}" if widths else "")

    @property
    def summary(self) -> list[int] | str:
        """What summary.json records: the widths of an MLP, the spec of a CNN."""
        return self.layers if self.features_dim is None else str(self)

    @property
    def label(self) -> str:
        """For run names and table rows: ``32x32``, ``cnn256-64x64`` (no '/' or ':', which paths cannot hold)."""
        return net_label(str(self))


def cnn_features(policy: BasePolicy) -> int | None:
    """The features_dim of a teacher's NatureCNN, if its observations go through one."""
    return next((int(m.features_dim) for m in policy.modules() if isinstance(m, NatureCNN)), None)


def _describe(space: gym.Space) -> str:
    dtype = getattr(space, "dtype", None)
    return f"{type(space).__name__}{tuple(space.shape or ())} {dtype}" if dtype is not None else str(space)


AUTO_MIN_WIDTH = 32  # a tiny teacher's half (ARS: one layer of 16 -> 8) cannot copy it: 32,32 can (score 0.99)


def auto_widths(teacher_widths: list[int]) -> list[int]:
    """``--student-net auto`` for an MLP: half the teacher's hidden widths (about a quarter of its parameters),
    each at least 32, and at least two layers."""
    widths = [max(AUTO_MIN_WIDTH, w // 2) for w in teacher_widths] or [AUTO_MIN_WIDTH]
    return widths if len(widths) >= 2 else widths * 2


def resolve_net(
    spec: NetSpec | str, teacher_widths: list[int], teacher_policy: BasePolicy, observation_space: gym.Space
) -> StudentNet:
    """The student network a spec means for this teacher and these observations: ``auto`` halves the teacher's
    hidden widths (about a quarter of its parameters), and for a CNN teacher its features_dim too."""
    if isinstance(spec, str):
        spec = NetSpec.parse(spec)
    image = isinstance(observation_space, gym.spaces.Box) and is_image_space(observation_space)
    teacher_cnn = cnn_features(teacher_policy)
    if spec.kind == "auto":
        if image and teacher_cnn is not None:
            head = teacher_policy.mlp_extractor.policy_net if isinstance(teacher_policy, ActorCriticPolicy) else None
            return StudentNet([max(1, w // 2) for w in linear_widths(head)], max(1, teacher_cnn // 2))
        return StudentNet(auto_widths(teacher_widths))
    if spec.kind == "mlp":
        return StudentNet(list(spec.layers))
    if not image:
        raise DistillError(
            f"--student-net {spec}: a CNN needs image observations (uint8 frames), but these are "
            f"{_describe(observation_space)}: give layer widths like 32,32"
        )
    height, width = sorted(observation_space.shape or ())[1:]  # channels are the smallest dimension
    if min(height, width) < 36:
        raise DistillError(
            f"--student-net {spec}: NatureCNN needs frames of at least 36x36, these are "
            f"{_describe(observation_space)}: give layer widths like 64,64"
        )
    return StudentNet(list(spec.layers), spec.features or 512)


class FlatAdam:
    """The student's parameters and gradients as views into two flat buffers, and Adam on those buffers.

    A small network's gradient step is mostly per-call overhead: ``zero_grad``, clipping and ``Adam.step`` each
    loop over the parameter tensors in Python. Over one flat buffer, zeroing is one op and Adam six (the same
    update as ``torch.optim.Adam`` without weight decay), a quarter of a step for a 32x32 student. The policy keeps
    its parameters (views of the buffer) and SB3's per-parameter optimiser, which only carries the Adam state into
    and out of ``student.zip``, where ``PPO.load`` and ``--resume`` read it.
    """

    def __init__(self, policy: BasePolicy) -> None:
        self.policy = policy
        self.tensors = list(policy.parameters())
        buffer = torch.cat([p.detach().reshape(-1) for p in self.tensors])
        gradient = torch.zeros_like(buffer)
        self.spans: list[tuple[int, int]] = []
        offset = 0
        for parameter in self.tensors:
            size = parameter.numel()
            parameter.data = buffer[offset : offset + size].view_as(parameter)
            # A gradient that exists is accumulated in place by backward, so it stays a view of the buffer.
            parameter.grad = gradient[offset : offset + size].view_as(parameter)
            self.spans.append((offset, size))
            offset += size
        self.flat = nn.Parameter(buffer)  # shares the buffer's storage
        self.flat.grad = gradient
        group = policy.optimizer.param_groups[0]
        self.lr, self.eps = float(group["lr"]), float(group["eps"])
        self.beta1, self.beta2 = (float(b) for b in group.get("betas", (0.9, 0.999)))
        self.steps = 0
        self.exp_avg = torch.zeros_like(buffer)
        self.exp_avg_sq = torch.zeros_like(buffer)

    def zero_grad(self, set_to_none: bool = False) -> None:
        self.gradient.zero_()  # never set to None: the parameters' gradients are views of this buffer

    @property
    def gradient(self) -> Tensor:
        assert self.flat.grad is not None
        return self.flat.grad

    @torch.no_grad()
    def step(self) -> None:
        """One Adam step, as ``torch.optim.Adam`` computes it."""
        self.steps += 1
        gradient = self.gradient
        self.exp_avg.lerp_(gradient, 1.0 - self.beta1)
        self.exp_avg_sq.mul_(self.beta2).addcmul_(gradient, gradient, value=1.0 - self.beta2)
        bias1 = 1.0 - self.beta1**self.steps
        bias2 = 1.0 - self.beta2**self.steps
        denominator = (self.exp_avg_sq.sqrt() / math.sqrt(bias2)).add_(self.eps)
        self.flat.addcdiv_(self.exp_avg, denominator, value=-self.lr / bias1)

    def export_state(self) -> None:
        """Copy the Adam state into the policy's per-parameter optimiser (before saving)."""
        if self.steps == 0:
            return
        for parameter, (offset, size) in zip(self.tensors, self.spans, strict=True):
            self.policy.optimizer.state[parameter] = {
                "step": torch.tensor(float(self.steps)),
                "exp_avg": self.exp_avg[offset : offset + size].view_as(parameter).clone(),
                "exp_avg_sq": self.exp_avg_sq[offset : offset + size].view_as(parameter).clone(),
            }

    def import_state(self, saved: dict[str, Any]) -> None:
        """Load a saved per-parameter Adam state (``policy.optimizer.pth``)."""
        self.policy.optimizer.load_state_dict(saved)
        per_parameter = [self.policy.optimizer.state.get(p) for p in self.tensors]
        if not all(per_parameter):
            return  # saved before any step
        with torch.no_grad():
            for key, target in (("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq)):
                target.copy_(torch.cat([state[key].reshape(-1) for state in per_parameter]))  # type: ignore[index]
        self.steps = int(per_parameter[0]["step"])  # type: ignore[index]


Layers = list[nn.Module | tuple[Tensor, Tensor]]


def _plain_layers(hidden: object, head: object) -> Layers | None:
    """An MLP (``nn.Sequential`` of Linear and activation modules, then a Linear head) as its layers, each Linear
    as its (weight, bias): ``F.linear`` on those skips ``nn.Module.__call__``, about 40% of a small network's
    forward. The weights are the policy's own tensors, updated in place, so the list stays current."""
    if not isinstance(hidden, nn.Sequential) or not isinstance(head, nn.Linear):
        return None
    layers: Layers = []
    for module in [*hidden, head]:
        if isinstance(module, nn.Linear):
            if module.bias is None:
                return None
            layers.append((module.weight, module.bias))
        else:
            layers.append(module)
    return layers


def _apply(layers: Layers, x: Tensor) -> Tensor:
    for layer in layers:
        x = layer(x) if isinstance(layer, nn.Module) else F.linear(x, *layer)
    return x


def _plain_networks(policy: BasePolicy) -> tuple[Layers, Layers] | None:
    """The actor and critic of an MLP policy on flat float observations, whose feature extractor is the identity
    (SB3 one-hot encodes discrete observations and scales images: those keep the modules)."""
    space = policy.observation_space
    plain = isinstance(space, gym.spaces.Box) and not is_image_space(space) and len(space.shape or ()) == 1
    extractor = getattr(policy, "mlp_extractor", None)
    if not (plain and isinstance(policy.features_extractor, FlattenExtractor) and extractor is not None):
        return None
    actor = _plain_layers(extractor.policy_net, getattr(policy, "action_net", None))
    critic = _plain_layers(extractor.value_net, getattr(policy, "value_net", None))
    return None if actor is None or critic is None else (actor, critic)


_PLAIN_HEADS = (CategoricalDistribution, DiagGaussianDistribution)


class Student:
    """The SB3 model being distilled, seen as ``obs -> (pi_th(.|s), V_th(s))`` with gradients."""

    def __init__(self, model: Any, uses_action_masks: bool = False) -> None:
        self.model = model
        self.policy: ActorCriticPolicy = model.policy
        self.uses_action_masks = uses_action_masks  # the rollout masks pi_th with the env's action_masks()
        self._flat = FlatAdam(self.policy)
        # The F.linear fast path: a shared extractor and a head that __call__ builds directly (fixed per policy).
        plain_head = type(self.policy.action_dist) in _PLAIN_HEADS and self.policy.share_features_extractor
        self._plain = _plain_networks(self.policy) if plain_head and not uses_action_masks else None

    @classmethod
    def build(
        cls,
        venv: VecEnv,
        net: StudentNet,
        activation: type[nn.Module],
        *,
        learning_rate: float,
        n_steps: int,
        minibatch_size: int,
        epochs: int,
        gamma: float,
        gae_lambda: float,
        device: torch.device,
        seed: int,
        zero_critic: bool = False,
        noise: str = "plain",
        algo: Literal["PPO", "MaskablePPO"] = "PPO",
    ) -> Student:
        """A fresh student for ``venv``'s spaces: ``net`` hidden layers with ``activation``, and the teacher's kind
        of action noise (``noise``) and SB3 class (``algo``: MaskablePPO for a masked teacher)."""
        policy_kwargs: dict[str, object] = {
            "net_arch": {"pi": net.layers, "vf": net.layers},
            "activation_fn": activation,
        }
        if net.features_dim is not None:  # SB3's own NatureCNN: PPO.load opens the student without custom classes
            policy_kwargs["features_extractor_kwargs"] = {"features_dim": net.features_dim}
        if noise == "squashed":
            # A squashed-Gaussian teacher (SAC, TQC) gets a squashed student: both densities live inside the action
            # box, so Hx in either direction and log pi(a) at the student's actions stay finite. SB3's PPO
            # squashes only with gSDE, whose per-state noise is a diagonal Gaussian like SAC's.
            policy_kwargs.update(squash_output=True, log_std_init=-2.0)
        algo_class: type[Any] = PPO
        # A gSDE teacher's noise depends on the state: a gSDE student can follow it, one log_std cannot.
        sde: dict[str, bool] = {"use_sde": noise in ("sde", "squashed")}
        if algo == "MaskablePPO":  # sb3-contrib's MaskablePPO, whose predict takes action_masks (no gSDE)
            from sb3_contrib import MaskablePPO

            algo_class, sde = MaskablePPO, {}
        # The PPO hyperparameters are stored in student.zip so that RL fine-tuning starts from ours. SB3 warns when
        # the minibatch exceeds n_steps x n_envs: a run's environments grow from fewer, and distill's own updates
        # never use SB3's buffer, so the warning would only mislead.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="You have specified a mini-batch size")
            model = algo_class(
                "MlpPolicy" if net.features_dim is None else "CnnPolicy",
                venv,
                learning_rate=learning_rate,
                n_steps=n_steps,
                batch_size=minibatch_size,
                n_epochs=epochs,
                gamma=gamma,
                gae_lambda=gae_lambda,
                policy_kwargs=policy_kwargs,
                **sde,
                device=device,
                seed=seed,
            )
        if zero_critic:
            with torch.no_grad():
                model.policy.value_net.weight.zero_()
                model.policy.value_net.bias.zero_()
        return cls(model, uses_action_masks=algo == "MaskablePPO")

    def start_noise_at(self, log_std: Tensor) -> None:
        """Begin with the teacher's action noise (Gaussian teachers whose noise is one parameter).

        The student's std is otherwise learnt from exp(0) = 1 at the learning rate's pace, which for a sharp
        teacher (TD3's sigma, a trained PPO's log_std) takes far longer than learning the mean.
        """
        own = getattr(self.policy, "log_std", None)
        if isinstance(own, nn.Parameter) and own.shape == log_std.shape:
            with torch.no_grad():
                own.copy_(log_std)

    def __call__(self, obs: Tensor) -> tuple[ActionDist, Tensor | None]:
        if self._plain is None or obs.dtype != torch.float32:
            return actor_critic_outputs(self.policy, obs)
        actor, critic = self._plain
        head, values = _apply(actor, obs), _apply(critic, obs).squeeze(-1)
        if type(self.policy.action_dist) is CategoricalDistribution:
            return Categorical.from_logits(head), values
        return DiagGaussian(head, self.policy.log_std.expand_as(head)), values

    def actor(self, obs: Tensor) -> ActionDist:
        """pi_th(.|s) alone, without the critic: what a pure per-state loss needs (half the forward's work)."""
        if self._plain is None or obs.dtype != torch.float32:
            return actor_outputs(self.policy, obs)
        head = _apply(self._plain[0], obs)
        if type(self.policy.action_dist) is CategoricalDistribution:
            return Categorical.from_logits(head)
        return DiagGaussian(head, self.policy.log_std.expand_as(head))

    def act(self, obs: Tensor) -> Tensor:
        """Sample a ~ pi_th(.|s) for acting: the actor alone (no critic, no distribution object), the hot path
        of every student-driven collection step."""
        policy = self.policy
        kind = type(policy.action_dist)
        if kind not in _PLAIN_HEADS or not policy.share_features_extractor:
            return self(obs)[0].sample()
        if self._plain is not None and obs.dtype == torch.float32:
            head = _apply(self._plain[0], obs)
        else:
            features = policy.extract_features(obs)
            assert isinstance(features, Tensor)  # one shared extractor
            head = policy.action_net(policy.mlp_extractor.forward_actor(features))
        if kind is CategoricalDistribution:
            return gumbel_max(head)
        return head + torch.exp(policy.log_std) * torch.randn_like(head)

    @property
    def parameters(self) -> list[nn.Parameter]:
        """What the trainer clips and steps: one flat tensor holding every parameter of the policy."""
        return [self._flat.flat]

    @property
    def optimizer(self) -> FlatAdam:
        return self._flat

    def load_optimizer_state(self, saved: dict[str, Any]) -> None:
        self._flat.import_state(saved)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.policy.parameters())

    def save(self, path: Path, env_steps: int) -> None:
        """Write an ordinary SB3 zip, atomically."""
        self.model.num_timesteps = env_steps
        self._flat.export_state()
        buffer = io.BytesIO()
        self.model.save(buffer)
        atomic_write_bytes(path, buffer.getvalue())
