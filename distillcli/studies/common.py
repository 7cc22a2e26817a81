"""What the paper's studies share: their options and scales, result curves with 95% intervals, the random
grid worlds and their Q-learning teachers (drawn once per seed and shared by every study and chunk)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from distillcli.errors import DistillError
from distillcli.gridworld import GridBatch, GridOptions, Layout, random_layout
from distillcli.stats import mean_ci
from distillcli.studies.tabular import Estimator, Evaluation, TabularSettings, TabularStudent
from distillcli.studies.teachers import effect_counts, effect_values, q_learning, softmax_policy

Scale = Literal["small", "medium", "paper"]

# The paper's scale (appendix: 1000 random MDPs, 30,000 iterations); a medium scale with the paper's length on
# 100 MDPs (hours on a laptop CPU); a small scale for CI (minutes). The teachers learn for the paper's 30,000
# Q-learning steps at every scale, so the teachers, and the generator calibrated against them, are the same.
# At the medium scale the action-space study's wide tables cost |A| times more per MDP than the four moves:
# |A| = 400 runs 20 MDPs and |A| = 4000 runs 4 MDPs with the repeat construction only (docs/paper.md, Time).
SCALES: dict[str, dict[str, Any]] = {
    "small": {"mdps": 20, "iterations": 600, "seeds": 1, "evaluations": 25, "early_evaluations": 0},
    "medium": {
        "mdps": 100,
        "iterations": 30000,
        "seeds": 1,
        "evaluations": 31,
        "early_evaluations": 10,
        "action_mdps": (100, 100, 20, 4),
        "action_modes": (1, 2, 2, 1),
    },
    "paper": {"mdps": 1000, "iterations": 30000, "seeds": 1, "evaluations": 31, "early_evaluations": 10},
}


@dataclass(frozen=True)
class PaperOptions:
    """What a study run uses; every field is written to the study's JSON."""

    scale: Scale = "small"
    mdps: int = 20
    iterations: int = 600
    seeds: int = 1
    teacher_steps: int = 30000  # Q-learning steps per learner (8 learners per MDP), the paper's 30k
    device: str = "cpu"
    grid: GridOptions = field(default_factory=GridOptions)
    lr: float = 0.05
    envs: int = 1
    segment: int = 16
    estimator: Estimator = "td"
    temperatures: tuple[float, ...] = (0.0, 0.01, 0.1)  # control-policy teachers
    teacher_temperature: float = 0.01  # the other studies' teacher
    action_sizes: tuple[int, ...] = (4, 40, 400, 4000)
    # action-space: what the extra actions do (an ExtraActions value; "noop-moves": noop, teacher on the moves)
    extra_actions: tuple[str, ...] = ("repeat", "noop", "noop-moves")
    action_mdps: tuple[int, ...] = ()  # action-space: at most this many MDPs per action size (empty: mdps)
    action_modes: tuple[int, ...] = ()  # action-space: the first this many extra_actions per size (empty: all)
    teacher_noise: tuple[float, ...] = (0.0, 0.15, 0.25)
    estimators: tuple[Estimator, ...] = ("monte-carlo", "td")  # imperfect-teacher: how Rhat is estimated
    chain_length: int = 11
    chain_reward: float = 1.0  # the chain's ends: +chain_reward on the right, -chain_reward on the left
    max_table: int = 20_000_000  # logits per batch of MDPs; more MDPs are run in chunks (memory)
    evaluations: int = 25
    early_evaluations: int = 0  # more evaluations, spaced geometrically before the first evenly spaced one

    @classmethod
    def at_scale(cls, scale: Scale, **overrides: Any) -> PaperOptions:
        if scale not in SCALES:
            raise DistillError(f"--scale must be one of {', '.join(SCALES)}, got {scale!r}")
        values: dict[str, Any] = {**SCALES[scale], **{k: v for k, v in overrides.items() if v is not None}}
        if overrides.get("mdps") is not None and "action_mdps" in values:
            values["action_mdps"] = tuple(min(n, overrides["mdps"]) for n in values["action_mdps"])
        options = cls(scale=scale, **values)
        for name in ("mdps", "iterations", "seeds"):
            if getattr(options, name) < 1:
                raise DistillError(f"--{name} must be at least 1, got {getattr(options, name)}")
        return options

    def action_size_plan(self) -> list[tuple[int, int, tuple[str, ...]]]:
        """(|A|, MDPs, extra-action constructions) of each action-space setting; four actions need one."""
        plan = []
        for index, n_actions in enumerate(self.action_sizes):
            mdps = min(self.mdps, self.action_mdps[index]) if index < len(self.action_mdps) else self.mdps
            modes = (
                self.extra_actions[: self.action_modes[index]] if index < len(self.action_modes) else self.extra_actions
            )
            plan.append((n_actions, mdps, modes[:1] if n_actions == 4 else modes))
        return plan

    def settings(self, seed: int, **overrides: Any) -> TabularSettings:
        values: dict[str, Any] = {
            "early_evaluations": self.early_evaluations,
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


# --- curves with confidence intervals ---


def interval(values: Tensor) -> tuple[float, float, float]:
    """(mean, low, high) of the 95% t interval over MDPs, as ``distill report`` computes it (stats.mean_ci)."""
    mean, half = mean_ci(values.double().tolist())
    assert mean is not None
    return mean, mean - (half or 0.0), mean + (half or 0.0)


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
            mean, low, high = interval(torch.cat(chunks))
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
    seconds: float = 0.0  # wall time
    cpu_seconds: float = 0.0  # this process's CPU time (on a shared machine the wall time says little)


Progress = Callable[[str], None]


# --- shared pieces ---


def chunks(options: PaperOptions, n_actions: int, copies: int = 1) -> Iterator[tuple[int, int, int, int]]:
    """(seed, chunk index, first MDP, MDPs in chunk) so that no batch (``copies`` of each MDP, one per setting
    trained together) holds more than ``max_table`` logits."""
    states = options.grid.size * options.grid.size
    per_chunk = max(1, min(options.mdps, options.max_table // (states * n_actions * copies)))
    for seed in range(options.seeds):
        for index, start in enumerate(range(0, options.mdps, per_chunk)):
            yield seed, index, start, min(per_chunk, options.mdps - start)


class _Shared:
    """The last seed's layouts and Q-learning teachers, shared by every study and chunk of one process.

    One entry each (a new grid, scale or seed replaces it), so a long ``distill paper all`` holds one set of
    MDPs and teachers, not one per study or per option combination seen so far."""

    layouts: tuple[tuple[Any, ...], tuple[Layout, ...]] | None = None
    q: tuple[tuple[Any, ...], Tensor] | None = None

    @classmethod
    def clear(cls) -> None:
        cls.layouts = cls.q = None


def layouts_of(options: PaperOptions, seed: int) -> tuple[Layout, ...]:
    """The seed's MDPs, drawn in order from one generator: the same MDPs whatever the chunking or |A|."""
    key = (options.grid, options.mdps, seed)
    if _Shared.layouts is None or _Shared.layouts[0] != key:
        rng = np.random.default_rng(seed)
        _Shared.layouts = (key, tuple(random_layout(options.grid, rng) for _ in range(options.mdps)))
    return _Shared.layouts[1]


def grid_batch(options: PaperOptions, seed: int, start: int, size: int, **grid: Any) -> GridBatch:
    layouts = list(layouts_of(options, seed)[start : start + size])
    return GridBatch.from_layouts(layouts, replace(options.grid, **grid), options.device)


def q_rows(options: PaperOptions, seed: int, start: int, size: int) -> Tensor:
    """Q over the four moves of MDPs ``start:start + size``: Q-learning on all of the seed's MDPs at once, so
    every study and chunk shares the teachers."""
    key = (options.grid, options.mdps, options.teacher_steps, options.device, seed)
    if _Shared.q is None or _Shared.q[0] != key:
        _Shared.q = None
        batch = GridBatch.from_layouts(list(layouts_of(options, seed)), options.grid, options.device)
        _Shared.q = (key, q_learning(batch, options.teacher_steps, seed=seed))
    states = options.grid.size * options.grid.size
    return _Shared.q[1][start * states : (start + size) * states]


def copies(batch: GridBatch, n: int) -> GridBatch:
    """``n`` copies of the batch's MDPs in one batch: settings that differ only in the teacher, the control
    policy or the estimator train together, a block of MDPs each."""
    return batch if n == 1 else GridBatch.concat([batch] * n)


def per_block(values: Tensor, blocks: int) -> list[Tensor]:
    """One value per MDP of a batch of ``blocks`` equal blocks -> the blocks' values."""
    return list(values.reshape(blocks, -1))


def start_values(batch: GridBatch, values: Tensor) -> Tensor:
    return values[batch.start]


def student_returns(batch: GridBatch, student: TabularStudent) -> Tensor:
    """The student's exact expected return from each MDP's start state."""
    return batch.evaluate_effects(batch.effect_probabilities(logits=student.logits))[batch.start]


def policy_returns(batch: GridBatch, per_effect: Tensor) -> Tensor:
    """A per-effect policy's exact expected return from each MDP's start state."""
    counts = effect_counts(batch).to(per_effect.device)
    return batch.evaluate_effects(per_effect.double() * counts.double())[batch.start]


def track(curves: Curves, batch: GridBatch, settings: list[str], label: str) -> Evaluation:
    """Record the student's return in every block of the batch (one block of MDPs per setting)."""

    def evaluate(iteration: int, student: TabularStudent) -> None:
        for setting, values in zip(settings, per_block(student_returns(batch, student), len(settings)), strict=True):
            curves.add(setting, label, iteration, values)

    return evaluate


def reference(curves: Curves, setting: str, label: str, values: Tensor, iterations: int) -> None:
    """A fixed policy's return (one value per MDP) as a flat line at the first and last iteration."""
    for iteration in (0, iterations):
        curves.add(setting, label, iteration, values)


def teacher_and_optimal(batch: GridBatch, q: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """(teacher softmax(Q / T) over all actions, optimal policy) for a batch, per effect."""
    teacher = softmax_policy(batch, effect_values(batch, q), temperature)
    optimal = softmax_policy(batch, effect_values(batch, batch.optimal_q()), 0.0)
    return teacher, optimal


def options_dict(options: PaperOptions) -> dict[str, Any]:
    """Everything a study used, including the students' and teachers' fixed settings."""
    student = {k: v for k, v in asdict(options.settings(0)).items() if k not in ("seed", "iterations")}
    teacher = {"q_learning": {"actors": 8, "epsilon": 0.1, "lr": 0.1, "exploring_starts": True}}
    return {**asdict(options), "student": student, "teacher": teacher}


def result(
    name: str, curves: Curves, summary: dict[str, Any], options: PaperOptions, log_panels: tuple[str, ...] = ()
) -> StudyResult:
    def figure(path: Path) -> None:
        from distillcli.studies.figures import curves_figure

        curves_figure(path, name, curves.rows(), log_panels)

    return StudyResult(name, curves, summary, options_dict(options), figure)
