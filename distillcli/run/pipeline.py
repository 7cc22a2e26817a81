"""``distill run`` as a pipeline: setup (teacher + env) -> run directory -> student -> Eq. 1 training -> summary.

Data flows one way: config -> (teacher, env, student) -> trainer(method) -> files. Everything a user can get wrong
is checked before the run directory is claimed, so a failed start leaves nothing behind.
"""

from __future__ import annotations

import importlib.metadata
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv

from distillcli import __version__
from distillcli.config import RunConfig, smoke
from distillcli.envs import ConcatVecEnv, EnvStack
from distillcli.errors import DistillError, short
from distillcli.methods import Method, get_method
from distillcli.metrics import MetricsSink
from distillcli.objectives import ObjectiveOptions
from distillcli.rollout import Collector
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
    config = replace(
        config,
        teacher=str(setup.checkpoint.path),
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
        try:
            student.policy.load_state_dict(resume.policy_state)
            student.load_optimizer_state(resume.optimizer_state)
        except (RuntimeError, ValueError, KeyError, TypeError) as error:
            raise DistillError(
                f"--resume: the saved student does not fit this run's options ({short(error)})"
            ) from None
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
    net = resolve_net(config.student_net, setup.teacher.hidden_widths, setup.teacher.policy, setup.observation_space)
    config = resolve(config, method, net, setup)
    settings = loop_settings(config, method)
    check_action_masks(setup, config.seed)
    if resume is None:
        run_dir = rundir.claim(config.out, setup.env_id, method.name, force)
    elif resume.env_steps >= config.steps:
        raise DistillError(f"--resume: {resume.env_steps} env steps done already; raise --steps to continue")
    else:
        run_dir = Path(str(config.out))
    # A resumed run continues on fresh episodes rather than replaying the first ones.
    start_steps = 0 if resume is None else resume.env_steps
    seed = config.seed + start_steps
    assert settings.envs is not None
    venv = ConcatVecEnv([setup.make_env(settings.envs.envs_at(start_steps), seed)])
    student = build_student(config, method, net, setup, venv, resume)
    rundir.write_config(run_dir, replace(config, out=None))
    write_env_files(setup.stack, run_dir)  # env.json (+ vecnormalize.pkl): the student's env, for deployment
    collector = Collector(
        venv, setup.teacher, setup.device, method.needs_teacher_value, lambda n, index: setup.make_env(n, seed + index)
    )
    sink = MetricsSink(run_dir, config.tensorboard)  # appends: a resumed run continues the same metrics.jsonl
    evaluator = Evaluator(setup, config, student, sink)
    teacher_eval, random = evaluator.teacher(), evaluator.random()
    start_eval = evaluator.student_at(start_steps)
    trained = Training(config, evaluator, progress, start_steps, start_eval)
    started = time.perf_counter()
    status, failure = "finished", ""
    with rundir.sigterm_interrupts():  # SIGTERM ends the run the way Ctrl-C does: the student so far is saved
        try:
            train(
                method,
                collector,
                student,
                student.parameters,
                student.optimizer,
                settings,
                trained.on_update,
                start_steps,
            )
        except Diverged as error:
            status, failure, trained.steps = "diverged", str(error), error.steps
        except KeyboardInterrupt:
            status = "interrupted"
        finally:
            venv.close()
    wall = time.perf_counter() - started
    # A Ctrl-C or SIGTERM now waits until the student, its final evaluation and the summary are written, so the
    # run directory is never left without its summary; it is raised again afterwards.
    with rundir.deferred_interrupts() as interrupted:
        student.save(run_dir / rundir.STUDENT, trained.steps)  # first, so a second interrupt cannot lose it
        final = evaluator.student_at(trained.steps)
        sink.close()
        kl_start = start_eval.kl_teacher_student if resume is None else resume.kl_start
        summary = summarize(status, config, method, setup, net, student, run_dir, trained.steps, wall)
        summary = summary.results(teacher_eval, random, kl_start, final)
        summary.write(run_dir)
    if interrupted and status == "finished":
        raise KeyboardInterrupt  # the run is complete and saved; the caller still learns the user asked to stop
    if status == "interrupted":
        raise DistillError(
            f"interrupted after {trained.steps} env steps; the student so far is in {run_dir}/student.zip "
            f"(continue with: distill run --resume {run_dir})"
        )
    if status == "diverged":
        raise DistillError(f"{failure}; the last good student ({trained.steps} env steps) is in {run_dir}/student.zip")
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
