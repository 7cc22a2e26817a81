"""Stage 2 of a run: the run directory. Every file name a run writes, claiming the directory (locked for the whole
run; with ``--force`` the earlier outputs are moved aside and deleted only once the new run has saved), the typed
summary, what ``--resume`` reads back, and the guards that keep an interrupt from cutting a write in half."""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import shutil
import signal
import stat
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from distillcli.config import RunConfig, check_path
from distillcli.errors import DistillError, Stop, short
from distillcli.metrics import METRICS, TENSORBOARD, atomic_write_json, complete_size, read_bounded, read_start
from distillcli.sb3.checkpoint import MAX_WEIGHTS_BYTES, load_weights, read_checkpoint, read_member
from distillcli.stats import return_ratio, score
from distillcli.zoo import ENV_FILE, STATS_FILE

if TYPE_CHECKING:
    from distillcli.run.evaluate import EvalResult
    from distillcli.sb3.student import Student

CONFIG = "config.json"
SUMMARY = "summary.json"
STUDENT = "student.zip"
OUTPUTS = (CONFIG, METRICS, SUMMARY, STUDENT, TENSORBOARD, ENV_FILE, STATS_FILE)
REPLACED = (CONFIG, SUMMARY, STUDENT, ENV_FILE, STATS_FILE)  # written by rename: a hard link keeps the old copy
LOCK = ".lock"  # flock'ed for the whole run: a second run (or resume) of the same directory is refused
ASIDE = ".distill-old-"  # <out>/.distill-old-<stamp>: an earlier run's outputs until the new run has saved
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
MAX_JSON_BYTES = 1 << 20  # a summary or config is a few KB


def default_run_dir(env_id: str, method: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{env_id.replace('/', '-')}-{method}-{stamp}"


# ------------------------------------------------------------------------------------ what counts as distill's


def _json_keys(path: Path, keys: tuple[str, ...]) -> str | None:
    try:
        data = json.loads(read_bounded(path, MAX_JSON_BYTES))
    except (DistillError, ValueError, RecursionError):
        return "not a JSON file of distill's"
    if not (isinstance(data, dict) and all(key in data for key in keys)):
        return f"not a JSON object with distill's keys ({', '.join(keys)})"
    return None


def _metrics(path: Path) -> str | None:
    """An empty file, or one whose first line is a row distill wrote."""
    try:
        head = read_start(path, 1 << 16)
    except DistillError:
        return "not a regular file"
    first = head.split(b"\n", 1)[0]
    try:
        row = json.loads(first) if first.strip() else {"kind": "train"}
    except ValueError:
        return "its first line is not a row distill writes"
    return None if isinstance(row, dict) and row.get("kind") in ("train", "eval") else "not distill's rows"


def _student(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return "not an SB3 zip"
    return None if {"data", "policy.pth"} <= names else "not an SB3 zip"


def _pickle(path: Path) -> str | None:
    try:
        return None if read_start(path, 1) == b"\x80" else "not a pickle"
    except DistillError:
        return "not a regular file"


def _events(path: Path) -> str | None:
    """A folder of TensorBoard event files and nothing else (SummaryWriter writes no subfolders for scalars)."""
    with os.scandir(path) as entries:
        for entry in entries:
            if not (entry.is_file(follow_symlinks=False) and entry.name.startswith("events.out.tfevents.")):
                return f"it holds {short(entry.name, 60)!r}, not only TensorBoard event files"
    return None


# Each of a run's outputs, by its name and its content: a file with one of these names that fails its check was
# not written by distill, and --force never moves or deletes it.
RECOGNISE: dict[str, Callable[[Path], str | None]] = {
    CONFIG: lambda path: _json_keys(path, ("method", "seed", "steps")),
    SUMMARY: lambda path: _json_keys(path, ("status", "method", "env_steps")),
    ENV_FILE: lambda path: _json_keys(path, ("env_id",)),
    METRICS: _metrics,
    STUDENT: _student,
    STATS_FILE: _pickle,
    TENSORBOARD: _events,
}


def not_ours(path: Path) -> str | None:
    """Why ``path`` (one of OUTPUTS) was not written by distill; None if it was. Links are never ours."""
    mode = path.lstat().st_mode
    wanted = stat.S_ISDIR if path.name == TENSORBOARD else stat.S_ISREG
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if not wanted(mode):
        return "a folder" if stat.S_ISDIR(mode) else "not a regular file"
    return RECOGNISE[path.name](path)


def earlier_run(run_dir: Path) -> list[str]:
    """The outputs of the distill run in ``run_dir`` (one that --force may replace), by name. Refused with one
    line: a directory that holds no distill run, or a file with one of our names that distill did not write."""
    present = [name for name in OUTPUTS if os.path.lexists(run_dir / name)]
    reasons = {name: not_ours(run_dir / name) for name in present}
    if not any(name in present and reasons[name] is None for name in (CONFIG, SUMMARY)):
        raise DistillError(
            f"--force replaces an earlier distill run, but {short(run_dir)} holds none (no config.json or "
            "summary.json of distill's): use a new or empty --out"
        )
    for name, reason in reasons.items():
        if reason is not None:
            raise DistillError(
                f"--force: {short(run_dir / name)} was not written by distill ({reason}); it is left alone: "
                "move it away or use another --out"
            )
    return present


# ------------------------------------------------------------------------------------ claiming the directory


def _remove(path: Path) -> None:
    """Delete one output of ours; a link is removed itself, never followed."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def _lock(run_dir: Path) -> int:
    """Hold ``<run_dir>/.lock`` (flock) or refuse: one run per directory, resumes included."""
    path = run_dir / LOCK
    for _ in range(5):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
        except OSError as error:
            raise DistillError(f"cannot write to output directory {short(run_dir)}: {error.strerror}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise DistillError(f"{short(path)} is not a lock file of distill's")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DistillError(
                f"{short(run_dir)} is in use by another distill run (it holds {LOCK}); wait for it to end, "
                "or use another --out"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # The holder unlinks the file when it ends: hold the file that is there now, not one it just removed.
        with contextlib.suppress(OSError):
            if os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                return fd
        os.close(fd)
    raise DistillError(f"cannot lock {short(run_dir)}: its {LOCK} keeps changing")


def _missing_dirs(run_dir: Path) -> list[Path]:
    """``run_dir`` and its parents that do not exist yet, deepest first: the ones a claim will make."""
    missing = []
    for folder in (run_dir, *run_dir.parents):
        if os.path.lexists(folder):
            break
        missing.append(folder)
    return missing


def _is_our_temporary(name: str) -> bool:
    """A file of ours that a stop can leave half-made: an atomic write's ``.<output>.<random>.tmp``, a write probe."""
    return name.startswith(".write-test-") or any(
        name.startswith(f".{output}.") and name.endswith(".tmp") for output in OUTPUTS
    )


@dataclass
class RunDir:
    """A claimed run directory. Used as ``with claimed:``: the lock is held until the block ends; the directory is
    put back as it was found unless ``saved`` was set (the student and summary were written), and once saved the
    earlier outputs that ``--force`` moved aside (or a resumed run's earlier files) are deleted."""

    path: Path
    lock: int
    created: list[Path] = field(default_factory=list)  # directories this run made, deepest first
    resumed: bool = False
    aside: Path | None = None  # earlier outputs (--force: moved here; --resume: hard links of the files replaced)
    metrics_size: int = 0  # --resume: metrics.jsonl's complete lines before this run appended
    events: set[str] = field(default_factory=set)  # --resume: the TensorBoard files there were
    saved: bool = False
    handlers: dict[int, Any] = field(default_factory=dict)  # the stop handlers before this directory was held

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        try:
            with deferred_interrupts() as interrupted:  # a second Ctrl-C must not stop it half-way
                if not self.saved:
                    self._restore()
                elif self.aside is not None:
                    shutil.rmtree(self.aside, ignore_errors=True)
        finally:
            self.release()
        if interrupted and kind is None:
            raise KeyboardInterrupt

    def catch_stops(self) -> None:
        """While the directory is held, Ctrl-C, SIGTERM and SIGHUP raise KeyboardInterrupt (signals a process
        ignores stay ignored): the run saves its student, or the directory is put back, before the command ends."""
        if threading.current_thread() is not threading.main_thread():
            return
        self.handlers = {
            sig: signal.signal(sig, _interrupt) for sig in STOP_SIGNALS if signal.getsignal(sig) is not signal.SIG_IGN
        }

    def _undo_claim(self) -> None:
        """A claim that failed half-way: what was moved aside goes back; nothing else was touched."""
        if self.aside is not None:
            for kept in self.aside.iterdir():
                os.rename(kept, self.path / kept.name)
            self.aside.rmdir()
            self.aside = None

    def _move_aside(self, names: list[str]) -> None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        self.aside = self.path / f"{ASIDE}{stamp}-{os.getpid()}"
        self.aside.mkdir()
        for name in names:
            os.rename(self.path / name, self.aside / name)  # a rename moves a link itself, never its target

    def _keep_for_resume(self) -> None:
        """What a resumed run changes, kept so that a resume that cannot save leaves the run resumable as before."""
        self.resumed = True
        self._move_aside([])
        assert self.aside is not None
        for name in REPLACED:
            if os.path.lexists(self.path / name):
                try:
                    os.link(self.path / name, self.aside / name, follow_symlinks=False)
                except OSError:  # a file system without hard links: a copy
                    shutil.copy2(self.path / name, self.aside / name, follow_symlinks=False)
        metrics = self.path / METRICS
        if metrics.is_file() and not metrics.is_symlink():
            self.metrics_size = complete_size(metrics)
        tensorboard = self.path / TENSORBOARD
        if tensorboard.is_dir() and not tensorboard.is_symlink():
            self.events = {p.name for p in tensorboard.iterdir()}

    def _restore(self) -> None:
        """Put the directory back as this run found it."""
        if not self.resumed:  # everything of ours here is this run's: the earlier outputs are aside
            for name in OUTPUTS:
                _remove(self.path / name)
            self._remove_temporaries()
            if self.aside is not None:
                for kept in self.aside.iterdir():
                    os.rename(kept, self.path / kept.name)
        else:
            for name in REPLACED:
                old = None if self.aside is None else self.aside / name
                if old is not None and os.path.lexists(old):
                    os.replace(old, self.path / name)
                else:
                    _remove(self.path / name)
            with contextlib.suppress(OSError):
                fd = os.open(self.path / METRICS, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
                try:
                    os.ftruncate(fd, self.metrics_size)
                finally:
                    os.close(fd)
            tensorboard = self.path / TENSORBOARD
            if tensorboard.is_dir() and not tensorboard.is_symlink():
                for event in tensorboard.iterdir():
                    if event.name not in self.events:
                        _remove(event)
        if self.aside is not None:
            shutil.rmtree(self.aside, ignore_errors=True)
            self.aside = None

    def _remove_temporaries(self) -> None:
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.path):
                if _is_our_temporary(entry.name) and entry.is_file(follow_symlinks=False):
                    os.unlink(entry.path)

    def release(self) -> None:
        """Give up the lock (and its file); a run that did not save removes the directories it made. A stop that
        comes meanwhile waits until the directory is as it was, then ends the command."""
        with deferred_interrupts() as interrupted:
            if self.lock >= 0:
                with contextlib.suppress(OSError):
                    if os.stat(self.path / LOCK, follow_symlinks=False).st_ino == os.fstat(self.lock).st_ino:
                        (self.path / LOCK).unlink()
                os.close(self.lock)
                self.lock = -1
            if not self.saved:
                for folder in self.created:
                    with contextlib.suppress(OSError):
                        folder.rmdir()  # only if empty
        for sig, handler in self.handlers.items():
            signal.signal(sig, handler)
        self.handlers = {}
        if interrupted:
            raise KeyboardInterrupt


def claim(out: str | None, env_id: str, method: str, force: bool) -> RunDir:
    """The run directory of a new run: new or empty, or (with ``force``) one holding an earlier distill run, whose
    outputs are moved aside until this run has saved. Every refusal leaves the directory as it was."""
    run_dir = Path(out) if out else default_run_dir(env_id, method)
    check_path(str(run_dir), "--out")
    try:
        if run_dir.exists() and not run_dir.is_dir():
            raise DistillError(f"output path {short(run_dir)} exists and is not a directory")
        if run_dir.is_dir() and any(p.name != LOCK for p in run_dir.iterdir()) and not force:
            raise DistillError(
                f"output directory {short(run_dir)} already exists and is not empty (use --force or --out)"
            )
    except OSError as error:
        raise DistillError(f"cannot write to output directory {short(run_dir)}: {error.strerror}") from None
    # The folders to make are listed, and stops caught, before the first is made: from here an interrupt removes
    # what this claim made and puts back what it moved aside.
    claimed = RunDir(run_dir, -1, _missing_dirs(run_dir))
    claimed.catch_stops()
    try:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DistillError(f"cannot write to output directory {short(run_dir)}: {error.strerror}") from None
        with deferred_interrupts() as interrupted:  # the lock file and its descriptor are held together
            claimed.lock = _lock(run_dir)
        if interrupted:
            raise KeyboardInterrupt
        if any(p.name != LOCK for p in run_dir.iterdir()):
            if not force:  # filled while we were locking it
                raise DistillError(f"output directory {short(run_dir)} already exists and is not empty")
            claimed._move_aside(earlier_run(run_dir))
        _check_writable(run_dir)
    except BaseException:
        with contextlib.suppress(Exception):
            claimed._undo_claim()
        claimed.release()
        raise
    return claimed


def reopen(run_dir: Path, resume: ResumeState) -> RunDir:
    """The directory of an interrupted run, for ``--resume``: locked, and checked to be still where ``resume`` read
    it (a resume that finished in the meantime must not be run twice)."""
    claimed = RunDir(run_dir, -1)
    claimed.catch_stops()
    try:
        claimed.lock = _lock(run_dir)
        status, env_steps, _ = _read_summary(run_dir)
        if status != "interrupted" or env_steps != resume.env_steps:
            raise DistillError(
                f"--resume: the run in {short(run_dir)} changed while this command started (another distill run "
                "resumed it); run the command again"
            )
        claimed._keep_for_resume()
        _check_writable(run_dir)
    except BaseException:
        if claimed.aside is not None:  # the links kept for the resume; the run itself was not touched
            shutil.rmtree(claimed.aside, ignore_errors=True)
        claimed.release()
        raise
    return claimed


def _check_writable(run_dir: Path) -> None:
    try:
        with deferred_interrupts() as interrupted:  # the probe is made and removed together
            fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=run_dir)  # O_EXCL: never through a link
            os.close(fd)
            os.unlink(probe)
    except OSError as error:
        raise DistillError(f"cannot write to output directory {short(run_dir)}: {error.strerror}") from None
    if interrupted:
        raise KeyboardInterrupt


def write_config(run_dir: Path, config: RunConfig, env_mapped_from: str | None = None) -> None:
    """config.json: every resolved option, and the retired env id the teacher recorded where the run used its
    successor (a record, not an option: ``--config`` skips it)."""
    record = {"env_mapped_from": env_mapped_from} if env_mapped_from else {}
    atomic_write_json(run_dir / CONFIG, {**config.to_json(), **record})


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

    def restore(self, student: Student) -> None:
        """Load the saved student and optimiser into ``student``, or say in one line why they do not fit (before
        anything in the run directory changes)."""
        wanted = student.policy.state_dict()
        for key, tensor in wanted.items():
            saved = self.policy_state.get(key)
            if not isinstance(saved, torch.Tensor):
                raise DistillError(f"--resume: the saved student has no {short(key, 80)} (another kind of student?)")
            if saved.shape != tensor.shape:
                raise DistillError(
                    f"--resume: the saved student's {short(key, 80)} has shape {tuple(saved.shape)}, this run's "
                    f"{tuple(tensor.shape)}: resume with the run's own --student-net and teacher"
                )
            if not torch.isfinite(saved).all():
                raise DistillError(f"--resume: the saved student's {short(key, 80)} is not finite")
        unknown = sorted(set(self.policy_state) - set(wanted))
        if unknown:
            raise DistillError(f"--resume: the saved student has weights this run's has not ({short(unknown[0], 80)})")
        if not _finite_tensors(self.optimizer_state):
            raise DistillError("--resume: the saved optimiser state holds values that are not finite")
        try:
            student.policy.load_state_dict(self.policy_state)
            student.load_optimizer_state(self.optimizer_state)
        except Exception as error:  # a hand-edited optimiser state can fail in any way: one line
            raise DistillError(
                f"--resume: the saved optimiser state does not fit this run's student ({type(error).__name__}: "
                f"{short(error, 160)})"
            ) from None


def _finite_tensors(value: Any, depth: int = 0) -> bool:
    if depth > 16:
        return False
    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value).all()) if value.is_floating_point() else True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite_tensors(v, depth + 1) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_finite_tensors(v, depth + 1) for v in value)
    return True


def _read_summary(run_dir: Path) -> tuple[str, int, float]:
    """(status, env steps, KL at the start) of a run's summary.json."""
    try:
        summary = json.loads(read_bounded(run_dir / SUMMARY, MAX_JSON_BYTES, "summary"))
        status, env_steps = str(summary["status"]), int(summary["env_steps"])
        kl_start = float(summary["kl_start"]) if summary.get("kl_start") is not None else math.nan
    except (DistillError, ValueError, KeyError, TypeError, OverflowError, RecursionError):
        raise DistillError(f"--resume: {short(run_dir)}/summary.json is not a distill summary") from None
    return status, env_steps, kl_start


def load_resume_state(run_dir: Path) -> tuple[dict[str, Any], ResumeState]:
    """Read an interrupted run directory (weights only, nothing unpickled) for ``distill run --resume``. The options
    come from its config.json, which can never turn on --trust-checkpoint or --force."""
    check_path(str(run_dir), "--resume")
    if not run_dir.is_dir():
        raise DistillError(f"--resume: {short(run_dir)} is not a run directory")
    for name in (CONFIG, SUMMARY, STUDENT):
        if not (run_dir / name).is_file():
            raise DistillError(f"--resume: {short(run_dir)} has no {name}; only a run that saved its state can resume")
    options = RunConfig.from_file(run_dir / CONFIG)
    status, env_steps, kl_start = _read_summary(run_dir)
    if status == "finished":
        raise DistillError(f"--resume: the run in {short(run_dir)} already finished its budget ({env_steps} env steps)")
    if status != "interrupted":
        raise DistillError(
            f"--resume: the run in {short(run_dir)} ended as {short(status, 40)!r}; only interrupted runs resume"
        )
    if env_steps < 0:
        raise DistillError(f"--resume: {short(run_dir)}/summary.json is not a distill summary")
    checkpoint = read_checkpoint(run_dir / STUDENT, role="student")
    try:
        with zipfile.ZipFile(run_dir / STUDENT) as archive:
            raw = read_member(archive, "policy.optimizer.pth", MAX_WEIGHTS_BYTES, run_dir / STUDENT)
    except DistillError:
        raise
    except Exception as error:  # KeyError (no such member), a broken zip, a failing decompressor
        raise DistillError(
            f"--resume: {short(run_dir)}/student.zip has no readable optimiser state ({short(error)})"
        ) from None
    optimizer_state = load_weights(raw, f"--resume: the optimiser state in {short(run_dir)}/student.zip")
    return options, ResumeState(env_steps, checkpoint.policy_state, optimizer_state, kl_start)


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[list[int]]:
    """Record SIGINT/SIGTERM/SIGHUP instead of raising them inside the block; the list says which arrived."""
    received: list[int] = []

    def record(signum: int, frame: object) -> None:
        Stop.signum = signum
        received.append(signum)

    try:
        previous = {
            sig: signal.signal(sig, record) for sig in STOP_SIGNALS if signal.getsignal(sig) is not signal.SIG_IGN
        }
    except ValueError:  # not the main thread: signals are not delivered here anyway
        yield received
        return
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interrupt(signum: int, frame: object) -> None:
    Stop.signum = signum
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a scheduler stopping the job) and SIGHUP (a closed terminal, a dropped SSH session) end the block
    the way Ctrl-C does: the student so far is saved."""
    try:
        previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
