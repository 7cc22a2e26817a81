"""Table 1 of the paper as data: every distillation method is a (control policy, loss, pseudo-reward) record.

One trainer runs every record (``distillcli.trainer``); it never looks at a method's name. Adding a method is
adding one record here (and, if it is new, one loss or reward in ``distillcli.objectives``) plus its test.
The decision tree of the paper's Figure 1 (``distill recommend``) lives here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from distillcli import objectives as obj
from distillcli.choices import Control, Returns
from distillcli.errors import DistillError, short

CONTROLS: tuple[Control, ...] = get_args(Control)


@dataclass(frozen=True)
class Method:
    """One row of Table 1 (or of the paper's figures, or a peer's method), as Eq. 1's three choices."""

    name: str
    control: Control  # q: who acts while collecting trajectories
    loss: obj.Term | None  # l(s_t): differentiated directly
    reward: obj.Term | None  # rhat_i: enters only through -grad log pi_th(a_t|s_t) * Rhat_t
    objective: str | None  # the real objective whose gradient the update is; None when it is not one
    summary: str
    reference: str
    # How Rhat_t is estimated: the Monte-Carlo pseudo-return (with the --gae-lambda/--baseline options), or a
    # one-step TD target that bootstraps from the student's critic or from the teacher's value function.
    returns: Returns = "monte-carlo"
    bootstrap: Literal["student-critic", "teacher-value"] = "student-critic"
    critic_init: Literal["default", "zero"] = "default"

    @property
    def true_gradient(self) -> bool:
        return self.objective is not None

    @property
    def terms(self) -> tuple[obj.Term, ...]:
        return tuple(term for term in (self.loss, self.reward) if term is not None)

    @property
    def uses_env_reward(self) -> bool:
        """Some term reads the environment's reward (so episode ends are real ends, see ``--episode-ends``)."""
        return any(term.env_reward for term in self.terms)

    @property
    def needs_teacher_value(self) -> bool:
        """Some term, or the TD target, reads V_pi: the teacher must have a value function."""
        return self.bootstrap == "teacher-value" or any(term.teacher_value for term in self.terms)

    @property
    def start_envs(self) -> int | None:
        """Environments at the start of a run (None: all of --n-envs). A pure per-state loss learns from every update,
        so frequent small ones first (8 envs) reach the teacher in fewer env steps; a score-function term needs
        large segments from the start, its estimate is noisy."""
        return 8 if self.reward is None else None

    @property
    def epochs(self) -> int:
        """Default passes over each segment. A pure per-state loss is supervised learning on the segment's states:
        reusing them adds no bias, and CartPole's bc needs half the env steps with 8 passes instead of 2. With a
        score-function term every pass after the first is off-policy (PPO's clip bounds it), so there are 2."""
        return 8 if self.reward is None else 2


_PAPER = "Czarnecki et al. 2019, Table 1"
_FIGS = "Czarnecki et al. 2019, Sec. 5 and Figs. 3-6"

METHODS: tuple[Method, ...] = (
    Method(
        "teacher-distill",
        "teacher",
        obj.teacher_cross_entropy,
        None,
        "E_pi[sum_t Hx(pi(s_t) || pi_th(s_t))]",
        "Supervised cross-entropy on the teacher's own trajectories. Best only when the student will never "
        "leave the teacher's state distribution.",
        _PAPER + " (Rusu et al. 2016)",
    ),
    Method(
        "on-policy-distill",
        "student",
        obj.teacher_cross_entropy,
        None,
        None,
        "Cross-entropy to the teacher on the student's own states. Fast and robust in practice, but not the "
        "gradient of any objective (Thm. 1); converges for tabular students (Prop. 1).",
        _PAPER + " (Parisotto et al. 2016)",
    ),
    Method(
        "entropy-regularised",
        "student",
        None,
        obj.teacher_log_prob,
        "E_pith[sum_t -log pi(a_t|s_t)]",
        "Policy gradient with the teacher's log-probability as reward. Unbiased but high variance: collapses "
        "with large action spaces.",
        _PAPER,
    ),
    Method(
        "n-distill",
        "student",
        obj.teacher_cross_entropy,
        obj.next_cross_entropy,
        "E_pith[sum_t Hx(pi(s_t) || pi_th(s_t))]",
        "On-policy distillation plus the next state's loss as a pseudo-reward (Thm. 2): the true gradient of "
        "the cross-entropy along the student's own trajectories.",
        _PAPER,
    ),
    Method(
        "expected-entropy",
        "student",
        obj.student_cross_entropy,
        obj.next_teacher_log_prob,
        "E_pith[sum_t -log pi(a_t|s_t)]",
        "The paper's proposal (default): entropy-regularised distillation with the same-step term replaced by "
        "its exact expectation. True gradient, low variance, mode-seeking.",
        _PAPER,
    ),
    Method(
        "teacher-v-reward",
        "student",
        None,
        obj.teacher_value_shaping,
        "E_pith[sum_t r_t]",
        "RL on the environment reward shaped by the teacher's value (potential shaping): same optimum as RL, "
        "guided by the teacher. Use with a weak teacher that has a value function.",
        _PAPER,
    ),
    Method(
        "on-policy-distill+r",
        "student",
        obj.teacher_cross_entropy,
        obj.env_reward,
        None,
        "On-policy distillation plus environment reward: can improve beyond the teacher, no guarantee "
        "(it can cycle, paper Fig. 2).",
        _FIGS,
    ),
    Method(
        "n-distill+r",
        "student",
        obj.teacher_cross_entropy,
        obj.with_env_reward(obj.next_cross_entropy),
        "E_pith[sum_t Hx(pi(s_t) || pi_th(s_t)) - lambda_r r_t]",
        "n-distill plus environment reward: a true gradient that can improve beyond the teacher.",
        _FIGS,
    ),
    Method(
        "expected-entropy+r",
        "student",
        obj.student_cross_entropy,
        obj.with_env_reward(obj.next_teacher_log_prob),
        "E_pith[sum_t -log pi(a_t|s_t) - lambda_r r_t]",
        "Expected entropy plus environment reward: the preferred way to improve beyond a strong teacher.",
        _FIGS,
    ),
    Method(
        "+r+v-cond",
        "student",
        obj.value_conditioned_cross_entropy,
        obj.env_reward,
        None,
        "Environment reward plus cross-entropy only where the teacher's value beats the student's critic "
        "(Prop. 2: at convergence at least as good as the teacher). Needs a teacher value function.",
        _FIGS,
    ),
    Method(
        "td+v-teacher",
        "student",
        None,
        obj.env_reward,
        None,
        "Actor-critic on the environment reward whose one-step target bootstraps from the teacher's value: "
        "r_t + gamma V_pi(s_{t+1}) (Prop. 3: at least as good as the teacher).",
        _FIGS,
        returns="td",
        bootstrap="teacher-value",
    ),
    Method(
        "td+v-zero",
        "student",
        None,
        obj.env_reward,
        None,
        "The same one-step actor-critic with the student's own critic started at zero: the no-teacher "
        "control of td+v-teacher.",
        _FIGS,
        returns="td",
        critic_init="zero",
    ),
    Method(
        "rl",
        "student",
        None,
        obj.env_reward,
        "E_pith[sum_t r_t]",
        "No teacher at all: policy gradient (PPO-style actor-critic) on the environment reward. The baseline "
        "of the paper's figures, and RL from scratch for benchmarks; the teacher is only used for metrics.",
        _FIGS,
    ),
    Method(
        "kl-regularised",
        "student",
        None,
        obj.log_ratio_teacher_student,
        "E_pith[sum_t log pi_th(a_t|s_t) - log pi(a_t|s_t)]",
        "Reverse KL between whole trajectories of student and teacher, by policy gradient.",
        _FIGS,
    ),
    Method(
        "proximal",
        "student",
        obj.proximal_kl,
        obj.env_reward,
        None,
        "Proximal Policy Distillation: PPO's clipped surrogate on environment reward plus a clipped KL to the "
        "teacher on the student's states (what sb3-distill offers).",
        "Spigler 2024, Proximal Policy Distillation",
    ),
    Method(
        "bc",
        "teacher",
        obj.hard_label_nll,
        None,
        "E_pi[sum_t -log pi_th(argmax pi(s_t) | s_t)]",
        "Behaviour cloning: hard labels (the teacher's chosen action) on the teacher's trajectories, as the "
        "imitation library does.",
        "Pomerleau 1991; imitation's BC",
    ),
    Method(
        "dagger",
        "mix",
        obj.hard_label_nll,
        None,
        None,
        "DAgger: hard labels on states from a mixture of teacher and student, the teacher's share decaying "
        "(--mix, default 1.0:0.0).",
        "Ross et al. 2011; imitation's DAgger",
    ),
)

_BY_NAME = {m.name: m for m in METHODS}


def method_names() -> list[str]:
    return [m.name for m in METHODS]


def get_method(name: str) -> Method:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise DistillError(f"unknown method {short(name, 60)!r}; valid methods: {', '.join(method_names())}") from None


def describe(method: Method) -> dict[str, object]:
    """The record as plain data, for ``distill methods --json`` and the docs."""
    return {
        "name": method.name,
        "control": method.control,
        "loss": method.loss.formula if method.loss else "0",
        "pseudo_reward": method.reward.formula if method.reward else "0",
        "true_gradient": method.true_gradient,
        "objective": method.objective,
        "needs_teacher_value": method.needs_teacher_value,
        "uses_env_reward": method.uses_env_reward,
        "returns": method.returns if method.reward else None,
        "epochs": method.epochs,
        "start_envs": method.start_envs,
        "summary": method.summary,
        "reference": method.reference,
    }


# --- the paper's Figure 1, for `distill recommend` ---------------------------------------------------------


@dataclass(frozen=True)
class Recommendation:
    preferred: str
    feasible: list[str]
    path: list[str]
    paper: str = ""  # the paper's own choice at this leaf, where the neural study changed ``preferred``
    evidence: tuple[str, ...] = ()  # what distill study found at this leaf (docs/study.md)


STUDY = "docs/study.md"
# What `distill study` found at each leaf of Figure 1 on neural students (docs/study.md, full scale, 5 seeds), and
# the method it prefers there where that differs from the paper's: (preferred or None, evidence).
STUDY_EVIDENCE: dict[str, tuple[str | None, str]] = {
    "teacher-states": (
        None,
        "neural students: teacher control copied as well as student control even on the student's own states "
        f"(LunarLander score 1.00 both, KL 0.002 both; {STUDY}#control-policy-fig-3)",
    ),
    "copy": (
        None,
        "neural students: expected-entropy scored 0.91 +- 0.06 at 8x8 on LunarLander against on-policy-distill's "
        "1.00, and collapsed with 100 no-op copies of each action; level from 32x32 up "
        f"({STUDY}#student-capacity-no-paper-figure, #action-space-fig-4)",
    ),
    "copy-no-guarantee": (
        "on-policy-distill",
        "neural students: on-policy-distill was level with or above expected-entropy and n-distill at every student "
        "size and task, and kept its score with 100 no-op copies of each action, where expected-entropy collapsed "
        f"({STUDY}#student-capacity-no-paper-figure, #action-space-fig-4)",
    ),
    "improve-strong": (
        None,
        "neural students: scale lambda_r (--reward-weight) to the env's rewards: on LunarLander at 1.0 the +r "
        "methods fell to RL-from-scratch level within 50,000 env steps, at 0.01 they ended above a corrupted "
        f"teacher in every seed ({STUDY}#imperfect-teacher-fig-5)",
    ),
    "improve-weak-value": (
        "n-distill+r",
        "neural students: teacher-v-reward was the worst method against every weak LunarLander teacher (-264 +- 243 "
        "against a checkpoint at 50% of training, n-distill+r at lambda_r 0.01: 76.5 +- 47.4); scale lambda_r "
        f"(--reward-weight) to the env's rewards ({STUDY}#imperfect-teacher-fig-5)",
    ),
    "improve-weak": (
        None,
        "neural students: at lambda_r 0.01 both +r methods copied the weak LunarLander teachers, none ended above "
        "an early checkpoint within 50,000 env steps; at 1.0 both fell far below it; scale lambda_r (--reward-weight) "
        f"to the env's rewards ({STUDY}#imperfect-teacher-fig-5)",
    ),
}


def _leaf(key: str, paper: str, feasible: list[str], path: list[str]) -> Recommendation:
    """The paper's answer at a leaf, changed where the neural study found otherwise (and saying so)."""
    changed, evidence = STUDY_EVIDENCE[key]
    if changed is None:
        return Recommendation(paper, feasible, path, evidence=(evidence,))
    options = [changed, *(m for m in feasible if m != changed)]
    return Recommendation(changed, options, path, paper=paper, evidence=(evidence,))


def recommend(
    *,
    outside_teacher_states: bool,
    improve_beyond_teacher: bool,
    need_guarantee: bool,
    teacher_strong: bool,
    teacher_has_value: bool,
) -> Recommendation:
    """Walk the paper's decision tree (Figure 1) with the user's answers; where distill study found otherwise for
    neural students, prefer what it found, and name the paper's choice and the evidence."""
    path: list[str] = []
    if not outside_teacher_states:
        path.append("student is evaluated only on the teacher's states")
        return _leaf("teacher-states", "teacher-distill", ["teacher-distill"], path)
    path.append("student will visit its own states")
    if not improve_beyond_teacher:
        path.append("copy the teacher, no improvement beyond it")
        feasible = ["expected-entropy", "n-distill"]
        if need_guarantee:
            path.append("convergence guarantee required")
            return _leaf("copy", "expected-entropy", feasible, path)
        path.append("no guarantee required")
        return _leaf("copy-no-guarantee", "expected-entropy", [*feasible, "on-policy-distill"], path)
    path.append("improve beyond the teacher with environment reward")
    if teacher_strong:
        path.append("teacher is strong")
        feasible = ["expected-entropy+r", "n-distill+r"]
        if need_guarantee:
            path.append("convergence guarantee required")
        else:
            path.append("no guarantee required")
            feasible.append("on-policy-distill+r")
        return _leaf("improve-strong", "expected-entropy+r", feasible, path)
    path.append("teacher is weak")
    if teacher_has_value:
        path.append("teacher has a value function")
        return _leaf("improve-weak-value", "teacher-v-reward", ["teacher-v-reward"], path)
    path.append("teacher has no value function")
    return _leaf("improve-weak", "expected-entropy+r", ["expected-entropy+r", "n-distill+r"], path)
