"""``distill study``'s results: per study, a table over seeds (CSV, JSON), a figure (PNG) and a markdown section
that states the paper's claim, what the runs show, and a verdict computed from the numbers by the rule it names.

Two measurements go beyond what a run writes: the KL from teacher to student under the teacher's, the student's
and the uniform policy's state distributions (the control-policy study), and the signal-to-noise ratio of each
method's gradient at the start of training (the action-space study, the paper's mechanism). Both are cached under
``measures/`` so a rerun reads them back.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from distillcli.errors import DistillError
from distillcli.metrics import atomic_write_bytes, atomic_write_json
from distillcli.report import RunRecord
from distillcli.stats import first_reaching, mean_ci, score
from distillcli.study.grids import STUDIES, Cell, Scale, run_config

UNTESTED = "untested (one seed)"
REACH = 0.95  # "env steps to 95% of the teacher": the normalised score the curve must reach


# ------------------------------------------------------------------------------------------------ the rows


def _mean(values: list[float]) -> tuple[float | None, float | None]:
    return mean_ci(v for v in values if v is not None and math.isfinite(v))


def setting_row(cells: list[Cell], records: dict[str, RunRecord]) -> dict[str, Any]:
    """One setting (a cell without its seed) over its seeds."""
    first = cells[0]
    done = [records[c.name] for c in cells if c.name in records and records[c.name].ok]
    scores = [r.score for r in done]
    returns = [r._summary_float("student_return") for r in done]
    teachers = [r.teacher_return for r in done]
    randoms = [r.random_return for r in done]
    reach_steps: list[float] = []
    for record in done:
        target = record.random_return + REACH * (record.teacher_return - record.random_return)
        at = first_reaching(record.curve, target) if record.teacher_return > record.random_return else None
        if at is not None:
            reach_steps.append(at)
    score, score_ci = _mean(scores)
    ret, ret_ci = _mean(returns)
    steps, steps_ci = _mean(reach_steps)
    return {
        "env": first.env,
        "condition": first.condition,
        "variant": first.variant.label,
        "method": first.variant.method,
        "options": dict(first.variant.options),
        "net": first.net,
        "seeds": len(cells),
        "finished": len(done),
        "score": score,
        "score_ci": score_ci,
        "return": ret,
        "return_ci": ret_ci,
        "teacher_return": _mean(teachers)[0],
        "random_return": _mean(randoms)[0],
        "kl_end": _mean([r._summary_float("kl_end") for r in done])[0],
        "steps_to_95": steps,
        "steps_to_95_ci": steps_ci,
        "reached_95": len(reach_steps),
        "beat_teacher": sum(r > t for r, t in zip(returns, teachers, strict=True)),
        "recovered": sum(r > 0 for r in returns),
    }


def settings(cells: list[Cell]) -> list[list[Cell]]:
    grouped: dict[str, list[Cell]] = {}
    for cell in cells:
        grouped.setdefault(cell.setting, []).append(cell)
    return list(grouped.values())


# -------------------------------------------------------------------------------------- extra measurements


def _setup(cell: Cell, scale: Scale) -> Any:
    from distillcli.run.setup import prepare_run

    return prepare_run(replace(run_config(cell, scale), device="cpu"))


def kl_under_controls(cell: Cell, run_dir: Path, scale: Scale, seed: int = 0) -> dict[str, float]:
    """Mean KL(pi || pi_th) on the states that the student, the teacher and the uniform policy visit (each acting
    stochastically, ``scale.measure_steps`` env steps on 8 envs)."""
    from distillcli.rollout import to_env_actions, uniform_actions
    from distillcli.sb3.checkpoint import read_checkpoint
    from distillcli.sb3.teacher import load_teacher

    setup = _setup(cell, scale)
    out: dict[str, float] = {}
    for control in ("student", "teacher", "uniform"):
        venv = setup.make_env(8, 1_000_003 + seed)
        try:
            student = load_teacher(
                read_checkpoint(run_dir / "student.zip", role="model"),
                venv.observation_space,
                venv.action_space,
                torch.device("cpu"),
            )
            torch.manual_seed(seed)
            obs = venv.reset()
            kls = []
            for _ in range(max(1, scale.measure_steps // 8)):
                o = torch.as_tensor(obs)
                teacher_dist = setup.teacher.actor(o)
                student_dist, _ = student(o)
                kls.append(teacher_dist.kl(student_dist))
                if control == "student":
                    action = student_dist.sample()
                elif control == "teacher":
                    action = teacher_dist.sample()
                else:
                    action = uniform_actions(venv.action_space, 8, torch.device("cpu"))
                obs, _, _, _ = venv.step(to_env_actions(action, venv.action_space))
            out[control] = float(torch.cat(kls).mean())
        finally:
            venv.close()
    return out


def gradient_snr(cell: Cell, scale: Scale, segments: int = 8) -> float:
    """||E g||^2 / E||g - E g||^2 of the method's Eq. 1 gradient (actor and critic, value loss off) for a fresh
    32x32 student, over ``segments`` independent segments of 8 envs x 32 steps: how much of each update is signal."""
    from distillcli.methods import get_method
    from distillcli.objectives import ObjectiveOptions
    from distillcli.rollout import Collector
    from distillcli.sb3.student import Student, StudentNet
    from distillcli.trainer import UpdateOptions, segment_surrogate, segment_targets

    setup = _setup(cell, scale)
    method = get_method(cell.variant.method)
    device = torch.device("cpu")
    venv = setup.make_env(8, 2_000_003 + cell.seed)
    try:
        student = Student.build(
            venv, StudentNet([32, 32]), torch.nn.Tanh, learning_rate=1e-3, n_steps=32, minibatch_size=256, epochs=1,
            gamma=0.99, gae_lambda=0.5, device=device, seed=cell.seed,
        )  # fmt: skip
        collector = Collector(venv, setup.teacher, device, method.needs_teacher_value)
        options, settings = ObjectiveOptions(), UpdateOptions(epochs=1)
        gradients = []
        for _ in range(segments):
            rollout = collector.collect(32, method.control, student)
            targets = segment_targets(method, rollout, student, options, settings)
            steps, n = rollout.shape
            dist, values = student(rollout.obs[:steps].reshape(steps * n, *rollout.obs.shape[2:]))
            values = torch.zeros(steps * n) if values is None else values
            total = segment_surrogate(method, rollout, targets, dist, values, options, 0.0).mean()
            for parameter in student.parameters:  # the student's gradients live in one flat buffer (FlatAdam)
                parameter.grad = None if parameter.grad is None else parameter.grad.zero_()
            total.backward()
            gradients.append(torch.cat([p.grad.reshape(-1).clone() for p in student.parameters if p.grad is not None]))
    finally:
        venv.close()
    g = torch.stack(gradients)
    mean = g.mean(0)
    noise = float(((g - mean) ** 2).sum(1).mean())
    return float((mean**2).sum()) / noise if noise > 0 else math.inf


def sampled_returns(cell: Cell, run_dir: Path, scale: Scale) -> dict[str, float]:
    """The student's and the teacher's mean return when each samples its actions (the policies as distilled; a
    deterministic student takes the single most likely action, which extra copies of an action can change)."""
    from distillcli.run.evaluate import EVAL_SEED_OFFSET, evaluate
    from distillcli.sb3.checkpoint import read_checkpoint
    from distillcli.sb3.teacher import load_teacher

    setup = _setup(cell, scale)
    device = torch.device("cpu")

    def env(n: int) -> Any:
        return setup.make_env(n, cell.seed + EVAL_SEED_OFFSET)

    probe = env(1)
    try:
        checkpoint = read_checkpoint(run_dir / "student.zip", role="model")
        student = load_teacher(checkpoint, probe.observation_space, probe.action_space, device)
    finally:
        probe.close()
    torch.manual_seed(cell.seed)
    episodes = scale.eval_episodes
    return {
        "student": evaluate(student, env, episodes, device, deterministic=False).mean,
        "teacher": evaluate(setup.teacher, env, episodes, device, deterministic=False).mean,
    }


def _cached(path: Path, compute: Callable[[], Any]) -> Any:
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except ValueError:
            pass
    value = compute()
    atomic_write_json(path, value)
    return value


def add_measures(name: str, rows: list[dict[str, Any]], groups: list[list[Cell]], records: dict[str, RunRecord],
                 out: Path, scale: Scale) -> None:  # fmt: skip
    measures = out / "measures"
    if name == "control-policy":
        for row, cells in zip(rows, groups, strict=True):
            values: dict[str, list[float]] = {"student": [], "teacher": [], "uniform": []}
            for cell in cells:
                record = records.get(cell.name)
                if record is None or not record.ok:
                    continue
                measure = functools.partial(kl_under_controls, cell, Path(record.run_dir), scale)
                kl = _cached(measures / f"{cell.name}.kl.json", measure)
                for key in values:
                    values[key].append(kl[key])
            for key, series in values.items():
                row[f"kl_under_{key}"], row[f"kl_under_{key}_ci"] = _mean(series)
    if name == "action-space":
        for row, cells in zip(rows, groups, strict=True):
            snrs = [_cached(measures / f"{c.name}.snr.json", functools.partial(gradient_snr, c, scale)) for c in cells]
            log_snr, row["snr_log10_ci"] = _mean([math.log10(s) for s in snrs if s > 0])
            row["snr_start"] = None if log_snr is None else 10**log_snr  # geometric mean over seeds
            sampled = []
            for cell in cells:
                record = records.get(cell.name)
                if record is None or not record.ok:
                    continue
                measure = functools.partial(sampled_returns, cell, Path(record.run_dir), scale)
                got = _cached(measures / f"{cell.name}.sampled.json", measure)
                sampled.append(score(got["student"], got["teacher"], record.random_return))
            row["score_sampled"], row["score_sampled_ci"] = _mean(sampled)


# ---------------------------------------------------------------------------------------------- verdicts


def _fmt(value: float | None, ci: float | None = None, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    text = f"{value:,.{digits}f}"
    return text if ci is None else f"{text} ± {ci:,.{digits}f}"


def _compare(a: dict[str, Any], b: dict[str, Any], key: str = "score") -> str:
    """'higher', 'lower' or 'no clear difference': a's mean against b's, apart only if the 95% intervals are."""
    va, vb = a.get(key), b.get(key)
    if va is None or vb is None:
        return "no data"
    ca, cb = a.get(f"{key}_ci"), b.get(f"{key}_ci")
    if ca is None or cb is None:  # one seed: no interval, so no verdict
        return UNTESTED
    if va - ca > vb + cb:
        return "higher"
    if va + ca < vb - cb:
        return "lower"
    return "no clear difference"


def _find(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    """The first row whose columns (or, for a method option, its options; absent means "") match."""
    for row in rows:
        if all((row[k] if k in row else row["options"].get(k, "")) == v for k, v in match.items()):
            return row
    return None


def verdict_control(rows: list[dict[str, Any]]) -> tuple[str, list[str]]:
    lines, holds = [], []
    for env in dict.fromkeys(r["env"] for r in rows):
        student = _find(rows, env=env, variant="on-policy-distill")
        for other in ("on-policy-distill.control=teacher", "on-policy-distill.control=uniform", "bc", "dagger"):
            row = _find(rows, env=env, variant=other)
            if student is None or row is None:
                continue
            on_score = _compare(student, row)
            on_kl = _compare(student, row, "kl_under_student")  # "lower" is better here
            if UNTESTED in (on_score, on_kl):
                holds.append(UNTESTED)
            else:
                better = on_score == "higher" or on_kl == "lower"
                holds.append("yes" if better and on_score != "lower" and on_kl != "higher" else "no")
            lines.append(
                f"{env}: student control against {other}: score {_fmt(student['score'], student['score_ci'])} vs "
                f"{_fmt(row['score'], row['score_ci'])} ({on_score}); KL on the student's own states "
                f"{_fmt(student.get('kl_under_student'), student.get('kl_under_student_ci'), 3)} vs "
                f"{_fmt(row.get('kl_under_student'), row.get('kl_under_student_ci'), 3)} ({on_kl})"
            )
    return _overall(holds, "yes"), lines


def verdict_action(rows: list[dict[str, Any]]) -> tuple[str, list[str]]:
    lines, holds = [], []
    extras = [str(r["options"].get("extra_actions", "")) for r in rows]
    largest = max((int(e.split(":")[0]) for e in extras if e), default=0)
    for method, drop_expected in (("entropy-regularised", True), ("expected-entropy", False)):
        base = _find(rows, method=method, extra_actions="")
        for form in ("repeat", "noop"):
            big = _find(rows, method=method, extra_actions=f"{largest}:{form}")
            if base is None or big is None:
                continue
            key = "score_sampled" if big.get("score_sampled") is not None else "score"
            outcome = _compare(big, base, key)
            holds.append(UNTESTED if outcome == UNTESTED else "yes" if (outcome == "lower") == drop_expected else "no")
            lines.append(
                f"{method}, K = {largest} ({form}): sampled-action score {_fmt(big[key], big[f'{key}_ci'])} "
                f"against {_fmt(base[key], base[f'{key}_ci'])} at K = 1 ({outcome}; the paper expects "
                f"{'a drop' if drop_expected else 'none'}); deterministic score {_fmt(big['score'], big['score_ci'])}"
                f" against {_fmt(base['score'], base['score_ci'])}; gradient SNR "
                f"{_fmt(big.get('snr_start'), digits=3)} against {_fmt(base.get('snr_start'), digits=3)}"
            )
    return _overall(holds, "yes"), lines


def verdict_imperfect(rows: list[dict[str, Any]]) -> tuple[str, list[str]]:
    from distillcli.study.grids import COPYING

    lines, holds = [], []
    for env, condition in dict.fromkeys((r["env"], r["condition"]) for r in rows):
        group = [r for r in rows if r["env"] == env and r["condition"] == condition and r["finished"]]
        if not group:
            continue
        copying = [r for r in group if r["method"] in COPYING]
        reward = [r for r in group if r["method"] not in COPYING and r["method"] != "rl"]
        rl = _find(group, method="rl")
        beat_copy = sum(r["beat_teacher"] for r in copying)
        beat_reward = sum(r["beat_teacher"] for r in reward)
        n_copy, n_reward = sum(r["finished"] for r in copying), sum(r["finished"] for r in reward)
        best = max(group, key=lambda r: r["return"] if r["return"] is not None else -math.inf)
        lines.append(
            f"{env} {condition} (teacher {_fmt(group[0]['teacher_return'], digits=1)}): seeds above the teacher: "
            f"copying {beat_copy}/{n_copy}, with reward {beat_reward}/{n_reward}; best {best['variant']} "
            f"{_fmt(best['return'], best['return_ci'], 1)}; RL from scratch "
            f"{_fmt(rl['return'] if rl else None, rl['return_ci'] if rl else None, 1)}"
        )
        holds.append("yes" if beat_reward / max(n_reward, 1) > beat_copy / max(n_copy, 1) else "no")
    return _overall(holds, "yes"), lines


def verdict_adversarial(rows: list[dict[str, Any]]) -> tuple[str, list[str]]:
    from distillcli.study.grids import COPYING

    lines = []
    copying = [r for r in rows if r["method"] in COPYING]
    reward = [r for r in rows if r["method"] not in COPYING]
    rec_copy, n_copy = sum(r["recovered"] for r in copying), sum(r["finished"] for r in copying)
    rec_reward, n_reward = sum(r["recovered"] for r in reward), sum(r["finished"] for r in reward)
    for row in rows:
        lines.append(
            f"{row['variant']}: return {_fmt(row['return'], row['return_ci'], 1)}, recovered (return > 0) in "
            f"{row['recovered']}/{row['finished']} seeds"
        )
    lines.insert(0, f"recovered: copying {rec_copy}/{n_copy} seeds, with reward {rec_reward}/{n_reward}")
    if not n_copy or not n_reward:
        return "inconclusive", lines
    if rec_copy == 0 and rec_reward > 0:
        return "holds", lines
    if rec_reward == 0:
        return "does not hold at this budget", lines
    return "partly holds", lines


def verdict_capacity(rows: list[dict[str, Any]]) -> tuple[str, list[str]]:
    lines, holds = [], []
    for env in dict.fromkeys(r["env"] for r in rows):
        for net in dict.fromkeys(r["net"] for r in rows):
            base = _find(rows, env=env, net=net, method="on-policy-distill")
            for method in ("teacher-distill", "expected-entropy", "n-distill"):
                row = _find(rows, env=env, net=net, method=method)
                if base is None or row is None:
                    continue
                outcome = _compare(row, base)
                holds.append(UNTESTED if outcome == UNTESTED else "yes" if outcome != "lower" else "no")
                lines.append(
                    f"{env} {net}: {method} {_fmt(row['score'], row['score_ci'])} against on-policy-distill "
                    f"{_fmt(base['score'], base['score_ci'])}: {outcome}"
                )
    return _overall(holds, "yes"), lines


def _overall(outcomes: list[str], good: str) -> str:
    outcomes = [o for o in outcomes if o != UNTESTED]
    if not outcomes:
        return "inconclusive (no comparison with intervals: run more seeds)"
    share = sum(o == good for o in outcomes) / len(outcomes)
    return "holds" if share == 1 else "does not hold" if share == 0 else f"holds in {share:.0%} of comparisons"


VERDICTS: dict[str, Callable[[list[dict[str, Any]]], tuple[str, list[str]]]] = {
    "control-policy": verdict_control,
    "action-space": verdict_action,
    "imperfect-teacher": verdict_imperfect,
    "adversarial-teacher": verdict_adversarial,
    "capacity": verdict_capacity,
}
RULES = {
    "control-policy": "a comparison holds when student control is better on the score (higher) or on the KL on the "
    "student's own states (lower) with 95% intervals apart, and worse on neither (the paper's two measures)",
    "action-space": "with sampled actions (the distilled policies themselves), entropy-regularised must score lower "
    "at the largest K than at K = 1 (intervals apart) and expected-entropy must not",
    "imperfect-teacher": "per teacher, the share of seeds above the teacher must be larger with reward than for pure "
    "copying",
    "adversarial-teacher": "holds when no copying seed recovers and some seed with reward does",
    "capacity": "each recommended method must score no lower than on-policy-distill (intervals apart) at each size",
}


# ---------------------------------------------------------------------------------------------- figures


def figure(name: str, rows: list[dict[str, Any]], path: Path) -> None:
    from distillcli.studies.figures import pyplot, save

    plt = pyplot()
    # An imperfect teacher's return can be close to the random policy's, where the normalised score explodes: the
    # weak-teacher studies show returns, with the teacher's and the random policy's as lines.
    key = "return" if name in ("imperfect-teacher", "adversarial-teacher") else "score"
    if name == "action-space" and any(r.get("score_sampled") is not None for r in rows):
        key = "score_sampled"  # the distilled policies themselves (see sampled_returns)
    panels = list(dict.fromkeys(_panel(name, r) for r in rows))
    columns = min(3, len(panels))
    grid_rows = math.ceil(len(panels) / columns)
    height = max(3.0, 0.22 * max(sum(_panel(name, r) == p for r in rows) for p in panels) + 1.4)
    width = max(7.5, 5.6 * columns)  # the axis label must fit under a single panel too
    fig, axes = plt.subplots(grid_rows, columns, figsize=(width, height * grid_rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        mine = [r for r in rows if _panel(name, r) == panel]
        labels = [_bar_label(name, r) for r in mine]
        means = [r[key] if r[key] is not None else math.nan for r in mine]
        errors = [r[f"{key}_ci"] or 0.0 for r in mine]
        ax.barh(range(len(mine)), means, xerr=errors, color="#4c72b0", alpha=0.85, capsize=2)
        ax.set_yticks(range(len(mine)), labels, fontsize=7)
        ax.invert_yaxis()
        if key.startswith("score"):
            ax.axvline(1.0, color="k", linestyle="--", linewidth=0.8)  # the teacher
            ax.axvline(0.0, color="grey", linestyle=":", linewidth=0.8)  # the random policy
            sampled = " (actions sampled)" if key == "score_sampled" else ""
            ax.set_xlabel(f"normalised score{sampled} (0 random, 1 teacher), mean ± 95% CI")
        else:
            ax.axvline(0.0, color="grey", linestyle=":", linewidth=0.8)
            for column, colour, label in (("teacher_return", "r", "teacher"), ("random_return", "k", "random")):
                value = mine[0][column]
                if value is not None:
                    ax.axvline(value, color=colour, linestyle="--", linewidth=0.8, label=label)
            ax.legend(fontsize=7, loc="best")
            ax.set_xlabel("return, mean ± 95% CI")
        ax.set_title(panel, fontsize=9)
    fig.suptitle(f"{STUDIES[name].title} ({STUDIES[name].figure})", fontsize=10)
    fig.tight_layout()
    save(fig, path)


def _panel(name: str, row: dict[str, Any]) -> str:
    env = row["env"].split("/")[-1]
    if name in ("imperfect-teacher", "adversarial-teacher"):
        return f"{env}, {row['condition']} teacher"
    if name == "capacity":
        return f"{env}"
    return env


def _bar_label(name: str, row: dict[str, Any]) -> str:
    if name == "capacity":
        return f"{row['method']} {row['net']}"
    if name == "action-space":
        return f"{row['method']} K={row['options'].get('extra_actions') or '1'}"
    return str(row["variant"])


# ---------------------------------------------------------------------------------------------- writing

COLUMNS = (
    "env", "condition", "variant", "net", "finished", "score", "score_ci", "return", "return_ci", "teacher_return",
    "random_return", "steps_to_95", "reached_95", "beat_teacher", "recovered", "kl_end",
)  # fmt: skip
EXTRA_COLUMNS = {
    "control-policy": ("kl_under_student", "kl_under_teacher", "kl_under_uniform"),
    "action-space": ("score_sampled", "snr_start"),
}


def _csv(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    return buffer.getvalue().encode()


def markdown(name: str, rows: list[dict[str, Any]], verdict: str, lines: list[str], scale_name: str) -> str:
    grid = STUDIES[name]
    columns = ("setting", "seeds", "score", "return", "teacher", "steps to 95%", "> teacher", "> 0", "KL end")
    extra = EXTRA_COLUMNS.get(name, ())
    header = "| " + " | ".join((*columns, *extra)) + " |\n|" + "---|" * (len(columns) + len(extra)) + "\n"
    body = ""
    for r in rows:
        setting = f"{r['env'].split('/')[-1]} {r['condition']} {r['variant']} {r['net']}"
        cells = [
            setting, f"{r['finished']}/{r['seeds']}", _fmt(r["score"], r["score_ci"]),
            _fmt(r["return"], r["return_ci"], 1), _fmt(r["teacher_return"], digits=1),
            _fmt(r["steps_to_95"], digits=0) + (f" ({r['reached_95']})" if r["finished"] else ""),
            str(r["beat_teacher"]), str(r["recovered"]), _fmt(r["kl_end"], digits=3),
            *[_fmt(r.get(c), r.get(f"{c}_ci"), 3) for c in extra],
        ]  # fmt: skip
        body += "| " + " | ".join(cells) + " |\n"
    evidence = "".join(f"- {line}\n" for line in lines)
    return (
        f"## {grid.title} ({grid.figure})\n\n**Claim.** {grid.claim}\n\n"
        f"**Verdict ({scale_name} scale): {verdict}.** Rule: {RULES[name]}.\n\n{evidence}\n"
        f"![{name}]({name}.png)\n\nTable: `{name}.csv` (scores are normalised: 0 the random policy, 1 the teacher; "
        "± is the 95% t interval over seeds; steps to 95% is over the seeds that got there, their count in "
        "brackets).\n\n" + header + body + "\n"
    )


def write_studies(
    cells: dict[str, list[Cell]], records: list[RunRecord], out: Path, scale: Scale, scale_name: str
) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, Any]]]:
    by_name = {r.name: r for r in records}
    files: dict[str, dict[str, str]] = {}
    sections: dict[str, dict[str, Any]] = {}
    document = [f"# distill study ({scale_name} scale)\n\n"]
    for name, study_cells in cells.items():
        groups = settings(study_cells)
        rows = [setting_row(group, by_name) for group in groups]
        try:
            add_measures(name, rows, groups, by_name, out, scale)
        except DistillError as error:  # a measurement that cannot run is said in the section, not fatal
            rows[0]["measure_error"] = str(error)
        verdict, lines = VERDICTS[name](rows)
        paths = {kind: out / f"{name}.{kind}" for kind in ("csv", "json", "png", "md")}
        atomic_write_bytes(paths["csv"], _csv(rows, (*COLUMNS, *EXTRA_COLUMNS.get(name, ()))))
        section = markdown(name, rows, verdict, lines, scale_name)
        atomic_write_bytes(paths["md"], section.encode())
        figure(name, rows, paths["png"])
        summary = {"study": name, "scale": scale_name, "verdict": verdict, "evidence": lines, "rule": RULES[name]}
        atomic_write_json(paths["json"], {**summary, "rows": rows})
        files[name] = {kind: str(path) for kind, path in paths.items()}
        sections[name] = summary
        document.append(section)
    atomic_write_bytes(out / "study.md", "".join(document).encode())
    return files, sections
