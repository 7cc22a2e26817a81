"""The ``distill`` command: thin Typer commands that parse options, call the library, and print.

Every user mistake ends as one line on stderr and a non-zero exit; ``--json`` puts exactly one JSON document
on stdout and nothing else.
"""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.exceptions import Abort, TyperException

from distillcli.config import RunConfig
from distillcli.errors import DistillError
from distillcli.methods import METHODS, describe, recommend
from distillcli.metrics import jsonable

app = typer.Typer(
    name="distill",
    help="Distill trained RL policies (SB3 checkpoints) into new students, by the methods of "
    "Czarnecki et al., 'Distilling Policy Distillation' (AISTATS 2019).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
)
# No emoji codes: user text such as `--student-net cnn:x:...` must print as typed, not as an emoji.
stderr = Console(stderr=True, emoji=False)
stdout = Console(emoji=False)


def _version(value: bool) -> None:
    if value:
        from distillcli import __version__

        typer.echo(f"distill {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=_version, is_eager=True)
    ] = False,
) -> None:
    pass


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(jsonable(data), indent=2) + "\n")


def _h(name: str) -> str:
    return RunConfig.help(name)


@app.command()
def run(
    teacher: Annotated[str | None, typer.Option("--teacher", "-t", help=_h("teacher"))] = None,
    load_best: Annotated[bool | None, typer.Option("--load-best", help=_h("load_best"))] = None,
    load_checkpoint: Annotated[int | None, typer.Option("--load-checkpoint", help=_h("load_checkpoint"))] = None,
    method: Annotated[str | None, typer.Option("--method", "-m", help=_h("method"))] = None,
    env: Annotated[str | None, typer.Option("--env", help=_h("env"))] = None,
    student_net: Annotated[str | None, typer.Option("--student-net", help=_h("student_net"))] = None,
    steps: Annotated[int | None, typer.Option("--steps", "-n", help=_h("steps"))] = None,
    n_envs: Annotated[int | None, typer.Option("--n-envs", help=_h("n_envs"))] = None,
    n_steps: Annotated[int | None, typer.Option("--n-steps", help=_h("n_steps"))] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help=_h("epochs"))] = None,
    minibatch_size: Annotated[int | None, typer.Option("--minibatch-size", help=_h("minibatch_size"))] = None,
    lr: Annotated[float | None, typer.Option("--lr", help=_h("lr"))] = None,
    seed: Annotated[int | None, typer.Option("--seed", help=_h("seed"))] = None,
    device: Annotated[str | None, typer.Option("--device", help=_h("device"))] = None,
    threads: Annotated[int | None, typer.Option("--threads", help=_h("threads"))] = None,
    out: Annotated[str | None, typer.Option("--out", "-o", help=_h("out"))] = None,
    force: Annotated[bool | None, typer.Option("--force", help=_h("force"))] = None,
    eval_every: Annotated[int | None, typer.Option("--eval-every", help=_h("eval_every"))] = None,
    eval_episodes: Annotated[int | None, typer.Option("--eval-episodes", help=_h("eval_episodes"))] = None,
    tensorboard: Annotated[bool | None, typer.Option("--tensorboard", help=_h("tensorboard"))] = None,
    control: Annotated[str | None, typer.Option("--control", help=_h("control"))] = None,
    mix: Annotated[str | None, typer.Option("--mix", help=_h("mix"))] = None,
    kl_direction: Annotated[str | None, typer.Option("--kl-direction", help=_h("kl_direction"))] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", help=_h("temperature"))] = None,
    teacher_noise: Annotated[float | None, typer.Option("--teacher-noise", help=_h("teacher_noise"))] = None,
    reward_weight: Annotated[str | None, typer.Option("--reward-weight", help=_h("reward_weight"))] = None,
    proximal_lambda: Annotated[float | None, typer.Option("--proximal-lambda", help=_h("proximal_lambda"))] = None,
    loss_offset: Annotated[str | None, typer.Option("--loss-offset", help=_h("loss_offset"))] = None,
    episode_ends: Annotated[str | None, typer.Option("--episode-ends", help=_h("episode_ends"))] = None,
    logprob_floor: Annotated[float | None, typer.Option("--logprob-floor", help=_h("logprob_floor"))] = None,
    gamma: Annotated[float | None, typer.Option("--gamma", help=_h("gamma"))] = None,
    gae_lambda: Annotated[float | None, typer.Option("--gae-lambda", help=_h("gae_lambda"))] = None,
    baseline: Annotated[str | None, typer.Option("--baseline", help=_h("baseline"))] = None,
    clip_range: Annotated[float | None, typer.Option("--clip-range", help=_h("clip_range"))] = None,
    max_grad_norm: Annotated[float | None, typer.Option("--max-grad-norm", help=_h("max_grad_norm"))] = None,
    trust_checkpoint: Annotated[bool | None, typer.Option("--trust-checkpoint", help=_h("trust_checkpoint"))] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="options from a config.json (explicit options win)")
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option("--resume", help="continue an interrupted run dir to its budget (explicit options win)"),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="print the summary as JSON (and nothing else)")] = False,
) -> None:
    """Distill a teacher checkpoint into a new student; write student.zip, metrics and a summary."""
    given = {k: v for k, v in locals().items() if k in {f.name for f in fields(RunConfig)} and v is not None}
    from distillcli.run import load_resume_state
    from distillcli.run import run as run_distillation

    state = None
    if resume is not None:
        if config is not None or "out" in given:
            raise DistillError("--resume takes its options and run dir from the run itself: drop --config and --out")
        options, state = load_resume_state(resume)
        options["out"] = str(resume)
    else:
        options = RunConfig.from_file(config) if config is not None else {}
    options.update(given)
    cfg = RunConfig(**options)
    if quiet or json_out:
        summary = run_distillation(cfg, resume=state)
    else:
        # The bar appears with the first update, so a run that fails its checks prints only its error line.
        bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f} steps"),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=stderr,
        )
        task = bar.add_task(cfg.method, total=cfg.steps, info="", start=False)

        def progress(metrics: dict[str, float]) -> None:
            if not bar.live.is_started:
                bar.start()
                bar.start_task(task)
            info = f"return {metrics['eval_return']:.1f}  KL {metrics['kl_teacher_student']:.3f}"
            bar.update(task, completed=min(metrics["env_steps"], cfg.steps), info=info)

        try:
            summary = run_distillation(cfg, progress, state)
        finally:
            if bar.live.is_started:
                bar.stop()
    if json_out:
        _print_json(summary)
        return
    table = Table(title=f"{summary['method']} on {summary['env_id']}", show_header=False)
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True)
    for key in (
        "teacher_return",
        "student_return",
        "return_ratio",
        "kl_start",
        "kl_end",
        "agreement",
        "env_steps",
        "wall_seconds",
        "teacher_params",
        "student_params",
        "device",
    ):
        value = summary[key]
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    stdout.print(table)
    stdout.print(f"student: {summary['student_path']}", soft_wrap=True, highlight=False)


@app.command("eval")
def eval_command(
    model: Annotated[str, typer.Argument(help="student (or any SB3 actor-critic / DQN) .zip, or an rl-zoo run folder")],
    teacher: Annotated[
        str | None, typer.Option("--teacher", "-t", help="compare with this teacher (.zip or rl-zoo run folder)")
    ] = None,
    load_best: Annotated[bool, typer.Option("--load-best", help=_h("load_best"))] = False,
    load_checkpoint: Annotated[
        int, typer.Option("--load-checkpoint", help=_h("load_checkpoint"), show_default=False)
    ] = 0,
    env: Annotated[str | None, typer.Option("--env", help="env id (default: from the run dir or teacher)")] = None,
    episodes: Annotated[int, typer.Option("--episodes", "-n", help="evaluation episodes")] = 10,
    stochastic: Annotated[bool, typer.Option("--stochastic", help="sample actions instead of the mode")] = False,
    device: Annotated[str, typer.Option("--device", help="auto|cpu|cuda")] = "auto",
    seed: Annotated[int, typer.Option("--seed", help="evaluation seed")] = 0,
    trust_checkpoint: Annotated[bool, typer.Option("--trust-checkpoint", help=_h("trust_checkpoint"))] = False,
    json_out: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Evaluate a student: its return and, with --teacher, agreement, KL, size and latency against it."""
    from distillcli.run import evaluate_model

    report = evaluate_model(
        model,
        teacher,
        env,
        episodes,
        stochastic,
        device,
        seed,
        trust_checkpoint,
        load_best=load_best,
        load_checkpoint=load_checkpoint,
    )
    if json_out:
        _print_json(report)
        return
    table = Table(title=f"{Path(model).name} on {report['env_id']}", show_header=False)
    for key, value in report.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    stdout.print(table)


@app.command()
def methods(
    json_out: Annotated[bool, typer.Option("--json", help="a list of objects with a name key")] = False,
) -> None:
    """List every method: control policy, per-state loss, pseudo-reward, and whether it is a true gradient."""
    rows = [describe(m) for m in METHODS]
    if json_out:
        _print_json(rows)
        return
    table = Table(title="Distillation methods (Eq. 1: control q, loss l, pseudo-reward rhat)")
    table.add_column("name", no_wrap=True)
    for column in ("q", "l(s_t)", "rhat_i", "true gradient", "needs"):
        table.add_column(column)
    for row in rows:
        needs = [
            label for key, label in (("needs_teacher_value", "V_pi"), ("uses_env_reward", "env reward")) if row[key]
        ]
        table.add_row(
            str(row["name"]),
            str(row["control"]),
            str(row["loss"]),
            str(row["pseudo_reward"]),
            "yes" if row["true_gradient"] else "no",
            ", ".join(needs),
        )
    stdout.print(table)
    from distillcli.teachers import FAMILIES

    families = Table(title="Teachers: pi and V_pi per SB3 algorithm (docs/teachers/)")
    for column in ("algorithm", "pi(.|s)", "V_pi(s)", "losses", "student.zip opens with"):
        families.add_column(column)
    for family in FAMILIES:
        families.add_row(family.algos, family.policy, family.value, family.estimated, family.student)
    stdout.print(families)


@app.command("recommend")
def recommend_command(
    outside_teacher_states: Annotated[
        bool,
        typer.Option(
            "--outside-teacher-states/--teacher-states-only",
            help="will the student be evaluated on states the teacher would not visit?",
        ),
    ] = True,
    improve: Annotated[
        bool, typer.Option("--improve/--copy", help="should the student improve beyond the teacher (env reward)?")
    ] = False,
    guarantee: Annotated[
        bool, typer.Option("--guarantee/--no-guarantee", help="is a convergence guarantee required?")
    ] = True,
    teacher_strong: Annotated[
        bool, typer.Option("--strong-teacher/--weak-teacher", help="is the teacher strong?")
    ] = True,
    teacher_value: Annotated[
        bool, typer.Option("--teacher-value/--no-teacher-value", help="does the teacher have a value function?")
    ] = True,
    json_out: Annotated[bool, typer.Option("--json", help="print the answer as JSON")] = False,
) -> None:
    """Pick a method with the paper's decision tree (Figure 1)."""
    answer = recommend(
        outside_teacher_states=outside_teacher_states,
        improve_beyond_teacher=improve,
        need_guarantee=guarantee,
        teacher_strong=teacher_strong,
        teacher_has_value=teacher_value,
    )
    if json_out:
        _print_json({"preferred": answer.preferred, "feasible": answer.feasible, "path": answer.path})
        return
    stdout.print(" -> ".join(answer.path))
    stdout.print(f"preferred: [bold]{answer.preferred}[/bold]")
    stdout.print(f"feasible:  {', '.join(answer.feasible)}")


@app.command()
def paper(
    study: Annotated[
        str,
        typer.Argument(
            help="control-policy | action-space | imperfect-teacher | chain | counterexample | gradient-field | all"
        ),
    ],
    scale: Annotated[str, typer.Option("--scale", help="small (minutes on a CPU) or paper (1000 MDPs, 30k its)")] = (
        "small"
    ),
    mdps: Annotated[int | None, typer.Option("--mdps", help="random MDPs per setting (default: the scale's)")] = None,
    iterations: Annotated[int | None, typer.Option("--iterations", help="updates per student")] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", help="independent repetitions (new MDPs each)")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda")] = "cpu",
    threads: Annotated[int, typer.Option("--threads", help="torch CPU threads")] = 1,
    out: Annotated[Path, typer.Option("--out", "-o", help="directory for <study>.png/.csv/.json")] = Path("runs/paper"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="print the studies' summaries as JSON")] = False,
) -> None:
    """Reproduce the paper's tabular studies (Figures 2-6, Theorems 1-2): a PNG, a CSV and a JSON each."""
    from distillcli.paper import STUDIES, PaperOptions, run_study, write

    names = list(STUDIES) if study == "all" else [study]
    if any(name not in STUDIES for name in names):
        raise DistillError(f"unknown study {study!r}; valid: {', '.join(STUDIES)}, all")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise DistillError(f"--device must be cpu or cuda, got {device!r}")
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DistillError("--device cuda: no CUDA device is available here")
        index = device.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise DistillError(f"--device {device}: this machine has CUDA devices 0..{torch.cuda.device_count() - 1}")
    try:  # before any study runs: a paper-scale run must not be lost to an unwritable --out
        out.mkdir(parents=True, exist_ok=True)
        (out / ".write-test").touch()
        (out / ".write-test").unlink()
    except OSError as error:
        raise DistillError(f"--out {out}: cannot write there ({error.strerror or error})") from None
    if threads < 1:
        raise DistillError(f"--threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)
    options = PaperOptions.at_scale(scale, mdps=mdps, iterations=iterations, seeds=seeds, device=device)  # type: ignore[arg-type]
    report = []
    for name in names:
        with stderr.status(name) if not (quiet or json_out) else nullcontext() as status:

            def progress(message: str) -> None:
                if status is not None:
                    status.update(message)

            result = run_study(name, options, progress)
        files = write(result, out)
        report.append({"study": name, "seconds": round(result.seconds, 1), "files": files, "summary": result.summary})
        if not json_out:
            stdout.print(f"{name}: {result.seconds:.0f} s -> {files['png']}, {files['csv']}", highlight=False)
    if json_out:
        _print_json({"studies": report})


@app.command()
def sweep(
    methods: Annotated[str, typer.Option("--methods", "-m", help="methods, comma-separated (or all)")],
    seeds: Annotated[str, typer.Option("--seeds", help="seeds, comma-separated")] = "0,1,2",
    student_nets: Annotated[
        str | None,
        typer.Option(
            "--student-nets", help="student sizes separated by '/', e.g. 32,32/64,64 (cnn:256/64,64 is one CNN student)"
        ),
    ] = None,
    teacher: Annotated[str | None, typer.Option("--teacher", "-t", help=_h("teacher"))] = None,
    load_best: Annotated[bool | None, typer.Option("--load-best", help=_h("load_best"))] = None,
    load_checkpoint: Annotated[int | None, typer.Option("--load-checkpoint", help=_h("load_checkpoint"))] = None,
    teacher_noise: Annotated[float | None, typer.Option("--teacher-noise", help=_h("teacher_noise"))] = None,
    trust_checkpoint: Annotated[bool | None, typer.Option("--trust-checkpoint", help=_h("trust_checkpoint"))] = None,
    env: Annotated[str | None, typer.Option("--env", help=_h("env"))] = None,
    steps: Annotated[int | None, typer.Option("--steps", "-n", help=_h("steps"))] = None,
    eval_every: Annotated[int | None, typer.Option("--eval-every", help=_h("eval_every"))] = None,
    eval_episodes: Annotated[int | None, typer.Option("--eval-episodes", help=_h("eval_episodes"))] = None,
    device: Annotated[str | None, typer.Option("--device", help=_h("device"))] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="other run options from a config.json (explicit options win)")
    ] = None,
    backend: Annotated[str, typer.Option("--backend", help="local (worker processes) or ray")] = "local",
    address: Annotated[
        str | None, typer.Option("--address", help="Ray cluster address (HOST:PORT, ray://HOST:PORT, auto)")
    ] = None,
    jobs: Annotated[
        int | None, typer.Option("--jobs", "-j", help="runs at once (default: local CPUs; ray: as the cluster fits)")
    ] = None,
    gpus_per_run: Annotated[
        float, typer.Option("--gpus-per-run", help="Ray: GPUs each CUDA run asks for (a fraction shares a GPU)")
    ] = 1.0,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="sweep directory (default runs/sweep-<env>)")] = None,
    force: Annotated[bool, typer.Option("--force", help="run finished runs again instead of skipping them")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress view")] = False,
    json_out: Annotated[bool, typer.Option("--json", help='print {"runs": [...]} as JSON (and nothing else)')] = False,
) -> None:
    """Run every method x seed x student size as a distill run; write a comparison table and learning curves."""
    from distillcli.sweep import SweepOptions, SweepView, parse_methods, parse_nets, parse_seeds
    from distillcli.sweep import sweep as run_sweep

    given = {
        "teacher": teacher,
        "load_best": load_best,
        "load_checkpoint": load_checkpoint,
        "teacher_noise": teacher_noise,
        # The refusals of an unsafe teacher name --trust-checkpoint: the sweep must take it too.
        "trust_checkpoint": trust_checkpoint,
        "env": env,
        "steps": steps,
        "eval_every": eval_every,
        "eval_episodes": eval_episodes,
        "device": device,
    }
    base = RunConfig.from_file(config) if config is not None else {}
    base.update({k: v for k, v in given.items() if v is not None})
    options = SweepOptions(
        methods=parse_methods(methods),
        seeds=parse_seeds(seeds),
        nets=parse_nets(student_nets) if student_nets is not None else None,
        base=base,
        out=out,
        backend=backend,
        address=address,
        jobs=jobs,
        gpus_per_run=gpus_per_run,
        force=force,
    )
    result = run_sweep(options, None if quiet else SweepView(stderr))
    _show_comparison(result.records, result.document, json_out)
    if result.failed:
        stderr.print(
            f"error: {len(result.failed)} of {len(result.records)} runs did not finish; see {result.out}/table.md",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise SystemExit(1)


@app.command()
def report(
    dirs: Annotated[list[Path], typer.Argument(metavar="DIR", help="run directories, or directories that hold them")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="where the table goes (default: the one DIR)")] = None,
    json_out: Annotated[bool, typer.Option("--json", help='print {"runs": [...]} as JSON (and nothing else)')] = False,
) -> None:
    """Rebuild the comparison table and learning curves of distill sweep from existing run directories."""
    from distillcli.report import report as build_report

    records, document = build_report(dirs, out)
    _show_comparison(records, document, json_out)


def _show_comparison(records: list[Any], document: dict[str, Any], json_out: bool) -> None:
    """The table of sweep and report (records: report.RunRecord): rich on stdout, or the JSON document."""
    from distillcli.report import COLUMNS, group, table_rows

    if json_out:
        _print_json(document)
        return
    table = Table(title="comparison (mean ± 95% CI over seeds)")
    for column in COLUMNS:
        table.add_column(column, no_wrap=column in ("method", "student net"))
    for row in table_rows(group(records)):
        table.add_row(*row)
    stdout.print(table)
    for record in records:
        if not record.ok:
            stdout.print(f"{record.name}: {record.status}: {record.error}", markup=False, highlight=False)
    files = document["files"]
    stdout.print("wrote " + ", ".join(files.values()), soft_wrap=True, highlight=False)


def main() -> None:
    """Entry point: run the app, turning every user error into one line on stderr."""
    try:
        app(standalone_mode=False)
    except DistillError as error:
        stderr.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
    except Abort:
        stderr.print("error: interrupted", markup=False)
        raise SystemExit(130) from None
    except TyperException as error:
        message = error.format_message()
        if message:  # `distill` alone shows the help and has nothing to add
            stderr.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
        raise SystemExit(error.exit_code) from None
    except KeyboardInterrupt:
        stderr.print("error: interrupted", markup=False)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
