"""Stage 2 of a run: the run directory. Every file name a run writes, claiming the directory, the typed summary,
what ``--resume`` reads back, and the guard that keeps an interrupt from cutting a write in half."""

from __future__ import annotations

import contextlib
import json
import math
import signal
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from distillcli.config import RunConfig
from distillcli.errors import DistillError, short
from distillcli.metrics import atomic_write_json
from distillcli.sb3.checkpoint import load_weights, read_checkpoint
from distillcli.stats import return_ratio, score
from distillcli.zoo import ENV_FILE, STATS_FILE

if TYPE_CHECKING:
    from distillcli.run.evaluate import EvalResult

CONFIG = "config.json"
SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
STUDENT = "student.zip"
TENSORBOARD = "tensorboard"
OUTPUTS = (CONFIG, METRICS, SUMMARY, STUDENT, TENSORBOARD, ENV_FILE, STATS_FILE)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def default_run_dir(env_id: str, method: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{env_id.replace('/', '-')}-{method}-{stamp}"


def claim(out: str | None, env_id: str, method: str, force: bool) -> Path:
    """The run directory: new or empty, or (with ``force``) one whose earlier outputs are replaced."""
    run_dir = Path(out) if out else default_run_dir(env_id, method)
    if run_dir.exists() and not run_dir.is_dir():
        raise DistillError(f"output path {short(run_dir)} exists and is not a directory")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not force:
        raise DistillError(f"output directory {short(run_dir)} already exists and is not empty (use --force or --out)")
    if force and run_dir.is_dir():
        import shutil

        # Only what an earlier run wrote: --force must never delete a user's other files.
        for name in OUTPUTS:
            old = run_dir / name
            if old.is_dir():
                shutil.rmtree(old)
            elif old.exists():
                old.unlink()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise DistillError(f"cannot write to output directory {short(run_dir)}: {error.strerror}") from None
    return run_dir


def write_config(run_dir: Path, config: RunConfig) -> None:
    atomic_write_json(run_dir / CONFIG, config.to_json())


@dataclass
class Summary:
    """``summary.json``: what ran and how it went. ``score`` is the headline: (student - random) / (teacher - random),
    0 for a uniform-random policy and 1 for the teacher."""

    status: str  # finished | interrupted | diverged
    method: str
    control: str
    env_id: str
    teacher: str
    teacher_algo: str
    device: str
    run_dir: str
    student_path: str
    eval_episodes: int
    env_steps: int
    budget: int  # the env-step budget the run was given (the task's default where --steps was 0)
    wall_seconds: float
    student_net: list[int] | str
    student_params: int
    teacher_params: int
    param_ratio: float
    student_latency_us: float
    teacher_latency_us: float
    seed: int
    env_mapped_from: str | None = None  # the retired env id the teacher recorded, when env_id is its successor
    score: float = math.nan
    teacher_return: float = math.nan
    teacher_return_std: float = math.nan
    student_return: float = math.nan
    student_return_std: float = math.nan
    random_return: float = math.nan  # a uniform-random policy under the same evaluation
    return_ratio: float = math.nan  # student / teacher, where the teacher's return is positive (else null)
    kl_start: float = math.nan
    kl_end: float = math.nan
    reverse_kl_end: float = math.nan
    agreement: float = math.nan
    versions: dict[str, str] = field(default_factory=dict)

    def results(self, teacher: EvalResult, random: float, kl_start: float, student: EvalResult) -> Summary:
        """The summary with the final evaluations filled in."""
        return replace(
            self,
            score=score(student.mean, teacher.mean, random),
            teacher_return=teacher.mean,
            teacher_return_std=teacher.std,
            student_return=student.mean,
            student_return_std=student.std,
            random_return=random,
            return_ratio=return_ratio(student.mean, teacher.mean),
            kl_start=kl_start,
            kl_end=student.kl_teacher_student,
            reverse_kl_end=student.kl_student_teacher,
            agreement=student.agreement,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, run_dir: Path) -> None:
        atomic_write_json(run_dir / SUMMARY, self.to_json())


@dataclass
class ResumeState:
    """Where an interrupted run stopped: its env steps, its student and optimiser, and its starting KL."""

    env_steps: int
    policy_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    kl_start: float


def load_resume_state(run_dir: Path) -> tuple[dict[str, Any], ResumeState]:
    """Read an interrupted run directory (weights only, nothing unpickled) for ``distill run --resume``."""
    if not run_dir.is_dir():
        raise DistillError(f"--resume: {short(run_dir)} is not a run directory")
    for name in (CONFIG, SUMMARY, STUDENT):
        if not (run_dir / name).is_file():
            raise DistillError(f"--resume: {short(run_dir)} has no {name}; only a run that saved its state can resume")
    options = RunConfig.from_file(run_dir / CONFIG)
    try:
        summary = json.loads((run_dir / SUMMARY).read_text())
        status, env_steps, kl_start = summary["status"], int(summary["env_steps"]), float(summary["kl_start"])
    except (OSError, ValueError, KeyError, TypeError):
        raise DistillError(f"--resume: {short(run_dir)}/summary.json is not a distill summary") from None
    if status == "finished":
        raise DistillError(f"--resume: the run in {short(run_dir)} already finished its budget ({env_steps} env steps)")
    if status != "interrupted":
        raise DistillError(
            f"--resume: the run in {short(run_dir)} ended as {short(status, 40)!r}; only interrupted runs resume"
        )
    checkpoint = read_checkpoint(run_dir / STUDENT, role="student")
    try:
        with zipfile.ZipFile(run_dir / STUDENT) as archive:
            raw = archive.read("policy.optimizer.pth")
    except (KeyError, OSError, zipfile.BadZipFile) as error:
        raise DistillError(
            f"--resume: {short(run_dir)}/student.zip has no readable optimiser state ({short(error)})"
        ) from None
    optimizer_state = load_weights(raw, f"--resume: the optimiser state in {short(run_dir)}/student.zip")
    return options, ResumeState(env_steps, checkpoint.policy_state, optimizer_state, kl_start)


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[list[int]]:
    """Record SIGINT/SIGTERM instead of raising them inside the block; the list says which arrived."""
    received: list[int] = []
    try:
        previous = {sig: signal.signal(sig, lambda signum, _: received.append(signum)) for sig in STOP_SIGNALS}
    except ValueError:  # not the main thread: signals are not delivered here anyway
        yield received
        return
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a scheduler stopping the job) ends the block the way Ctrl-C does."""
    try:
        previous = signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
