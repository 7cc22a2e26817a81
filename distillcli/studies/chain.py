"""Fig. 6: an optimal and an adversarial teacher on a chain (rewards +-1: the paper's returns of about +-0.93).

The two teachers are one batch: two blocks of copies of the chain, each with its teacher.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from distillcli.gridworld import GridBatch, chain_layout
from distillcli.methods import get_method
from distillcli.studies.common import (
    Curves,
    PaperOptions,
    Progress,
    StudyResult,
    copies,
    policy_returns,
    reference,
    result,
    track,
)
from distillcli.studies.tabular import TabularTeacher, train_tabular
from distillcli.studies.teachers import adversarial_q, effect_values, softmax_policy

CHAIN_METHODS = (
    "on-policy-distill",
    "n-distill",
    "expected-entropy",
    "on-policy-distill+r",
    "expected-entropy+r",
    "+r+v-cond",
    "teacher-v-reward",
    "td+v-teacher",
    "td+v-zero",
    "rl",
)
CHAIN_TEACHERS = ("optimal teacher", "adversarial teacher")


def chain(options: PaperOptions, progress: Progress) -> StudyResult:
    """Every column of the batch is the same chain: the spread is over independent students (sampling)."""
    curves = Curves("chain")
    grid = replace(options.grid, size=options.chain_length)
    reward = options.chain_reward
    layouts = [chain_layout(options.chain_length, reward, -reward) for _ in range(options.mdps)]
    for seed in range(options.seeds):
        base = GridBatch.from_layouts(layouts, grid, options.device)
        optimal = softmax_policy(base, effect_values(base, base.optimal_q()), 0.0)
        adversarial = softmax_policy(base, effect_values(base, adversarial_q(base)), 0.0)
        for setting, probs in zip(CHAIN_TEACHERS, (optimal, adversarial), strict=True):
            reference(curves, setting, "teacher", policy_returns(base, probs), options.iterations)
        batch = copies(base, 2)
        teacher = TabularTeacher(batch, torch.cat([optimal, adversarial]), options.settings(seed))
        for name in CHAIN_METHODS:
            progress(f"chain {name}: both teachers in one batch (seed {seed})")
            evaluate = track(curves, batch, list(CHAIN_TEACHERS), name)
            train_tabular(get_method(name), batch, teacher, options.settings(seed), evaluate)
    summary: dict[str, Any] = {s: {m: curves.final(s, m) for m in (*CHAIN_METHODS, "teacher")} for s in CHAIN_TEACHERS}
    summary["ends"] = {"reward": reward, "penalty": -reward}
    return result("chain", curves, summary, options)
