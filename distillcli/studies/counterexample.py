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
    distribution; the flow of on-policy-distill+r then has a neutral centre (purely imaginary eigenvalues) and
    its orbits close. With Table 1's Hx(pi || pi_th), convex in the logits, the same rotation is damped and
    on-policy-distill+r spirals into the fixed point (also reported, with a scan of both directions).
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

    def path(self, method: Method, steps: int, start: Tensor | None = None, rk4: bool = True) -> Tensor:
        """theta_0 = ``start``, then ``steps`` steps of size ``lr`` along the flow d(theta)/dt = -update:
        [steps + 1, 2]. RK4 follows the flow (a neutral centre stays a closed orbit); ``rk4=False`` takes the
        plain gradient-style steps theta <- theta - lr * update, which spiral out of a centre."""
        theta = torch.zeros(2, dtype=torch.float64) if start is None else start.clone()
        path = [theta]
        h = self.lr
        for _ in range(steps):
            if rk4:
                k1 = -self.update(method, theta)
                k2 = -self.update(method, theta + 0.5 * h * k1)
                k3 = -self.update(method, theta + 0.5 * h * k2)
                k4 = -self.update(method, theta + h * k3)
                theta = theta + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
            else:
                theta = theta - h * self.update(method, theta)
            path.append(theta)
        return torch.stack(path)

    def jacobian(self, method: Method, theta: Tensor, eps: float = 1e-6) -> Tensor:
        """d(-update)/d(theta): the flow's Jacobian, by central differences of the exact update."""
        columns = [
            -(self.update(method, theta + eps * e) - self.update(method, theta - eps * e)) / (2 * eps)
            for e in torch.eye(2, dtype=torch.float64)
        ]
        return torch.stack(columns, dim=1)

    def fixed_point(self, method: Method, start: Tensor, iterations: int = 40) -> Tensor | None:
        """An interior zero of the update (Newton's method), or None where there is none near ``start``
        (the parameters then run off to a deterministic policy)."""
        theta = start.clone()
        for _ in range(iterations):
            step = self.update(method, theta)
            if float(step.norm()) < 1e-12:
                return theta
            theta = theta + torch.linalg.lstsq(self.jacobian(method, theta), step.unsqueeze(-1)).solution.squeeze(-1)
            if float(theta.abs().max()) > 30:
                return None
        return theta if float(self.update(method, theta).norm()) < 1e-9 else None


PAPER_START = math.log(0.1 / 0.9)  # theta0 where pi(L | s0) = 0.9, the paper's starting point
SCAN_TEACHERS = (0.6, 0.75, 0.9, 0.99)
SCAN_WEIGHTS = (0.25, 0.5, 1.0)


def classify(example: Counterexample, method: Method) -> dict[str, Any]:
    """The flow's interior fixed point and its eigenvalues: a centre (purely imaginary: closed orbits), damped
    (negative real parts: the parameters converge), or none (they run off to a deterministic policy)."""
    for start in (torch.zeros(2, dtype=torch.float64), torch.tensor([PAPER_START, 0.0], dtype=torch.float64)):
        theta = example.fixed_point(method, start)
        if theta is not None:
            eigenvalues = torch.linalg.eigvals(example.jacobian(method, theta))
            real = float(eigenvalues.real.max())
            kind = (
                "centre"
                if abs(real) < 1e-6 and float(eigenvalues.imag.abs().max()) > 1e-6
                else ("damped" if real < 0 else "unstable")
            )
            return {
                "fixed_point": theta.tolist(),
                "eigenvalues": [[float(e.real), float(e.imag)] for e in eigenvalues],
                "kind": kind,
            }
    return {"fixed_point": None, "eigenvalues": None, "kind": "no interior fixed point"}


COUNTEREXAMPLE_STEPS = 5000  # at most: the orbit's period is about 190 steps of 0.5


def counterexample(options: PaperOptions, progress: Progress) -> StudyResult:
    example = Counterexample()
    damped = replace(example, kl_direction="teacher-student")
    curves = Curves("counterexample")
    runs = {name: (name, example) for name in COUNTEREXAMPLE_METHODS}
    runs["on-policy-distill+r, Hx(pi||pi_th)"] = ("on-policy-distill+r", damped)
    steps = min(options.iterations, COUNTEREXAMPLE_STEPS)
    start = torch.tensor([PAPER_START, 0.0], dtype=torch.float64)
    paths: dict[str, Tensor] = {}
    summary: dict[str, Any] = {"steps": steps, "start": {"pi(L|s0)": 0.9, "pi(R|sL,sR)": 0.5}}
    marks = torch.linspace(0, steps, min(steps, 400) + 1).round().long().unique()
    window = max(steps // 5, 2)
    for label, (name, variant) in runs.items():
        progress(f"counterexample {label}")
        path = variant.path(get_method(name), steps, start)
        probabilities = torch.sigmoid(path)  # pi(R | s0), pi(R | sL) = pi(R | sR)
        for index, key in enumerate(("pi(R|s0)", "pi(R|sL,sR)")):
            for iteration in marks.tolist():
                curves.add(key, label, iteration, probabilities[iteration, index : index + 1])
        late = probabilities[-window:]
        summary[label] = {
            "final_theta": path[-1].tolist(),
            "late_probability_range": (late.max(0).values - late.min(0).values).tolist(),
            "final_update_norm": float(variant.update(get_method(name), path[-1]).norm()),
            "flow": classify(variant, get_method(name)),
        }
        paths[label] = path
    # The plain steps of size lr (Euler) on the centre: they spiral outwards, the flow does not.
    euler = torch.sigmoid(example.path(get_method("on-policy-distill+r"), steps, start, rk4=False))
    summary["on-policy-distill+r"]["euler_late_probability_range"] = (
        euler[-window:].max(0).values - euler[-window:].min(0).values
    ).tolist()
    progress("counterexample: fixed points of both cross-entropy directions")
    scan = []
    for direction in ("teacher-student", "student-teacher"):
        for teacher_right in SCAN_TEACHERS:
            for weight in SCAN_WEIGHTS:
                variant = Counterexample(teacher_right, weight, example.lr, direction)  # type: ignore[arg-type]
                entry = classify(variant, get_method("on-policy-distill+r"))
                scan.append(
                    {"kl_direction": direction, "teacher_right": teacher_right, "reward_weight": weight, **entry}
                )
    summary["scan"] = scan
    settings = {
        **options_dict(options),
        "counterexample": asdict(example),
        "late_window": window,
        "integrator": "RK4, step lr",
    }

    def figure(path: Path) -> None:
        _vector_field_figure(
            path, {label: (get_method(name), variant) for label, (name, variant) in runs.items()}, paths
        )

    return StudyResult("counterexample", curves, summary, settings, figure)


def _vector_field_figure(
    path: Path, fields: dict[str, tuple[Method, Counterexample]], paths: dict[str, Tensor]
) -> None:
    """Top: the probabilities against steps (as the paper plots them); bottom: the update field and the path."""
    plt = pyplot()
    fig, axes = plt.subplots(2, len(paths), figsize=(5 * len(paths), 8.5), squeeze=False)
    for column, (label, trajectory) in enumerate(paths.items()):
        method, example = fields[label]
        top, ax = axes[0, column], axes[1, column]
        probabilities = torch.sigmoid(trajectory)
        top.plot(1.0 - probabilities[:, 0].numpy(), label="pi(L|s0)", lw=1.0)
        top.plot(probabilities[:, 1].numpy(), label="pi(R|sL,sR)", lw=1.0)
        top.set_ylim(0, 1)
        top.set_xlabel("step")
        top.set_title(label, fontsize=10)
        top.legend(fontsize=8)
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
        ax.set_xlabel("theta0 (s0: logit of R)")
        ax.set_ylabel("theta1 (sL, sR shared: logit of R)")
    fig.tight_layout()
    save(fig, path)
