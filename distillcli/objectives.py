"""The paper's per-state losses ``l(s_t)`` and pseudo-rewards ``rhat_i`` as pure tensor functions.

Every function takes :class:`Terms`, a batch of steps (any leading shape) seen by the trainer, and returns one
value per step. Losses are differentiated directly (the student side of ``Terms`` carries gradients there);
pseudo-rewards only enter through the score-function term of Eq. 1 and are always computed without gradient.
The same functions serve ``distill run`` (neural students) and the exact tabular checks in the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from distillcli.choices import KLDirection, LossOffset

if TYPE_CHECKING:  # the functions only call tensor methods: `distill methods` reads Table 1 without torch
    from torch import Tensor

    from distillcli.distributions import ActionDist


@dataclass(frozen=True)
class ObjectiveOptions:
    """Knobs the losses and rewards read (the method record says which ones matter)."""

    kl_direction: KLDirection = "teacher-student"  # Hx(pi || pi_th): mass-covering; the reverse is mode-seeking
    reward_weight: float = 1.0  # lambda_r in the +R variants: rhat <- lambda_r * r + rhat
    gamma: float = 0.99  # discount of the pseudo-return (and of teacher-v-reward's shaping)
    proximal_lambda: float = 1.0  # weight of the distillation term in Proximal Policy Distillation
    clip_range: float = 0.2  # PPO/PPD clipping of the probability ratio
    # Pseudo-rewards built from a per-state loss subtract that state's minimum achievable loss (the teacher's
    # own entropy for Hx(pi || pi_th)). A trajectory sum of cross-entropies is otherwise smallest for the
    # shortest episode, so a student that can end episodes is paid to fail; with the offset the objective's
    # minimum (zero) is the teacher itself. "none" is Table 1 verbatim. Loss gradients are unchanged.
    loss_offset: LossOffset = "min"


@dataclass(frozen=True)
class Terms:
    """Everything a per-state loss or a pseudo-reward may look at, for a batch of steps ``t``.

    ``next`` holds the same quantities for ``s_{t+1}`` (rewards of n-distill and expected-entropy are the next
    state's term); ``ended`` marks steps after which the episode terminated, whose next-state terms are zero.
    """

    student: ActionDist  # pi_th(s_t)
    teacher: ActionDist  # pi(s_t), never differentiated
    actions: Tensor  # a_t, drawn from the control policy q
    env_rewards: Tensor  # r_t
    log_ratio: Tensor  # log pi_th(a_t|s_t) - log pi_th_old(a_t|s_t): 0 (with gradient) in Eq. 1's first step
    student_values: Tensor  # V_th(s_t)
    teacher_values: Tensor | None  # V_pi(s_t), where the teacher has a value function
    options: ObjectiveOptions
    next: Terms | None = None
    ended: Tensor | None = None  # s_{t+1} is absorbing
    next_action_known: Tensor | None = None  # a_{t+1} was taken in the same episode (else use its expectation)


def _alive(terms: Terms) -> Tensor:
    assert terms.ended is not None, "rewards need next-state terms"
    return 1.0 - terms.ended.float()


def _next(terms: Terms) -> Terms:
    assert terms.next is not None, "rewards need next-state terms"
    return terms.next


def _require_teacher_values(terms: Terms) -> Tensor:
    if terms.teacher_values is None:
        raise ValueError("this method needs a teacher value function")
    return terms.teacher_values


@dataclass(frozen=True)
class Term:
    """A loss or reward function together with the formula it implements (shown by ``distill methods``).

    ``minimum`` is, for a per-state loss, its smallest value over all student policies at that state
    (reached by copying the teacher); pseudo-rewards built from the loss subtract it (``--loss-offset``).
    ``env_reward`` and ``teacher_value`` say what the function reads besides the two policies: a method's needs
    (and so how the trainer treats episode ends) follow from its terms.
    """

    formula: str
    fn: Callable[[Terms], Tensor]
    minimum: Callable[[Terms], Tensor] | None = None
    env_reward: bool = False  # reads r_t
    teacher_value: bool = False  # reads V_pi

    def __call__(self, terms: Terms) -> Tensor:
        return self.fn(terms)

    def offset(self, terms: Terms) -> Tensor:
        """The loss minus its per-state minimum where ``--loss-offset min`` asks for it."""
        value = self.fn(terms)
        if self.minimum is None or terms.options.loss_offset == "none":
            return value
        return value - self.minimum(terms)


# --- per-state losses l(s_t) ----------------------------------------------------------------------------


def _distill_cross_entropy(terms: Terms) -> Tensor:
    if terms.options.kl_direction == "teacher-student":
        return terms.teacher.cross_entropy(terms.student)
    return terms.student.cross_entropy(terms.teacher)


def _distill_cross_entropy_minimum(terms: Terms) -> Tensor:
    # min over pi_th of Hx(pi || pi_th) is H(pi); of Hx(pi_th || pi) it is -max_a log pi(a).
    if terms.options.kl_direction == "teacher-student":
        return terms.teacher.entropy()
    return -terms.teacher.max_log_prob()


def _mode_seeking_minimum(terms: Terms) -> Tensor:
    return -terms.teacher.max_log_prob()


teacher_cross_entropy = Term("Hx(pi(s_t) || pi_th(s_t))", _distill_cross_entropy, _distill_cross_entropy_minimum)
"""Table 1's distillation loss; ``--kl-direction student-teacher`` makes it ``Hx(pi_th || pi)``."""

student_cross_entropy = Term(
    "Hx(pi_th(s_t) || pi(s_t))", lambda t: t.student.cross_entropy(t.teacher), _mode_seeking_minimum
)
"""Expected entropy: the exact expectation over a_t ~ pi_th of -log pi(a_t|s_t)."""


def _value_conditioned(terms: Terms) -> Tensor:
    # Prop. 2: distil only where the teacher's value beats the student's own estimate.
    teacher_better = (_require_teacher_values(terms) - terms.student_values.detach()) > 0
    return _distill_cross_entropy(terms) * teacher_better.float()


value_conditioned_cross_entropy = Term(
    "Hx(pi(s_t) || pi_th(s_t)) * [V_pi(s_t) > V_th(s_t)]", _value_conditioned, teacher_value=True
)


def _proximal(terms: Terms) -> Tensor:
    # Spigler (2024): lambda * max(ratio, 1 - eps) * KL(pi || pi_th) on the student's own states.
    weight = terms.log_ratio.exp().clamp(min=1.0 - terms.options.clip_range)
    return terms.options.proximal_lambda * weight * terms.teacher.kl(terms.student)


proximal_kl = Term("lambda * max(ratio, 1 - eps) * KL(pi(s_t) || pi_th(s_t))", _proximal)

hard_label_nll = Term("-log pi_th(argmax_a pi(a|s_t) | s_t)", lambda t: -t.student.log_prob(t.teacher.mode()))
"""Behaviour cloning's hard labels: the teacher's chosen (most likely) action."""


# --- pseudo-rewards rhat_i --------------------------------------------------------------------------------


def _next_state_loss_negated(loss: Term) -> Term:
    # Theorem 2: rhat_i = -l(s_{i+1}) turns any on-policy per-state loss into the gradient of E_pith[sum l].
    return Term(
        f"-{loss.formula.replace('s_t', 's_{i+1}')}",
        lambda t: -_alive(t) * loss.offset(_next(t)),
        env_reward=loss.env_reward,
        teacher_value=loss.teacher_value,
    )


def _teacher_log_prob(terms: Terms) -> Tensor:
    # log pi(a_i|s_i), minus max_a log pi(a|s_i) under --loss-offset min (zero when acting as the teacher would).
    value = terms.teacher.log_prob(terms.actions)
    return value if terms.options.loss_offset == "none" else value - terms.teacher.max_log_prob()


def _expected_entropy_reward(terms: Terms) -> Tensor:
    nxt = _next(terms)
    assert terms.next_action_known is not None
    sampled = _teacher_log_prob(nxt)
    # Where a_{i+1} was never drawn (end of a rollout segment, time-limit truncation) use its exact
    # expectation under pi_th, which has the same conditional mean.
    expected = -student_cross_entropy.offset(nxt)
    return _alive(terms) * sampled.where(terms.next_action_known, expected)


def _teacher_value_shaping(terms: Terms) -> Tensor:
    nxt = _next(terms)
    gamma = terms.options.gamma
    next_value = _require_teacher_values(nxt) * _alive(terms)
    return terms.env_rewards + gamma * next_value - _require_teacher_values(terms)


def with_env_reward(reward: Term) -> Term:
    """The paper's ``+R`` variants: ``rhat_i <- lambda_r * r_i + rhat_i``."""
    return Term(
        f"lambda_r * r_i + {reward.formula}",
        lambda t: t.options.reward_weight * t.env_rewards + reward(t),
        env_reward=True,
        teacher_value=reward.teacher_value,
    )


env_reward = Term("lambda_r * r_i", lambda t: t.options.reward_weight * t.env_rewards, env_reward=True)
teacher_log_prob = Term("log pi(a_i | s_i)", _teacher_log_prob)
next_cross_entropy = _next_state_loss_negated(teacher_cross_entropy)
next_teacher_log_prob = Term("log pi(a_{i+1} | s_{i+1})", _expected_entropy_reward)
teacher_value_shaping = Term(
    "r_i + gamma V_pi(s_{i+1}) - V_pi(s_i)", _teacher_value_shaping, env_reward=True, teacher_value=True
)
log_ratio_teacher_student = Term(
    "log pi(a_i | s_i) - log pi_th(a_i | s_i)",
    lambda t: t.teacher.log_prob(t.actions) - t.student.log_prob(t.actions),
)
