"""The loop's fast paths compute what the plain ones do: the segment's teacher forward done once afterwards, the
actor-only teacher and student, Gumbel-max sampling, the flat-buffer Adam, and envs made without rendering."""

from __future__ import annotations

import copy
import io
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

from distillcli.distributions import Categorical, DiagGaussian, gumbel_max
from distillcli.envs import EnvStack, make_env
from distillcli.rollout import Collector
from distillcli.sb3.checkpoint import read_checkpoint
from distillcli.sb3.policies import actor_critic_outputs
from distillcli.sb3.student import Student, StudentNet
from distillcli.sb3.teacher import load_teacher


def _student(env_id: str, seed: int = 0) -> Student:
    venv = make_env(env_id, 4, seed)
    return Student.build(
        venv,
        StudentNet([16, 16]),
        torch.nn.Tanh,
        learning_rate=1e-3,
        n_steps=16,
        minibatch_size=64,
        epochs=1,
        gamma=0.99,
        gae_lambda=0.5,
        device=torch.device("cpu"),
        seed=seed,
    )


def test_batched_teacher_forward_equals_the_per_step_one(teacher_zip: Path) -> None:
    env = gym.make("CartPole-v1")
    teacher = load_teacher(read_checkpoint(teacher_zip), env.observation_space, env.action_space, torch.device("cpu"))
    student = _student("CartPole-v1")
    batched = Collector(make_env("CartPole-v1", 4, 3), teacher, torch.device("cpu"))
    rollout = batched.collect(200, "student", student)  # long enough for episodes to end inside the segment
    assert rollout.final_obs.shape[0] > 0
    # What the per-step path computes: the teacher on each row of states and on each episode's final state.
    expected, values = teacher(rollout.obs.reshape(-1, 4))
    assert isinstance(rollout.teacher, Categorical) and isinstance(expected, Categorical)
    torch.testing.assert_close(rollout.teacher.logits, expected.logits.reshape(201, 4, 2))
    assert rollout.teacher_values is not None and values is not None
    torch.testing.assert_close(rollout.teacher_values, values.reshape(201, 4))
    final, final_values = teacher(rollout.final_obs)
    assert isinstance(rollout.teacher_final, Categorical) and isinstance(final, Categorical)
    torch.testing.assert_close(rollout.teacher_final.logits, final.logits)
    assert rollout.teacher_final_values is not None and final_values is not None
    torch.testing.assert_close(rollout.teacher_final_values, final_values)
    # Teacher control needs the teacher at every step; its rows are the same function of the states.
    per_step = Collector(make_env("CartPole-v1", 4, 3), teacher, torch.device("cpu")).collect(50, "teacher", None)
    again, _ = teacher(per_step.obs.reshape(-1, 4))
    assert isinstance(per_step.teacher, Categorical) and isinstance(again, Categorical)
    torch.testing.assert_close(per_step.teacher.logits, again.logits.reshape(51, 4, 2))


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_student_act_samples_its_own_distribution(env_id: str) -> None:
    torch.manual_seed(0)
    student = _student(env_id)
    with torch.no_grad():
        student.policy.action_net.weight.mul_(50.0)  # a state-dependent distribution, far from uniform
        obs = torch.as_tensor(make_env(env_id, 1, 0).observation_space.sample()[None]).repeat(20_000, 1)
        dist, _ = student(obs)
        samples = student.act(obs)
    if isinstance(dist, Categorical):
        frequency = torch.bincount(samples, minlength=2).float() / len(samples)
        torch.testing.assert_close(frequency, dist.probs[0], atol=0.015, rtol=0)
    else:
        assert isinstance(dist, DiagGaussian)
        torch.testing.assert_close(samples.mean(0), dist.mean[0], atol=0.03, rtol=0)
        torch.testing.assert_close(samples.std(0), dist.log_std[0].exp(), atol=0.03, rtol=0)


def test_gumbel_max_draws_softmax_and_never_a_zero_probability_action() -> None:
    torch.manual_seed(0)
    logits = torch.tensor([[0.0, 1.0, -1.0, -1e9]]).repeat(50_000, 1)
    counts = torch.bincount(gumbel_max(logits), minlength=4).float() / 50_000
    torch.testing.assert_close(counts, torch.softmax(logits[0], -1), atol=0.01, rtol=0)
    assert counts[3] == 0


def test_envs_are_made_without_rendering_unless_asked() -> None:
    # SB3's make_vec_env would default to rgb_array; LunarLander then adds a body per engine firing.
    assert make_env("LunarLander-v3", 2, 0).get_attr("render_mode") == [None, None]
    asked = EnvStack("LunarLander-v3", {"render_mode": "rgb_array"}).make(1, 0)
    assert asked.get_attr("render_mode") == ["rgb_array"]


def test_actor_only_teacher_gives_the_same_distribution(teacher_zip: Path) -> None:
    env = gym.make("CartPole-v1")
    teacher = load_teacher(read_checkpoint(teacher_zip), env.observation_space, env.action_space, torch.device("cpu"))
    obs = torch.as_tensor(make_env("CartPole-v1", 1, 0).observation_space.sample()[None]).repeat(8, 1)
    full, _ = teacher(obs)
    alone = teacher.actor(obs)
    assert isinstance(full, Categorical) and isinstance(alone, Categorical)
    torch.testing.assert_close(alone.logits, full.logits)
    rollout = Collector(make_env("CartPole-v1", 4, 3), teacher, torch.device("cpu"), teacher_values=False).collect(
        20, "student", _student("CartPole-v1")
    )
    assert rollout.teacher_values is None and rollout.teacher_final_values is None


def test_flat_adam_steps_as_torch_adam_and_its_state_round_trips(tmp_path: Path) -> None:
    student = _student("CartPole-v1")
    reference = copy.deepcopy(student.policy)
    adam = torch.optim.Adam(reference.parameters(), lr=1e-3, eps=1e-5)  # SB3's PPO optimiser
    obs = torch.randn(64, 4)
    actions = torch.randint(2, (64,))
    for _ in range(5):
        for policy, optimizer in ((student.policy, student.optimizer), (reference, adam)):
            optimizer.zero_grad()
            values, log_prob, _ = policy.evaluate_actions(obs, actions)
            (values.pow(2).mean() - log_prob.mean()).backward()  # every parameter gets a gradient
            optimizer.step()
    for ours, theirs in zip(student.policy.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs)
    # student.zip carries SB3's per-parameter Adam state: PPO.load opens it, and a resumed run continues it.
    student.save(tmp_path / "student.zip", 320)
    PPO.load(tmp_path / "student.zip", device="cpu")
    with zipfile.ZipFile(tmp_path / "student.zip") as archive:
        saved = torch.load(io.BytesIO(archive.read("policy.optimizer.pth")), weights_only=True)
    for state, expected in zip(saved["state"].values(), adam.state.values(), strict=True):
        torch.testing.assert_close(state["exp_avg_sq"], expected["exp_avg_sq"])
        assert float(state["step"]) == 5
    resumed = _student("CartPole-v1", seed=1)
    resumed.load_optimizer_state(saved)
    torch.testing.assert_close(resumed.optimizer.exp_avg, student.optimizer.exp_avg)
    assert resumed.optimizer.steps == 5


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_student_forward_without_modules_equals_sb3s(env_id: str) -> None:
    student = _student(env_id)
    obs = torch.as_tensor(np.stack([make_env(env_id, 1, 0).observation_space.sample() for _ in range(16)]))
    dist, values = student(obs)
    expected, expected_values = actor_critic_outputs(student.policy, obs)
    for field in ("logits",) if isinstance(dist, Categorical) else ("mean", "log_std"):
        torch.testing.assert_close(getattr(dist, field), getattr(expected, field))
    torch.testing.assert_close(values, expected_values)
    actions = dist.sample()
    sb3_values, sb3_log_prob, _ = student.policy.evaluate_actions(obs, actions)
    torch.testing.assert_close(values, sb3_values.squeeze(-1))
    torch.testing.assert_close(dist.log_prob(actions), sb3_log_prob)
