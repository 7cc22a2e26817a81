"""The ``distill`` command: thin Typer commands that parse options, call the library, and print.

Every user mistake ends as one line on stderr and a non-zero exit; ``--json`` puts exactly one JSON document on
stdout and nothing else. The options of ``distill run`` (and the shared ones of ``distill sweep``) are made from
:class:`~distillcli.config.RunConfig`'s fields, the one place with defaults. Nothing heavy (torch, SB3, Ray,
matplotlib) is imported until a command needs it, so ``--help``, ``methods`` and ``recommend`` answer at once.
"""

from __future__ import annotations

import os
import signal


def _interrupted_while_loading(signum: int, frame: object) -> None:
    """End the command now, in one line (nothing is held that needs saving or putting back)."""
    os.write(2, b"error: interrupted\n")
    os._exit(128 + signum)


def _while_loading() -> dict[int, Any]:
    """First, before any other module loads (about a second, more on a busy machine): a Ctrl-C, SIGTERM or SIGHUP
    then ends as one line, not an import traceback or a silent death. Only signals not ignored (a background job
    ignores Ctrl-C); the handlers are restored once the module is loaded. (Only os and signal are needed here, both
    loaded with the interpreter: outside the main thread signal.signal raises ValueError.)"""
    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    try:
        return {
            sig: signal.signal(sig, _interrupted_while_loading)
            for sig in stops
            if signal.getsignal(sig) is not signal.SIG_IGN
        }
    except ValueError:
        return {}


_LOADING = _while_loading()

import functools  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import typing  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager, suppress  # noqa: E402
from dataclasses import fields  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Annotated, Any, Optional  # noqa: E402

import typer  # noqa: E402
from typer.exceptions import Abort, TyperException  # noqa: E402

from distillcli import __version__  # noqa: E402
from distillcli.config import RunConfig, field_type  # noqa: E402
from distillcli.errors import DistillError, Stop, short  # noqa: E402
from distillcli.metrics import jsonable  # noqa: E402

app = typer.Typer(
    name="distill",
    help="Distill trained RL policies (SB3 checkpoints) into new students, by the methods of "
    "Czarnecki et al., 'Distilling Policy Distillation' (AISTATS 2019).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    # No emoji codes: user text such as `--student-net cnn:x:...` must print as typed, not as an emoji.
    return Console(stderr=stderr, emoji=False)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(jsonable(data), indent=2) + "\n")


def _version(value: bool) -> None:
    if value:
        print(f"distill {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", help="print the version and exit", callback=_version, is_eager=True)
    ] = False,
) -> None:
    """Distill trained RL policies (SB3 checkpoints) into new students (Czarnecki et al., AISTATS 2019)."""


def config_options(skip: tuple[str, ...] = ()) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command one option per RunConfig field (``--n-envs`` for ``n_envs``; help and default from the
    config), except ``skip``. The command receives the ones the user typed as ``given``, a dict."""

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        hints = typing.get_type_hints(command, include_extras=True)  # the module's annotations are strings
        own = [
            p.replace(annotation=hints[name], kind=inspect.Parameter.KEYWORD_ONLY)
            for name, p in inspect.signature(command).parameters.items()
            if name != "given"
        ]
        names = [f.name for f in fields(RunConfig) if f.name not in skip]
        options = []
        for f in fields(RunConfig):
            if f.name in skip:
                continue
            flags = [f"--{f.name.replace('_', '-')}", *([f.metadata["short"]] if f.metadata["short"] else [])]
            hint = field_type(f.name)
            annotation = Annotated[Optional[hint], typer.Option(*flags, help=RunConfig.help(f.name))]  # type: ignore[valid-type]  # noqa: UP045
            options.append(
                inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
            )

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> None:
            given = {name: kwargs.pop(name) for name in names if kwargs.get(name) is not None}
            for name in names:
                kwargs.pop(name, None)
            command(given=given, **kwargs)

        parameters = [*options, *own]
        wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        return wrapper

    return decorate


TRUST_HELP = (
    "allow what runs code from the file: unpickling a checkpoint, an rl-zoo folder's packages and wrappers, "
    "a TorchScript student; this invocation only, never from a file"
)


@app.command()
@config_options()
def run(
    given: dict[str, Any],
    config: Annotated[
        Path | None, typer.Option("--config", help="options from a config.json (explicit options win)")
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option("--resume", help="continue an interrupted run dir to its budget (explicit options win)"),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="replace an earlier run's outputs in --out (other files are kept)")
    ] = False,
    trust_checkpoint: Annotated[bool, typer.Option("--trust-checkpoint", help=TRUST_HELP)] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="print the summary as JSON (and nothing else)")] = False,
) -> None:
    """Distill a teacher checkpoint into a new student; write student.zip, metrics and a summary."""
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
        summary = run_distillation(cfg, None, state, trust=trust_checkpoint, force=force)
    else:
        with _ProgressBar(cfg.method) as bar:
            summary = run_distillation(cfg, bar.update, state, trust=trust_checkpoint, force=force)
    if json_out:
        _print_json(summary.to_json())
        return
    _show_summary(summary.to_json())


class _ProgressBar:
    """A rich bar on stderr that appears with the first update, so a run that fails its checks prints only its
    error line."""

    def __init__(self, description: str) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f} steps"),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=_console(stderr=True),
        )
        self.task = self.bar.add_task(description, total=1, info="", start=False)

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar.live.is_started:
            self.bar.stop()

    def update(self, metrics: dict[str, float]) -> None:
        if not self.bar.live.is_started:
            self.bar.start()
            self.bar.start_task(self.task)
        info = f"return {metrics['eval_return']:.1f}  KL {metrics['kl_teacher_student']:.3f}"
        total = metrics["total_steps"]
        self.bar.update(self.task, total=total, completed=min(metrics["env_steps"], total), info=info)


def _show_summary(summary: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"{summary['method']} on {summary['env_id']}", show_header=False)
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True)
    for key in (
        "score",
        "teacher_return",
        "student_return",
        "random_return",
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
    out = _console()
    out.print(table)
    out.print(f"student: {summary['student_path']}", soft_wrap=True, highlight=False, markup=False)


@app.command("eval")
def eval_command(
    model: Annotated[
        str, typer.Argument(help="student (or any SB3) .zip, an rl-zoo run folder, or an exported .onnx / .pt")
    ],
    teacher: Annotated[
        str | None,
        typer.Option("--teacher", "-t", help="compare with this teacher (.zip, rl-zoo folder or hf:ORG/REPO)"),
    ] = None,
    load_best: Annotated[bool, typer.Option("--load-best", help=RunConfig.help("load_best"))] = False,
    load_checkpoint: Annotated[
        int, typer.Option("--load-checkpoint", help=RunConfig.help("load_checkpoint"), show_default=False)
    ] = 0,
    env: Annotated[str | None, typer.Option("--env", help="env id (default: from the run dir or teacher)")] = None,
    episodes: Annotated[int, typer.Option("--episodes", "-n", help="evaluation episodes")] = 10,
    stochastic: Annotated[bool, typer.Option("--stochastic", help="sample actions instead of the mode")] = False,
    device: Annotated[str, typer.Option("--device", help="auto|cpu|cuda")] = "auto",
    seed: Annotated[int, typer.Option("--seed", help="evaluation seed")] = 0,
    trust_checkpoint: Annotated[bool, typer.Option("--trust-checkpoint", help=TRUST_HELP)] = False,
    latency: Annotated[
        bool,
        typer.Option(
            "--latency",
            help="latency table, 1 observation and a batch of 256, one thread: SB3 predict (teacher, student), "
            "torch eager, TorchScript, onnxruntime (float, int8); needs the export extra",
        ),
    ] = False,
    video: Annotated[
        Path | None,
        typer.Option("--video", help="record episodes to this .mp4 or .gif (with --teacher: side by side)"),
    ] = None,
    video_episodes: Annotated[int, typer.Option("--video-episodes", help="episodes in the --video")] = 1,
    json_out: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Evaluate a student: its return and score and, with --teacher, agreement, KL, size and latency against it.
    An exported .onnx / .pt is evaluated beside its student.zip."""
    from distillcli.config import smoke
    from distillcli.run import evaluate_model

    report = evaluate_model(
        model,
        teacher,
        env,
        min(episodes, 2) if smoke() else episodes,
        stochastic,
        device,
        seed,
        trust_checkpoint,
        load_best=load_best,
        load_checkpoint=load_checkpoint,
        latency=latency,
        video=video,
        video_episodes=video_episodes,
    )
    if json_out:
        _print_json(report)
        return
    from rich.table import Table

    table = Table(title=f"{Path(model).name} on {report['env_id']}", show_header=False)
    for key, value in report.items():
        if key not in ("latency", "video"):
            table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    out = _console()
    out.print(table)
    if "latency" in report:
        _show_latency(report["latency"])
    if "video" in report:
        shown = report["video"]
        out.print(
            f"video: {shown['path']} ({shown['frames']} frames, {shown['width']}x{shown['height']})", markup=False
        )


def _show_latency(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title="latency, one CPU thread (median, microseconds)")
    for column in ("runtime", "model", "1 obs", "batch of 256", "per obs in the batch"):
        table.add_column(column, justify="left" if column in ("runtime", "model") else "right")
    for row in rows:
        cells = [row["single_us"], row["batch_us"], row["batch_per_observation_us"]]
        table.add_row(row["runtime"], row["model"], *("-" if v is None else f"{v:,.1f}" for v in cells))
    _console().print(table)


EXPORT_HELP = (
    "Export the student as one graph (ONNX or TorchScript) from the raw env observation to the env action, checked "
    "against SB3's predict on 1,000 env observations, evaluated and timed; writes the file (student.onnx), its "
    "sidecar (student.json) and a README.md model card.\n\n"
    "The graph holds the frozen VecNormalize statistics, the image transpose and /255, the network and the "
    "deterministic action (argmax, or the Box mean clipped or squashed to the bounds); a MaskablePPO student takes "
    "the action mask as a second input. Frame stacking stays outside: the graph takes the stacked observation.\n\n"
    "Needs the export extra (onnx, onnxruntime; make install installs it). See docs/export.md."
)


@app.command("export", help=EXPORT_HELP)
def export_command(
    model: Annotated[
        Path, typer.Argument(help="a run directory (its student.zip), a student .zip, or an rl-zoo run folder")
    ],
    fmt: Annotated[str, typer.Option("--format", "-f", help="onnx or torchscript")] = "onnx",
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="the file (.onnx or .pt); default: beside the zip, student.onnx / student.pt"),
    ] = None,
    quantize: Annotated[
        str | None,
        typer.Option(
            "--quantize", help="int8: onnxruntime dynamic quantisation, refused if its score moves by more than 0.02"
        ),
    ] = None,
    env: Annotated[str | None, typer.Option("--env", help="env id (default: from the run dir or zip)")] = None,
    episodes: Annotated[int, typer.Option("--episodes", "-n", help="evaluation episodes of the exported model")] = 10,
    seed: Annotated[int, typer.Option("--seed", help="seed of the parity observations and the evaluation")] = 0,
    force: Annotated[bool, typer.Option("--force", help="replace an existing file, sidecar or model card")] = False,
    trust_checkpoint: Annotated[bool, typer.Option("--trust-checkpoint", help=TRUST_HELP)] = False,
    json_out: Annotated[bool, typer.Option("--json", help="print the sidecar as JSON (and nothing else)")] = False,
) -> None:
    from distillcli.config import smoke
    from distillcli.export.exporter import export_model

    sidecar = export_model(
        model,
        fmt,
        out,
        env=env,
        quantize=quantize,
        episodes=min(episodes, 2) if smoke() else episodes,
        seed=seed,
        force=force,
        trust=trust_checkpoint,
    )
    if json_out:
        _print_json(sidecar)
        return
    evaluation, parity = sidecar["evaluation"], sidecar["parity"]
    agree = (
        f"{parity['observations'] - parity['mismatches']}/{parity['observations']} actions equal SB3 predict's"
        if parity["discrete"]
        else f"max |action - SB3 predict's| {parity['max_abs_diff']:.2g} on {parity['observations']} observations"
    )
    out_console = _console()
    lines = [
        f"wrote {', '.join(sidecar['written'])}",
        f"parity: {agree}",
        f"return {evaluation['return_mean']:.2f} +- {evaluation['return_std']:.2f} over {evaluation['episodes']} "
        f"episodes (the zip's {evaluation['zip_return_mean']:.2f}); score {evaluation['score']:.3f} "
        f"(the zip's {evaluation['zip_score']:.3f})",
    ]
    for line in lines:
        out_console.print(line, soft_wrap=True, highlight=False, markup=False)
    _show_latency(sidecar["latency"])


@app.command()
def methods(
    json_out: Annotated[bool, typer.Option("--json", help="a list of objects with a name key")] = False,
) -> None:
    """List every method (control policy, per-state loss, pseudo-reward, true gradient?) and every teacher family."""
    from distillcli.methods import METHODS, describe
    from distillcli.sb3.families import families

    rows = [describe(m) for m in METHODS]
    if json_out:
        _print_json(rows)
        return
    from rich.table import Table

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
    out = _console()
    out.print(table)
    table = Table(title="Teachers: pi and V_pi per SB3 family (docs/teachers/)")
    for column in ("algorithm", "pi(.|s)", "V_pi(s)", "losses", "student.zip opens with"):
        table.add_column(column)
    for family in families():
        table.add_row(", ".join(family.algos), family.pi, family.value, family.estimated, family.opens_with)
    out.print(table)


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
    """Pick a method with the paper's decision tree (Figure 1), amended where distill study found otherwise for
    neural students (docs/study.md)."""
    from distillcli.methods import recommend

    answer = recommend(
        outside_teacher_states=outside_teacher_states,
        improve_beyond_teacher=improve,
        need_guarantee=guarantee,
        teacher_strong=teacher_strong,
        teacher_has_value=teacher_value,
    )
    if json_out:
        document = {"preferred": answer.preferred, "feasible": answer.feasible, "path": answer.path}
        _print_json({**document, "paper": answer.paper or answer.preferred, "evidence": list(answer.evidence)})
        return
    print(" -> ".join(answer.path))
    print(f"preferred: {answer.preferred}" + (f" (the paper's: {answer.paper})" if answer.paper else ""))
    print(f"feasible:  {', '.join(answer.feasible)}")
    for line in answer.evidence:
        print(f"evidence:  {line}")


PAPER_STUDIES = "control-policy | action-space | imperfect-teacher | chain | counterexample | gradient-field | all"


@app.command()
def paper(
    study: Annotated[str, typer.Argument(help=PAPER_STUDIES)],
    scale: Annotated[
        str,
        typer.Option(
            "--scale", help="small (minutes on a CPU), medium (100 MDPs, 30k its: hours) or paper (1000 MDPs, 30k its)"
        ),
    ] = "small",
    mdps: Annotated[int | None, typer.Option("--mdps", help="random MDPs per setting (default: the scale's)")] = None,
    iterations: Annotated[int | None, typer.Option("--iterations", help="updates per student")] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", help="independent repetitions (new MDPs each)")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda")] = "cpu",
    threads: Annotated[int, typer.Option("--threads", help="torch CPU threads")] = 1,
    out: Annotated[Path, typer.Option("--out", "-o", help="directory for <study>.png/.csv/.json")] = Path("runs/paper"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="print the studies' summaries as JSON")] = False,
    jobs: Annotated[int, typer.Option("--jobs", help="studies run in parallel processes (all)")] = 1,
) -> None:
    """Reproduce the paper's tabular studies (Figures 2-6, Theorems 1-2): a PNG, a CSV and a JSON each."""
    from contextlib import nullcontext

    import torch

    from distillcli.config import smoke
    from distillcli.studies import STUDIES, release_memory, run_parallel, run_study, write
    from distillcli.studies.common import PaperOptions

    names = list(STUDIES) if study == "all" else [study]
    if any(name not in STUDIES for name in names):
        raise DistillError(f"unknown study {short(study, 40)!r}; valid: {', '.join(STUDIES)}, all")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise DistillError(f"--device must be cpu or cuda, got {short(device, 40)!r}")
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
        raise DistillError(f"--out {short(out)}: cannot write there ({error.strerror or short(error)})") from None
    if not 1 <= threads <= 256:
        raise DistillError(f"--threads must be between 1 and 256, got {threads}")
    if not 1 <= jobs <= 64:
        raise DistillError(f"--jobs must be between 1 and 64, got {jobs}")
    torch.set_num_threads(threads)
    if smoke():
        mdps, iterations, seeds = min(mdps or 2, 2), min(iterations or 20, 20), 1
    options = PaperOptions.at_scale(scale, mdps=mdps, iterations=iterations, seeds=seeds, device=device)  # type: ignore[arg-type]
    if smoke():
        from dataclasses import replace

        options = replace(options, teacher_steps=min(options.teacher_steps, 500))
    stderr, stdout = _console(stderr=True), _console()
    summaries = []
    if jobs > 1 and len(names) > 1:  # one worker process per study, the longest first
        for report in run_parallel(names, options, out, threads, jobs):
            summaries.append(report)
            if not json_out:
                files = report["files"]
                line = f"{report['study']}: {report['seconds']:.0f} s -> {files['png']}, {files['csv']}"
                stdout.print(line, highlight=False, markup=False)
        names = []
    for name in names:
        with stderr.status(name) if not (quiet or json_out) else nullcontext() as status:

            def progress(message: str) -> None:
                if status is not None:
                    status.update(message)

            result = run_study(name, options, progress)
        files = write(result, out)
        summaries.append(
            {"study": name, "seconds": round(result.seconds, 1), "files": files, "summary": result.summary}
        )
        if not json_out:
            stdout.print(
                f"{name}: {result.seconds:.0f} s -> {files['png']}, {files['csv']}", highlight=False, markup=False
            )
        del result  # a study's tables and curves go before the next study starts
        release_memory()
    if json_out:
        _print_json({"studies": sorted(summaries, key=lambda r: STUDIES.index(r["study"]))})


# Where the runs of distill sweep and distill study go.
BackendOption = Annotated[str, typer.Option("--backend", help="local (worker processes) or ray")]
AddressOption = Annotated[
    Optional[str],  # noqa: UP045  (typer reads the annotation at run time)
    typer.Option("--address", help="Ray cluster address (HOST:PORT, ray://HOST:PORT, auto)"),
]
JobsOption = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option("--jobs", "-j", help="runs at once (default: local CPUs; ray: as the cluster fits)"),
]


@app.command()
@config_options(skip=("method", "seed", "student_net", "out"))
def sweep(
    given: dict[str, Any],
    methods: Annotated[str, typer.Option("--methods", help="methods, comma-separated (or all)")],
    seeds: Annotated[str, typer.Option("--seeds", help="seeds, comma-separated")] = "0,1,2",
    student_nets: Annotated[
        str | None,
        typer.Option(
            "--student-nets", help="student sizes separated by '/', e.g. 32,32/64,64 (cnn:256/64,64 is one CNN student)"
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="other run options from a config.json (explicit options win)")
    ] = None,
    trust_checkpoint: Annotated[bool, typer.Option("--trust-checkpoint", help=TRUST_HELP)] = False,
    backend: BackendOption = "local",
    address: AddressOption = None,
    jobs: JobsOption = None,
    gpus_per_run: Annotated[
        float, typer.Option("--gpus-per-run", help="Ray: GPUs each CUDA run asks for (a fraction shares a GPU)")
    ] = 1.0,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="sweep directory (default runs/sweep-<env>)")] = None,
    force: Annotated[bool, typer.Option("--force", help="run finished runs again instead of skipping them")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress view")] = False,
    json_out: Annotated[bool, typer.Option("--json", help='print {"runs": [...]} as JSON (and nothing else)')] = False,
) -> None:
    """Run every method x seed x student size as a distill run; write a comparison table and learning curves."""
    from distillcli.sb3.netspec import parse_nets
    from distillcli.sweep import SweepOptions, SweepView, parse_methods, parse_seeds
    from distillcli.sweep import sweep as run_sweep

    base = RunConfig.from_file(config) if config is not None else {}
    base.update(given)
    options = SweepOptions(
        methods=parse_methods(methods),
        seeds=parse_seeds(seeds),
        nets=parse_nets(student_nets) if student_nets is not None else None,
        base=base,
        trust=trust_checkpoint,
        out=out,
        backend=backend,
        address=address,
        jobs=jobs,
        gpus_per_run=gpus_per_run,
        force=force,
    )
    result = run_sweep(options, None if quiet else SweepView(_console(stderr=True)))
    _show_comparison(result.records, result.document, json_out)
    if result.failed:  # exit 1, not 2: the sweep ran, and some of its runs failed (the table says which)
        failed = f"{len(result.failed)} of {len(result.records)} runs did not finish; see {result.out}/table.md"
        print(f"error: {failed}", file=sys.stderr)
        raise SystemExit(1)


@app.command()
def study(
    names: Annotated[
        str,
        typer.Argument(
            metavar="NAME",
            help="control-policy, action-space, imperfect-teacher, adversarial-teacher, capacity (comma-separated), "
            "or all",
        ),
    ],
    scale: Annotated[
        str,
        typer.Option(
            "--scale", help="small (1 seed, 4k steps: under a minute) or full (5 seeds, 50k steps: an hour on 2 cores)"
        ),
    ] = "small",
    out: Annotated[Path, typer.Option("--out", "-o", help="study directory (runs, tables, figures, study.md)")] = Path(
        "study"
    ),
    seeds: Annotated[str | None, typer.Option("--seeds", help="seeds, comma-separated, instead of the scale's")] = None,
    backend: BackendOption = "local",
    address: AddressOption = None,
    jobs: JobsOption = None,
    force: Annotated[bool, typer.Option("--force", help="run finished runs again instead of skipping them")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress view")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="print the verdicts and files as JSON")] = False,
) -> None:
    """Do the paper's conclusions hold for neural students on real tasks? Runs each study's grid of distill runs
    (teacher conditions strong, early, corrupted, adversarial) and writes CSV, JSON, PNG and a verdict per study."""
    from distillcli.study import StudyOptions, parse_names
    from distillcli.study import study as run_study
    from distillcli.sweep import SweepView, parse_seeds

    options = StudyOptions(
        names=parse_names(names),
        scale=scale,
        out=out,
        backend=backend,
        address=address,
        jobs=jobs,
        force=force,
        seeds=parse_seeds(seeds) if seeds is not None else None,
    )
    result = run_study(options, None if quiet else SweepView(_console(stderr=True)))
    failed = result.sweep.failed
    if json_out:
        _print_json(
            {
                "out": str(out),
                "scale": scale,
                "wall_seconds": result.wall_seconds,
                "runs": len(result.sweep.records),
                "failed": [r.name for r in failed],
                "studies": result.sections,
                "files": result.files,
            }
        )
    else:
        console = _console()
        for name, section in result.sections.items():
            console.print(f"{name}: {section['verdict']}", markup=False, highlight=False)
        console.print(f"wrote {out / 'study.md'} ({len(result.sweep.records)} runs)", markup=False, highlight=False)
    if failed:
        text = f"{len(failed)} of {len(result.sweep.records)} runs did not finish; see {out}/runs/table.md"
        print(f"error: {text}", file=sys.stderr)
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
    from rich.table import Table

    from distillcli.report import COLUMNS, group, table_rows

    if json_out:
        _print_json(document)
        return
    table = Table(title="comparison (mean ± 95% CI over seeds)")
    for column in COLUMNS:
        table.add_column(column, no_wrap=column in ("method", "student net"))
    for row in table_rows(group(records)):
        table.add_row(*row)
    out = _console()
    out.print(table)
    for record in records:
        if not record.ok:
            out.print(f"{record.name}: {record.status}: {short(record.error)}", markup=False, highlight=False)
    files = document["files"]
    out.print("wrote " + ", ".join(files.values()), soft_wrap=True, highlight=False, markup=False)


# SIGTERM (a scheduler, `kill`) and SIGHUP (a closed terminal, a dropped SSH session) stop a command the way Ctrl-C
# does. Outside a run directory there is nothing to save or put back, so the command ends at once with one line:
# an exception raised at an arbitrary point (inside an import of torch's C++ extensions, say) can abort the process.
# A run directory, while it is held, turns them into KeyboardInterrupt (rundir.RunDir), so its run can save its
# student or put the directory back, and then ends here as one line too.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def _stop_signals() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    Stop.signum = signal.SIGINT
    previous = {
        sig: signal.signal(sig, _interrupted_while_loading)
        for sig in STOP_SIGNALS
        if signal.getsignal(sig) is not signal.SIG_IGN
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _error(text: str) -> None:
    """One line on stderr; a terminal that went away (SIGHUP) cannot turn it into a traceback."""
    with suppress(OSError, ValueError):
        print(f"error: {short(text, 2000)}", file=sys.stderr, flush=True)


def main() -> None:
    """Entry point: run the app, turning every user error into one line on stderr and a non-zero exit."""
    code = 0
    with _stop_signals():
        try:
            result = app(standalone_mode=False, prog_name="distill")
            code = result if isinstance(result, int) else 0  # Typer returns 130 for a Ctrl-C it caught itself
            if code == 130:
                _error("interrupted")
                code = 128 + Stop.signum
        except DistillError as error:
            _error(str(error))
            code = 2
        except (Abort, KeyboardInterrupt):
            _error("interrupted")
            code = 128 + Stop.signum
        except TyperException as error:
            message = error.format_message()
            if message:  # `distill` alone shows the help and has nothing to add
                _error(message)
            code = error.exit_code
        except BrokenPipeError:  # `distill ... | head`: the reader left; say nothing more on that pipe
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            code = 128 + signal.SIGPIPE
        except Exception as error:  # not a user mistake distill knows: still one line (DISTILL_DEBUG=1: traceback)
            if os.environ.get("DISTILL_DEBUG"):
                raise
            if isinstance(error, OSError) and error.filename is not None:  # a path the system refused (too long)
                _error(f"{short(error.filename, 200)}: {error.strerror or short(error)}")
                code = 2
            elif isinstance(error, MemoryError):
                _error("out of memory (smaller --n-envs, --n-steps, --minibatch-size or --student-net need less)")
                code = 1
            else:
                _error(f"internal error ({type(error).__name__}: {short(error)}); please report it")
                code = 1
    if code:
        raise SystemExit(code)


for _signal, _handler in _LOADING.items():  # loaded: main() handles them from here
    signal.signal(_signal, _handler)

if __name__ == "__main__":
    main()
