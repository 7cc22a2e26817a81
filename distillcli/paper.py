"""``distill paper``: the paper's tabular studies (Figures 2-6 and Theorems 1-2), rerun with our own trainer.

Every study trains tabular students with the method records of :mod:`distillcli.methods` through
:mod:`distillcli.tabular.train` (the trainer's own Eq. 1 code) or, for the exact studies, through
:mod:`distillcli.tabular.exact`. Each writes ``<study>.png``, ``<study>.csv``
(``study,setting,method,iteration,mean,ci_low,ci_high``) and ``<study>.json`` (the settings actually used,
headline numbers, time taken) into the output directory.
"""

from __future__ import annotations

import csv
import functools
import io
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from distillcli.errors import DistillError
from distillcli.methods import Method, get_method
from distillcli.metrics import atomic_write_bytes, atomic_write_json
from distillcli.objectives import KLDirection, ObjectiveOptions
from distillcli.report import t975
from distillcli.tabular.exact import Enumeration, TabularMDP, enumerate_trajectories, expected_update, update_jacobian
from distillcli.tabular.gridworld import GridBatch, GridOptions, Layout, chain_layout, random_layout
from distillcli.tabular.teachers import (
    action_values,
    adversarial_q,
    noisy_policy,
    q_learning,
    softmax_policy,
)
from distillcli.tabular.train import Estimator, TabularSettings, TabularTeacher, train_tabular
from distillcli.trainer import UpdateOptions

Scale = Literal["small", "paper"]
STUDIES = ("control-policy", "action-space", "imperfect-teacher", "chain", "counterexample", "gradient-field")

# The paper's scale (appendix: 1000 random MDPs, 30,000 iterations) and a small scale for a laptop CPU.
SCALES: dict[str, dict[str, int]] = {
    "small": {"mdps": 20, "iterations": 600, "seeds": 1, "teacher_steps": 10000},
    "paper": {"mdps": 1000, "iterations": 30000, "seeds": 1, "teacher_steps": 30000},
}


@dataclass(frozen=True)
class PaperOptions:
    """What a study run uses; every field is written to the study's JSON."""

    scale: Scale = "small"
    mdps: int = 20
    iterations: int = 600
    seeds: int = 1
    teacher_steps: int = 10000  # Q-learning steps per learner (8 learners per MDP)
    device: str = "cpu"
    grid: GridOptions = field(default_factory=GridOptions)
    lr: float = 0.05
    envs: int = 1
    segment: int = 16
    estimator: Estimator = "td"
    temperatures: tuple[float, ...] = (0.0, 0.01, 0.1)  # control-policy teachers
    teacher_temperature: float = 0.01  # the other studies' teacher
    action_sizes: tuple[int, ...] = (4, 40, 400, 4000)
    teacher_noise: tuple[float, ...] = (0.0, 0.15, 0.25)
    estimators: tuple[Estimator, ...] = ("monte-carlo", "td")  # imperfect-teacher: how Rhat is estimated
    chain_length: int = 11
    max_table: int = 20_000_000  # logits per batch of MDPs; more MDPs are run in chunks (memory)
    evaluations: int = 25

    @classmethod
    def at_scale(cls, scale: Scale, **overrides: Any) -> PaperOptions:
        if scale not in SCALES:
            raise DistillError(f"--scale must be one of {', '.join(SCALES)}, got {scale!r}")
        values: dict[str, Any] = {**SCALES[scale], **{k: v for k, v in overrides.items() if v is not None}}
        options = cls(scale=scale, **values)
        for name in ("mdps", "iterations", "seeds"):
            if getattr(options, name) < 1:
                raise DistillError(f"--{name} must be at least 1, got {getattr(options, name)}")
        return options

    def settings(self, seed: int, **overrides: Any) -> TabularSettings:
        values: dict[str, Any] = {
            "iterations": self.iterations,
            "envs": self.envs,
            "segment": self.segment,
            "lr": self.lr,
            "critic_lr": self.lr,
            "estimator": self.estimator,
            "evaluations": self.evaluations,
            "seed": seed,
        }
        values.update(overrides)
        return TabularSettings(**values)


# --- curves with confidence intervals ---------------------------------------------------------------------


def mean_ci(values: Tensor) -> tuple[float, float, float]:
    """Mean and 95% confidence interval (mean +- t(0.975, n - 1) * sd / sqrt(n), as in ``distill report``)."""
    values = values.double()
    mean = float(values.mean())
    if values.numel() < 2:
        return mean, mean, mean
    half = t975(values.numel() - 1) * float(values.std()) / math.sqrt(values.numel())
    return mean, mean - half, mean + half


@dataclass
class Curves:
    """Per (setting, method, iteration): one value per sampled MDP, pooled over chunks and seeds."""

    study: str
    values: dict[tuple[str, str, int], list[Tensor]] = field(default_factory=dict)

    def add(self, setting: str, method: str, iteration: int, values: Tensor) -> None:
        self.values.setdefault((setting, method, iteration), []).append(values.detach().reshape(-1).cpu())

    def pooled(self, setting: str, method: str, iteration: int) -> Tensor:
        return torch.cat(self.values[(setting, method, iteration)])

    def rows(self) -> list[dict[str, Any]]:
        rows = []
        for (setting, method, iteration), chunks in self.values.items():
            mean, low, high = mean_ci(torch.cat(chunks))
            rows.append(
                {
                    "study": self.study,
                    "setting": setting,
                    "method": method,
                    "iteration": iteration,
                    "mean": mean,
                    "ci_low": low,
                    "ci_high": high,
                }
            )
        return rows

    def final(self, setting: str, method: str) -> float:
        last = max(i for s, m, i in self.values if s == setting and m == method)
        return float(self.pooled(setting, method, last).mean())

    def series(self, setting: str, method: str) -> list[tuple[int, float]]:
        points = sorted(i for s, m, i in self.values if s == setting and m == method)
        return [(i, float(self.pooled(setting, method, i).mean())) for i in points]


@dataclass
class StudyResult:
    name: str
    curves: Curves
    summary: dict[str, Any]
    settings: dict[str, Any]
    figure: Callable[[Path], None]
    seconds: float = 0.0


Progress = Callable[[str], None]


# --- shared pieces ----------------------------------------------------------------------------------------


def chunks(options: PaperOptions, n_actions: int) -> Iterator[tuple[int, int, int, int]]:
    """(seed, chunk index, first MDP, MDPs in chunk) so that no batch holds more than ``max_table`` logits."""
    states = options.grid.size * options.grid.size
    per_chunk = max(1, min(options.mdps, options.max_table // (states * n_actions)))
    for seed in range(options.seeds):
        for index, start in enumerate(range(0, options.mdps, per_chunk)):
            yield seed, index, start, min(per_chunk, options.mdps - start)


@functools.cache
def _layouts(grid: GridOptions, mdps: int, seed: int) -> tuple[Layout, ...]:
    """The seed's MDPs, drawn in order from one generator: the same MDPs whatever the chunking or |A|."""
    rng = np.random.default_rng(seed)
    return tuple(random_layout(grid, rng) for _ in range(mdps))


def grid_batch(options: PaperOptions, seed: int, start: int, size: int, **grid: Any) -> GridBatch:
    layouts = list(_layouts(options.grid, options.mdps, seed)[start : start + size])
    return GridBatch.from_layouts(layouts, replace(options.grid, **grid), options.device)


@functools.cache
def _q_learning(grid: GridOptions, mdps: int, steps: int, device: str, seed: int) -> Tensor:
    """Q-learning on all of the seed's MDPs at once (four moves), so every study and chunk shares the teachers."""
    batch = GridBatch.from_layouts(list(_layouts(grid, mdps, seed)), grid, device)
    return q_learning(batch, steps, seed=seed)


def q_rows(options: PaperOptions, seed: int, start: int, size: int) -> Tensor:
    states = options.grid.size * options.grid.size
    q = _q_learning(options.grid, options.mdps, options.teacher_steps, options.device, seed)
    return q[start * states : (start + size) * states]


def _returns(batch: GridBatch, policy: Tensor) -> Tensor:
    return batch.evaluate(policy)[batch.start]


def _track(curves: Curves, batch: GridBatch, setting: str, label: str) -> Callable[[int, Tensor], None]:
    def evaluate(iteration: int, policy: Tensor) -> None:
        curves.add(setting, label, iteration, _returns(batch, policy))

    return evaluate


def _reference(curves: Curves, batch: GridBatch, setting: str, label: str, policy: Tensor, iterations: int) -> None:
    """A fixed policy's return as a flat line (the teacher, the optimum) at the first and last iteration."""
    value = _returns(batch, policy)
    for iteration in (0, iterations):
        curves.add(setting, label, iteration, value)


def _teacher(batch: GridBatch, q: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """(teacher policy softmax(Q / T) over all actions, optimal policy) for a batch."""
    teacher = softmax_policy(action_values(batch, q), temperature)
    optimal = softmax_policy(action_values(batch, batch.optimal_q()), 0.0)
    return teacher, optimal


# --- Fig. 3: the control policy ---------------------------------------------------------------------------


def control_policy(options: PaperOptions, progress: Progress) -> StudyResult:
    """q in {student, teacher, uniform} with the distillation loss Hx(pi || pi_th), three teacher temperatures."""
    curves = Curves("control-policy")
    method = get_method("on-policy-distill")
    for seed, chunk, start, size in chunks(options, options.grid.n_actions):
        batch = grid_batch(options, seed, start, size)
        q = q_rows(options, seed, start, size)
        uniform = torch.full((batch.reward.shape[0], options.grid.n_actions), 1.0 / options.grid.n_actions)
        uniform = uniform.to(batch.device)
        occupancy_uniform = batch.occupancy(uniform)
        for temperature in options.temperatures:
            probs = softmax_policy(action_values(batch, q), temperature)
            teacher = TabularTeacher(batch, probs, options.settings(seed))
            occupancy_teacher = batch.occupancy(probs)
            setting = f"T={temperature:g}"
            _reference(curves, batch, f"{setting} return", "teacher", probs, options.iterations)
            for control in ("student", "teacher", "uniform"):
                progress(f"control-policy {setting} q={control} (seed {seed}, chunk {chunk})")
                label = f"q={control}"

                evaluate = _control_evaluator(
                    curves, batch, teacher, setting, label, occupancy_teacher, occupancy_uniform
                )
                train_tabular(method, batch, teacher, options.settings(seed), evaluate, control=control)  # type: ignore[arg-type]
    summary: dict[str, Any] = {}
    for temperature in options.temperatures:
        setting = f"T={temperature:g}"
        teacher_return = curves.final(f"{setting} return", "teacher")
        summary[setting] = {
            "teacher_return": teacher_return,
            **{
                f"q={c}": {
                    "final_return": curves.final(f"{setting} return", f"q={c}"),
                    "iterations_to_90pct_teacher": _first_reaching(
                        curves.series(f"{setting} return", f"q={c}"), 0.9 * teacher_return
                    ),
                    **{
                        f"final_kl_under_{d}": curves.final(f"{setting} KL under {d}", f"q={c}")
                        for d in ("student", "teacher", "uniform")
                    },
                }
                for c in ("student", "teacher", "uniform")
            },
        }
    return _result("control-policy", curves, summary, options, log_panels=("KL",))


def _control_evaluator(
    curves: Curves,
    batch: GridBatch,
    teacher: TabularTeacher,
    setting: str,
    label: str,
    occupancy_teacher: Tensor,
    occupancy_uniform: Tensor,
) -> Callable[[int, Tensor], None]:
    """Return, and the mean KL(pi || pi_th) per step along trajectories of the student, teacher and uniform."""

    def evaluate(iteration: int, policy: Tensor) -> None:
        kl = (teacher.log_probs.exp() * (teacher.log_probs - policy.clamp_min(1e-30).log())).sum(-1)
        curves.add(f"{setting} return", label, iteration, _returns(batch, policy))
        for name, occupancy in (
            ("student", batch.occupancy(policy)),
            ("teacher", occupancy_teacher),
            ("uniform", occupancy_uniform),
        ):
            per_mdp = (occupancy * kl).view(batch.n_mdps, -1).sum(-1)
            visits = occupancy.view(batch.n_mdps, -1).sum(-1)
            curves.add(f"{setting} KL under {name}", label, iteration, per_mdp / visits)

    return evaluate


def _first_reaching(series: list[tuple[int, float]], target: float) -> int | None:
    return next((i for i, v in series if v >= target), None)


# --- Fig. 4: action-space size ----------------------------------------------------------------------------

ACTION_SPACE_METHODS = ("on-policy-distill", "entropy-regularised", "expected-entropy", "rl")


def action_space(options: PaperOptions, progress: Progress) -> StudyResult:
    curves = Curves("action-space")
    for n_actions in options.action_sizes:
        setting = f"|A|={n_actions}"
        for seed, chunk, start, size in chunks(options, n_actions):
            batch = grid_batch(options, seed, start, size, n_actions=n_actions)
            probs, _ = _teacher(batch, q_rows(options, seed, start, size), options.teacher_temperature)
            teacher = TabularTeacher(batch, probs, options.settings(seed))
            _reference(curves, batch, setting, "teacher", probs, options.iterations)
            for name in ACTION_SPACE_METHODS:
                progress(f"action-space {setting} {name} (seed {seed}, chunk {chunk})")
                evaluate = _track(curves, batch, setting, name)
                train_tabular(get_method(name), batch, teacher, options.settings(seed), evaluate)
    summary = {
        f"|A|={n}": {
            m: {"start": curves.series(f"|A|={n}", m)[0][1], "final": curves.final(f"|A|={n}", m)}
            for m in (*ACTION_SPACE_METHODS, "teacher")
        }
        for n in options.action_sizes
    }
    return _result("action-space", curves, summary, options)


# --- Fig. 5: imperfect teachers ---------------------------------------------------------------------------

COPYING = ("on-policy-distill", "entropy-regularised", "kl-regularised", "n-distill", "expected-entropy")
WITH_REWARD = ("on-policy-distill+r", "n-distill+r", "expected-entropy+r", "+r+v-cond")
VALUE_BASED = ("teacher-v-reward", "td+v-teacher", "td+v-zero", "rl")


def imperfect_teacher(options: PaperOptions, progress: Progress) -> StudyResult:
    curves = Curves("imperfect-teacher")
    for seed, chunk, start, size in chunks(options, options.grid.n_actions):
        batch = grid_batch(options, seed, start, size)
        clean, optimal = _teacher(batch, q_rows(options, seed, start, size), options.teacher_temperature)
        for noise in options.teacher_noise:
            probs = noisy_policy(clean, noise, seed=1000 + seed)
            teacher = TabularTeacher(batch, probs, options.settings(seed))
            for estimator in options.estimators:
                setting = f"noise={noise:g} {estimator}"
                _reference(curves, batch, setting, "teacher", probs, options.iterations)
                _reference(curves, batch, setting, "optimal", optimal, options.iterations)
                for name in (*COPYING, *WITH_REWARD, *VALUE_BASED):
                    progress(f"imperfect-teacher {setting} {name} (seed {seed}, chunk {chunk})")
                    settings = options.settings(seed, estimator=estimator)
                    train_tabular(get_method(name), batch, teacher, settings, _track(curves, batch, setting, name))
    summary = {
        setting: {m: curves.final(setting, m) for m in (*COPYING, *WITH_REWARD, *VALUE_BASED, "teacher", "optimal")}
        for setting in sorted({s for s, _, _ in curves.values})
    }
    return _result("imperfect-teacher", curves, summary, options)


# --- Fig. 6: optimal vs adversarial teacher on a chain ----------------------------------------------------

CHAIN_METHODS = (
    "on-policy-distill",
    "n-distill",
    "expected-entropy",
    "on-policy-distill+r",
    "expected-entropy+r",
    "+r+v-cond",
    "teacher-v-reward",
    "rl",
)


def chain(options: PaperOptions, progress: Progress) -> StudyResult:
    """Every column of the batch is the same chain: the spread is over independent students (sampling)."""
    curves = Curves("chain")
    grid = replace(options.grid, size=options.chain_length)
    layouts = [chain_layout(options.chain_length) for _ in range(options.mdps)]
    for seed in range(options.seeds):
        batch = GridBatch.from_layouts(layouts, grid, options.device)
        optimal = softmax_policy(action_values(batch, batch.optimal_q()), 0.0)
        adversarial = softmax_policy(action_values(batch, adversarial_q(batch)), 0.0)
        for setting, probs in (("optimal teacher", optimal), ("adversarial teacher", adversarial)):
            teacher = TabularTeacher(batch, probs, options.settings(seed))
            _reference(curves, batch, setting, "teacher", probs, options.iterations)
            for name in CHAIN_METHODS:
                progress(f"chain {setting} {name} (seed {seed})")
                train_tabular(
                    get_method(name), batch, teacher, options.settings(seed), _track(curves, batch, setting, name)
                )
    summary: dict[str, Any] = {
        s: {m: curves.final(s, m) for m in (*CHAIN_METHODS, "teacher")}
        for s in ("optimal teacher", "adversarial teacher")
    }
    summary["ends"] = {"reward": 10.0, "penalty": -10.0}
    return _result("chain", curves, summary, options)


# --- Fig. 2: the counterexample ---------------------------------------------------------------------------

COUNTEREXAMPLE_METHODS = ("on-policy-distill+r", "n-distill+r")


@dataclass(frozen=True)
class Counterexample:
    """s0 -L-> sL, s0 -R-> sR; from sL: L gives -1, R gives -2; from sR: L gives 0, R gives -3 (then terminal).

    The student has two parameters: theta0 at s0 and theta1 shared by sL and sR (logits [0, theta]); the
    teacher is uniform at s0 and sL and picks R at sR with probability ``teacher_right``. The distillation
    term is the mode-seeking cross-entropy Hx(pi_th || pi) (``--kl-direction student-teacher``): it is linear
    in pi_th, so a uniform teacher adds no pull and what remains is the coupling through the state
    distribution. With the default Hx(pi || pi_th), convex in the logits, the same rotation is damped and
    on-policy-distill+r spirals into a fixed point (also reported).
    """

    teacher_right: float = 0.9
    reward_weight: float = 0.5
    lr: float = 0.5
    kl_direction: KLDirection = "student-teacher"

    def mdp(self) -> TabularMDP:
        transitions = torch.zeros(3, 2, 3, dtype=torch.float64)
        transitions[0, 0, 1] = transitions[0, 1, 2] = 1.0
        transitions[1:, :, 0] = 1.0  # never used: episodes end after the second step
        rewards = torch.tensor([[0.0, 0.0], [-1.0, -2.0], [0.0, -3.0]], dtype=torch.float64)
        return TabularMDP(transitions, rewards, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), horizon=2)

    def teacher_logits(self) -> Tensor:
        right = math.log(self.teacher_right / (1.0 - self.teacher_right))
        return torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, right]], dtype=torch.float64)

    @staticmethod
    def logits(theta: Tensor) -> Tensor:
        zero = torch.zeros((), dtype=theta.dtype)
        return torch.stack(
            [torch.stack([zero, theta[0]]), torch.stack([zero, theta[1]]), torch.stack([zero, theta[1]])]
        )

    @functools.cache  # noqa: B019 (a few small frozen instances per run)
    def _problem(self) -> tuple[TabularMDP, Tensor, Enumeration]:
        mdp, teacher = self.mdp(), self.teacher_logits()
        return mdp, teacher, enumerate_trajectories(mdp, teacher)

    def update(self, method: Method, theta: Tensor) -> Tensor:
        """The exact expected Eq. 1 update of ``method`` with respect to (theta0, theta1)."""
        mdp, teacher, enumeration = self._problem()
        options = ObjectiveOptions(gamma=1.0, reward_weight=self.reward_weight, kl_direction=self.kl_direction)
        exact = UpdateOptions(gae_lambda=1.0, baseline="none", epochs=1, episode_ends="absorb")
        theta = theta.detach().requires_grad_(True)
        logits = self.logits(theta)
        table_update = expected_update(method, mdp, enumeration, logits.detach(), teacher, options, exact)
        (gradient,) = torch.autograd.grad(logits, theta, table_update)
        return gradient

    def path(self, method: Method, iterations: int) -> Tensor:
        """theta_0 = 0, theta_{k+1} = theta_k - lr * update: [iterations + 1, 2]."""
        theta = torch.zeros(2, dtype=torch.float64)
        path = [theta]
        for _ in range(iterations):
            theta = theta - self.lr * self.update(method, theta)
            path.append(theta)
        return torch.stack(path)


def counterexample(options: PaperOptions, progress: Progress) -> StudyResult:
    example = Counterexample()
    damped = replace(example, kl_direction="teacher-student")
    curves = Curves("counterexample")
    runs = {name: (name, example) for name in COUNTEREXAMPLE_METHODS}
    runs["on-policy-distill+r, Hx(pi||pi_th)"] = ("on-policy-distill+r", damped)
    paths: dict[str, Tensor] = {}
    summary: dict[str, Any] = {}
    marks = torch.linspace(0, options.iterations, max(options.evaluations, 2) * 4).round().long().unique()
    window = max(options.iterations // 5, 2)
    for label, (name, variant) in runs.items():
        progress(f"counterexample {label}")
        path = variant.path(get_method(name), options.iterations)
        probabilities = torch.sigmoid(path)  # pi(R | s0), pi(R | sL) = pi(R | sR)
        for index, key in enumerate(("pi(R|s0)", "pi(R|sL,sR)")):
            for iteration in marks.tolist():
                curves.add(key, label, iteration, probabilities[iteration, index : index + 1])
        late = probabilities[-window:]
        summary[label] = {
            "final_theta": path[-1].tolist(),
            "late_probability_range": (late.max(0).values - late.min(0).values).tolist(),
            "final_update_norm": float(variant.update(get_method(name), path[-1]).norm()),
        }
        paths[label] = path
    settings = {**_options_dict(options), "counterexample": asdict(example), "late_window": window}

    def figure(path: Path) -> None:
        _vector_field_figure(
            path, {label: (get_method(name), variant) for label, (name, variant) in runs.items()}, paths
        )

    return StudyResult("counterexample", curves, summary, settings, figure)


def _vector_field_figure(
    path: Path, fields: dict[str, tuple[Method, Counterexample]], paths: dict[str, Tensor]
) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(paths), figsize=(5 * len(paths), 4.5))
    for ax, (label, trajectory) in zip(axes, paths.items(), strict=True):
        method, example = fields[label]
        low, high = trajectory.min(0).values - 1.0, trajectory.max(0).values + 1.0
        xs, ys, us, vs = [], [], [], []
        for x in torch.linspace(float(low[0]), float(high[0]), 13, dtype=torch.float64):
            for y in torch.linspace(float(low[1]), float(high[1]), 13, dtype=torch.float64):
                step = -example.update(method, torch.stack([x, y]))
                xs.append(float(x))
                ys.append(float(y))
                us.append(float(step[0]))
                vs.append(float(step[1]))
        ax.quiver(xs, ys, us, vs, color="0.6", angles="xy")
        ax.plot(trajectory[:, 0].numpy(), trajectory[:, 1].numpy(), color="C3", lw=1.0)
        ax.plot([float(trajectory[0, 0])], [float(trajectory[0, 1])], "ko", ms=4)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("theta0 (s0: logit of R)")
        ax.set_ylabel("theta1 (sL, sR shared: logit of R)")
    fig.tight_layout()
    _save(fig, path)


# --- Theorems 1 and 2: which updates are gradient fields --------------------------------------------------

GRADIENT_FIELD_METHODS = ("on-policy-distill", "on-policy-distill+r", "n-distill", "expected-entropy", "n-distill+r")


def gradient_field(options: PaperOptions, progress: Progress) -> StudyResult:
    """Relative asymmetry ||J - J^T|| / ||J|| of the exact expected update's Jacobian on random small MDPs."""
    curves = Curves("gradient-field")
    exact = UpdateOptions(gae_lambda=1.0, baseline="none", epochs=1, episode_ends="absorb")
    objective = ObjectiveOptions(gamma=1.0)
    n_mdps = min(options.mdps, 50)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for name in GRADIENT_FIELD_METHODS:
            progress(f"gradient-field {name}")
            values = []
            for index in range(n_mdps):
                mdp = TabularMDP.random(3, 3, 3, seed=index)
                generator = torch.Generator().manual_seed(10_000 + index)
                teacher = 2.0 * torch.randn(3, 3, generator=generator, dtype=torch.float64)
                student = torch.randn(3, 3, generator=generator, dtype=torch.float64)
                enumeration = enumerate_trajectories(mdp, teacher)
                jacobian = update_jacobian(get_method(name), mdp, enumeration, student, teacher, objective, exact)
                values.append(float((jacobian - jacobian.T).norm() / jacobian.norm()))
            curves.add("jacobian asymmetry", name, 0, torch.tensor(values))
    finally:
        torch.set_default_dtype(previous)
    summary = {name: curves.final("jacobian asymmetry", name) for name in GRADIENT_FIELD_METHODS}
    settings = {
        **_options_dict(options),
        "gradient_field_mdps": n_mdps,
        "mdp": "random, 3 states, 3 actions, horizon 3",
    }

    def figure(path: Path) -> None:
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(7, 4))
        names = list(GRADIENT_FIELD_METHODS)
        means = [max(curves.final("jacobian asymmetry", n), 1e-12) for n in names]
        ax.bar(names, means, color=["C3" if get_method(n).objective is None else "C0" for n in names])
        ax.set_yscale("log")
        ax.set_ylabel("||J - J^T|| / ||J||")
        ax.set_title("Jacobian asymmetry of the expected update (0 = gradient field)")
        ax.tick_params(axis="x", rotation=20)
        fig.tight_layout()
        _save(fig, path)

    return StudyResult("gradient-field", curves, summary, settings, figure)


# --- output -----------------------------------------------------------------------------------------------

RUNNERS: dict[str, Callable[[PaperOptions, Progress], StudyResult]] = {
    "control-policy": control_policy,
    "action-space": action_space,
    "imperfect-teacher": imperfect_teacher,
    "chain": chain,
    "counterexample": counterexample,
    "gradient-field": gradient_field,
}


def _options_dict(options: PaperOptions) -> dict[str, Any]:
    """Everything a study used, including the students' and teachers' fixed settings."""
    student = {k: v for k, v in asdict(options.settings(0)).items() if k not in ("seed", "iterations")}
    teacher = {"q_learning": {"actors": 8, "epsilon": 0.1, "lr": 0.1, "exploring_starts": True}}
    return {**asdict(options), "student": student, "teacher": teacher}


def _result(
    name: str, curves: Curves, summary: dict[str, Any], options: PaperOptions, log_panels: tuple[str, ...] = ()
) -> StudyResult:
    def figure(path: Path) -> None:
        _curves_figure(path, name, curves.rows(), log_panels)

    return StudyResult(name, curves, summary, _options_dict(options), figure)


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise DistillError("distill paper draws figures with matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    _pyplot().close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def _curves_figure(path: Path, study: str, table: list[dict[str, Any]], log_panels: tuple[str, ...]) -> None:
    """Panels per setting, a line per method with its 95% band; only the CSV's rows are needed."""
    plt = _pyplot()
    settings = list(dict.fromkeys(r["setting"] for r in table))
    columns = min(4, len(settings))
    rows = math.ceil(len(settings) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.3 * rows), squeeze=False)
    # One colour per method across every panel; reference lines (teacher, optimum) are dashed.
    learners = [m for m in dict.fromkeys(r["method"] for r in table) if m not in ("teacher", "optimal")]
    palette = plt.get_cmap("tab10" if len(learners) <= 10 else "tab20")
    colours: dict[str, Any] = {m: palette(i) for i, m in enumerate(learners)} | {"teacher": "k", "optimal": "0.5"}
    for ax, setting in zip(axes.flat, settings, strict=False):
        methods = list(dict.fromkeys(r["method"] for r in table if r["setting"] == setting))
        for method in methods:
            points = sorted(
                (r["iteration"], r["mean"], r["ci_low"], r["ci_high"])
                for r in table
                if r["setting"] == setting and r["method"] == method
            )
            x = [p[0] for p in points]
            dashed = method in ("teacher", "optimal")
            ax.plot(x, [p[1] for p in points], label=method, lw=1.3, ls="--" if dashed else "-", color=colours[method])
            if not dashed:
                ax.fill_between(x, [p[2] for p in points], [p[3] for p in points], alpha=0.15, color=colours[method])
        if any(key in setting for key in log_panels):
            ax.set_yscale("log")
        ax.set_title(setting, fontsize=9)
        ax.set_xlabel("iteration")
    for ax in list(axes.flat)[len(settings) :]:
        ax.axis("off")
    entries = {label: handle for ax in axes.flat for handle, label in zip(*ax.get_legend_handles_labels(), strict=True)}
    fig.legend(list(entries.values()), list(entries), loc="lower center", ncol=min(7, len(entries)), fontsize=8)
    fig.suptitle(study)
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    _save(fig, path)


def write(result: StudyResult, out: Path) -> dict[str, str]:
    """``<study>.png``, ``.csv``, ``.json`` in ``out``, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, ["study", "setting", "method", "iteration", "mean", "ci_low", "ci_high"])
    writer.writeheader()
    writer.writerows(sorted(result.curves.rows(), key=lambda r: (r["setting"], r["method"], r["iteration"])))
    paths = {kind: out / f"{result.name}.{kind}" for kind in ("png", "csv", "json")}
    atomic_write_bytes(paths["csv"], buffer.getvalue().encode())
    result.figure(paths["png"])
    atomic_write_json(
        paths["json"],
        {"study": result.name, "seconds": result.seconds, "settings": result.settings, "summary": result.summary},
    )
    return {kind: str(p) for kind, p in paths.items()}


def run_study(name: str, options: PaperOptions, progress: Progress) -> StudyResult:
    if name not in RUNNERS:
        raise DistillError(f"unknown study {name!r}; valid: {', '.join(STUDIES)}, all")
    torch.manual_seed(0)
    started = time.perf_counter()
    result = RUNNERS[name](options, progress)
    result.seconds = time.perf_counter() - started
    return result
