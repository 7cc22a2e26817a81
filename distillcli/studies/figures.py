"""The studies' figures (matplotlib, Agg backend, written atomically); imported only when a figure is drawn."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from distillcli.errors import DistillError
from distillcli.metrics import atomic_write_bytes


def pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise DistillError("distill paper draws figures with matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    pyplot().close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def curves_figure(path: Path, study: str, table: list[dict[str, Any]], log_panels: tuple[str, ...]) -> None:
    """Panels per setting, a line per method with its 95% band; only the CSV's rows are needed."""
    plt = pyplot()
    settings = list(dict.fromkeys(r["setting"] for r in table))
    columns = min(4, len(settings))
    rows = math.ceil(len(settings) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.3 * rows), squeeze=False)
    # One colour per method across every panel; reference lines (teacher, optimum) are dashed.
    learners = [m for m in dict.fromkeys(r["method"] for r in table) if m not in ("teacher", "optimal")]
    palette = plt.get_cmap("tab10" if len(learners) <= 10 else "tab20")
    colours: dict[str, Any] = {m: palette(i) for i, m in enumerate(learners)} | {"teacher": "k", "optimal": "0.5"}
    for ax, setting in zip(axes.flat, settings, strict=False):
        methods = list(dict.fromkeys(r["method"] for r in table if r["setting"] == setting))
        for method in methods:
            points = sorted(
                (r["iteration"], r["mean"], r["ci_low"], r["ci_high"])
                for r in table
                if r["setting"] == setting and r["method"] == method
            )
            x = [p[0] for p in points]
            dashed = method in ("teacher", "optimal")
            ax.plot(x, [p[1] for p in points], label=method, lw=1.3, ls="--" if dashed else "-", color=colours[method])
            if not dashed:
                ax.fill_between(x, [p[2] for p in points], [p[3] for p in points], alpha=0.15, color=colours[method])
        if any(key in setting for key in log_panels):
            ax.set_yscale("log")
        ax.set_title(setting, fontsize=9)
        ax.set_xlabel("iteration")
    for ax in list(axes.flat)[len(settings) :]:
        ax.axis("off")
    entries = {label: handle for ax in axes.flat for handle, label in zip(*ax.get_legend_handles_labels(), strict=True)}
    fig.legend(list(entries.values()), list(entries), loc="lower center", ncol=min(7, len(entries)), fontsize=8)
    fig.suptitle(study)
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    save(fig, path)
