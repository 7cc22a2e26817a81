"""Fig. 3: the control policy q (student, teacher, uniform) under the distillation loss, three teacher temperatures.

The nine settings (temperature x control policy) are one batch: nine copies of the MDPs, each copy with its
teacher and its control policy, trained by one on-policy-distill run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from distillcli.gridworld import GridBatch
from distillcli.methods import Control, get_method
from distillcli.stats import first_reaching
from distillcli.studies.common import (
    Curves,
    PaperOptions,
    Progress,
    StudyResult,
    chunks,
    copies,
    grid_batch,
    per_block,
    policy_returns,
    q_rows,
    reference,
    result,
)
from distillcli.studies.tabular import TabularStudent, TabularTeacher, train_tabular
from distillcli.studies.teachers import effect_counts, effect_values, softmax_policy, uniform_policy

CONTROLS: tuple[Control, ...] = ("student", "teacher", "uniform")


def control_policy(options: PaperOptions, progress: Progress) -> StudyResult:
    """q in {student, teacher, uniform} with the distillation loss Hx(pi || pi_th), three teacher temperatures."""
    curves = Curves("control-policy")
    method = get_method("on-policy-distill")
    blocks = [(t, c) for t in options.temperatures for c in CONTROLS]
    for seed, chunk, start, size in chunks(options, options.grid.n_actions, len(blocks)):
        base = grid_batch(options, seed, start, size)
        q = effect_values(base, q_rows(options, seed, start, size))
        teachers = {t: softmax_policy(base, q, t) for t in options.temperatures}
        batch = copies(base, len(blocks))
        teacher = TabularTeacher(batch, torch.cat([teachers[t] for t, _ in blocks]), options.settings(seed))
        counts = effect_counts(batch)
        occupancy_teacher = batch.occupancy_effects(teacher.per_effect.double() * counts.double())
        occupancy_uniform = batch.occupancy_effects(uniform_policy(batch).double() * counts.double())
        for t in options.temperatures:
            reference(curves, f"T={t:g} return", "teacher", policy_returns(base, teachers[t]), options.iterations)
        progress(f"control-policy: {len(blocks)} settings in one batch (seed {seed}, chunk {chunk})")
        evaluate = _control_evaluator(curves, batch, teacher, blocks, occupancy_teacher, occupancy_uniform)
        controls = [c for _, c in blocks for _ in range(size)]
        train_tabular(method, batch, teacher, options.settings(seed), evaluate, control=controls)
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
                for c in CONTROLS
            },
        }
    return result("control-policy", curves, summary, options, log_panels=("KL",))


def _control_evaluator(
    curves: Curves,
    batch: GridBatch,
    teacher: TabularTeacher,
    blocks: list[tuple[float, Control]],
    occupancy_teacher: Tensor,
    occupancy_uniform: Tensor,
) -> Callable[[int, TabularStudent], None]:
    """Return, and the mean KL(pi || pi_th) per step along trajectories of the student, teacher and uniform."""
    rows = torch.arange(batch.n_mdps * batch.n_states, device=batch.device)

    def evaluate(iteration: int, student: TabularStudent) -> None:
        log_pi = teacher.log_probabilities(rows)
        kl = (log_pi.exp() * (log_pi - torch.log_softmax(student.logits, -1))).sum(-1)
        effects = batch.effect_probabilities(logits=student.logits)
        values = batch.evaluate_effects(effects)[batch.start]
        n = len(blocks)
        for (t, c), block in zip(blocks, per_block(values, n), strict=True):
            curves.add(f"T={t:g} return", f"q={c}", iteration, block)
        for name, occupancy in (
            ("student", batch.occupancy_effects(effects)),
            ("teacher", occupancy_teacher),
            ("uniform", occupancy_uniform),
        ):
            per_mdp = (occupancy * kl).view(batch.n_mdps, -1).sum(-1)
            visits = occupancy.view(batch.n_mdps, -1).sum(-1)
            for (t, c), block in zip(blocks, per_block(per_mdp / visits, n), strict=True):
                curves.add(f"T={t:g} KL under {name}", f"q={c}", iteration, block)

    return evaluate
