"""Fig. 3: the control policy q (student, teacher, uniform) under the distillation loss, three teacher temperatures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from distillcli.gridworld import GridBatch
from distillcli.methods import get_method
from distillcli.stats import first_reaching
from distillcli.studies.common import (
    Curves,
    PaperOptions,
    Progress,
    StudyResult,
    chunks,
    grid_batch,
    q_rows,
    reference,
    result,
    returns,
)
from distillcli.studies.tabular import TabularTeacher, train_tabular
from distillcli.studies.teachers import action_values, softmax_policy


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
            reference(curves, batch, f"{setting} return", "teacher", probs, options.iterations)
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
                    "iterations_to_90pct_teacher": first_reaching(
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
    return result("control-policy", curves, summary, options, log_panels=("KL",))


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
        curves.add(f"{setting} return", label, iteration, returns(batch, policy))
        for name, occupancy in (
            ("student", batch.occupancy(policy)),
            ("teacher", occupancy_teacher),
            ("uniform", occupancy_uniform),
        ):
            per_mdp = (occupancy * kl).view(batch.n_mdps, -1).sum(-1)
            visits = occupancy.view(batch.n_mdps, -1).sum(-1)
            curves.add(f"{setting} KL under {name}", label, iteration, per_mdp / visits)

    return evaluate
