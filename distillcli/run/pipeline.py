"""``distill run`` as a pipeline: setup (teacher + env) -> run directory -> student -> Eq. 1 training -> summary.

Data flows one way: config -> (teacher, env, student) -> trainer(method) -> files. Everything a user can get wrong
is checked before the run directory is claimed, so a failed start leaves nothing behind.
"""

from __future__ import annotations

import importlib.metadata
import itertools
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv

from distillcli import __version__
from distillcli.config import RunConfig, smoke
from distillcli.distributions import ActionDist
from distillcli.envs import ConcatVecEnv, EnvStack
from distillcli.errors import DistillError, short
from distillcli.methods import Method, get_method
from distillcli.metrics import MetricsSink
from distillcli.objectives import ObjectiveOptions
from distillcli.rollout import Collector, masked, open_session, read_masks, to_env_actions
from distillcli.run import rundir
from distillcli.run.evaluate import EVAL_SEED_OFFSET, EvalResult, evaluate, latency_us, random_return
from distillcli.run.rundir import ResumeState, Summary
from distillcli.run.setup import Setup, check_action_masks, prepare_run, require_teacher_value, say
from distillcli.sb3.student import Student, StudentNet, resolve_net
from distillcli.trainer import Diverged, EnvSchedule, LoopSettings, Schedule, UpdateOptions, train
from distillcli.zoo import write_env_files

Progress = Callable[[dict[str, float]], None]

# Adam's step size where --lr is 0: large steps suit a small MLP on large minibatches; a CNN's many shared weights
# need smaller ones (Pong's KL fell to 0.93x in 2048 steps at 5e-3 and to 0.29x at 1e-3).
DEFAULT_LR = {"mlp": 5e-3, "cnn": 1e-3}
DEFAULT_STEPS = 50_000  # the env-step budget where --steps is 0, for most tasks (see task_budget)
MUJOCO_STEPS = 200_000  # MuJoCo's locomotion: a fall is rare, late, and costs a whole episode's return


def versions() -> dict[str, str]:
    packages = ("torch", "stable_baselines3", "gymnasium", "numpy")
    found = {name: importlib.metadata.version(name.replace("_", "-")) for name in packages}
    return {"distillcli": __version__, "python": platform.python_version(), **found}


def parse_schedule(name: str, text: str, low: float = -math.inf, high: float = math.inf) -> Schedule:
    try:
        schedule = Schedule.parse(text)
    except ValueError:
        raise DistillError(f"--{name} must be a number or START:END, got {short(text, 40)!r}") from None
    if not all(math.isfinite(v) and low <= v <= high for v in (schedule.start, schedule.end)):
        bounds = f"in [{low:g}, {high:g}]" if math.isfinite(low) and math.isfinite(high) else "finite numbers"
        raise DistillError(f"--{name} values must be {bounds}, got {short(text, 40)!r}")
    return schedule


def task_budget(stack: EnvStack) -> int:
    """The env-step budget of a run whose --steps is 0: 50,000 env steps copy every classic-control and Box2D teacher
    of rl-zoo's published agents (docs/methods.md); MuJoCo's locomotion teachers need 200,000 (a student that
    balances in most episodes still falls in a few until its KL is well below 0.1)."""
    try:
        entry_point = str(gym.spec(stack.env_id).entry_point)
    except gym.error.Error:
        entry_point = ""
    return MUJOCO_STEPS if "mujoco" in entry_point else DEFAULT_STEPS


def with_method_defaults(config: RunConfig, method: Method, cnn: bool) -> RunConfig:
    """The options left at 0 or unset that the method and student fill in: control policy q, epochs, the starting
    environments and lr."""
    return replace(
        config,
        control=config.control or method.control,
        epochs=config.epochs or method.epochs,
        start_envs=config.start_envs or method.start_envs or config.n_envs,
        lr=config.lr or DEFAULT_LR["cnn" if cnn else "mlp"],
    )


def resolve(config: RunConfig, method: Method, net: StudentNet, setup: Setup) -> RunConfig:
    """Every default filled in and every input made explicit: what config.json records and a replay reruns."""
    config = with_method_defaults(config, method, cnn=net.features_dim is not None)
    # A bundled teacher keeps its name: the replay (or a study's rerun) finds it in whichever install runs it.
    bundled = config.teacher is not None and config.teacher.startswith("bundled:")
    config = replace(
        config,
        teacher=config.teacher if bundled else str(setup.checkpoint.path),
        env=setup.env_id,
        student_net=str(net),
        steps=config.steps or task_budget(setup.stack),
    )
    return config.smoke() if smoke() else config


def loop_settings(config: RunConfig, method: Method) -> LoopSettings:
    reward_weight = parse_schedule("reward-weight", config.reward_weight)
    assert config.control is not None  # resolved
    return LoopSettings(
        total_steps=config.steps,
        n_steps=config.n_steps,
        envs=EnvSchedule(config.start_envs, config.n_envs, config.grow_every, config.n_steps),
        lr=Schedule(config.lr, config.lr * config.lr_end),
        control=config.control,
        teacher_share=parse_schedule("mix", config.mix, 0.0, 1.0),
        reward_weight=reward_weight,
        objective=ObjectiveOptions(
            kl_direction=config.kl_direction,
            reward_weight=reward_weight(0.0),
            gamma=config.gamma,
            proximal_lambda=config.proximal_lambda,
            clip_range=config.clip_range,
            loss_offset=config.loss_offset,
        ),
        update=UpdateOptions(
            gae_lambda=config.gae_lambda,
            baseline=config.baseline,
            epochs=config.epochs,
            minibatch_size=config.minibatch_size,
            max_grad_norm=config.max_grad_norm,
            converged=config.converged,
            episode_ends=config.episode_ends,
        ),
    )


def build_student(
    config: RunConfig, method: Method, net: StudentNet, setup: Setup, venv: VecEnv, resume: ResumeState | None
) -> Student:
    """A fresh student with the teacher's kind of noise (started at the teacher's std), or the saved one."""
    teacher = setup.teacher
    student = Student.build(
        venv,
        net,
        getattr(teacher.policy, "activation_fn", torch.nn.Tanh),
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
        algo=teacher.family.student_algo,
    )
    teacher_noise = teacher.noise_log_std()
    if teacher_noise is not None:
        student.start_noise_at(teacher_noise.to(setup.device))
    if resume is not None:
        resume.restore(student)  # one line if it does not fit, before anything in the run directory changes
    return student


@dataclass
class Evaluator:
    """The student's evaluations during a run, on episodes that never share seeds with training."""

    setup: Setup
    config: RunConfig
    student: Student
    sink: MetricsSink

    def env(self, n: int) -> VecEnv:
        return self.setup.make_env(n, self.config.seed + EVAL_SEED_OFFSET)

    def teacher(self) -> EvalResult:
        return evaluate(self.setup.teacher, self.env, self.config.eval_episodes, self.setup.device)

    def random(self) -> float:
        return random_return(self.setup.stack, self.config.eval_episodes, self.config.seed + EVAL_SEED_OFFSET)

    def student_at(self, env_steps: int) -> EvalResult:
        """Evaluate the student now and log it as an ``eval`` row of metrics.jsonl."""
        teacher = self.setup.teacher
        result = evaluate(self.student, self.env, self.config.eval_episodes, self.setup.device, teacher=teacher)
        row = {
            "env_steps": env_steps,
            "student_return": result.mean,
            "student_return_std": result.std,
            "kl_teacher_student": result.kl_teacher_student,
            "kl_student_teacher": result.kl_student_teacher,
            "agreement": result.agreement,
        }
        self.sink.write(row, prefix="eval")
        return result


def run(
    config: RunConfig,
    progress: Progress | None = None,
    resume: ResumeState | None = None,
    *,
    trust: bool = False,
    force: bool = False,
) -> Summary:
    """Distil the teacher into a new student; write the run directory; return the summary.

    With ``resume``, continue an interrupted run in ``config.out`` from its saved student up to ``config.steps``.
    ``trust`` (``--trust-checkpoint``) and ``force`` (``--force``) come from the command line only.
    """
    config.validate()
    method = get_method(config.method)
    torch.set_num_threads(config.threads)
    setup = prepare_run(config, trust)
    say(setup.notices)
    require_teacher_value(method, setup.teacher)
    check_teacher_outputs(setup, config.seed)
    net = resolve_net(config.student_net, setup.teacher.hidden_widths, setup.teacher.policy, setup.observation_space)
    check_sizes(config, net, setup.observation_space)
    config = resolve(config, method, net, setup)
    settings = loop_settings(config, method)
    check_action_masks(setup, config.seed)
    if resume is not None and resume.env_steps >= config.steps:
        raise DistillError(f"--resume: {resume.env_steps} env steps done already; raise --steps to continue")
    # Locked until the run ends, and put back as it was found unless the student and the summary get saved.
    if resume is None:
        claimed = rundir.claim(config.out, setup.env_id, method.name, force)
    else:
        claimed = rundir.reopen(Path(str(config.out)), resume)
    run_dir = claimed.path
    with claimed:
        # A resumed run continues on fresh episodes rather than replaying the first ones.
        start_steps = 0 if resume is None else resume.env_steps
        seed = config.seed + start_steps
        assert settings.envs is not None
        venv = ConcatVecEnv([setup.make_env(settings.envs.envs_at(start_steps), seed)])
        student = build_student(config, method, net, setup, venv, resume)  # a resumed student is checked first
        rundir.write_config(run_dir, replace(config, out=None), setup.stack.mapped_from)
        write_env_files(setup.stack, run_dir)  # env.json (+ vecnormalize.pkl): the student's env, for deployment
        collector = Collector(
            venv,
            setup.teacher,
            setup.device,
            method.needs_teacher_value,
            lambda n, index: setup.make_env(n, seed + index),
        )
        with MetricsSink(run_dir, config.tensorboard) as sink:  # appends: a resumed run continues metrics.jsonl
            evaluator = Evaluator(setup, config, student, sink)
            teacher_eval, random = evaluator.teacher(), evaluator.random()
            start_eval = evaluator.student_at(start_steps)
            trained = Training(config, evaluator, progress, start_steps, start_eval)
            outcome = train_guarded(method, collector, student, settings, trained, venv)
            kl_start = start_eval.kl_teacher_student if resume is None else resume.kl_start
            summary = save_run(outcome, method, net, trained, claimed, (teacher_eval, random, kl_start))
    outcome.report(trained.steps, run_dir)
    return summary


def check_teacher_outputs(setup: Setup, seed: int, steps: int = 4) -> None:
    """Refuse, before any run directory exists, a teacher whose outputs on its env's observations are not finite
    (finite but huge weights, a log std of -200: every loss would be NaN), and an env stack that fails as soon as
    it is stepped (a wrapper given a string where it calls a function)."""
    n = 4
    probe = setup.make_env(n, seed)
    session = open_session(setup.teacher, n)
    starts = torch.ones(n, device=setup.device)
    try:
        obs = probe.reset()
        for _ in range(steps):
            obs_tensor = torch.as_tensor(obs, device=setup.device)
            with torch.no_grad():
                dist, value = setup.teacher(obs_tensor) if session is None else session.step(obs_tensor, starts)
            _check_finite(setup, dist, value)
            masks = read_masks(probe, setup.device) if setup.teacher.uses_action_masks else None
            obs, _, dones, _ = probe.step(to_env_actions(masked(dist, masks).mode(), probe.action_space))
            starts = torch.as_tensor(dones, dtype=torch.float32, device=setup.device)
    except DistillError:
        raise
    except Exception as error:  # the env or a wrapper named by a file failed: one line, before anything is written
        raise DistillError(
            f"the environment {setup.env_id} fails when stepped ({type(error).__name__}: {short(error, 160)})"
        ) from None
    finally:
        probe.close()


def _check_finite(setup: Setup, dist: ActionDist, value: torch.Tensor | None) -> None:
    outputs = {f.name: getattr(dist, f.name) for f in fields(dist)} | ({} if value is None else {"value": value})
    for name, tensor in outputs.items():
        if name == "log_std":  # the variance and its inverse enter every Gaussian cross-entropy
            tensor = torch.stack([torch.exp(2 * tensor), torch.exp(-2 * tensor)])
        if not torch.isfinite(tensor).all() or (name == "log_std" and not (tensor > 0).all()):
            raise DistillError(
                f"{short(setup.checkpoint.path)}: the teacher's outputs ({name}) are not finite numbers on its "
                "environment's observations: its weights are broken"
            )


MAX_STUDENT_WEIGHTS = 1 << 25  # 134 MB of weights; with gradients and Adam's moments about 0.6 GB
MAX_SEGMENT_BYTES = 1 << 30  # a segment's observations, as float32


def check_sizes(config: RunConfig, net: StudentNet, observation_space: gym.Space) -> None:
    """Refuse, before anything is built, a student far beyond a deployment network (a --student-net of 16384-wide
    layers, typed or from a config file, asked for 10 GB) and a segment whose observations alone would not fit in
    memory (--n-envs x --n-steps of Atari frames)."""
    shape = tuple(observation_space.shape or (gym.spaces.flatdim(observation_space),))
    if net.features_dim is None:
        widths = [math.prod(shape), *net.layers]
    else:  # NatureCNN: its convolutions keep about 64 channels of an eighth of each side, then the features
        height, width = sorted(shape)[-2:]
        widths = [64 * max(1, height // 8) * max(1, width // 8), net.features_dim, *net.layers]
    weights = sum(a * b for a, b in itertools.pairwise(widths))
    if weights > MAX_STUDENT_WEIGHTS:
        raise DistillError(
            f"--student-net {net}: about {weights:,} weights for these observations, over the "
            f"{MAX_STUDENT_WEIGHTS:,} a student may have"
        )
    segment = config.n_envs * config.n_steps * math.prod(shape) * 4
    if segment > MAX_SEGMENT_BYTES:
        raise DistillError(
            f"--n-envs {config.n_envs} x --n-steps {config.n_steps} of these observations {shape} take "
            f"{segment / 2**30:.1f} GB per segment, over the {MAX_SEGMENT_BYTES / 2**30:.0f} GB distill allows"
        )


@dataclass
class Outcome:
    """How training ended, and whether a stop signal arrived while the run was being saved."""

    status: str = "finished"  # finished | interrupted | diverged | failed
    failure: str = ""
    wall: float = 0.0
    interrupted: bool = False

    def report(self, steps: int, run_dir: Path) -> None:
        """After the run is saved: one line for anything but a finished run."""
        if self.interrupted and self.status == "finished":
            raise KeyboardInterrupt  # the run is complete and saved; the caller still learns the user asked to stop
        saved = f"{run_dir}/student.zip"
        if self.status == "interrupted":
            raise DistillError(
                f"interrupted after {steps} env steps; the student so far is in {saved} "
                f"(continue with: distill run --resume {run_dir})"
            )
        if self.status == "diverged":
            raise DistillError(f"{self.failure}; the last good student ({steps} env steps) is in {saved}")
        if self.status == "failed":
            raise DistillError(f"the run failed after {steps} env steps ({self.failure}); the student is in {saved}")


def train_guarded(
    method: Method, collector: Collector, student: Student, settings: LoopSettings, trained: Training, venv: VecEnv
) -> Outcome:
    """Eq. 1's loop until the budget is spent or something stops it; whatever stopped it, the student trained so
    far is kept to be saved. SIGTERM and SIGHUP end it the way Ctrl-C does."""
    outcome = Outcome()
    started = time.perf_counter()
    with rundir.sigterm_interrupts():
        try:
            train(
                method,
                collector,
                student,
                student.parameters,
                student.optimizer,
                settings,
                trained.on_update,
                trained.steps,
            )
        except Diverged as error:
            outcome.status, outcome.failure, trained.steps = "diverged", str(error), error.steps
        except KeyboardInterrupt:
            outcome.status = "interrupted"
        except Exception as error:  # a crash must not lose the student: saved, then reported in one line
            outcome.status, outcome.failure = "failed", f"{type(error).__name__}: {short(error, 200)}"
        finally:
            venv.close()
    outcome.wall = time.perf_counter() - started
    return outcome


def save_run(
    outcome: Outcome,
    method: Method,
    net: StudentNet,
    trained: Training,
    claimed: rundir.RunDir,
    start: tuple[EvalResult, float, float],
) -> Summary:
    """The student first (so nothing after it can lose it), its final evaluation, then the summary. A Ctrl-C,
    SIGTERM or SIGHUP now waits until all three are written and the directory is marked saved (a stop after that
    must not put it back); ``outcome.interrupted`` says one came."""
    evaluator, steps, run_dir = trained.evaluator, trained.steps, claimed.path
    teacher_eval, random, kl_start = start
    with rundir.deferred_interrupts() as interrupted:
        try:
            evaluator.student.save(run_dir / rundir.STUDENT, steps)
        except OSError as error:
            raise DistillError(
                f"cannot save the student in {short(run_dir)} ({error.strerror or short(error)}); the run directory "
                "is left as it was"
            ) from None
        final = None
        try:
            final = evaluator.student_at(steps)
        except Exception as error:  # the summary still gets written, and says why it has no results
            if outcome.status == "finished":
                outcome.status = "failed"
                outcome.failure = f"the final evaluation failed: {type(error).__name__}: {short(error, 200)}"
        evaluator.sink.close()
        config, setup = evaluator.config, evaluator.setup
        summary = summarize(outcome.status, config, method, setup, net, evaluator.student, run_dir, steps, outcome.wall)
        if final is not None:
            summary = summary.results(teacher_eval, random, kl_start, final)
        try:
            summary.write(run_dir)
        except OSError as error:
            raise DistillError(
                f"cannot save the summary in {short(run_dir)} ({error.strerror or short(error)}); the run directory "
                "is left as it was"
            ) from None
        claimed.saved = True  # kept from here, whatever stops the command; the earlier outputs --force moved aside go
    outcome.interrupted = bool(interrupted)
    return summary


def summarize(
    status: str,
    config: RunConfig,
    method: Method,
    setup: Setup,
    net: StudentNet,
    student: Student,
    run_dir: Path,
    env_steps: int,
    wall: float,
) -> Summary:
    """The summary's record of what ran; its results come from :meth:`Summary.results`."""
    observation = np.asarray(setup.observation_space.sample())
    return Summary(
        status=status,
        method=method.name,
        control=str(config.control),
        env_id=setup.env_id,
        env_mapped_from=setup.stack.mapped_from,
        teacher=str(setup.checkpoint.path),
        teacher_algo=setup.teacher.algo,
        device=str(setup.device),
        run_dir=str(run_dir),
        student_path=str(run_dir / rundir.STUDENT),
        eval_episodes=config.eval_episodes,
        env_steps=env_steps,
        budget=config.steps,
        wall_seconds=wall,
        student_net=net.summary,
        student_params=student.n_params,
        teacher_params=setup.teacher.n_params,
        param_ratio=student.n_params / setup.teacher.n_params,
        student_latency_us=latency_us(student.policy, observation),
        teacher_latency_us=latency_us(setup.teacher.policy, observation),
        seed=config.seed,
        versions=versions(),
    )


class Training:
    """What happens after every update: its metrics row, the periodic evaluation, the progress callback."""

    def __init__(
        self, config: RunConfig, evaluator: Evaluator, progress: Progress | None, start: int, start_eval: EvalResult
    ) -> None:
        self.config, self.evaluator, self.progress = config, evaluator, progress
        self.steps = start  # env steps whose update is written to metrics.jsonl
        every = config.eval_every
        self.next_eval = (start // every + 1) * every if every > 0 else math.inf
        self.last_eval = start_eval

    def on_update(self, metrics: dict[str, float]) -> None:
        # The step count and its metrics row change together: an interrupt between them would make a resumed
        # run skip (or repeat) a segment in metrics.jsonl.
        with rundir.deferred_interrupts() as interrupted:
            self.steps = int(metrics["env_steps"])
            self.evaluator.sink.write(metrics)
        if interrupted:
            raise KeyboardInterrupt
        if self.steps >= self.next_eval and self.steps < self.config.steps:
            self.last_eval = self.evaluator.student_at(self.steps)
            self.next_eval += self.config.eval_every
        if self.progress is not None:
            self.progress({**metrics, "total_steps": float(self.config.steps), "eval_return": self.last_eval.mean})
