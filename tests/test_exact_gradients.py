"""Eq. 1 checked exactly: each true-gradient method's expected update equals autograd's gradient of its
Table 1 objective on an MDP whose trajectories are enumerated; on-policy distillation is not a gradient
field (Theorem 1); and the trainer's sampled estimator converges to the exact update."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
import torch
from torch import Tensor

from distillcli.methods import METHODS, get_method
from distillcli.objectives import ObjectiveOptions
from distillcli.rollout import Rollout
from distillcli.studies.exact import (
    Enumeration,
    TabularMDP,
    enumerate_trajectories,
    expected_update,
    per_trajectory_surrogate,
    update_jacobian,
)
from distillcli.trainer import UpdateOptions

# Exact comparisons to 1e-6 need float64; set it for this module only (restored below and after each test).
_previous_dtype = torch.get_default_dtype()
torch.set_default_dtype(torch.float64)

N_STATES, N_ACTIONS, HORIZON = 3, 3, 3
MDP = TabularMDP.random(N_STATES, N_ACTIONS, HORIZON, seed=0)
_gen = torch.Generator().manual_seed(1)
TEACHER = 2.0 * torch.randn(N_STATES, N_ACTIONS, generator=_gen, dtype=torch.float64)
STUDENT = torch.randn(N_STATES, N_ACTIONS, generator=_gen, dtype=torch.float64)
TEACHER_VALUES = torch.randn(N_STATES, generator=_gen, dtype=torch.float64)
CRITIC = torch.randn(N_STATES, generator=_gen, dtype=torch.float64)
ENUM = enumerate_trajectories(MDP, TEACHER, TEACHER_VALUES)
EXACT = UpdateOptions(gae_lambda=1.0, baseline="none", epochs=1, episode_ends="absorb")
torch.set_default_dtype(_previous_dtype)


@pytest.fixture(autouse=True)
def _float64() -> Iterator[None]:
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(_previous_dtype)


LAMBDA_R = 0.7


def _options(offset: str = "min", direction: str = "teacher-student") -> ObjectiveOptions:
    return ObjectiveOptions(gamma=1.0, reward_weight=LAMBDA_R, loss_offset=offset, kl_direction=direction)  # type: ignore[arg-type]


def _expectation(enum: Enumeration, logits: Tensor, per_trajectory: Tensor) -> Tensor:
    return (enum.log_probability(MDP, logits).exp() * per_trajectory).sum()


def _log_softmax(table: Tensor) -> Tensor:
    return torch.log_softmax(table, -1)


# Each method's Table 1 objective, written independently of distillcli.objectives, as a function of
# (student logits, loss offset); the expectation is over the method's control policy.
def _cross_entropy_per_state(theta: Tensor, offset: str) -> Tensor:
    teacher_p = _log_softmax(TEACHER).exp()
    value = -(teacher_p * _log_softmax(theta)).sum(-1)
    return value + (teacher_p * _log_softmax(TEACHER)).sum(-1) if offset == "min" else value


def _neg_teacher_log_prob(offset: str) -> Tensor:
    log_pi = _log_softmax(TEACHER)
    return -log_pi + log_pi.max(-1, keepdim=True).values if offset == "min" else -log_pi


def _objective(name: str, theta: Tensor, offset: str) -> Tensor:
    s, a = ENUM.states, ENUM.actions
    if name == "teacher-distill":
        return _expectation(ENUM, TEACHER, _cross_entropy_per_state(theta, "none")[s].sum(0))
    if name == "bc":
        labels = TEACHER.argmax(-1)
        nll = -_log_softmax(theta)[torch.arange(N_STATES), labels]
        return _expectation(ENUM, TEACHER, nll[s].sum(0))
    per_step: dict[str, Callable[[], Tensor]] = {
        "entropy-regularised": lambda: _neg_teacher_log_prob(offset)[s, a],
        "expected-entropy": lambda: _neg_teacher_log_prob(offset)[s, a],
        "n-distill": lambda: _cross_entropy_per_state(theta, offset)[s],
        "teacher-v-reward": lambda: -MDP.rewards[s, a],
        "rl": lambda: -LAMBDA_R * MDP.rewards[s, a],
        "kl-regularised": lambda: _log_softmax(theta)[s, a] - _log_softmax(TEACHER)[s, a],
        "n-distill+r": lambda: _cross_entropy_per_state(theta, offset)[s] - LAMBDA_R * MDP.rewards[s, a],
        "expected-entropy+r": lambda: _neg_teacher_log_prob(offset)[s, a] - LAMBDA_R * MDP.rewards[s, a],
    }
    return _expectation(ENUM, theta, per_step[name]().sum(0))


TRUE_GRADIENT_METHODS = [m.name for m in METHODS if m.true_gradient]


def test_every_true_gradient_method_has_an_objective_here() -> None:
    assert sorted(TRUE_GRADIENT_METHODS) == sorted(
        [
            "teacher-distill",
            "entropy-regularised",
            "n-distill",
            "expected-entropy",
            "teacher-v-reward",
            "rl",
            "n-distill+r",
            "expected-entropy+r",
            "kl-regularised",
            "bc",
        ]
    )


@pytest.mark.parametrize("offset", ["min", "none"])
@pytest.mark.parametrize("name", TRUE_GRADIENT_METHODS)
def test_expected_update_is_the_gradient_of_the_objective(name: str, offset: str) -> None:
    method = get_method(name)
    update = expected_update(method, MDP, ENUM, STUDENT, TEACHER, _options(offset), EXACT)
    theta = STUDENT.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(_objective(name, theta, offset), theta)
    assert gradient.abs().max() > 1e-3  # the check is not vacuous
    torch.testing.assert_close(update, gradient, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["n-distill", "expected-entropy", "teacher-v-reward"])
def test_a_critic_baseline_leaves_the_expected_update_unchanged(name: str) -> None:
    method = get_method(name)
    plain = expected_update(method, MDP, ENUM, STUDENT, TEACHER, _options(), EXACT)
    critic = UpdateOptions(gae_lambda=1.0, baseline="critic", episode_ends="absorb")
    with_baseline = expected_update(method, MDP, ENUM, STUDENT, TEACHER, _options(), critic, CRITIC)
    torch.testing.assert_close(with_baseline, plain, atol=1e-9, rtol=0)


def test_reverse_direction_n_distill_is_still_a_gradient() -> None:
    # Theorem 2 holds for any per-state loss, including Hx(pi_th || pi).
    method = get_method("n-distill")
    options = _options(direction="student-teacher")
    update = expected_update(method, MDP, ENUM, STUDENT, TEACHER, options, EXACT)
    log_pi = _log_softmax(TEACHER)

    def objective(theta: Tensor) -> Tensor:
        per_state = -(_log_softmax(theta).exp() * log_pi).sum(-1) + log_pi.max(-1).values
        return _expectation(ENUM, theta, per_state[ENUM.states].sum(0))

    theta = STUDENT.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(objective(theta), theta)
    torch.testing.assert_close(update, gradient, atol=1e-6, rtol=0)


def _jacobian(name: str) -> Tensor:
    return update_jacobian(get_method(name), MDP, ENUM, STUDENT, TEACHER, _options(), EXACT)


def test_on_policy_distill_is_not_a_gradient_field() -> None:
    # Theorem 1: a gradient field has a symmetric Jacobian (a Hessian); on-policy distillation's does not.
    jacobian = _jacobian("on-policy-distill")
    asymmetry = (jacobian - jacobian.T).abs().max()
    assert asymmetry > 1e-2 * jacobian.abs().max()


@pytest.mark.parametrize("name", ["n-distill", "expected-entropy"])
def test_true_gradient_methods_have_symmetric_jacobians(name: str) -> None:
    jacobian = _jacobian(name)
    torch.testing.assert_close(jacobian, jacobian.T, atol=1e-5, rtol=0)


def _sampled_rollout(n: int, seed: int) -> Rollout:
    """n trajectories drawn from the student: columns of the enumeration drawn with probability p_th(tau)."""
    weights = ENUM.log_probability(MDP, STUDENT).exp()
    columns = torch.multinomial(weights, n, replacement=True, generator=torch.Generator().manual_seed(seed))
    r = ENUM.rollout
    return replace(
        r,
        obs=r.obs[:, columns],
        actions=r.actions[:, columns],
        env_rewards=r.env_rewards[:, columns],
        terminated=r.terminated[:, columns],
        truncated=r.truncated[:, columns],
        teacher=r.teacher[:, columns],
        teacher_values=None if r.teacher_values is None else r.teacher_values[:, columns],
        final_obs=r.final_obs[columns],
        final_index=(HORIZON - 1) * n + torch.arange(n),
        teacher_final=r.teacher_final[columns],
        teacher_final_values=None if r.teacher_final_values is None else r.teacher_final_values[columns],
    )


@pytest.mark.parametrize("name", ["n-distill", "expected-entropy"])
def test_sampled_estimator_converges_to_the_exact_update(name: str) -> None:
    method = get_method(name)
    exact = expected_update(method, MDP, ENUM, STUDENT, TEACHER, _options(), EXACT)
    errors = []
    for n in (200, 20_000):
        theta = STUDENT.clone().requires_grad_(True)
        surrogate = per_trajectory_surrogate(method, _sampled_rollout(n, seed=n), theta, _options(), EXACT)
        (estimate,) = torch.autograd.grad(surrogate.mean(), theta)
        errors.append(float((estimate - exact).norm() / exact.norm()))
    assert errors[1] < 0.05
    assert errors[1] < errors[0]
