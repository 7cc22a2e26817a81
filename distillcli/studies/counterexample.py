"""Fig. 2: the two-state counterexample: on-policy distillation with reward is not a gradient field and can cycle."""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from distillcli.methods import Method, get_method
from distillcli.objectives import KLDirection, ObjectiveOptions
from distillcli.studies.common import Curves, PaperOptions, Progress, StudyResult, options_dict
from distillcli.studies.exact import Enumeration, TabularMDP, enumerate_trajectories, expected_update
from distillcli.studies.figures import pyplot, save
from distillcli.trainer import UpdateOptions

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
    settings = {**options_dict(options), "counterexample": asdict(example), "late_window": window}

    def figure(path: Path) -> None:
        _vector_field_figure(
            path, {label: (get_method(name), variant) for label, (name, variant) in runs.items()}, paths
        )

    return StudyResult("counterexample", curves, summary, settings, figure)


def _vector_field_figure(
    path: Path, fields: dict[str, tuple[Method, Counterexample]], paths: dict[str, Tensor]
) -> None:
    plt = pyplot()
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
    save(fig, path)
