"""The loop's fast paths compute what the plain ones do: the segment's teacher forward done once afterwards, the
student's actor-only sampler, and Gumbel-max sampling."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import pytest
import torch

from distillcli.distributions import Categorical, DiagGaussian, gumbel_max
from distillcli.envs import make_env
from distillcli.rollout import Collector
from distillcli.students import Student
from distillcli.teachers import load_teacher, read_checkpoint


def _student(env_id: str, seed: int = 0) -> Student:
    venv = make_env(env_id, 4, seed)
    return Student.build(
        venv,
        [16, 16],
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
