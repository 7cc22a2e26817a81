"""Theorems 1 and 2: which expected updates are gradient fields (the asymmetry of their Jacobian)."""

from __future__ import annotations

from pathlib import Path

import torch

from distillcli.methods import get_method
from distillcli.objectives import ObjectiveOptions
from distillcli.studies.common import Curves, PaperOptions, Progress, StudyResult, options_dict
from distillcli.studies.exact import TabularMDP, enumerate_trajectories, update_jacobian
from distillcli.studies.figures import pyplot, save
from distillcli.trainer import UpdateOptions

GRADIENT_FIELD_METHODS = ("on-policy-distill", "on-policy-distill+r", "n-distill", "expected-entropy", "n-distill+r")


def gradient_field(options: PaperOptions, progress: Progress) -> StudyResult:
    """Relative asymmetry ||J - J^T|| / ||J|| of the exact expected update's Jacobian on random small MDPs."""
    curves = Curves("gradient-field")
    exact = UpdateOptions(gae_lambda=1.0, baseline="none", epochs=1, episode_ends="absorb")
    objective = ObjectiveOptions(gamma=1.0)
    n_mdps = min(options.mdps, 50)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for name in GRADIENT_FIELD_METHODS:
            progress(f"gradient-field {name}")
            values = []
            for index in range(n_mdps):
                mdp = TabularMDP.random(3, 3, 3, seed=index)
                generator = torch.Generator().manual_seed(10_000 + index)
                teacher = 2.0 * torch.randn(3, 3, generator=generator, dtype=torch.float64)
                student = torch.randn(3, 3, generator=generator, dtype=torch.float64)
                enumeration = enumerate_trajectories(mdp, teacher)
                jacobian = update_jacobian(get_method(name), mdp, enumeration, student, teacher, objective, exact)
                values.append(float((jacobian - jacobian.T).norm() / jacobian.norm()))
            curves.add("jacobian asymmetry", name, 0, torch.tensor(values))
    finally:
        torch.set_default_dtype(previous)
    summary = {name: curves.final("jacobian asymmetry", name) for name in GRADIENT_FIELD_METHODS}
    settings = {
        **options_dict(options),
        "gradient_field_mdps": n_mdps,
        "mdp": "random, 3 states, 3 actions, horizon 3",
    }

    def figure(path: Path) -> None:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(7, 4))
        names = list(GRADIENT_FIELD_METHODS)
        means = [max(curves.final("jacobian asymmetry", n), 1e-12) for n in names]
        ax.bar(names, means, color=["C3" if get_method(n).objective is None else "C0" for n in names])
        ax.set_yscale("log")
        ax.set_ylabel("||J - J^T|| / ||J||")
        ax.set_title("Jacobian asymmetry of the expected update (0 = gradient field)")
        ax.tick_params(axis="x", rotation=20)
        fig.tight_layout()
        save(fig, path)

    return StudyResult("gradient-field", curves, summary, settings, figure)
