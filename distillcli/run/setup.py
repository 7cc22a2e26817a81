"""Stage 1 of a run: the teacher and its environment, and the one answer to "which env does this checkpoint need".

The env of a checkpoint comes, in this order, from: ``--env``; the distill run directory beside it (``env.json``,
``vecnormalize.pkl`` or the ``config.json`` env, for a student); the rl-zoo run folder around it (``args.yml``,
``config.yml``, frozen statistics); or its file name (and for an Atari teacher of 84x84 frames SB3's Atari stack).
A retired env id (``LunarLander-v2``, MuJoCo ``-v3``) becomes its registered successor when the successor's spaces
equal the checkpoint's; the mapping is said on stderr and recorded.
"""

from __future__ import annotations

import importlib.resources
import re
import sys
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import gymnasium as gym
import torch
from stable_baselines3.common.vec_env import VecEnv

from distillcli.config import RunConfig, parse_extra_actions
from distillcli.envs import EnvStack, Wrapper, atari_stack, env_successors, infer_env_id, register_hinted
from distillcli.errors import DistillError, short
from distillcli.methods import Method
from distillcli.rollout import read_masks
from distillcli.sb3.checkpoint import Checkpoint, read_checkpoint
from distillcli.sb3.teacher import Teacher, check_spaces, load_teacher
from distillcli.zoo import read_env_file, select_model, stats_folder, zoo_stack

BUNDLED_TEACHER = "ppo-CartPole-v1"  # the default teacher; `bundled:NAME` names any of distillcli/data/NAME.zip
BUNDLED_FOLDERS = ("", "study/")  # distill study's teachers: bundled:study/NAME


def bundled_teacher(name: str = BUNDLED_TEACHER) -> Path:
    """A teacher that ships with distillcli (``distillcli/data/<name>.zip``)."""
    return Path(str(importlib.resources.files("distillcli") / "data" / f"{name}.zip"))


def bundled_teachers() -> list[str]:
    """The names ``--teacher bundled:NAME`` takes (``study/NAME`` for the study's teachers)."""
    names = []
    for prefix in BUNDLED_FOLDERS:
        folder = importlib.resources.files("distillcli") / "data" / prefix
        if folder.is_dir():
            names += [prefix + e.name.removesuffix(".zip") for e in folder.iterdir() if e.name.endswith(".zip")]
    return sorted(names)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and not re.fullmatch(r"cuda(:\d+)?", name):
        raise DistillError(f"--device must be auto, cpu, cuda or cuda:N, got {short(name, 40)!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DistillError(f"--device {name} was asked for but CUDA is not available on this machine")
    device = torch.device(name)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise DistillError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def teacher_path(text: str | None) -> Path:
    """What ``--teacher`` names: a path, ``hf:ORG/REPO`` (from the Hugging Face hub's cache), ``bundled:NAME``, or
    (None) the bundled CartPole teacher."""
    if text is None:
        return bundled_teacher()
    if not text.strip():
        raise DistillError("--teacher is empty (leave it out to use the bundled CartPole teacher)")
    if text.startswith("hf:"):
        from distillcli.hub import hub_folder

        return hub_folder(text[3:])
    if text.startswith("bundled:"):
        name = text.removeprefix("bundled:")
        if name not in bundled_teachers():
            raise DistillError(f"no bundled teacher {short(name, 60)!r}; bundled: {', '.join(bundled_teachers())}")
        return bundled_teacher(name)
    if "\0" in text:
        raise DistillError("--teacher holds a NUL character")
    try:
        path = Path(text).expanduser()
    except RuntimeError:  # ~nosuchuser
        raise DistillError(f"--teacher {short(text, 80)}: no such user's home directory") from None
    try:
        exists = path.exists()
    except OSError as error:  # a name too long for the file system
        raise DistillError(f"--teacher {short(text, 80)}: {error.strerror or short(error)}") from None
    if not exists:
        raise DistillError(f"teacher checkpoint not found: {short(path)}")
    return path


@dataclass
class Setup:
    """A teacher, its environment and the device: what run, eval and sweep start from."""

    checkpoint: Checkpoint
    teacher: Teacher
    device: torch.device
    stack: EnvStack  # the env as the teacher was trained behind it (rl-zoo wrappers, statistics, frame stacking)
    observation_space: gym.Space  # what teacher and student see: normalised, stacked, channel-first
    notices: list[str] = field(default_factory=list)  # what the user should know (a mapped env id), said once

    @property
    def env_id(self) -> str:
        return self.stack.env_id

    def make_env(self, n_envs: int, seed: int) -> VecEnv:
        return self.stack.make(n_envs, seed)


def _run_dir_stack(model: Path, env: str | None, trust: bool) -> EnvStack | None:
    """The env a distill run directory records for its student: ``env.json``, or ``config.json``'s env id."""
    stack = read_env_file(model.parent, env, trust)
    if stack is not None or env is not None:
        return stack
    config = model.parent / "config.json"
    if config.is_file() and (model.parent / "summary.json").is_file():
        try:
            recorded = RunConfig.from_file(config).get("env")
        except DistillError:
            return None
        if isinstance(recorded, str) and recorded:
            register_hinted(recorded)
            return EnvStack(recorded, source="run directory")
    return None


def env_stack(
    model: Path,
    checkpoint: Checkpoint,
    env: str | None,
    trust: bool,
    stats: Path | None,
    hint: str = "pass --env ENV_ID",
) -> EnvStack:
    """The environment this checkpoint acts in (see the module's docstring for the order)."""
    stack = _run_dir_stack(model, env, trust)
    if stack is not None:
        return stack
    if stats is not None:
        return zoo_stack(stats, env, trust)
    register_hinted(f"{model.parent.name} {model.name} {env or ''}")
    env_id = env or infer_env_id(model)
    if env_id is None:
        raise DistillError(f"cannot infer the environment from {short(model.name, 80)}; {hint}")
    return atari_stack(env_id, checkpoint.recorded_shape("observation_space")) or EnvStack(env_id)


def successor_stack(stack: EnvStack, checkpoint: Checkpoint, notices: list[str]) -> EnvStack:
    """The stack with its env id replaced by a registered successor whose spaces equal the checkpoint's, when
    gymnasium no longer makes the recorded id (deprecated, unregistered, or moved out like MuJoCo's v3 envs);
    unchanged when the recorded id still works or has no later version."""
    candidates = env_successors(stack.env_id)
    if not candidates:
        return stack
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # gymnasium's "out of date" notice: the mapping below says it once
            stack.make(1, 0).close()
        return stack
    except DistillError as error:
        if "optional dependency" in str(error):
            raise
        retired = short(error, 120)
    tried = []
    for candidate in candidates:
        mapped = replace(stack, env_id=candidate, mapped_from=stack.env_id)
        try:
            probe = mapped.make(1, 0)
        except DistillError as error:
            if "optional dependency" in str(error):
                raise  # the successor exists but needs an extra: that is what the user must know
            tried.append(f"{candidate} ({short(error, 120)})")
            continue
        try:
            check_spaces(checkpoint, probe.observation_space, probe.action_space, candidate)
        except DistillError:
            tried.append(f"{candidate} (other spaces)")
            continue
        finally:
            probe.close()
        gymnasium = f"gymnasium {gym.__version__}"
        notices.append(f"{stack.env_id} is retired in {gymnasium}; using {candidate}, which has the same spaces")
        return mapped
    detail = f"; its successors differ: {'; '.join(tried)}" if tried else ""
    raise DistillError(
        f"environment {stack.env_id} cannot be made ({retired}) and no successor has the checkpoint's "
        f"spaces{detail}; name one with --env"
    )


def prepare(
    teacher: str | None,
    env: str | None,
    device_name: str,
    *,
    trust: bool = False,
    temperature: float = 1.0,
    log_prob_floor: float | None = None,
    deterministic_std: float = 0.1,
    load_best: bool = False,
    load_checkpoint: int = 0,
    teacher_corrupt: float = 0.0,
    extra_actions: str = "",
) -> Setup:
    """Read the teacher, rebuild its environment stack, settle the device, and check the teacher fits the env.

    ``teacher`` is an SB3 zip, an rl-zoo run folder (or a zip inside one), ``hf:ORG/REPO``, or None for the
    bundled teacher.
    """
    device = resolve_device(device_name)
    path = teacher_path(teacher)
    model, stats = select_model(path, load_best, load_checkpoint)
    checkpoint = read_checkpoint(model)
    notices: list[str] = []
    stack = successor_stack(env_stack(model, checkpoint, env, trust, stats), checkpoint, notices)
    probe = stack.make(1, 0)
    try:
        check_spaces(checkpoint, probe.observation_space, probe.action_space, stack.env_id)
        loaded = load_teacher(
            checkpoint,
            probe.observation_space,
            probe.action_space,
            device,
            trust=trust,
            temperature=temperature,
            log_prob_floor=log_prob_floor,
            deterministic_std=deterministic_std,
        )
        observation_space = probe.observation_space
        action_space = probe.action_space
    finally:
        probe.close()
    stack = apply_condition(loaded, stack, action_space, teacher_corrupt, parse_extra_actions(extra_actions))
    return Setup(checkpoint, loaded, device, stack, observation_space, notices)


def apply_condition(
    teacher: Teacher, stack: EnvStack, action_space: gym.Space, corrupt: float, extra: tuple[int, str] | None
) -> EnvStack:
    """--teacher-corrupt and --extra-actions: the teacher's pi(.|s) changed, and the env grown by the actions'
    wrapper (recorded in env.json with the others, so the student's env is rebuilt wherever it goes)."""
    if not corrupt and extra is None:
        return stack
    if not isinstance(action_space, gym.spaces.Discrete) or teacher.family.session is not None:
        raise DistillError(
            "--teacher-corrupt and --extra-actions need a feed-forward teacher with discrete actions, "
            f"not a {teacher.algo} teacher of {type(action_space).__name__} actions"
        )
    from distillcli.conditions import ExtraActions, TeacherCondition

    teacher.condition = TeacherCondition(corrupt, extra, int(action_space.n))
    if extra is None:
        return stack
    copies, form = extra
    path = f"{ExtraActions.__module__}.{ExtraActions.__name__}"
    wrapper = Wrapper(path, ExtraActions, {"copies": copies, "form": form})
    return replace(stack, env_wrappers=[*stack.env_wrappers, wrapper])


def prepare_run(config: RunConfig, trust: bool = False, device: str | None = None) -> Setup:
    """``prepare`` with a run's teacher options (``distill run`` and every run of a sweep)."""
    return prepare(
        config.teacher,
        config.env,
        config.device if device is None else device,
        trust=trust,
        temperature=config.temperature,
        log_prob_floor=config.logprob_floor,
        deterministic_std=config.teacher_noise,
        load_best=config.load_best,
        load_checkpoint=config.load_checkpoint,
        teacher_corrupt=config.teacher_corrupt,
        extra_actions=config.extra_actions,
    )


def model_stack(model: Path, env: str | None, trust: bool) -> tuple[Path, Checkpoint, EnvStack, list[str]]:
    """A model to evaluate on its own (``distill eval`` without ``--teacher``): the zip, and the env it acts in."""
    zip_path, stats = select_model(model, False, 0) if model.is_dir() else (model, None)
    checkpoint = read_checkpoint(zip_path, role="model")
    notices: list[str] = []
    stats = stats or stats_folder(zip_path.parent)
    stack = env_stack(zip_path, checkpoint, env, trust, stats, hint="pass --env or --teacher")
    return zip_path, checkpoint, successor_stack(stack, checkpoint, notices), notices


def check_action_masks(setup: Setup, seed: int) -> None:
    """A masked teacher needs an env with ``action_masks()``: say so before any run directory exists."""
    if not setup.teacher.family.masked:
        return
    probe = setup.make_env(1, seed)
    try:
        read_masks(probe, setup.device)
    finally:
        probe.close()


def require_teacher_value(method: Method, teacher: Teacher) -> None:
    if method.needs_teacher_value and not teacher.has_value:
        raise DistillError(f"method {method.name} needs a teacher value function; a {teacher.algo} teacher has none")


def say(notices: list[str]) -> None:
    """Notices go to stderr, one line each (stdout stays the summary's, or --json's)."""
    for notice in notices:
        print(f"note: {notice}", file=sys.stderr)
