"""What the paper's studies share: their options and scales, result curves with 95% intervals, the random
grid worlds and their Q-learning teachers (drawn once per seed and shared by every study and chunk)."""

from __future__ import annotations

import functools
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
from distillcli.studies.tabular import Estimator, TabularSettings
from distillcli.studies.teachers import action_values, q_learning, softmax_policy

Scale = Literal["small", "paper"]

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
    seconds: float = 0.0


Progress = Callable[[str], None]


# --- shared pieces ---


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


def returns(batch: GridBatch, policy: Tensor) -> Tensor:
    return batch.evaluate(policy)[batch.start]


def track(curves: Curves, batch: GridBatch, setting: str, label: str) -> Callable[[int, Tensor], None]:
    def evaluate(iteration: int, policy: Tensor) -> None:
        curves.add(setting, label, iteration, returns(batch, policy))

    return evaluate


def reference(curves: Curves, batch: GridBatch, setting: str, label: str, policy: Tensor, iterations: int) -> None:
    """A fixed policy's return as a flat line (the teacher, the optimum) at the first and last iteration."""
    value = returns(batch, policy)
    for iteration in (0, iterations):
        curves.add(setting, label, iteration, value)


def teacher_and_optimal(batch: GridBatch, q: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """(teacher policy softmax(Q / T) over all actions, optimal policy) for a batch."""
    teacher = softmax_policy(action_values(batch, q), temperature)
    optimal = softmax_policy(action_values(batch, batch.optimal_q()), 0.0)
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
