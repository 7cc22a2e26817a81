"""Compare finished runs: a table (markdown + CSV) of return ratio, env steps to 95% of the teacher and wall time
per method and student size, and a plot of learning curves. ``distill sweep`` and ``distill report`` both end here.

Statistics are over seeds, counting finished runs only: the mean and the half-width of its 95% Student-t
confidence interval, ``t(0.975, n-1) * s / sqrt(n)`` with ``s`` the sample standard deviation (none for n = 1).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillcli.config import check_path
from distillcli.errors import DistillError, short
from distillcli.metrics import atomic_write_bytes, jsonable, open_regular, read_bounded
from distillcli.sb3.netspec import net_label
from distillcli.stats import REACHED, mean_ci, progress, reached

TABLE_MD, TABLE_CSV, RUNS_CSV, PLOT = "table.md", "table.csv", "runs.csv", "curves.png"
MAX_DEPTH = 8  # directory levels searched below each DIR for run directories
MAX_DIRS = 100_000  # directories looked at below each DIR
MAX_JSON_BYTES = 1 << 20  # a summary.json or config.json
MAX_LINE = 1 << 16  # a metrics.jsonl row
MAX_METRICS_BYTES = 1 << 30
MAX_NUMBER = 1e15  # no return, step count or time a run writes is larger: anything past it is a damaged file


def _text(value: object, limit: int = 120) -> str:
    """A value from a run directory as text that is safe to print: one line, printable (no terminal escapes)."""
    return short(value, limit)


@dataclass
class RunRecord:
    """One run of a comparison, finished or not: where it is, what it was, and how it went."""

    name: str
    run_dir: str
    method: str
    seed: int | None
    net: str
    env_id: str | None
    status: str  # finished | diverged | interrupted | incomplete | failed
    error: str = ""
    summary: dict[str, Any] | None = None
    curve: list[tuple[float, float]] = field(default_factory=list)  # (env steps, student return) per eval
    reused: bool = False  # finished before this sweep started, so not run again

    @property
    def ok(self) -> bool:
        return self.status == "finished" and self.summary is not None

    def _summary_float(self, key: str) -> float:
        value = (self.summary or {}).get(key)
        return _number_or_nan(value)

    @property
    def teacher_return(self) -> float:
        return self._summary_float("teacher_return")

    @property
    def return_ratio(self) -> float:
        return self._summary_float("return_ratio")

    @property
    def random_return(self) -> float:
        return self._summary_float("random_return")

    @property
    def score(self) -> float:
        """The normalised score (the return ratio for summaries of earlier versions, which have no random return)."""
        value = self._summary_float("score")
        return (
            value
            if math.isfinite(value)
            else progress(self._summary_float("student_return"), self.teacher_return, self.random_return)
        )

    @property
    def wall_seconds(self) -> float:
        return self._summary_float("wall_seconds")

    @property
    def steps_to_95(self) -> float | None:
        """Env steps at the first evaluation that reached 95% of the teacher; None if none did."""
        teacher = self.teacher_return
        if not math.isfinite(teacher):
            return None
        random = self.random_return
        return next((steps for steps, student in self.curve if reached(student, teacher, random)), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "run_dir": self.run_dir,
            "method": self.method,
            "seed": self.seed,
            "net": self.net,
            "env_id": self.env_id,
            "status": self.status,
            "error": self.error,
            "reused": self.reused,
            "score": self.score,
            "steps_to_95": self.steps_to_95,
            "summary": self.summary,
        }


def _number_or_nan(value: Any) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and abs(value) <= MAX_NUMBER
    return float(value) if ok else math.nan


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(read_bounded(path, MAX_JSON_BYTES))
    except (DistillError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _read_curve(path: Path) -> list[tuple[float, float]]:
    """(env steps, student return) of each eval row; a FIFO, a device or a huge file is not read."""
    curve: list[tuple[float, float]] = []
    try:
        with os.fdopen(open_regular(path, os.O_RDONLY, "metrics file"), "rb") as handle:
            total = 0
            while total < MAX_METRICS_BYTES and (line := handle.readline(MAX_LINE)):
                total += len(line)
                try:
                    row = json.loads(line)
                except (ValueError, RecursionError):
                    continue  # a run killed mid-line leaves a partial last line; the rest is good
                if isinstance(row, dict) and row.get("kind") == "eval":
                    steps, student = _number_or_nan(row.get("env_steps")), _number_or_nan(row.get("student_return"))
                    if math.isfinite(steps) and math.isfinite(student):
                        curve.append((steps, student))
    except (DistillError, OSError):
        return curve
    return curve


def is_run_dir(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "summary.json").is_file()


def read_run(run_dir: Path, name: str | None = None) -> RunRecord | None:
    """The record of one run directory written by ``distill run``; None if it holds no run."""
    if not is_run_dir(run_dir):
        return None
    config = _read_json(run_dir / "config.json") or {}
    summary = _read_json(run_dir / "summary.json")
    source = summary or config
    status = str(summary.get("status", "unknown")) if summary else "incomplete"
    error = "" if summary else "no summary.json: the run stopped before it ended (crashed or still running)"
    if (run_dir / "summary.json").is_file() and summary is None:
        status, error = "failed", "summary.json is not readable JSON"
    seed = source.get("seed")
    net = source.get("student_net", "?")
    return RunRecord(
        name=_text(name or run_dir.name),
        run_dir=str(run_dir),
        method=_text(source.get("method", "?"), 60),
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        net=_text(net_label(net if isinstance(net, str | list) else "?"), 60),
        env_id=_text(source.get("env_id") or config.get("env") or "", 80) or None,
        status=_text(status, 40),
        error=error,
        summary=summary,
        curve=_read_curve(run_dir / "metrics.jsonl"),
    )


def _run_dirs(top: Path) -> list[Path]:
    """The run directories at and below ``top``: at most MAX_DEPTH levels down and MAX_DIRS directories, never
    through a link (no loops) or into a hidden folder (an earlier run that --force moved aside)."""
    if is_run_dir(top):
        return [top]
    found, stack, seen = [], [(top, 0)], 0
    while stack and seen < MAX_DIRS:
        folder, level = stack.pop()
        seen += 1
        if level and is_run_dir(folder):
            found.append(folder)
        if level >= MAX_DEPTH:
            continue
        try:
            with os.scandir(folder) as entries:
                subfolders = [
                    Path(e.path) for e in entries if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
                ]
        except OSError:
            continue
        stack.extend((sub, level + 1) for sub in subfolders)
    return sorted(found)


def find_runs(dirs: list[Path]) -> list[RunRecord]:
    """Every run directory at or under each of ``dirs`` (each must hold at least one)."""
    records: list[RunRecord] = []
    seen: set[Path] = set()
    for top in dirs:
        check_path(str(top), "DIR")
        if not top.is_dir():
            raise DistillError(
                f"{short(top)} is not a directory" if top.exists() else f"no such directory: {short(top)}"
            )
        found = _run_dirs(top)
        if not found:
            raise DistillError(
                f"no runs in {top} (a run directory holds the config.json and summary.json of distill run)"
            )
        for run_dir in found:
            if run_dir.resolve() not in seen:
                seen.add(run_dir.resolve())
                record = read_run(run_dir)
                if record is not None:
                    records.append(record)
    return sorted(records, key=_order)


def _order(record: RunRecord) -> tuple[Any, ...]:
    """Rows by env and method, then student size (8x8 before 32x32), runs by seed."""
    widths = record.net.split("x")
    size = tuple(int(w) for w in widths) if all(w.isdigit() for w in widths) else (math.inf,)
    return (str(record.env_id), record.method, size, -1 if record.seed is None else record.seed, record.run_dir)


@dataclass
class Group:
    """The runs of one (env, method, student net): one row of the table."""

    env_id: str | None
    method: str
    net: str
    records: list[RunRecord]

    def row(self) -> dict[str, Any]:
        ok = [r for r in self.records if r.ok]
        steps = [s for s in (r.steps_to_95 for r in ok) if s is not None]
        score_mean, score_ci = mean_ci(r.score for r in ok)
        ratio_mean, ratio_ci = mean_ci(r.return_ratio for r in ok)
        steps_mean, steps_ci = mean_ci(steps)
        wall_mean, wall_ci = mean_ci(r.wall_seconds for r in ok)
        return {
            "env_id": self.env_id,
            "method": self.method,
            "net": self.net,
            "runs": len(self.records),
            "finished": len(ok),
            "score_mean": score_mean,
            "score_ci95": score_ci,
            "return_ratio_mean": ratio_mean,
            "return_ratio_ci95": ratio_ci,
            "reached_95": len(steps),
            "steps_to_95_mean": steps_mean,
            "steps_to_95_ci95": steps_ci,
            "wall_seconds_mean": wall_mean,
            "wall_seconds_ci95": wall_ci,
        }


def group(records: list[RunRecord]) -> list[Group]:
    """Rows in the order their first run appears (a sweep lists methods in the order given)."""
    groups: dict[tuple[str | None, str, str], Group] = {}
    for record in records:
        key = (record.env_id, record.method, record.net)
        groups.setdefault(key, Group(*key, [])).records.append(record)
    return list(groups.values())


def _number(value: float | None, digits: int) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}" if digits == 0 else f"{value:.{digits}f}"


def _with_ci(mean: float | None, ci: float | None, digits: int) -> str:
    if mean is None:
        return "–"
    return _number(mean, digits) + ("" if ci is None else f" ± {_number(ci, digits)}")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


COLUMNS = ("method", "student net", "finished", "score", "return ratio", "reached 95%", "env steps to 95%", "wall s")


def table_rows(groups: list[Group]) -> list[list[str]]:
    """The table's cells as text, shared by table.md and the terminal table."""
    several_envs = len({g.env_id for g in groups}) > 1
    rows = []
    for g in groups:
        r = g.row()
        rows.append(
            [
                f"{g.method} ({g.env_id})" if several_envs else g.method,
                g.net,
                f"{r['finished']}/{r['runs']}",
                _with_ci(r["score_mean"], r["score_ci95"], 3),
                _with_ci(r["return_ratio_mean"], r["return_ratio_ci95"], 3),
                f"{r['reached_95']}/{r['finished']}",
                _with_ci(r["steps_to_95_mean"], r["steps_to_95_ci95"], 0),
                _with_ci(r["wall_seconds_mean"], r["wall_seconds_ci95"], 1),
            ]
        )
    return rows


def markdown(records: list[RunRecord]) -> str:
    groups = group(records)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table_rows(groups)]
    teachers = sorted({f"{r.env_id}: {r.teacher_return:g}" for r in records if r.ok})
    lines += [
        "",
        "Mean ± half-width of the 95% t interval over seeds (finished runs only). Return ratio: student / "
        "teacher return at the end. Env steps to 95%: first evaluation at 95% of the teacher's return, over the "
        "runs that reached it. Wall s: training time per run.",
    ]
    if teachers:
        lines += ["", "Teacher return: " + ", ".join(teachers) + "."]
    failed = [r for r in records if not r.ok]
    if failed:
        lines += ["", "Runs that did not finish:", "", "| run | status | error |", "|---|---|---|"]
        lines += [f"| {_cell(r.name)} | {r.status} | {_cell(r.error) or '–'} |" for r in failed]
    return "\n".join(lines) + "\n"


def _csv(header: list[str], rows: list[list[Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return buffer.getvalue().encode()


def table_csv(records: list[RunRecord]) -> bytes:
    rows = [g.row() for g in group(records)]
    header = list(rows[0]) if rows else list(Group(None, "", "", []).row())
    return _csv(header, [[row[k] for k in header] for row in rows])


def runs_csv(records: list[RunRecord]) -> bytes:
    header = ["name", "method", "seed", "net", "env_id", "status", "score", "return_ratio", "steps_to_95"]
    header += ["wall_seconds"]
    header += ["reused", "run_dir", "error"]
    rows = [
        [
            r.name,
            r.method,
            r.seed,
            r.net,
            r.env_id,
            r.status,
            jsonable(r.score),
            jsonable(r.return_ratio),
            r.steps_to_95,
            *rest,
        ]
        for r in records
        for rest in [[jsonable(r.wall_seconds), r.reused, r.run_dir, r.error]]
    ]
    return _csv(header, rows)


def plot(records: list[RunRecord]) -> bytes:
    """Learning curves as PNG: return / teacher return against env steps, mean over seeds, band = min..max."""
    import numpy as np
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    figure = Figure(figsize=(7, 4.5), layout="constrained")
    axes = figure.add_subplot()
    groups = group(records)
    several_nets = len({g.net for g in groups}) > 1
    several_envs = len({g.env_id for g in groups}) > 1
    drawn = 0
    for g in groups:
        runs = [r for r in g.records if r.ok and r.curve]
        if not runs:
            continue
        grid = np.array(sorted({steps for r in runs for steps, _ in r.curve}))
        curves = []
        for r in runs:
            steps = np.array([s for s, _ in r.curve])
            ratios = np.array([progress(v, r.teacher_return, r.random_return) for _, v in r.curve])
            # Each run is interpolated between its own evaluations only (no extrapolation past its last).
            curves.append(np.where(grid <= steps.max(), np.interp(grid, steps, ratios), np.nan))
        stack = np.vstack(curves)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a column of NaN (damaged curves) stays NaN, silently
            mean = np.nanmean(stack, axis=0)
            low, high = np.nanmin(stack, axis=0), np.nanmax(stack, axis=0)
        label = g.method + (f" {g.net}" if several_nets else "") + (f" ({g.env_id})" if several_envs else "")
        (line,) = axes.plot(grid, mean, label=f"{label} (n={len(runs)})")
        if len(runs) > 1:
            axes.fill_between(grid, low, high, alpha=0.2, color=line.get_color())
        drawn += 1
    axes.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    axes.axhline(REACHED, color="grey", linewidth=0.8, linestyle=":")
    axes.set_xlabel("env steps")
    axes.set_ylabel("student return / teacher return")
    envs = sorted({str(g.env_id) for g in groups})
    axes.set_title(f"{', '.join(envs)}: mean over seeds (band: min to max)")
    if drawn:
        axes.legend(fontsize="small")
    else:
        axes.text(0.5, 0.5, "no finished runs", ha="center", va="center", transform=axes.transAxes)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def write_report(records: list[RunRecord], out: Path) -> dict[str, str]:
    """Write table.md, table.csv, runs.csv and curves.png into ``out`` (each atomically); return their paths."""
    files = {
        TABLE_MD: markdown(records).encode(),
        TABLE_CSV: table_csv(records),
        RUNS_CSV: runs_csv(records),
        PLOT: plot(records),
    }
    try:
        for name, data in files.items():
            atomic_write_bytes(out / name, data)
    except OSError as error:
        raise DistillError(f"cannot write the report to {out}: {error.strerror or error}") from None
    return {name: str(out / name) for name in files}


def document(records: list[RunRecord], files: dict[str, str]) -> dict[str, Any]:
    """What ``--json`` prints: one object per run (with its summary), the table's rows, the files written."""
    return {
        "runs": [r.to_json() for r in records],
        "groups": [g.row() for g in group(records)],
        "files": files,
    }


def report(dirs: list[Path], out: Path | None) -> tuple[list[RunRecord], dict[str, Any]]:
    """``distill report``: the table and plot of existing run directories."""
    if not dirs:
        raise DistillError("give at least one directory of runs")
    for top in dirs:
        check_path(str(top), "DIR")
    if out is None:
        if len(dirs) > 1:
            raise DistillError("several directories: say where the table goes with --out DIR")
        out = dirs[0]
    check_path(str(out), "--out")
    records = find_runs(dirs)
    if out.exists() and not out.is_dir():
        raise DistillError(f"--out {out} exists and is not a directory")
    return records, document(records, write_report(records, out))
