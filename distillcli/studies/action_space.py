"""Fig. 4: the size of the action space (extra actions) against on-policy, entropy-regularised and
expected-entropy distillation."""

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

ACTION_SPACE_METHODS = ("on-policy-distill", "entropy-regularised", "expected-entropy", "rl")


def action_space(options: PaperOptions, progress: Progress) -> StudyResult:
    curves = Curves("action-space")
    for n_actions in options.action_sizes:
        setting = f"|A|={n_actions}"
        for seed, chunk, start, size in chunks(options, n_actions):
            batch = grid_batch(options, seed, start, size, n_actions=n_actions)
            probs, _ = teacher_and_optimal(batch, q_rows(options, seed, start, size), options.teacher_temperature)
            teacher = TabularTeacher(batch, probs, options.settings(seed))
            reference(curves, batch, setting, "teacher", probs, options.iterations)
            for name in ACTION_SPACE_METHODS:
                progress(f"action-space {setting} {name} (seed {seed}, chunk {chunk})")
                evaluate = track(curves, batch, setting, name)
                train_tabular(get_method(name), batch, teacher, options.settings(seed), evaluate)
    summary = {
        f"|A|={n}": {
            m: {"start": curves.series(f"|A|={n}", m)[0][1], "final": curves.final(f"|A|={n}", m)}
            for m in (*ACTION_SPACE_METHODS, "teacher")
        }
        for n in options.action_sizes
    }
    return result("action-space", curves, summary, options)
