"""Every teacher family of SB3 and sb3-contrib's TRPO / QR-DQN: action spaces Discrete, Box (plain, gSDE,
squashed), MultiDiscrete and MultiBinary; on-policy, value-based, SAC and deterministic actors.

Per family: the safe loader's teacher acts exactly as the SB3 model does (in the env's action units), a short
run halves KL(teacher || student) on the student's states, and the student reopens and acts in the teacher's
action space. The recurrent and maskable teachers are in test_contrib.py, rl-zoo folders in test_zoo.py.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import A2C, DDPG, PPO, SAC, TD3
from stable_baselines3.common import distributions as sb3_dist
from stable_baselines3.common.base_class import BaseAlgorithm

from distillcli.distributions import Bernoulli, DiagGaussian, MultiCategorical, SquashedGaussian
from distillcli.sb3.checkpoint import read_checkpoint
from distillcli.sb3.teacher import load_teacher
from tests.conftest import CLI

contrib = pytest.importorskip("sb3_contrib")


class _MultiActionCartPole(gym.ActionWrapper):  # type: ignore[type-arg]
    """CartPole driven by a MultiDiscrete([2, 3]) or MultiBinary(2) action: the first component pushes."""

    def __init__(self, env: gym.Env, space: gym.Space) -> None:  # type: ignore[type-arg]
        super().__init__(env)
        self.action_space = space

    def action(self, action: Any) -> int:
        return int(np.asarray(action).reshape(-1)[0])


def _register() -> None:
    for name, space in (
        ("distillcli-test/CartPoleMultiDiscrete-v0", gym.spaces.MultiDiscrete([2, 3])),
        ("distillcli-test/CartPoleMultiBinary-v0", gym.spaces.MultiBinary(2)),
    ):
        if name not in gym.registry:
            gym.register(name, entry_point=lambda space=space: _MultiActionCartPole(gym.make("CartPole-v1"), space))


_register()

# name -> (algorithm, env id, constructor options)
FAMILIES: dict[str, tuple[type[BaseAlgorithm], str, dict[str, Any]]] = {
    "ppo-gsde": (PPO, "Pendulum-v1", {"use_sde": True}),
    "ppo-multidiscrete": (PPO, "distillcli-test/CartPoleMultiDiscrete-v0", {}),
    "a2c-multibinary": (A2C, "distillcli-test/CartPoleMultiBinary-v0", {}),
    "trpo-discrete": (contrib.TRPO, "CartPole-v1", {}),
    "trpo-box": (contrib.TRPO, "Pendulum-v1", {}),
    "qrdqn": (contrib.QRDQN, "CartPole-v1", {}),
    "sac": (SAC, "Pendulum-v1", {}),
    "td3": (TD3, "Pendulum-v1", {}),
    "ddpg": (DDPG, "Pendulum-v1", {}),
}
ALGO_NAMES = {"ppo": "PPO", "a2c": "A2C", "trpo": "TRPO", "qrdqn": "QRDQN", "sac": "SAC", "td3": "TD3", "ddpg": "DDPG"}


def _make_confident(model: BaseAlgorithm) -> None:
    """Random output heads with real weight, so the teacher's distribution varies by state and is a non-trivial
    target (SB3 starts its heads near zero: a fresh teacher would look like a fresh student)."""
    generator = torch.Generator().manual_seed(0)
    policy: Any = model.policy
    with torch.no_grad():
        if hasattr(policy, "quantile_net"):
            policy.quantile_net.quantile_net[-1].weight.mul_(300.0)
            return
        if isinstance(policy.__dict__.get("_modules", {}).get("actor"), torch.nn.Module):
            head = policy.actor.mu if isinstance(model, SAC) else policy.actor.mu[-2]  # TD3: Linear before Tanh
        else:
            head = policy.action_net
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator))
        if not isinstance(model.action_space, gym.spaces.Box):
            # Sharp enough that the mode-seeking default method's target (the argmax) is the teacher itself.
            head.weight.mul_(4.0)
        if isinstance(model, SAC):  # sharpen SAC's state-dependent noise as well
            policy.actor.log_std.bias.fill_(-1.5)
        elif hasattr(policy, "log_std") and not getattr(policy, "use_sde", False):
            policy.log_std.fill_(-1.0)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    paths = {}
    for name, (algo, env_id, options) in FAMILIES.items():
        model = algo("MlpPolicy", env_id, seed=0, device="cpu", **options)
        _make_confident(model)
        paths[name] = root / f"{name}.zip"
        model.save(paths[name])
    return paths


@pytest.mark.parametrize("name", list(FAMILIES))
def test_teacher_acts_as_the_sb3_model(teachers: dict[str, Path], name: str) -> None:
    algo, env_id, _ = FAMILIES[name]
    reference = algo.load(teachers[name], device="cpu")
    env = gym.make(env_id)
    checkpoint = read_checkpoint(teachers[name])
    assert checkpoint.algo == ALGO_NAMES[name.split("-")[0]]
    teacher = load_teacher(checkpoint, env.observation_space, env.action_space, torch.device("cpu"))
    for key, tensor in reference.policy.state_dict().items():
        assert torch.equal(tensor, teacher.policy.state_dict()[key]), key
    obs = np.stack([env.observation_space.sample() for _ in range(16)])
    expected, _ = reference.predict(obs, deterministic=True)
    dist, _ = teacher(torch.as_tensor(obs))
    ours = dist.mode().numpy()
    if isinstance(env.action_space, gym.spaces.Box):
        ours = np.clip(ours, env.action_space.low, env.action_space.high)  # PPO's predict clips its Gaussian
        np.testing.assert_allclose(ours, expected, atol=1e-5)
    else:
        np.testing.assert_array_equal(ours.reshape(expected.shape), expected)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_teacher_family_distills(cli: CLI, tmp_path: Path, teachers: dict[str, Path], name: str) -> None:
    _, env_id, _ = FAMILIES[name]
    steps = "32768"
    args = ("--teacher", teachers[name], "--env", env_id, "--steps", steps, "--eval-episodes", "5")
    result = cli("run", *args, "--out", tmp_path / "run", "--json")
    assert result.code == 0, result.stderr
    summary = result.json()
    assert summary["teacher_algo"] == ALGO_NAMES[name.split("-")[0]]
    assert math.isfinite(summary["kl_start"]) and summary["kl_start"] > 0
    assert summary["kl_end"] <= 0.5 * summary["kl_start"], summary
    student = PPO.load(summary["student_path"], device="cpu")
    env = gym.make(env_id)
    obs = np.stack([env.observation_space.sample() for _ in range(8)])
    actions, _ = student.predict(obs, deterministic=True)
    assert all(env.action_space.contains(a.astype(env.action_space.dtype)) for a in actions)


def test_deterministic_teacher_noise_is_an_option(cli: CLI, tmp_path: Path, teachers: dict[str, Path]) -> None:
    env = gym.make("Pendulum-v1")
    checkpoint = read_checkpoint(teachers["td3"])
    stds = []
    for sigma in (0.05, 0.3):
        teacher = load_teacher(
            checkpoint, env.observation_space, env.action_space, torch.device("cpu"), deterministic_std=sigma
        )
        dist, value = teacher(torch.as_tensor(env.observation_space.sample()[None]))
        assert isinstance(dist, DiagGaussian) and value is None
        stds.append(float(dist.log_std.exp().mean()))
    assert stds == pytest.approx([0.05 * 2.0, 0.3 * 2.0])  # Pendulum's torque box is [-2, 2]
    result = cli("run", "--teacher", teachers["td3"], "--env", "Pendulum-v1", "--method", "td+v-teacher")
    assert result.code != 0 and "teacher value" in result.stderr  # TD3 keeps Q(s, a) only: no V_pi


# --- the distributions against torch / SB3 ----------------------------------------------------------------


def test_multicategorical_and_bernoulli_match_torch() -> None:
    torch.manual_seed(0)
    sizes = [2, 3, 5]
    flat_p, flat_q = torch.randn(4, sum(sizes)), torch.randn(4, sum(sizes))
    p, q = MultiCategorical.from_flat(flat_p, sizes), MultiCategorical.from_flat(flat_q, sizes)
    tp = [torch.distributions.Categorical(logits=c) for c in torch.split(flat_p, sizes, -1)]
    tq = [torch.distributions.Categorical(logits=c) for c in torch.split(flat_q, sizes, -1)]
    torch.testing.assert_close(p.entropy(), sum(d.entropy() for d in tp))
    kl = sum(torch.distributions.kl_divergence(a, b) for a, b in zip(tp, tq, strict=True))
    torch.testing.assert_close(p.kl(q), kl)
    actions = p.sample()
    assert actions.shape == (4, 3) and bool((actions < torch.tensor(sizes)).all())
    torch.testing.assert_close(p.log_prob(actions), sum(d.log_prob(actions[:, i]) for i, d in enumerate(tp)))

    lp, lq = torch.randn(4, 6), torch.randn(4, 6)
    bp, bq = Bernoulli.from_logits(lp), Bernoulli.from_logits(lq)
    tbp, tbq = torch.distributions.Bernoulli(logits=lp), torch.distributions.Bernoulli(logits=lq)
    torch.testing.assert_close(bp.entropy(), tbp.entropy().sum(-1))
    torch.testing.assert_close(bp.kl(bq), torch.distributions.kl_divergence(tbp, tbq).sum(-1))
    bits = bp.sample()
    torch.testing.assert_close(bp.log_prob(bits), tbp.log_prob(bits).sum(-1))


def test_squashed_gaussian_matches_sb3_and_keeps_kl_of_the_gaussians() -> None:
    torch.manual_seed(0)
    mean, log_std = torch.randn(5, 2), torch.randn(5, 2) * 0.3 - 0.5
    center, half = torch.tensor([0.0, 1.0]), torch.tensor([2.0, 0.5])
    ours = SquashedGaussian(mean, log_std, center.expand_as(mean), half.expand_as(mean))
    sb3 = sb3_dist.SquashedDiagGaussianDistribution(2).proba_distribution(mean, log_std)
    unit = torch.tanh(mean + 0.3 * torch.randn(5, 2))  # actions in [-1, 1], then in the env's units
    expected = sb3.log_prob(unit) - torch.log(half).sum()
    torch.testing.assert_close(ours.log_prob(center + half * unit), expected, rtol=1e-4, atol=1e-4)
    # KL is invariant under the tanh bijection: the Monte-Carlo KL of two squashed Gaussians is the Gaussians'.
    other = SquashedGaussian(mean + 0.5, log_std + 0.2, center.expand_as(mean), half.expand_as(mean))
    many = ours.map(lambda t: t.repeat(4000, 1))
    estimate = many.kl(other.map(lambda t: t.repeat(4000, 1))).view(4000, 5).mean(0)
    exact = DiagGaussian(mean, log_std).kl(DiagGaussian(mean + 0.5, log_std + 0.2))
    torch.testing.assert_close(estimate, exact, rtol=0.05, atol=0.02)
