"""One Eq. 1 for everything: ``update()`` (distill run) and ``segment_surrogate()`` (the studies, the exact tests)
build their inputs in one place, so their gradients agree; and each record's needs follow from its terms."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from distillcli.distributions import Categorical
from distillcli.envs import make_env
from distillcli.methods import METHODS, Method
from distillcli.objectives import ObjectiveOptions, Terms
from distillcli.rollout import Collector
from distillcli.sb3.checkpoint import read_checkpoint
from distillcli.sb3.student import Student, StudentNet
from distillcli.sb3.teacher import load_teacher
from distillcli.trainer import UpdateOptions, segment_surrogate, segment_targets, update


class _Recorder:
    """An optimiser that only records the gradient it was asked to apply."""

    def __init__(self, flat: torch.nn.Parameter) -> None:
        self.flat = flat
        self.gradients: list[torch.Tensor] = []

    def zero_grad(self, set_to_none: bool = False) -> None:
        assert self.flat.grad is not None
        self.flat.grad.zero_()

    def step(self) -> None:
        assert self.flat.grad is not None
        self.gradients.append(self.flat.grad.clone())


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_update_at_one_epoch_and_full_batch_is_segment_surrogates_gradient(method: Method, teacher_zip: Path) -> None:
    torch.manual_seed(0)
    venv = make_env("CartPole-v1", 4, seed=0)
    teacher = load_teacher(read_checkpoint(teacher_zip), venv.observation_space, venv.action_space, torch.device("cpu"))
    student = Student.build(
        venv, StudentNet([16, 16]), torch.nn.Tanh, learning_rate=1e-3, n_steps=16, minibatch_size=64, epochs=1,
        gamma=0.99, gae_lambda=0.5, device=torch.device("cpu"), seed=0,
    )  # fmt: skip
    collector = Collector(venv, teacher, torch.device("cpu"))
    rollout = collector.collect(16, method.control, student, teacher_share=0.5)
    options = ObjectiveOptions()
    settings = UpdateOptions(epochs=1, minibatch_size=10**6, max_grad_norm=1e9)
    (flat,) = student.parameters

    recorder = _Recorder(flat)
    update(method, rollout, student, student.parameters, recorder, options, settings)

    flat.grad.zero_()  # type: ignore[union-attr]
    targets = segment_targets(method, rollout, student, options, settings)
    steps, n = rollout.shape
    dist, values = student(rollout.obs[:steps].reshape(steps * n, -1))
    assert values is not None
    total = segment_surrogate(method, rollout, targets, dist, values, options, settings.value_coef)
    total.mean().backward()  # type: ignore[no-untyped-call]
    venv.close()

    (from_update,) = recorder.gradients
    assert from_update.abs().sum() > 0
    torch.testing.assert_close(from_update, flat.grad, rtol=1e-5, atol=1e-7)


def _probe_terms(env_reward: float, teacher_values: torch.Tensor | None) -> Terms:
    """Terms of a 3-step batch whose env reward and teacher value are chosen by the test."""
    logits = torch.log_softmax(torch.tensor([[0.2, -0.1], [0.0, 0.3], [1.0, -1.0]]), -1)
    student, teacher = Categorical(logits), Categorical(logits.flip(-1))
    zeros = torch.zeros(3)

    def terms(nxt: Terms | None) -> Terms:
        return Terms(
            student=student, teacher=teacher, actions=torch.tensor([0, 1, 0]),
            env_rewards=torch.full((3,), env_reward), log_ratio=zeros, student_values=zeros,
            teacher_values=teacher_values, options=ObjectiveOptions(), next=nxt,
            ended=torch.zeros(3, dtype=torch.bool), next_action_known=torch.ones(3, dtype=torch.bool),
        )  # fmt: skip

    return terms(terms(None))


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_each_records_needs_follow_from_what_its_terms_read(method: Method) -> None:
    """uses_env_reward and needs_teacher_value are derived from the terms; check them against what the term
    functions actually read: a NaN env reward shows in their output, a missing teacher value raises."""
    values = torch.tensor([1.0, 2.0, 3.0])
    for term in method.terms:
        assert all(math.isfinite(v) for v in term(_probe_terms(0.0, values)).tolist())
        reads_reward = not all(math.isfinite(v) for v in term(_probe_terms(math.nan, values)).tolist())
        assert term.env_reward == reads_reward, term.formula
        try:
            term(_probe_terms(0.0, None))
            reads_value = False
        except ValueError:
            reads_value = True
        assert term.teacher_value == reads_value, term.formula
    assert method.uses_env_reward == any(t.env_reward for t in method.terms)
    assert method.needs_teacher_value == (
        method.bootstrap == "teacher-value" or any(t.teacher_value for t in method.terms)
    )
