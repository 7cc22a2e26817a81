"""``distill study``: do the paper's conclusions hold for neural students on real tasks?

Each study (:mod:`distillcli.study.grids`) is a declared grid of ordinary ``distill run`` s: env, teacher
condition, method and its options, student net, seed. The grid becomes a sweep plan (:func:`plan`), so a study runs
on the sweep's backends (local processes or Ray), skips the runs it finished before and resumes the interrupted ones.
Runs that several studies share (the same config) run once. :mod:`distillcli.study.analyse` then turns the runs
into each study's CSV, JSON, PNG and markdown section (claim, result, verdict).

Layout of ``--out``::

    runs/<run name>/       every run (its own run directory), and runs/summary.{md,csv,json}: the sweep table
    measures/<run>.json    measurements made on a finished student (KL under other control policies)
    <study>.{csv,json,png,md}
    study.md               the sections of the studies run, in order
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from distillcli.config import RunConfig
from distillcli.errors import DistillError
from distillcli.report import RunRecord
from distillcli.study.grids import SCALES, STUDIES, Cell, Scale, cells_of, run_config
from distillcli.sweep import Plan, Result, Task, Watcher, run_plan, task_or_record

__all__ = ["SCALES", "STUDIES", "StudyOptions", "plan", "study"]


@dataclass
class StudyOptions:
    names: list[str]  # studies, in order
    scale: str = "small"
    out: Path = Path("study")
    backend: str = "local"
    address: str | None = None
    jobs: int | None = None
    force: bool = False
    seeds: list[int] | None = None  # instead of the scale's


def parse_names(text: str) -> list[str]:
    names = list(STUDIES) if text.strip() == "all" else [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in STUDIES]
    if unknown or not names:
        raise DistillError(f"unknown study {', '.join(unknown) or repr(text)}: choose from {', '.join(STUDIES)} or all")
    return list(dict.fromkeys(names))


def plan(options: StudyOptions) -> tuple[Plan, dict[str, list[Cell]]]:
    """Every cell of the studies asked, as sweep tasks under ``OUT/runs`` (a config shared by studies runs once)."""
    if options.scale not in SCALES:
        raise DistillError(f"--scale must be one of {', '.join(SCALES)}, got {options.scale!r}")
    scale: Scale = SCALES[options.scale]
    if options.seeds is not None:
        scale = replace(scale, seeds=tuple(options.seeds))
    runs = options.out.resolve() / "runs"
    cells = {name: cells_of(name, scale) for name in options.names}
    tasks: list[Task] = []
    reused: list[RunRecord] = []
    order: list[str] = []
    resolved: dict[tuple[str | None, str | None], str] = {}
    for study_cells in cells.values():
        for cell in study_cells:
            if cell.name in order:
                continue
            order.append(cell.name)
            config = replace(run_config(cell, scale), out=str(runs / cell.name))
            config.validate()
            if config.student_net == "auto":  # as distill sweep does: the resolved size, so a rerun can compare it
                config = replace(config, student_net=_auto_net(config, resolved))
            task = task_or_record(cell.name, config, trust=False, force=options.force)
            if isinstance(task, RunRecord):
                reused.append(task)
            else:
                tasks.append(task)
    return Plan(runs, "study", tasks, reused, order), cells


def _auto_net(config: RunConfig, resolved: dict[tuple[str | None, str | None], str]) -> str:
    """``--student-net auto`` for the config's teacher, made explicit (one teacher load per teacher)."""
    key = (config.teacher, config.env)
    if key not in resolved:
        from distillcli.run.setup import prepare_run
        from distillcli.sb3.netspec import NetSpec
        from distillcli.sb3.student import resolve_net

        setup = prepare_run(replace(config, device="cpu"))
        teacher = setup.teacher
        net = resolve_net(NetSpec.parse("auto"), teacher.hidden_widths, teacher.policy, setup.observation_space)
        resolved[key] = str(net)
    return resolved[key]


@dataclass
class StudyResult:
    sweep: Result
    files: dict[str, dict[str, str]]  # study -> kind -> path
    sections: dict[str, dict[str, Any]]  # study -> its verdicts and headline numbers
    wall_seconds: float


def study(options: StudyOptions, watcher: Watcher | None = None) -> StudyResult:
    """Run the studies' grids, then write each study's artefacts and ``study.md`` into ``options.out``."""
    from distillcli.study.analyse import write_studies

    started = time.perf_counter()
    the_plan, cells = plan(options)
    result = run_plan(the_plan, options.backend, address=options.address, jobs=options.jobs, watcher=watcher)
    scale = SCALES[options.scale]
    files, sections = write_studies(cells, result.records, options.out, scale, options.scale)
    return StudyResult(result, files, sections, time.perf_counter() - started)
