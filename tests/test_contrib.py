"""sb3-contrib teachers: RecurrentPPO's LSTM state is carried per environment exactly as SB3 carries it (in
collection, final observations and evaluation), MaskablePPO's action masks restrict teacher and student alike,
and both distill into a student that reopens with the documented SB3 class (PPO; MaskablePPO)."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

pytest.importorskip("sb3_contrib")

from sb3_contrib import MaskablePPO, RecurrentPPO
from sb3_contrib.common.envs import (
    InvalidActionEnvDiscrete,
    InvalidActionEnvMultiBinary,
    InvalidActionEnvMultiDiscrete,
)
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3 import PPO
from stable_baselines3.common.evaluation import evaluate_policy

from distillcli.distributions import Categorical
from distillcli.envs import make_env
from distillcli.rollout import Collector, masked
from distillcli.run.evaluate import evaluate
from distillcli.sb3.checkpoint import read_checkpoint
from distillcli.sb3.teacher import load_teacher
from tests.conftest import CLI

CPU = torch.device("cpu")
# An identity task whose valid actions change every step (3 of 6 masked, never the right one).
MASKED_ENV = "distillcli-test/MaskedIdentity-v0"
MASKED_MULTI_ENV = "distillcli-test/MaskedMultiIdentity-v0"
MASKED_BITS_ENV = "distillcli-test/MaskedBitsIdentity-v0"
if MASKED_ENV not in gym.registry:
    gym.register(MASKED_ENV, entry_point=InvalidActionEnvDiscrete, kwargs={"dim": 6, "n_invalid_actions": 3})
    gym.register(
        MASKED_MULTI_ENV, entry_point=InvalidActionEnvMultiDiscrete, kwargs={"dims": [3, 4], "n_invalid_actions": 3}
    )
    gym.register(MASKED_BITS_ENV, entry_point=InvalidActionEnvMultiBinary, kwargs={"dims": 3, "n_invalid_actions": 2})


def _confident(head: torch.nn.Linear, scale: float) -> None:
    """A fresh action head is near zero (pi near uniform, like a fresh student): give it random weights."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        head.weight.copy_(scale * torch.randn(head.weight.shape, generator=generator))


@pytest.fixture(scope="module")
def recurrent_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = RecurrentPPO(
        "MlpLstmPolicy", "CartPole-v1", policy_kwargs={"lstm_hidden_size": 16, "net_arch": [32]}, seed=0, device="cpu"
    )
    _confident(model.policy.action_net, 3.0)
    path = tmp_path_factory.mktemp("contrib") / "rppo-CartPole-v1.zip"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def maskable_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = MaskablePPO("MlpPolicy", gym.make(MASKED_ENV), seed=0, device="cpu")
    _confident(model.policy.action_net, 1.0)
    path = tmp_path_factory.mktemp("contrib") / "maskable-ppo.zip"
    model.save(path)
    return path


# --- RecurrentPPO ---------------------------------------------------------------------------------------


def test_collector_carries_the_lstm_state_like_sb3(recurrent_zip: Path) -> None:
    """Every pi(s_t), V(s_t) of two consecutive segments, and pi on each episode's final observation (with that
    episode's state, not the reset one), equal SB3's own forward with the state carried as RecurrentPPO does."""
    n_envs = 3
    venv = make_env("CartPole-v1", n_envs, 0)
    teacher = load_teacher(read_checkpoint(recurrent_zip), venv.observation_space, venv.action_space, CPU)
    assert teacher.family.session is not None and teacher.algo == "RecurrentPPO"
    collector = Collector(venv, teacher, CPU)
    segments = [collector.collect(40, "teacher", None) for _ in range(2)]
    venv.close()
    reference = RecurrentPPO.load(recurrent_zip, device="cpu").policy.eval()
    zeros = torch.zeros(reference.lstm_hidden_state_shape[0], n_envs, reference.lstm_hidden_state_shape[2])
    state = RNNStates((zeros, zeros), (zeros, zeros))
    starts = torch.ones(n_envs)
    n_finals = 0
    with torch.no_grad():
        for k, segment in enumerate(segments):
            steps = segment.shape[0]
            for t in range(steps + 1):
                dist, _ = reference.get_distribution(segment.obs[t], state.pi, starts)
                values = reference.predict_values(segment.obs[t], state.vf, starts).squeeze(-1)
                torch.testing.assert_close(segment.teacher.logits[t], dist.distribution.logits.log_softmax(-1))
                assert segment.teacher_values is not None
                torch.testing.assert_close(segment.teacher_values[t], values)
                if t == steps:
                    break  # the next segment starts from this observation with this state
                _, _, _, state = reference.forward(segment.obs[t], state, starts)
                for n in torch.nonzero(segment.episode_ends[t]).flatten().tolist():
                    i = int((segment.final_index == t * n_envs + n).nonzero())
                    own = RNNStates(tuple(s[:, n : n + 1] for s in state.pi), tuple(s[:, n : n + 1] for s in state.vf))
                    final = segment.final_obs[i : i + 1]
                    dist, _ = reference.get_distribution(final, own.pi, torch.zeros(1))
                    torch.testing.assert_close(
                        segment.teacher_final.logits[i], dist.distribution.logits[0].log_softmax(-1)
                    )
                    assert segment.teacher_final_values is not None
                    torch.testing.assert_close(
                        segment.teacher_final_values[i], reference.predict_values(final, own.vf, torch.zeros(1))[0, 0]
                    )
                    n_finals += 1
                starts = segment.episode_ends[t].float()
            if k == 0:
                torch.testing.assert_close(segments[1].teacher.logits[0], segment.teacher.logits[steps])
    assert n_finals == sum(len(s.final_index) for s in segments) > 0


def test_evaluate_carries_the_state_like_sb3(recurrent_zip: Path) -> None:
    venv = make_env("CartPole-v1", 1, 0)
    teacher = load_teacher(read_checkpoint(recurrent_zip), venv.observation_space, venv.action_space, CPU)
    ours = evaluate(teacher, lambda n: make_env("CartPole-v1", n, 7), 6, CPU)
    model = RecurrentPPO.load(recurrent_zip, device="cpu")
    theirs, _ = evaluate_policy(
        model, make_env("CartPole-v1", 6, 7), 6, deterministic=True, return_episode_rewards=True
    )
    assert sorted(ours.returns) == sorted(theirs)  # type: ignore[arg-type]


def test_recurrent_teacher_distils_into_a_ppo_student(cli: CLI, tmp_path: Path, recurrent_zip: Path) -> None:
    result = cli("run", "--teacher", recurrent_zip, "--steps", "8192", "--out", tmp_path / "run", "--json")
    assert result.code == 0, result.stderr
    summary = result.json()
    assert summary["teacher_algo"] == "RecurrentPPO"
    assert summary["kl_end"] <= 0.5 * summary["kl_start"], summary
    student = PPO.load(summary["student_path"], device="cpu")  # feed-forward: no state to pass to predict
    obs = gym.make("CartPole-v1").observation_space.sample()
    action, state = student.predict(obs, deterministic=True)
    assert state is None and int(action) in (0, 1)
    # distill eval: the student against the recurrent teacher, and the recurrent model evaluated by itself.
    report = cli("eval", summary["student_path"], "--teacher", recurrent_zip, "--episodes", "4", "--json")
    assert report.code == 0, report.stderr
    assert report.json()["kl_teacher_student"] <= 0.5 * summary["kl_start"]
    alone = cli("eval", recurrent_zip, "--env", "CartPole-v1", "--episodes", "4", "--json")
    assert alone.code == 0, alone.stderr
    assert alone.json()["return_mean"] > 0


# --- MaskablePPO ----------------------------------------------------------------------------------------


def test_masked_distributions_stay_finite() -> None:
    logits = torch.randn(5, 4, requires_grad=True)
    masks = torch.tensor([[1, 0, 1, 0]] * 4 + [[0, 0, 0, 1]], dtype=torch.bool)
    teacher = masked(Categorical.from_logits(torch.randn(5, 4) * 30, log_prob_floor=-20.0), masks)
    student = masked(Categorical.from_logits(logits), masks)
    assert torch.equal(teacher.probs[~masks], torch.zeros(int((~masks).sum())))
    torch.testing.assert_close(student.probs.sum(-1), torch.ones(5))
    loss = teacher.cross_entropy(student) + student.cross_entropy(teacher) + teacher.kl(student) + student.entropy()
    loss.sum().backward()
    assert torch.isfinite(loss).all() and logits.grad is not None and torch.isfinite(logits.grad).all()
    assert float(logits.grad[~masks].abs().max()) < 1e-6  # masked actions teach nothing (renormalised away)
    assert (student.sample()[masks.sum(-1) == 1] == 3).all() and (student.mode()[:4] % 2 == 0).all()


def _masked_probs(policy: torch.nn.Module, obs: np.ndarray, masks: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        dist = policy.get_distribution(torch.as_tensor(obs), action_masks=masks)  # type: ignore[operator]
    return dist.distribution.probs  # type: ignore[no-any-return]


def test_maskable_teacher_distils_into_a_maskable_student(cli: CLI, tmp_path: Path, maskable_zip: Path) -> None:
    result = cli("run", "--teacher", maskable_zip, "--env", MASKED_ENV, "--steps", "8192", "--out", tmp_path, "--json")
    assert result.code == 0, result.stderr
    summary = result.json()
    assert summary["teacher_algo"] == "MaskablePPO"
    assert summary["kl_end"] <= 0.5 * summary["kl_start"], summary
    student = MaskablePPO.load(summary["student_path"], device="cpu")
    teacher = MaskablePPO.load(maskable_zip, device="cpu")
    # Every state, each with a fresh random mask as the env draws them.
    env = InvalidActionEnvDiscrete(dim=6, n_invalid_actions=3)
    rng = np.random.default_rng(0)
    obs = np.repeat(np.arange(6), 20)
    masks = np.ones((len(obs), 6), dtype=bool)
    for row, state in enumerate(obs):
        masks[row, rng.choice([a for a in range(6) if a != state], 3, replace=False)] = False
    student_probs = _masked_probs(student.policy, obs, masks)
    teacher_probs = _masked_probs(teacher.policy, obs, masks)
    assert float(student_probs[~torch.as_tensor(masks)].max()) == 0.0
    kl = (teacher_probs * (teacher_probs.clamp_min(1e-12).log() - student_probs.clamp_min(1e-12).log())).sum(-1)
    assert float(kl.mean()) <= 0.5 * summary["kl_start"], float(kl.mean())
    for row in range(0, len(obs), 7):
        action, _ = student.predict(obs[row], action_masks=masks[row], deterministic=False)
        assert masks[row, int(action)] and env.action_space.contains(int(action))
    # The student at deployment, through distill eval: masks honoured, close to the teacher.
    report = cli("eval", summary["student_path"], "--teacher", maskable_zip, "--env", MASKED_ENV, "--json")
    assert report.code == 0, report.stderr
    assert report.json()["kl_teacher_student"] <= 0.5 * summary["kl_start"]


def test_maskable_teacher_without_masks_is_one_line(cli: CLI, tmp_path: Path) -> None:
    model = MaskablePPO("MlpPolicy", "CartPole-v1", seed=0, device="cpu")
    path = tmp_path / "maskable-CartPole-v1.zip"
    model.save(path)
    teacher = load_teacher(read_checkpoint(path), model.observation_space, model.action_space, CPU)
    assert teacher.family.masked and teacher.has_value
    result = cli("run", "--teacher", path, "--steps", "512", "--out", tmp_path / "run")
    assert result.code != 0
    assert "action_masks()" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "run").exists()


def test_maskable_multidiscrete_teacher_distils(cli: CLI, tmp_path: Path) -> None:
    model = MaskablePPO("MlpPolicy", gym.make(MASKED_MULTI_ENV), seed=0, device="cpu")
    _confident(model.policy.action_net, 1.0)
    model.save(tmp_path / "teacher.zip")
    # on-policy-distill: the default method needs longer on this task with or without masks (a plain PPO teacher
    # there gives the same numbers as a MaskablePPO one whose masks are all valid); the point here is the masks.
    result = cli(
        "run", "--teacher", tmp_path / "teacher.zip", "--env", MASKED_MULTI_ENV, "--method", "on-policy-distill",
        "--steps", "8192", "--out", tmp_path / "run", "--json",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    summary = result.json()
    assert summary["kl_end"] <= 0.5 * summary["kl_start"], summary
    student = MaskablePPO.load(summary["student_path"], device="cpu")
    env = InvalidActionEnvMultiDiscrete(dims=[3, 4], n_invalid_actions=3)
    obs, _ = env.reset(seed=0)
    for _ in range(50):
        mask = np.asarray(env.action_masks())
        action, _ = student.predict(obs, action_masks=mask)
        assert mask[[int(action[0]), 3 + int(action[1])]].all()
        obs, *_ = env.step(action)


def test_maskable_multibinary_teacher_is_refused_in_one_line(cli: CLI, tmp_path: Path) -> None:
    MaskablePPO("MlpPolicy", gym.make(MASKED_BITS_ENV), seed=0, device="cpu").save(tmp_path / "teacher.zip")
    result = cli("run", "--teacher", tmp_path / "teacher.zip", "--env", MASKED_BITS_ENV, "--out", tmp_path / "run")
    assert result.code != 0 and "MultiBinary" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
