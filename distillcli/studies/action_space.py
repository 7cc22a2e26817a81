"""Fig. 4: the size of the action space (extra actions) against on-policy, entropy-regularised and
expected-entropy distillation.

What the extra actions do is not in the paper; every construction in ``PaperOptions.extra_actions`` (repeat a
move, stay put, a random move; ``noop-moves``: stay put, with a teacher that keeps to the four moves, as a
Q-learner of the original MDP would) trains side by side, one block of the batch each, and is reported as its own
setting (``repeat |A|=400``, ...). With four actions they all coincide: ``|A|=4`` is run once. A scale may run
fewer MDPs or constructions at the wide sizes (``PaperOptions.action_size_plan``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from distillcli.gridworld import GridBatch
from distillcli.methods import get_method
from distillcli.studies.common import (
    Curves,
    PaperOptions,
    Progress,
    StudyResult,
    chunks,
    grid_batch,
    policy_returns,
    q_rows,
    reference,
    result,
    track,
)
from distillcli.studies.tabular import TabularTeacher, train_tabular
from distillcli.studies.teachers import effect_values, softmax_policy, uniform_policy

ACTION_SPACE_METHODS = ("on-policy-distill", "entropy-regularised", "expected-entropy", "rl")


def teacher(batch: GridBatch, q: Tensor, temperature: float, construction: str) -> Tensor:
    """softmax(Q / T) over all actions; for ``noop-moves`` over the four moves only (the extra actions, which
    the Q-learning teacher never had, get probability zero: log-probability at the floor for the students)."""
    values = effect_values(batch, q)
    if construction.endswith("-moves"):
        values[:, 4:] = -torch.inf
    return softmax_policy(batch, values, temperature)


def setting_name(extra: str, n_actions: int) -> str:
    return "|A|=4" if n_actions == 4 else f"{extra} |A|={n_actions}"


def action_space(options: PaperOptions, progress: Progress) -> StudyResult:
    curves = Curves("action-space")
    for n_actions, mdps, modes in options.action_size_plan():
        settings = [setting_name(m, n_actions) for m in modes]
        for seed, chunk, start, size in chunks(replace(options, mdps=mdps), n_actions, len(modes)):
            parts = [
                grid_batch(options, seed, start, size, n_actions=n_actions, extra_actions=m.split("-")[0])
                for m in modes
            ]
            q = q_rows(options, seed, start, size)
            probs = [teacher(part, q, options.teacher_temperature, m) for part, m in zip(parts, modes, strict=True)]
            for setting, part, p in zip(settings, parts, probs, strict=True):
                reference(curves, setting, "teacher", policy_returns(part, p), options.iterations)
                reference(curves, setting, "uniform", policy_returns(part, uniform_policy(part)), options.iterations)
            batch = GridBatch.concat(parts)
            tabular_teacher = TabularTeacher(batch, torch.cat(probs), options.settings(seed))
            del parts, probs
            for name in ACTION_SPACE_METHODS:
                progress(f"action-space |A|={n_actions} {name} (seed {seed}, chunk {chunk})")
                evaluate = track(curves, batch, settings, name)
                train_tabular(get_method(name), batch, tabular_teacher, options.settings(seed), evaluate)
            del batch, tabular_teacher
    summary: dict[str, Any] = {}
    for setting in dict.fromkeys(s for s, _, _ in curves.values):
        summary[setting] = {
            m: {"start": curves.series(setting, m)[0][1], "final": curves.final(setting, m)}
            for m in (*ACTION_SPACE_METHODS, "teacher", "uniform")
        }
    return result("action-space", curves, summary, options)
