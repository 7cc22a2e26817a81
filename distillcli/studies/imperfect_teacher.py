"""Fig. 5: imperfect (noisy) teachers: copying methods, their +r forms and the value-based methods.

The six settings (noise level x estimator of Rhat) are one batch: six copies of the MDPs, each with its noisy
teacher and its estimator, so each method is one run.
"""

from __future__ import annotations

import torch

from distillcli.methods import get_method
from distillcli.studies.common import (
    Curves,
    PaperOptions,
    Progress,
    StudyResult,
    chunks,
    copies,
    grid_batch,
    policy_returns,
    q_rows,
    reference,
    result,
    teacher_and_optimal,
    track,
)
from distillcli.studies.tabular import Estimator, TabularTeacher, train_tabular
from distillcli.studies.teachers import noisy_policy

COPYING = ("on-policy-distill", "entropy-regularised", "kl-regularised", "n-distill", "expected-entropy")
WITH_REWARD = ("on-policy-distill+r", "n-distill+r", "expected-entropy+r", "+r+v-cond")
VALUE_BASED = ("teacher-v-reward", "td+v-teacher", "td+v-zero", "rl")


def imperfect_teacher(options: PaperOptions, progress: Progress) -> StudyResult:
    curves = Curves("imperfect-teacher")
    blocks = [(noise, estimator) for noise in options.teacher_noise for estimator in options.estimators]
    settings = [f"noise={noise:g} {estimator}" for noise, estimator in blocks]
    for seed, chunk, start, size in chunks(options, options.grid.n_actions, len(blocks)):
        base = grid_batch(options, seed, start, size)
        clean, optimal = teacher_and_optimal(base, q_rows(options, seed, start, size), options.teacher_temperature)
        noisy = {n: noisy_policy(clean, n, seed=1000 + seed, n_actions=base.n_actions) for n in options.teacher_noise}
        optimal_returns = policy_returns(base, optimal)
        for setting, (noise, _) in zip(settings, blocks, strict=True):
            reference(curves, setting, "teacher", policy_returns(base, noisy[noise]), options.iterations)
            reference(curves, setting, "optimal", optimal_returns, options.iterations)
        batch = copies(base, len(blocks))
        teacher = TabularTeacher(batch, torch.cat([noisy[n] for n, _ in blocks]), options.settings(seed))
        estimators: list[Estimator] = [e for _, e in blocks for _ in range(size)]
        for name in (*COPYING, *WITH_REWARD, *VALUE_BASED):
            progress(f"imperfect-teacher {name}: {len(blocks)} settings in one batch (seed {seed}, chunk {chunk})")
            evaluate = track(curves, batch, settings, name)
            train_tabular(get_method(name), batch, teacher, options.settings(seed), evaluate, estimators=estimators)
    summary = {
        setting: {m: curves.final(setting, m) for m in (*COPYING, *WITH_REWARD, *VALUE_BASED, "teacher", "optimal")}
        for setting in settings
    }
    return result("imperfect-teacher", curves, summary, options)
