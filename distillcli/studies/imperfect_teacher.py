"""Fig. 5: imperfect (noisy) teachers: copying methods, their +r forms and the value-based methods."""

from __future__ import annotations

from distillcli.methods import get_method
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
    teacher_and_optimal,
    track,
)
from distillcli.studies.tabular import TabularTeacher, train_tabular
from distillcli.studies.teachers import noisy_policy

COPYING = ("on-policy-distill", "entropy-regularised", "kl-regularised", "n-distill", "expected-entropy")
WITH_REWARD = ("on-policy-distill+r", "n-distill+r", "expected-entropy+r", "+r+v-cond")
VALUE_BASED = ("teacher-v-reward", "td+v-teacher", "td+v-zero", "rl")


def imperfect_teacher(options: PaperOptions, progress: Progress) -> StudyResult:
    curves = Curves("imperfect-teacher")
    for seed, chunk, start, size in chunks(options, options.grid.n_actions):
        batch = grid_batch(options, seed, start, size)
        clean, optimal = teacher_and_optimal(batch, q_rows(options, seed, start, size), options.teacher_temperature)
        for noise in options.teacher_noise:
            probs = noisy_policy(clean, noise, seed=1000 + seed)
            teacher = TabularTeacher(batch, probs, options.settings(seed))
            for estimator in options.estimators:
                setting = f"noise={noise:g} {estimator}"
                reference(curves, batch, setting, "teacher", probs, options.iterations)
                reference(curves, batch, setting, "optimal", optimal, options.iterations)
                for name in (*COPYING, *WITH_REWARD, *VALUE_BASED):
                    progress(f"imperfect-teacher {setting} {name} (seed {seed}, chunk {chunk})")
                    settings = options.settings(seed, estimator=estimator)
                    train_tabular(get_method(name), batch, teacher, settings, track(curves, batch, setting, name))
    summary = {
        setting: {m: curves.final(setting, m) for m in (*COPYING, *WITH_REWARD, *VALUE_BASED, "teacher", "optimal")}
        for setting in sorted({s for s, _, _ in curves.values})
    }
    return result("imperfect-teacher", curves, summary, options)
