"""``distill run`` and ``distill eval`` as library calls: config in, files and a summary out.

Data flows one way: config -> (teacher, env, student) -> trainer(method) -> files. Everything a user can get
wrong is checked before the run directory is created, so a failed start leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.resources
import io
import json
import math
import platform
import re
import shutil
import signal
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv

from distillcli import __version__
from distillcli.config import RunConfig
from distillcli.envs import EnvStack, atari_stack, register_hinted
from distillcli.errors import DistillError
from distillcli.evaluate import EvalResult, evaluate, latency_us
from distillcli.methods import Control, Method, get_method
from distillcli.metrics import MetricsSink, atomic_write_json
from distillcli.objectives import ObjectiveOptions
from distillcli.rollout import Collector, read_masks
from distillcli.students import Student, parse_student_net
from distillcli.teachers import Checkpoint, Teacher, check_spaces, infer_env_id, load_teacher, read_checkpoint
from distillcli.trainer import Diverged, LoopSettings, Schedule, UpdateOptions, train
from distillcli.zoo import ENV_FILE, STATS_FILE, read_env_file, select_model, stats_folder, write_env_files, zoo_stack

BUNDLED_TEACHER = "ppo-CartPole-v1.zip"
RUN_OUTPUTS = ("config.json", "metrics.jsonl", "summary.json", "student.zip", "tensorboard", ENV_FILE, STATS_FILE)
EVAL_SEED_OFFSET = 10_000  # evaluation episodes never share seeds with training environments

Progress = Callable[[dict[str, float]], None]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _deferred_interrupts() -> Iterator[list[int]]:
    """Record SIGINT/SIGTERM instead of raising them inside the block; the list says which arrived."""
    received: list[int] = []
    try:
        previous = {sig: signal.signal(sig, lambda signum, _: received.append(signum)) for sig in _STOP_SIGNALS}
    except ValueError:  # not the main thread: signals are not delivered here anyway
        yield received
        return
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def bundled_teacher() -> Path:
    return Path(str(importlib.resources.files("distillcli") / "data" / BUNDLED_TEACHER))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and not re.fullmatch(r"cuda(:\d+)?", name):
        raise DistillError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DistillError(f"--device {name} was asked for but CUDA is not available on this machine")
    device = torch.device(name)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise DistillError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def versions() -> dict[str, str]:
    packages = ("torch", "stable_baselines3", "gymnasium", "numpy")
    found = {name: importlib.metadata.version(name.replace("_", "-")) for name in packages}
    return {"distillcli": __version__, "python": platform.python_version(), **found}


def return_ratio(student: float, teacher: float) -> float:
    """student / teacher for positive teacher returns; teacher / student when both are negative."""
    if teacher > 0:
        return student / teacher
    if teacher < 0 and student < 0:
        return teacher / student
    return math.nan


@dataclass
class Setup:
    """A teacher, its environment and the resolved options: what both run and eval start from."""

    checkpoint: Checkpoint
    teacher: Teacher
    env_id: str
    device: torch.device
    stack: EnvStack  # the env as the teacher was trained behind it (rl-zoo wrappers, statistics, frame stacking)
    observation_space: gym.Space  # what teacher and student see: normalised, stacked, channel-first

    def make_env(self, n_envs: int, seed: int) -> VecEnv:
        return self.stack.make(n_envs, seed)


def parse_schedule(name: str, text: str, low: float = -math.inf, high: float = math.inf) -> Schedule:
    try:
        schedule = Schedule.parse(text)
    except ValueError:
        raise DistillError(f"--{name} must be a number or START:END, got {text!r}") from None
    if not all(math.isfinite(v) and low <= v <= high for v in (schedule.start, schedule.end)):
        bounds = f"in [{low:g}, {high:g}]" if math.isfinite(low) and math.isfinite(high) else "finite numbers"
        raise DistillError(f"--{name} values must be {bounds}, got {text!r}")
    return schedule


def prepare(
    teacher_path: str | None,
    env: str | None,
    device_name: str,
    *,
    trust: bool = False,
    temperature: float = 1.0,
    log_prob_floor: float | None = None,
    deterministic_std: float = 0.1,
    load_best: bool = False,
    load_checkpoint: int = 0,
) -> Setup:
    """Read the teacher, rebuild its environment stack, settle the device, and check the teacher fits the env.

    ``teacher_path`` is an SB3 zip or an rl-zoo run folder (or a zip inside one): then the folder's YAML and
    statistics rebuild the env as rl-zoo's ``enjoy`` does. A bare zip of an Atari teacher gets SB3's Atari stack.
    """
    device = resolve_device(device_name)
    if teacher_path is not None and not teacher_path.strip():
        raise DistillError("--teacher is empty (leave it out to use the bundled CartPole teacher)")
    path = Path(teacher_path).expanduser() if teacher_path is not None else bundled_teacher()
    if not path.exists():
        raise DistillError(f"teacher checkpoint not found: {path}")
    model, stats = select_model(path, load_best, load_checkpoint)
    checkpoint = read_checkpoint(model)
    stack = zoo_stack(stats, env, trust) if stats is not None else _bare_stack(checkpoint, model, env)
    probe = stack.make(1, 0)
    env_id = stack.env_id
    observation_space = probe.observation_space
    try:
        check_spaces(checkpoint, probe.observation_space, probe.action_space, env_id)
        teacher = load_teacher(
            checkpoint,
            probe.observation_space,
            probe.action_space,
            device,
            trust=trust,
            temperature=temperature,
            log_prob_floor=log_prob_floor,
            deterministic_std=deterministic_std,
        )
    finally:
        probe.close()
    return Setup(checkpoint, teacher, env_id, device, stack, observation_space)


def check_action_masks(setup: Setup, seed: int) -> None:
    """A MaskablePPO teacher needs an env with ``action_masks()``: say so before any run directory exists."""
    if setup.teacher.algo != "MaskablePPO":
        return
    probe = setup.make_env(1, seed)
    try:
        read_masks(probe, setup.device)
    finally:
        probe.close()


def _bare_stack(checkpoint: Checkpoint, path: Path, env: str | None, hint: str = "pass --env ENV_ID") -> EnvStack:
    """The env of a zip with no rl-zoo folder around it: its id (inferred from the name unless --env), and for an
    Atari teacher with 84x84xK frames SB3's AtariWrapper + VecFrameStack(K), as ``make_atari_env`` trains it."""
    register_hinted(f"{path.parent.name} {path.name} {env or ''}")
    env_id = env or infer_env_id(path)
    if env_id is None:
        raise DistillError(f"cannot infer the environment from {path.name}; {hint}")
    shape = checkpoint.space_summary("observation_space").get("_shape")
    return atari_stack(env_id, shape) or EnvStack(env_id)


def prepare_run(config: RunConfig, device: str | None = None) -> Setup:
    """``prepare`` with a run's teacher options (``distill run`` and every run of a sweep)."""
    return prepare(
        config.teacher,
        config.env,
        config.device if device is None else device,
        trust=config.trust_checkpoint,
        temperature=config.temperature,
        log_prob_floor=config.logprob_floor,
        deterministic_std=config.teacher_noise,
        load_best=config.load_best,
        load_checkpoint=config.load_checkpoint,
    )


# Adam's step size where --lr is 0: large steps suit a small MLP on large minibatches; a CNN's many shared weights
# need smaller ones (Pong's KL fell to 0.93x in 2048 steps at 5e-3 and to 0.29x at 1e-3).
DEFAULT_LR = {"mlp": 5e-3, "cnn": 1e-3}


def with_method_defaults(config: RunConfig, method: Method, cnn: bool) -> RunConfig:
    """The options left at 0 or unset that the method and student fill in: control policy q, epochs and lr."""
    return replace(
        config,
        control=config.control or method.control,
        epochs=config.epochs or method.epochs,
        lr=config.lr or DEFAULT_LR["cnn" if cnn else "mlp"],
    )


def require_teacher_value(method: Method, teacher: Teacher) -> None:
    if method.needs_teacher_value and not teacher.has_value:
        raise DistillError(f"method {method.name} needs a teacher value function; a {teacher.algo} teacher has none")


def default_run_dir(env_id: str, method: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{env_id.replace('/', '-')}-{method}-{stamp}"


def claim_run_dir(out: str | None, env_id: str, method: str, force: bool) -> Path:
    run_dir = Path(out) if out else default_run_dir(env_id, method)
    if run_dir.exists() and not run_dir.is_dir():
        raise DistillError(f"output path {run_dir} exists and is not a directory")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not force:
        raise DistillError(f"output directory {run_dir} already exists and is not empty (use --force or --out)")
    if force and run_dir.is_dir():
        # Only what an earlier run wrote: --force must never delete a user's other files.
        for name in RUN_OUTPUTS:
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
        raise DistillError(f"cannot write to output directory {run_dir}: {error.strerror}") from None
    return run_dir


def _summary_of_eval(result: EvalResult, prefix: str) -> dict[str, float]:
    return {
        f"{prefix}_return": result.mean,
        f"{prefix}_return_std": result.std,
        "kl_teacher_student": result.kl_teacher_student,
        "kl_student_teacher": result.kl_student_teacher,
        "agreement": result.agreement,
    }


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
        raise DistillError(f"--resume: {run_dir} is not a run directory")
    for name in ("config.json", "summary.json", "student.zip"):
        if not (run_dir / name).is_file():
            raise DistillError(f"--resume: {run_dir} has no {name}; only a run that saved its state can resume")
    options = RunConfig.from_file(run_dir / "config.json")
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
        status, env_steps, kl_start = summary["status"], int(summary["env_steps"]), float(summary["kl_start"])
    except (OSError, ValueError, KeyError, TypeError):
        raise DistillError(f"--resume: {run_dir}/summary.json is not a distill summary") from None
    if status == "finished":
        raise DistillError(f"--resume: the run in {run_dir} already finished its budget ({env_steps} env steps)")
    if status != "interrupted":
        raise DistillError(f"--resume: the run in {run_dir} ended as {status!r}; only interrupted runs resume")
    checkpoint = read_checkpoint(run_dir / "student.zip", role="student")
    try:
        with zipfile.ZipFile(run_dir / "student.zip") as archive:
            raw = archive.read("policy.optimizer.pth")
        optimizer_state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as error:  # untrusted bytes: any decoder failure means "unreadable"
        raise DistillError(f"--resume: the optimiser state in {run_dir}/student.zip is unreadable ({error})") from None
    return options, ResumeState(env_steps, checkpoint.policy_state, optimizer_state, kl_start)


def run(config: RunConfig, progress: Progress | None = None, resume: ResumeState | None = None) -> dict[str, Any]:
    """Distil the teacher into a new student; write the run directory; return the summary.

    With ``resume``, continue an interrupted run in ``config.out`` from its saved student up to ``config.steps``.
    """
    config.validate()
    method: Method = get_method(config.method)
    teacher_share = parse_schedule("mix", config.mix, 0.0, 1.0)
    reward_weight = parse_schedule("reward-weight", config.reward_weight)
    torch.set_num_threads(config.threads)
    setup = prepare_run(config)
    teacher = setup.teacher
    require_teacher_value(method, teacher)
    net = parse_student_net(config.student_net, teacher.policy, setup.observation_space)
    config = with_method_defaults(config, method, cnn=net.features_dim is not None)
    control: Control = config.control  # type: ignore[assignment]
    check_action_masks(setup, config.seed)
    if resume is None:
        run_dir = claim_run_dir(config.out, setup.env_id, method.name, config.force)
    else:
        run_dir = Path(str(config.out))
        if resume.env_steps >= config.steps:
            raise DistillError(f"--resume: {resume.env_steps} env steps done already; raise --steps to continue")
    resolved = replace(config, teacher=str(setup.checkpoint.path), env=setup.env_id, out=str(run_dir))
    atomic_write_json(run_dir / "config.json", resolved.to_json())
    write_env_files(setup.stack, run_dir)  # env.json (+ vecnormalize.pkl): the student's env, for deployment

    # A resumed run continues on fresh episodes rather than replaying the first ones.
    venv = setup.make_env(config.n_envs, config.seed + (0 if resume is None else resume.env_steps))
    activation = getattr(teacher.policy, "activation_fn", torch.nn.Tanh)
    student = Student.build(
        venv,
        net.layers,
        activation,
        learning_rate=config.lr,
        n_steps=config.n_steps,
        minibatch_size=config.minibatch_size,
        epochs=config.epochs,
        gamma=config.gamma,
        gae_lambda=config.gae_lambda,
        device=setup.device,
        seed=config.seed,
        zero_critic=method.critic_init == "zero",
        noise=teacher.noise,
        masked=teacher.algo == "MaskablePPO",
        features_dim=net.features_dim,
    )
    teacher_noise = teacher.noise_log_std()
    if teacher_noise is not None:
        student.start_noise_at(teacher_noise.to(setup.device))
    if resume is not None:
        try:
            student.policy.load_state_dict(resume.policy_state)
            student.load_optimizer_state(resume.optimizer_state)
        except (RuntimeError, ValueError, KeyError) as error:
            raise DistillError(f"--resume: the saved student does not fit this run's options ({error})") from None
    collector = Collector(venv, teacher, setup.device, teacher_values=method.needs_teacher_value)

    def eval_env(n: int) -> VecEnv:
        return setup.make_env(n, config.seed + EVAL_SEED_OFFSET)

    def evaluate_student() -> EvalResult:
        return evaluate(student, eval_env, config.eval_episodes, setup.device, teacher=teacher)

    teacher_eval = evaluate(teacher, eval_env, config.eval_episodes, setup.device)
    start_steps = 0 if resume is None else resume.env_steps
    start_eval = evaluate_student()
    sink = MetricsSink(run_dir, config.tensorboard)  # appends: a resumed run continues the same metrics.jsonl
    sink.write({"env_steps": start_steps, **_summary_of_eval(start_eval, "student")}, prefix="eval")
    settings = LoopSettings(
        total_steps=config.steps,
        n_steps=config.n_steps,
        control=control,
        teacher_share=teacher_share,
        reward_weight=reward_weight,
        objective=ObjectiveOptions(
            kl_direction=config.kl_direction,  # type: ignore[arg-type]
            reward_weight=reward_weight(0.0),
            gamma=config.gamma,
            proximal_lambda=config.proximal_lambda,
            clip_range=config.clip_range,
            loss_offset=config.loss_offset,  # type: ignore[arg-type]
        ),
        update=UpdateOptions(
            gae_lambda=config.gae_lambda,
            baseline=config.baseline,  # type: ignore[arg-type]
            epochs=config.epochs,
            minibatch_size=config.minibatch_size,
            max_grad_norm=config.max_grad_norm,
            episode_ends=config.episode_ends,  # type: ignore[arg-type]
        ),
    )
    next_eval = (start_steps // config.eval_every + 1) * config.eval_every if config.eval_every > 0 else math.inf
    last_eval = start_eval

    trained_steps = start_steps

    def on_update(metrics: dict[str, float]) -> None:
        nonlocal next_eval, last_eval, trained_steps
        # The step count and its metrics row change together: an interrupt between them would make a resumed
        # run skip (or repeat) a segment in metrics.jsonl.
        with _deferred_interrupts() as interrupted:
            trained_steps = int(metrics["env_steps"])
            sink.write(metrics)
        if interrupted:
            raise KeyboardInterrupt
        if metrics["env_steps"] >= next_eval and metrics["env_steps"] < config.steps:
            last_eval = evaluate_student()
            sink.write({"env_steps": metrics["env_steps"], **_summary_of_eval(last_eval, "student")}, prefix="eval")
            next_eval += config.eval_every
        if progress is not None:
            progress({**metrics, "total_steps": float(config.steps), "eval_return": last_eval.mean})

    started = time.perf_counter()
    steps = 0
    status, failure = "finished", ""
    # SIGTERM (a scheduler stopping the job) ends the run the way Ctrl-C does: the student so far is saved.
    previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)
    try:
        steps = train(
            method, collector, student, student.parameters, student.optimizer, settings, on_update, start_steps
        )
    except Diverged as error:
        status, steps, failure = "diverged", error.steps, str(error)
    except KeyboardInterrupt:
        status, steps = "interrupted", trained_steps
    finally:
        venv.close()
        signal.signal(signal.SIGTERM, previous_sigterm)
    wall = time.perf_counter() - started
    # A Ctrl-C or SIGTERM now waits until the student, its final evaluation and the summary are written, so the
    # run directory is never left without its summary; it is raised again afterwards.
    with _deferred_interrupts() as interrupted:
        student.save(run_dir / "student.zip", steps)  # first, so a second interrupt cannot lose it
        final_eval = evaluate_student()
        sink.write({"env_steps": steps, **_summary_of_eval(final_eval, "student")}, prefix="eval")
        sink.close()
        observation = np.asarray(venv.observation_space.sample())
        summary: dict[str, Any] = {
            "status": status,
            "method": method.name,
            "control": control,
            "env_id": setup.env_id,
            "teacher": str(setup.checkpoint.path),
            "teacher_algo": teacher.algo,
            "device": str(setup.device),
            "run_dir": str(run_dir),
            "student_path": str(run_dir / "student.zip"),
            "teacher_return": teacher_eval.mean,
            "teacher_return_std": teacher_eval.std,
            "student_return": final_eval.mean,
            "student_return_std": final_eval.std,
            "return_ratio": return_ratio(final_eval.mean, teacher_eval.mean),
            "eval_episodes": config.eval_episodes,
            "env_steps": steps,
            "wall_seconds": wall,
            "student_net": net.summary,
            "student_params": student.n_params,
            "teacher_params": teacher.n_params,
            "param_ratio": student.n_params / teacher.n_params,
            "kl_start": start_eval.kl_teacher_student if resume is None else resume.kl_start,
            "kl_end": final_eval.kl_teacher_student,
            "reverse_kl_end": final_eval.kl_student_teacher,
            "agreement": final_eval.agreement,
            "student_latency_us": latency_us(student.policy, observation),
            "teacher_latency_us": latency_us(teacher.policy, observation),
            "seed": config.seed,
            "versions": versions(),
        }
        atomic_write_json(run_dir / "summary.json", summary)
    if interrupted and status == "finished":
        raise KeyboardInterrupt  # the run is complete and saved; the caller still learns the user asked to stop
    if status == "interrupted":
        raise DistillError(
            f"interrupted after {steps} env steps; the student so far is in {run_dir}/student.zip "
            f"(continue with: distill run --resume {run_dir})"
        )
    if status == "diverged":
        raise DistillError(f"{failure}; the last good student ({steps} env steps) is in {run_dir}/student.zip")
    return summary


def evaluate_model(
    model_path: str,
    teacher_path: str | None,
    env: str | None,
    episodes: int,
    stochastic: bool,
    device_name: str,
    seed: int,
    trust: bool = False,
    *,
    load_best: bool = False,
    load_checkpoint: int = 0,
) -> dict[str, Any]:
    """``distill eval``: the student's return and, with a teacher, how close it is to the teacher.

    The environment is the teacher's stack with ``--teacher``; otherwise the one the run directory of MODEL
    describes (``env.json`` and ``vecnormalize.pkl``, written by ``distill run``), the rl-zoo folder MODEL sits
    in, or the env id in its ``config.json`` or file name.
    """
    if episodes <= 0:
        raise DistillError(f"--episodes must be positive, got {episodes}")
    if teacher_path is None and (load_best or load_checkpoint):
        raise DistillError("--load-best and --load-checkpoint pick the teacher's model: give --teacher too")
    path = Path(model_path)
    model, model_stats = select_model(path, False, 0) if path.is_dir() else (path, None)
    student_checkpoint = read_checkpoint(model, role="model")
    if teacher_path is not None:
        setup = prepare(
            teacher_path, env, device_name, trust=trust, load_best=load_best, load_checkpoint=load_checkpoint
        )
        stack, device = setup.stack, setup.device
    else:
        device = resolve_device(device_name)
        stats = model_stats or stats_folder(model.parent)
        stack = _env_from_run_dir(model, env, trust) or (
            zoo_stack(stats, env, trust)
            if stats is not None
            else _bare_stack(student_checkpoint, model, env, "pass --env or --teacher")
        )
    env_id = stack.env_id
    probe = stack.make(1, 0)
    try:
        check_spaces(student_checkpoint, probe.observation_space, probe.action_space, env_id)
        student = load_teacher(student_checkpoint, probe.observation_space, probe.action_space, device, trust=trust)
        observation = np.asarray(probe.observation_space.sample())
    finally:
        probe.close()

    def eval_env(n: int) -> VecEnv:
        return stack.make(n, seed + EVAL_SEED_OFFSET)

    deterministic = not stochastic
    teacher = setup.teacher if teacher_path is not None else None
    result = evaluate(student, eval_env, episodes, device, teacher=teacher, deterministic=deterministic)
    report: dict[str, Any] = {
        "model": str(model),
        "env_id": env_id,
        "episodes": episodes,
        "deterministic": deterministic,
        "return_mean": result.mean,
        "return_std": result.std,
        "student_params": student.n_params,
        "student_latency_us": latency_us(student.policy, observation),
    }
    if teacher is not None:
        teacher_result = evaluate(teacher, eval_env, episodes, device, deterministic=deterministic)
        report.update(
            teacher=str(setup.checkpoint.path),
            teacher_return_mean=teacher_result.mean,
            teacher_return_std=teacher_result.std,
            return_ratio=return_ratio(result.mean, teacher_result.mean),
            agreement=result.agreement,
            kl_teacher_student=result.kl_teacher_student,
            kl_student_teacher=result.kl_student_teacher,
            teacher_params=teacher.n_params,
            param_ratio=student.n_params / teacher.n_params,
            teacher_latency_us=latency_us(teacher.policy, observation),
        )
    return report


def _env_from_run_dir(model_path: Path, env: str | None, trust: bool) -> EnvStack | None:
    """The student's env from its run directory: ``env.json`` (wrappers, statistics) or ``config.json``'s env."""
    stack = read_env_file(model_path.parent, env, trust)
    if stack is not None or env is not None:
        return stack
    config = model_path.parent / "config.json"
    if config.is_file():
        try:
            recorded = RunConfig.from_file(config).get("env")
        except DistillError:
            return None
        if isinstance(recorded, str):
            register_hinted(recorded)
            return EnvStack(recorded) if recorded in gym.registry else None
    return None
