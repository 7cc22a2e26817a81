"""Fig. 6: an optimal and an adversarial teacher on a chain."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from distillcli.gridworld import GridBatch, chain_layout
from distillcli.methods import get_method
from distillcli.studies.common import Curves, PaperOptions, Progress, StudyResult, reference, result, track
from distillcli.studies.tabular import TabularTeacher, train_tabular
from distillcli.studies.teachers import action_values, adversarial_q, softmax_policy

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
            reference(curves, batch, setting, "teacher", probs, options.iterations)
            for name in CHAIN_METHODS:
                progress(f"chain {setting} {name} (seed {seed})")
                train_tabular(
                    get_method(name), batch, teacher, options.settings(seed), track(curves, batch, setting, name)
                )
    summary: dict[str, Any] = {
        s: {m: curves.final(s, m) for m in (*CHAIN_METHODS, "teacher")}
        for s in ("optimal teacher", "adversarial teacher")
    }
    summary["ends"] = {"reward": 10.0, "penalty": -10.0}
    return result("chain", curves, summary, options)
