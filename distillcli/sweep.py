"""``distill sweep``: every (method, seed, student net) as an ordinary ``distill run``, then one comparison table.

Each run has its own run directory, ``OUT/<method>-s<seed>-<net>`` (e.g. ``bc-s0-32x32``), so a second sweep
with the same options finds the finished ones and skips them, and resumes the interrupted ones. The runs go to
worker processes (``--backend local``) or to Ray tasks (``--backend ray``) through the same worker function;
each returns its run's record, so the table never depends on where a run happened.

Everything that would make every run fail (an unknown method, a missing teacher, a bad option) is checked once,
before anything starts or is written; what fails inside one run is reported in the table and the others go on.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, fields, replace
from pathlib import Path
from queue import Empty
from typing import Any, Protocol

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from distillcli.config import RunConfig
from distillcli.errors import DistillError, short
from distillcli.methods import get_method, method_names
from distillcli.report import RunRecord, document, is_run_dir, read_run, write_report
from distillcli.sb3.netspec import NetSpec, net_label

BACKENDS = ("local", "ray")
# Options that change how fast a run goes, not what it computes: a finished run with other values still counts.
NOT_COMPARED = {"out", "threads", "device", "tensorboard"}
REPORT_EVERY_S = 0.5  # progress messages per worker, at most two a second


# ------------------------------------------------------------------------------------------- the options


def parse_methods(text: str) -> list[str]:
    """``a,b`` -> [a, b] (each checked against Table 1); ``all`` -> every method."""
    names = method_names() if text.strip() == "all" else [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise DistillError(f"--methods needs method names like expected-entropy,bc (or all), got {text!r}")
    for name in names:
        get_method(name)  # one line naming the valid methods if not
    return _distinct("--methods", names)


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise DistillError(f"--seeds must be comma-separated integers like 0,1,2, got {text!r}") from None
    if not seeds:
        raise DistillError(f"--seeds must be comma-separated integers like 0,1,2, got {text!r}")
    for seed in seeds:
        if not 0 <= seed < 2**32:
            raise DistillError(f"--seeds must be in [0, 2**32), got {seed}")
    return _distinct("--seeds", seeds)


def _distinct(option: str, values: list[Any]) -> list[Any]:
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise DistillError(f"{option} lists {', '.join(repeated)} more than once")
    return values


@dataclass
class SweepOptions:
    """What ``distill sweep`` was asked: the grid, the shared run options, where and how to run."""

    methods: list[str]
    seeds: list[int]
    nets: list[NetSpec] | None  # None: the base options' student_net (default auto)
    base: dict[str, Any]  # RunConfig options shared by every run (from --config and the sweep's own options)
    trust: bool = False  # --trust-checkpoint, typed on this command line (never from a file)
    out: Path | None = None
    backend: str = "local"
    address: str | None = None
    jobs: int | None = None
    gpus_per_run: float = 1.0
    force: bool = False


@dataclass(frozen=True)
class Task:
    """One run for a worker: its name, its complete config, and whether it continues an interrupted run."""

    name: str
    config: RunConfig
    resume: bool = False
    trust: bool = False
    force: bool = False  # the directory is this sweep's own: what an unfinished run left there is replaced


@dataclass
class Plan:
    out: Path
    env_id: str
    tasks: list[Task]
    reused: list[RunRecord]  # finished earlier: read, not run
    order: list[str]  # every run's name, in grid order (methods, then nets, then seeds)


def plan(options: SweepOptions) -> Plan:
    """Check everything shared by the runs, once, and list the runs still to do."""
    from distillcli.run.pipeline import check_sizes, check_teacher_outputs, parse_schedule, task_budget
    from distillcli.run.setup import check_action_masks, prepare_run, require_teacher_value
    from distillcli.sb3.student import resolve_net

    if options.backend not in BACKENDS:
        raise DistillError(f"--backend must be one of {', '.join(BACKENDS)}, got {options.backend!r}")
    if options.jobs is not None and options.jobs <= 0:
        raise DistillError(f"--jobs must be positive, got {options.jobs}")
    if not (0 < options.gpus_per_run <= 1 or (options.gpus_per_run > 1 and options.gpus_per_run.is_integer())):
        raise DistillError(f"--gpus-per-run must be a fraction in (0, 1] or a whole number, got {options.gpus_per_run}")
    if options.address is not None and options.backend != "ray":
        raise DistillError("--address is for --backend ray")
    base = RunConfig(**{**options.base, "method": options.methods[0], "seed": options.seeds[0]})
    base.validate()
    parse_schedule("mix", base.mix, 0.0, 1.0)
    parse_schedule("reward-weight", base.reward_weight)
    # With Ray the device is the workers' business: the machine that submits may have no GPU.
    setup = prepare_run(base, options.trust, "cpu" if options.backend == "ray" else None)
    check_teacher_outputs(setup, base.seed)
    for name in options.methods:
        require_teacher_value(get_method(name), setup.teacher)
    check_action_masks(setup, base.seed)
    # As `distill run` parses --student-net; the resolved spec (auto made explicit) names the run and parses back
    # to the same student in the worker.
    specs = options.nets or [NetSpec.parse(base.student_net)]
    teacher = setup.teacher
    resolved = [resolve_net(spec, teacher.hidden_widths, teacher.policy, setup.observation_space) for spec in specs]
    for student in resolved:
        check_sizes(base, student, setup.observation_space)
    nets = [str(student) for student in resolved]
    nets = _distinct("--student-nets", nets)  # auto may equal an explicit size
    out = options.out or Path("runs") / f"sweep-{setup.env_id.replace('/', '-')}"
    if out.exists() and not out.is_dir():
        raise DistillError(f"--out {out} exists and is not a directory")
    out = out.resolve()  # workers (Ray's included) may start elsewhere
    teacher_path = str(setup.checkpoint.path.expanduser().resolve())
    steps = base.steps or task_budget(setup.stack)

    tasks: list[Task] = []
    reused: list[RunRecord] = []
    order: list[str] = []
    for method in options.methods:
        for net in nets:
            for seed in options.seeds:
                name = f"{method}-s{seed}-{net_label(net)}"
                order.append(name)
                config = replace(base, teacher=teacher_path, env=setup.env_id, method=method, seed=seed, steps=steps)
                config = replace(config, student_net=net, out=str(out / name))
                task = task_or_record(name, config, options.trust, options.force)
                if isinstance(task, RunRecord):
                    reused.append(task)
                else:
                    tasks.append(task)
    return Plan(out, setup.env_id, tasks, reused, order)


def task_or_record(name: str, config: RunConfig, trust: bool, force: bool) -> Task | RunRecord:
    """The run ``config.out`` should hold: its record if it finished with these options (unless ``force``), else
    the task that runs it, resuming it if it was interrupted."""
    out = Path(str(config.out))
    previous = read_run(out, name)
    if previous is not None and previous.ok and not force:
        _check_same(previous, config)
        previous.reused = True
        return previous
    interrupted = previous is not None and previous.status == "interrupted" and not force
    return Task(name, config, resume=interrupted, trust=trust, force=previous is not None and not interrupted)


def _claim(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DistillError(f"cannot create --out {out}: {error.strerror or error}") from None
    if not os.access(out, os.W_OK):
        raise DistillError(f"cannot write to --out {out}")


def _check_same(previous: RunRecord, config: RunConfig) -> None:
    """A finished run is reused only if it ran with this sweep's options; otherwise say so, once."""
    from distillcli.run.pipeline import with_method_defaults

    stored = RunConfig.from_file(Path(previous.run_dir) / "config.json")
    wanted = with_method_defaults(config, get_method(config.method), config.student_net.startswith("cnn")).to_json()
    for f in fields(RunConfig):
        if f.name in NOT_COMPARED or f.name not in stored:
            continue
        old, new = stored[f.name], wanted[f.name]
        if f.name == "teacher":
            old, new = _teacher_file(old), _teacher_file(new)
        if old != new and not (isinstance(old, int | float) and isinstance(new, int | float) and float(old) == new):
            raise DistillError(
                f"{previous.run_dir} holds a finished run with {f.name} = {old!r}, not {new!r}: "
                "use --force to run it again, or another --out"
            )


def _teacher_file(teacher: Any) -> str:
    """The file a recorded teacher names (``bundled:NAME`` and a path to it are the same teacher)."""
    from distillcli.run.setup import teacher_path

    try:
        return str(teacher_path(str(teacher)).resolve())
    except DistillError:  # gone, or not a path: compare the text
        return str(teacher)


# ------------------------------------------------------------------------------------------- the worker

_queue: Any = None  # a local worker's channel to the progress view (set by _init_local_worker)
_parent: int | None = None  # a local worker's sweep process


def _init_local_worker(queue: Any, parent: int | None = None) -> None:
    global _queue, _parent
    _queue, _parent = queue, parent
    # Ctrl-C reaches every process of the terminal's group; the sweep decides what to stop (LocalBackend.stop).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent is not None:
        _stop_with(parent)


def _orphaned() -> bool:
    return _parent is not None and os.getppid() != _parent


def _stop_with(parent: int) -> None:
    """A worker whose sweep died (SIGKILL, a crash) gets SIGTERM, which stops its run the way the sweep's own stop
    does (the student so far is saved), instead of training on as an orphan. Linux sends it when the parent dies
    (PR_SET_PDEATHSIG); a thread that watches the parent covers other systems and a parent gone before that."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # 1: PR_SET_PDEATHSIG

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="distill-parent-watch", daemon=True).start()


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def execute(task: Task, queue: Any = None) -> RunRecord:
    """Run one task exactly as ``distill run`` would, and return its record; never raises for a failed run."""
    from distillcli.run import load_resume_state, run

    channel = queue if queue is not None else _queue
    last = 0.0

    def send(message: tuple[Any, ...]) -> None:
        if channel is not None:
            # A full or closed channel costs a progress line, never the run.
            with contextlib.suppress(Exception):
                channel.put_nowait(message)

    def progress(metrics: dict[str, float]) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= REPORT_EVERY_S or metrics["env_steps"] >= task.config.steps:
            last = now
            send(("steps", task.name, metrics["env_steps"], metrics["eval_return"]))

    main = threading.current_thread() is threading.main_thread()
    # Until run() installs its own handler: a stop during setup ends this run cleanly too.
    previous = signal.signal(signal.SIGTERM, _stop) if main else None
    send(("start", task.name, os.getpid(), task.config.steps))
    error = ""
    try:
        config, state, force = task.config, None, task.force
        if task.resume:  # the sweep's options win over the stored ones, as with `distill run --resume`
            try:
                _, state = load_resume_state(Path(str(config.out)))
            except DistillError:
                state = None
            if state is None or state.env_steps >= config.steps:  # nothing usable to continue: start over
                state, force = None, True
        run(config, progress, state, trust=task.trust, force=force)
    except DistillError as failure:
        error = str(failure)
    except KeyboardInterrupt:  # stopped outside training (setup or saving): nothing to resume
        error = "interrupted"
    except Exception as failure:  # any crash of one run is that run's result, not the sweep's
        error = f"{type(failure).__name__}: {failure}"
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    record = _record(task, error)
    if _orphaned():  # the sweep is gone: its run is saved, and nobody is left to take the record or more tasks
        os._exit(0)
    return record


def _record(task: Task, error: str) -> RunRecord:
    """The run's record from its directory (the summary and curve it wrote), with the error it raised."""
    record = read_run(Path(str(task.config.out)), task.name)
    if record is None:  # it failed before its directory held anything
        record = RunRecord(
            task.name,
            str(task.config.out),
            task.config.method,
            task.config.seed,
            net_label(task.config.student_net),
            task.config.env,
            "failed",
        )
    if error:
        record.error = short(error)  # printed by the progress view and the table: one printable line
        if record.status in ("finished", "incomplete", "unknown"):
            record.status = "failed"
    return record


# ------------------------------------------------------------------------------------------- the backends


class Backend(Protocol):
    """Where runs go: ``submit`` a task, ``poll`` for finished ones and progress messages, ``stop`` them all."""

    running: dict[Any, Task]  # what was submitted and has not come back

    def submit(self, task: Task) -> None: ...

    def poll(self, timeout: float) -> tuple[list[RunRecord], list[tuple[Any, ...]]]: ...

    def stop(self) -> None: ...

    def close(self, wait: bool = True) -> None: ...


class LocalBackend:
    """A pool of worker processes on this machine (spawned: a fresh interpreter, safe with torch's threads)."""

    def __init__(self, jobs: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.queue = context.Queue()
        self.pool = ProcessPoolExecutor(
            jobs, context, initializer=_init_local_worker, initargs=(self.queue, os.getpid())
        )
        self.running: dict[Future[RunRecord], Task] = {}
        self.pids: dict[str, int] = {}
        self.stopping = False

    def submit(self, task: Task) -> None:
        self.running[self.pool.submit(execute, task)] = task

    def poll(self, timeout: float) -> tuple[list[RunRecord], list[tuple[Any, ...]]]:
        done, _ = wait(list(self.running), timeout=timeout, return_when=FIRST_COMPLETED)
        messages = self._drain()  # first: a run's "start" comes before its end is handled
        records = []
        for future in done:
            task = self.running.pop(future)
            self.pids.pop(task.name, None)
            try:
                records.append(future.result())
            except Exception as error:  # the worker process itself died (killed, out of memory)
                records.append(_record(task, f"worker process died ({type(error).__name__}: {error})"))
        return records, messages

    def _drain(self) -> list[tuple[Any, ...]]:
        messages: list[tuple[Any, ...]] = []
        while True:
            try:
                message = self.queue.get_nowait()
            except (Empty, OSError, ValueError):
                return messages
            if message[0] == "start" and any(t.name == message[1] for t in self.running.values()):
                self.pids[message[1]] = message[2]
                if self.stopping:
                    self._signal(message[2])
            messages.append(message)

    def _signal(self, pid: int) -> None:
        with contextlib.suppress(OSError):  # a run treats SIGTERM like Ctrl-C: it saves its student and stops
            os.kill(pid, signal.SIGTERM)

    def stop(self) -> None:
        self.stopping = True
        self._drain()
        for future, task in self.running.items():
            # Only workers still in a run: an idle worker would die of SIGTERM and break the pool.
            if not future.done() and task.name in self.pids:
                self._signal(self.pids[task.name])

    def close(self, wait: bool = True) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=True)
        self.queue.close()


def _check_reachable(address: str) -> None:
    """Fail fast where Ray would retry for minutes: nothing listens at HOST:PORT."""
    if address in ("auto", "local"):
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise DistillError(f"--address must be HOST:PORT, ray://HOST:PORT or auto, got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as error:
        raise DistillError(
            f"cannot reach a Ray cluster at {address} ({error.strerror or error}); start one with "
            "`ray start --head`, or leave out --address for a local Ray"
        ) from None


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise DistillError("--backend ray needs Ray, an optional extra: pip install 'distillcli[ray]'") from None
    return ray


class RayBackend:
    """One Ray task per run, each asking for its CPUs (--threads) and GPUs; progress through a Ray queue."""

    def __init__(self, address: str | None, gpus_per_run: float) -> None:
        self.ray = ray = _import_ray()
        if address is not None:
            _check_reachable(address)
        self.started = not ray.is_initialized()
        if self.started:
            local = address in (None, "local")
            try:
                with stdout_to_stderr():
                    ray.init(
                        address=address,
                        log_to_driver=False,  # stdout stays ours (--json); a run's errors come back in its record
                        logging_level=logging.WARNING,
                        **({"include_dashboard": False} if local else {}),
                    )
            except Exception as error:  # Ray raises ConnectionError, RuntimeError, ValueError...
                raise DistillError(f"cannot start Ray at {address or 'a local cluster'}: {error}") from None
        from ray.util.queue import Queue

        self.queue = Queue(actor_options={"num_cpus": 0})
        self.remote = ray.remote(execute)
        self.has_gpus = ray.cluster_resources().get("GPU", 0) > 0
        self.gpus_per_run = gpus_per_run
        self.running: dict[Any, Task] = {}

    def submit(self, task: Task) -> None:
        config = task.config
        cuda = config.device.startswith("cuda") or (config.device == "auto" and self.has_gpus)
        if not cuda:
            # Ray leaves a GPU visible to a task that asked for none: it must not use one it was not given.
            task = replace(task, config=replace(config, device="cpu"))
        options = {"num_cpus": config.threads, "num_gpus": self.gpus_per_run if cuda else 0, "max_retries": 0}
        self.running[self.remote.options(**options).remote(task, self.queue)] = task

    def poll(self, timeout: float) -> tuple[list[RunRecord], list[tuple[Any, ...]]]:
        ready, _ = self.ray.wait(list(self.running), num_returns=len(self.running), timeout=timeout)
        messages = self._drain()
        records = []
        for ref in ready:
            task = self.running.pop(ref)
            try:
                records.append(self.ray.get(ref))
            except Exception as error:  # the task was cancelled or its worker died
                records.append(_record(task, f"Ray task failed ({type(error).__name__}: {str(error)[:200]})"))
        return records, messages

    def _drain(self) -> list[tuple[Any, ...]]:
        try:
            size = self.queue.qsize()
            return list(self.queue.get_nowait_batch(size)) if size else []
        except Exception:
            return []

    def stop(self) -> None:
        for ref in self.running:
            self.ray.cancel(ref)  # KeyboardInterrupt inside the task: the run saves its student and stops

    def close(self, wait: bool = True) -> None:
        if self.started:
            with stdout_to_stderr():
                self.ray.shutdown()


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """File descriptor 1 is stderr inside the block: what Ray prints as it starts and stops (its own warnings, and
    the daemons it starts, which inherit the descriptor) never lands in stdout, which is --json's."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):  # no usable stdout (closed, or replaced by an object without a descriptor)
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


# ------------------------------------------------------------------------------------------- the sweep


class Watcher(Protocol):
    """What the sweep tells a progress view."""

    def begin(self, total: int, reused: list[RunRecord]) -> None: ...

    def message(self, message: tuple[Any, ...]) -> None: ...

    def done(self, record: RunRecord) -> None: ...

    def end(self) -> None: ...


@dataclass
class Result:
    records: list[RunRecord]
    document: dict[str, Any]
    out: Path

    @property
    def failed(self) -> list[RunRecord]:
        return [r for r in self.records if not r.ok]


def sweep(options: SweepOptions, watcher: Watcher | None = None) -> Result:
    """Run the grid (skipping finished runs), then write the table and plot into OUT; see the module doc."""
    return run_plan(
        plan(options),
        options.backend,
        address=options.address,
        jobs=options.jobs,
        gpus_per_run=options.gpus_per_run,
        watcher=watcher,
    )


def run_plan(
    the_plan: Plan,
    backend_name: str = "local",
    *,
    address: str | None = None,
    jobs: int | None = None,
    gpus_per_run: float = 1.0,
    watcher: Watcher | None = None,
) -> Result:
    """Run a plan's tasks (``distill sweep``'s grid, or ``distill study``'s) on the backend named, then write the
    table and plot into its directory."""
    total = len(the_plan.order)
    tasks = list(the_plan.tasks)
    # Local: one run per CPU. Ray: everything in flight, the cluster's resources decide what runs when.
    default_jobs = (os.cpu_count() or 1) if backend_name == "local" else len(tasks)
    jobs = min(jobs or default_jobs, len(tasks))
    records = {r.name: r for r in the_plan.reused}
    started = time.perf_counter()
    interrupted = False
    backend: Backend | None = None
    if tasks:  # connect first: a backend that cannot start leaves nothing behind
        local = backend_name == "local"
        backend = LocalBackend(max(1, jobs)) if local else RayBackend(address, gpus_per_run)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        # Only a flag: an exception at an arbitrary point could cut a message from the workers in half.
        if stop.is_set():
            raise KeyboardInterrupt  # a second Ctrl-C: stop waiting for the runs to save
        stop.set()

    handlers: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # SIGHUP: the terminal or SSH session went away
        handlers = {sig: signal.signal(sig, on_signal) for sig in stops}
    clean = False
    try:
        _claim(the_plan.out)
        if watcher is not None:
            watcher.begin(total, the_plan.reused)
        while backend is not None and (tasks or backend.running):
            if stop.is_set() and not interrupted:
                interrupted = True
                tasks.clear()  # never started: a rerun does them
                backend.stop()
            while tasks and len(backend.running) < jobs:
                backend.submit(tasks.pop(0))
            finished, messages = backend.poll(0.25)
            for message in messages:
                if watcher is not None:
                    watcher.message(message)
            for record in finished:
                if interrupted and not is_run_dir(Path(record.run_dir)):
                    continue  # stopped before it began (a cancelled Ray task): a rerun starts it
                records[record.name] = record
                if watcher is not None:
                    watcher.done(record)
        clean = True
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        if backend is not None:
            backend.close(wait=clean)
        if watcher is not None:
            watcher.end()
    ordered = [records[name] for name in the_plan.order if name in records]
    files = write_report(ordered, the_plan.out)
    doc = document(ordered, files)
    doc.update(out=str(the_plan.out), backend=backend_name, wall_seconds=time.perf_counter() - started)
    if interrupted:
        missing = total - len(ordered)
        raise DistillError(
            f"interrupted: {sum(r.ok for r in ordered)} of {total} runs finished"
            + (f", {missing} not started" if missing else "")
            + f"; the table so far is in {the_plan.out}. Run the same command again to continue "
            "(finished runs are skipped, interrupted ones resume)"
        )
    return Result(ordered, doc, the_plan.out)


class SweepView:
    """One progress view on stderr: the sweep's count of runs, a bar per running run, a line per finished run."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f} {task.fields[unit]}"),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.rows: dict[str, TaskID] = {}
        self.ended: set[str] = set()  # a late "start" message must not bring back a finished run's bar
        self.overall: TaskID | None = None

    def begin(self, total: int, reused: list[RunRecord]) -> None:
        if reused:
            self.console.print(f"{len(reused)} of {total} runs finished earlier: skipped", highlight=False)
        self.overall = self.bar.add_task("sweep", total=total, completed=len(reused), unit="runs", info="")
        self.bar.start()

    def message(self, message: tuple[Any, ...]) -> None:
        kind, name = message[0], message[1]
        if kind == "start" and name not in self.ended:
            self.rows[name] = self.bar.add_task(name, total=message[3], unit="steps", info="")
        elif kind == "steps" and name in self.rows:
            self.bar.update(self.rows[name], completed=message[2], info=f"return {message[3]:.1f}")

    def done(self, record: RunRecord) -> None:
        self.ended.add(record.name)
        if record.name in self.rows:
            self.bar.remove_task(self.rows.pop(record.name))
        if self.overall is not None:
            self.bar.advance(self.overall)
        if record.ok:
            text = f"done   {record.name}: score {record.score:.3f}, {record.wall_seconds:.1f} s"
        elif record.status == "interrupted":
            text = f"stopped {record.name}: {record.error}"
        else:
            text = f"FAILED {record.name}: {record.status}: {record.error}"
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def end(self) -> None:
        if self.bar.live.is_started:
            self.bar.stop()
