"""``distill paper``: the paper's tabular studies (Figures 2-6 and Theorems 1-2), rerun with our own trainer.

Every study trains tabular students with the method records of :mod:`distillcli.methods` through
:mod:`distillcli.studies.tabular` (the trainer's own Eq. 1 code) or, for the exact studies, through
:mod:`distillcli.studies.exact`. One module per study; this registry runs them and writes ``<study>.png``,
``<study>.csv`` (``study,setting,method,iteration,mean,ci_low,ci_high``) and ``<study>.json`` (the settings
actually used, headline numbers, time taken) into the output directory.
"""

from __future__ import annotations

import csv
import ctypes
import gc
import io
import multiprocessing
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch

from distillcli.errors import DistillError
from distillcli.metrics import atomic_write_bytes, atomic_write_json
from distillcli.studies import action_space, chain, control_policy, counterexample, gradient_field, imperfect_teacher
from distillcli.studies.common import PaperOptions, Progress, StudyResult

RUNNERS: dict[str, Callable[[PaperOptions, Progress], StudyResult]] = {
    "control-policy": control_policy.control_policy,
    "action-space": action_space.action_space,
    "imperfect-teacher": imperfect_teacher.imperfect_teacher,
    "chain": chain.chain,
    "counterexample": counterexample.counterexample,
    "gradient-field": gradient_field.gradient_field,
}
STUDIES = tuple(RUNNERS)


def write(result: StudyResult, out: Path) -> dict[str, str]:
    """``<study>.png``, ``.csv``, ``.json`` in ``out``, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, ["study", "setting", "method", "iteration", "mean", "ci_low", "ci_high"])
    writer.writeheader()
    writer.writerows(sorted(result.curves.rows(), key=lambda r: (r["setting"], r["method"], r["iteration"])))
    paths = {kind: out / f"{result.name}.{kind}" for kind in ("png", "csv", "json")}
    atomic_write_bytes(paths["csv"], buffer.getvalue().encode())
    result.figure(paths["png"])
    atomic_write_json(
        paths["json"],
        {
            "study": result.name,
            "seconds": result.seconds,
            "cpu_seconds": result.cpu_seconds,
            "settings": result.settings,
            "summary": result.summary,
        },
    )
    return {kind: str(p) for kind, p in paths.items()}


# Longest first (at every scale), so that parallel jobs finish together.
BY_COST = ("action-space", "imperfect-teacher", "chain", "control-policy", "counterexample", "gradient-field")


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
HEAP_THRESHOLD = 8 << 20  # blocks of 8 MiB and more are mapped, and unmapped when freed


def fix_heap_thresholds() -> None:
    """Fix glibc's mmap threshold at 8 MiB (and its trim threshold with it). By default glibc raises the
    threshold to the size of each mapped block freed, up to 32 MiB: after the action-space study's large tables
    every block under 32 MiB is carved from a heap that is never given back, and the next study's many
    mid-sized tensors fragment it (``distill paper all`` reached 12-24 GB in imperfect-teacher that way).
    A fixed threshold keeps the dynamic adjustment off; large tensors go back to the system when freed."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, HEAP_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, 2 * HEAP_THRESHOLD)
    except (OSError, AttributeError):  # not glibc
        pass


def release_memory() -> None:
    """Give the memory of a finished study back: collect its objects and return the C heap's free pages to the
    system (glibc keeps freed blocks below its mmap threshold, which a study's large tables raise, so without
    this a later study's many mid-sized tensors fragment a heap that never shrinks)."""
    gc.collect()
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def run_and_write(name: str, options: PaperOptions, out: Path, threads: int) -> dict[str, Any]:
    """One study in a worker process (``distill paper --jobs``): run it, write its files, return its report."""
    torch.set_num_threads(threads)
    result = run_study(name, options, lambda _: None)
    files = write(result, out)
    return {"study": name, "seconds": round(result.seconds, 1), "files": files, "summary": result.summary}


def run_parallel(
    names: list[str], options: PaperOptions, out: Path, threads: int, jobs: int
) -> Iterator[dict[str, Any]]:
    """The studies in ``jobs`` worker processes, the longest first; their reports as they finish."""
    order = sorted(names, key=lambda n: BY_COST.index(n) if n in BY_COST else len(BY_COST))
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_and_write, name, options, out, threads) for name in order]
        for future in as_completed(futures):
            yield future.result()


def run_study(name: str, options: PaperOptions, progress: Progress) -> StudyResult:
    if name not in RUNNERS:
        raise DistillError(f"unknown study {name!r}; valid: {', '.join(STUDIES)}, all")
    fix_heap_thresholds()
    torch.manual_seed(0)
    started, cpu = time.perf_counter(), time.process_time()
    result = RUNNERS[name](options, progress)
    result.seconds = time.perf_counter() - started
    result.cpu_seconds = time.process_time() - cpu
    return result
