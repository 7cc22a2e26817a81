"""Every knob of ``distill run`` with its default and its help, in one place.

The CLI makes its options from :class:`RunConfig`'s fields (``distill run`` has one flag per field, ``distill
sweep`` the ones its grid does not set), fills a config from (defaults < ``--config FILE`` < explicit options),
and the run writes the resolved config as ``config.json``, which ``--config`` accepts again. What belongs to one
invocation only (``--force``, ``--trust-checkpoint``, ``--quiet``, ``--json``) is not a field: a file can never
turn it on.

``DISTILL_SMOKE=1`` in the environment makes every budget tiny (one segment, two evaluation episodes, a few grid
worlds): for checking scripts and docs end to end in seconds, never for results.
"""

from __future__ import annotations

import json
import math
import os
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from distillcli.choices import Baseline, Control, EpisodeEnds, KLDirection, LossOffset
from distillcli.errors import DistillError, short
from distillcli.metrics import read_bounded

DEFAULT_METHOD = "on-policy-distill"
MAX_CONFIG_BYTES = 1 << 20  # a config.json is a few hundred bytes
# Keys a run's config.json records beside its options, which a config file never sets (the env id a checkpoint
# recorded, when the run used its successor: the options hold the successor).
RECORDS = ("env_mapped_from",)
MAX_SEGMENT = 1 << 20  # states per segment (--n-envs x --n-steps); the defaults' is 2,048


EXTRA_FORMS = ("repeat", "noop")
MAX_COPIES = 1000


def parse_extra_actions(text: str) -> tuple[int, str] | None:
    """``K:repeat`` / ``K:noop`` -> (K, form); empty -> None. One line for anything else."""
    if not text:
        return None
    copies, _, form = text.partition(":")
    if not copies.strip().isdigit() or form not in EXTRA_FORMS or not 1 <= int(copies) <= MAX_COPIES:
        raise DistillError(
            f"--extra-actions must be K:repeat or K:noop with K in 1..{MAX_COPIES} (e.g. 10:repeat), got {text!r}"
        )
    return int(copies), form


def check_corrupt(p: float) -> None:
    if not (math.isfinite(p) and 0.0 <= p < 1.0):
        raise DistillError(f"--teacher-corrupt must be a fraction in [0, 1), got {p}")


PATH_MAX, NAME_MAX = 4096, 255  # Linux's limits on a path and on one of its names


def check_path(text: str, option: str) -> None:
    """One line for a path no file system takes (a NUL byte, an over-long name) instead of an OSError later."""
    if "\0" in text:
        raise DistillError(f"{option} holds a NUL character")
    try:
        encoded = os.fsencode(text)
    except UnicodeError:
        raise DistillError(f"{option} {short(text, 80)}: not a valid file name") from None
    if len(encoded) >= PATH_MAX or any(len(part) > NAME_MAX for part in encoded.split(b"/")):
        raise DistillError(f"{option} {short(text, 80)}: file name too long")


def smoke() -> bool:
    """Whether ``DISTILL_SMOKE=1`` asks for the smallest budgets everywhere."""
    return os.environ.get("DISTILL_SMOKE", "") not in ("", "0")


def knob(default: Any, help: str, short: str | None = None) -> Any:
    """A config field: its default, its help line and an optional one-letter flag."""
    return field(default=default, metadata={"help": help, "short": short})


@dataclass
class RunConfig:
    """The options of one ``distill run`` (see ``distill run --help`` and docs/usage.md)."""

    teacher: str | None = knob(
        None,
        "teacher: an SB3 .zip, an rl-zoo run folder (logs/ppo/Env_1), hf:ORG/REPO, or bundled:NAME "
        "(ppo-CartPole-v1, ppo-LunarLander-v3; distill study's as study/NAME); default: the bundled CartPole-v1 PPO",
        "-t",
    )
    load_best: bool = knob(False, "rl-zoo: load best_model.zip from the teacher's folder instead of the final model")
    load_checkpoint: int = knob(0, "rl-zoo: load rl_model_N_steps.zip from the teacher's folder; 0: the final model")
    teacher_corrupt: float = knob(
        0.0,
        "the teacher acts uniformly at random on this fraction of states, chosen by a hash of the observation (a "
        "fixed, reproducible imperfect teacher; discrete actions)",
    )
    extra_actions: str = knob(
        "",
        "K:repeat or K:noop: each discrete action repeated K times, or n(K-1) no-ops (action 0) added; the teacher "
        "spreads each action's probability over its copies (the paper's Fig. 4)",
    )
    method: str = knob(DEFAULT_METHOD, "distillation method (see `distill methods`)", "-m")
    env: str | None = knob(None, "gymnasium env id; default: inferred from the checkpoint")
    student_net: str = knob(
        "auto",
        "student hidden layers, e.g. 32,32; for images cnn, cnn:256 or cnn:256/64 (NatureCNN features, then layers); "
        "auto = half the teacher's widths, at least two layers of 32 (and half its CNN features)",
    )
    steps: int = knob(0, "env-step budget; 0: the task's default (printed, and recorded in summary.json)", "-n")
    n_envs: int = knob(64, "parallel environments (many: the networks' per-call cost is shared by more env steps)")
    start_envs: int = knob(
        0,
        "environments at the start, doubled every --grow-every segments up to --n-envs; 0: the method's (8 for a pure "
        "per-state loss, whose early updates matter more than their size; else --n-envs from the start)",
    )
    grow_every: int = knob(4, "segments between doublings of the environments")
    n_steps: int = knob(32, "steps per environment per update (segment length)")
    epochs: int = knob(0, "passes over each segment; 0: the method's (8 for a pure per-state loss, else 2)")
    minibatch_size: int = knob(512, "states per gradient step")
    converged: float = knob(
        0.01,
        "a pure per-state loss stops passing over a segment once the student's KL to the teacher there is below this "
        "(nats; 0: every pass)",
    )
    lr: float = knob(0.0, "Adam learning rate; 0: 5e-3 for an MLP student, 1e-3 for a CNN")
    lr_end: float = knob(
        0.1, "the learning rate falls linearly to this fraction of --lr by the end of the budget (1: constant)"
    )
    seed: int = knob(0, "random seed")
    device: str = knob("auto", "auto|cpu|cuda|cuda:N (auto: CUDA when present)")
    threads: int = knob(1, "torch CPU threads (small networks run fastest on 1)")
    out: str | None = knob(None, "run directory; default runs/<env>-<method>-<time>", "-o")
    eval_every: int = knob(10_000, "evaluate the student every N env steps (0: only at start and end)")
    eval_episodes: int = knob(10, "episodes per evaluation")
    tensorboard: bool = knob(False, "also write TensorBoard events to <out>/tensorboard")
    control: Control | None = knob(None, "control policy q; default: the method's")
    mix: str = knob("1.0:0.0", "teacher's share under control mix: a number or START:END (linear)")
    kl_direction: KLDirection = knob(
        "teacher-student", "teacher-student: Hx(pi||pi_th); student-teacher: Hx(pi_th||pi)"
    )
    temperature: float = knob(1.0, "teacher temperature: pi_T = softmax(logits / T)")
    teacher_noise: float = knob(
        0.1, "deterministic teachers (TD3, DDPG, ARS) act as N(a(s), sigma^2): sigma as a fraction of the half-range"
    )
    reward_weight: str = knob("1.0", "lambda_r for env reward (+r methods): a number or START:END")
    proximal_lambda: float = knob(1.0, "distillation weight of the proximal method")
    loss_offset: LossOffset = knob(
        "min", "min: pseudo-rewards subtract each state's minimum loss (see docs); none: Table 1 verbatim"
    )
    episode_ends: EpisodeEnds = knob("auto", "pseudo-returns at episode ends (auto: continue unless env reward)")
    logprob_floor: float = knob(-20.0, "floor for teacher log-probabilities (keeps -inf out)")
    gamma: float = knob(0.99, "discount of the pseudo-return")
    gae_lambda: float = knob(
        0.5, "GAE lambda for the score-function term (1: Monte-Carlo, unbiased; lower: less variance)"
    )
    baseline: Baseline = knob("critic", "baseline of the score-function term")
    clip_range: float = knob(0.2, "PPO clip of the probability ratio on later epochs")
    max_grad_norm: float = knob(0.5, "gradient norm clip")

    @classmethod
    def help(cls, name: str) -> str:
        """The field's help line, with its default where one is worth showing."""
        for f in fields(cls):
            if f.name == name:
                text = str(f.metadata["help"])
                return text if f.default is None or isinstance(f.default, bool) else f"{text} (default: {f.default})"
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def smoke(self) -> RunConfig:
        """The same run at the smallest budget (``DISTILL_SMOKE=1``): one segment, two evaluation episodes."""
        return replace(self, steps=self.n_envs * self.n_steps, eval_episodes=min(self.eval_episodes, 2), eval_every=0)

    @classmethod
    def from_file(cls, path: Path) -> dict[str, Any]:
        """The options a config file sets, validated by name and type. Keys of earlier versions that only the
        command line may set now (``force``, ``trust_checkpoint``) are ignored: a file never turns them on; so are the
        records distill writes beside the options (``RECORDS``)."""
        check_path(str(path), "--config")
        if not os.path.lexists(path):
            raise DistillError(f"config file not found: {short(path)}")
        raw = read_bounded(path, MAX_CONFIG_BYTES, "config file")  # never a FIFO or /dev/zero
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise DistillError(f"config file {short(path)} is not JSON (write one with `distill run`)") from None
        if not isinstance(data, dict):
            raise DistillError(f"config file {short(path)} must hold a JSON object")
        known = {f.name: f for f in fields(cls)}
        options: dict[str, Any] = {}
        for key, value in data.items():
            if key in ("force", "trust_checkpoint") or key in RECORDS:
                continue
            if key not in known:
                raise DistillError(f"config file {short(path)}: unknown option {short(key, 60)!r}")
            if value is None and known[key].default is None:
                continue  # "not set": the default applies
            check_type(key, value, f"config file {short(path)}:", label=key)
            options[key] = value
        return options

    def validate(self) -> None:
        """Reject impossible values with one line each, before anything is built or written."""
        for knob_field in fields(self):
            check_type(knob_field.name, getattr(self, knob_field.name), "option")  # a value set in code
        positive: dict[str, int] = {
            "n_envs": self.n_envs,
            "n_steps": self.n_steps,
            "minibatch_size": self.minibatch_size,
            "eval_episodes": self.eval_episodes,
            "threads": self.threads,
        }
        for name, value in positive.items():
            if value <= 0:
                raise DistillError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if self.start_envs < 0 or self.grow_every < 0:
            raise DistillError("--start-envs and --grow-every must be >= 0 (0: the default)")
        limits = {"n_envs": 4096, "n_steps": 100_000, "threads": 256, "eval_episodes": 100_000, "grow_every": 10_000}
        for name, limit in limits.items():
            if getattr(self, name) > limit:
                raise DistillError(f"--{name.replace('_', '-')} must be at most {limit}, got {getattr(self, name)}")
        if self.n_envs * self.n_steps > MAX_SEGMENT:  # every state of a segment is held at once, with its targets
            raise DistillError(
                f"--n-envs x --n-steps must be at most {MAX_SEGMENT:,} states per segment, got "
                f"{self.n_envs} x {self.n_steps} = {self.n_envs * self.n_steps:,}"
            )
        if self.steps < 0:
            raise DistillError(f"--steps must be positive (or 0 for the task's default), got {self.steps}")
        if self.epochs < 0:
            raise DistillError(f"--epochs must be positive (or 0 for the method's default), got {self.epochs}")
        # Passes and minibatches past these are no schedule anyone runs, only a config file that never ends.
        for name, limit in {"epochs": 1000, "minibatch_size": MAX_SEGMENT, "steps": 10**12}.items():
            if getattr(self, name) > limit:
                raise DistillError(f"--{name.replace('_', '-')} must be at most {limit:,}, got {getattr(self, name)}")
        check_corrupt(self.teacher_corrupt)
        parse_extra_actions(self.extra_actions)
        if not 0 <= self.seed < 2**32:
            raise DistillError(f"--seed must be in [0, 2**32), got {self.seed}")
        if not (math.isfinite(self.proximal_lambda) and self.proximal_lambda >= 0):
            raise DistillError(f"--proximal-lambda must be a non-negative number, got {self.proximal_lambda}")
        if self.eval_every < 0:
            raise DistillError(f"--eval-every must be >= 0, got {self.eval_every}")
        if not (math.isfinite(self.lr) and self.lr >= 0):
            raise DistillError(f"--lr must be a positive number (or 0 for the default), got {self.lr}")
        for name, number in {"temperature": self.temperature, "teacher_noise": self.teacher_noise}.items():
            if not (math.isfinite(number) and 1e-6 <= number <= 1e6):
                raise DistillError(f"--{name.replace('_', '-')} must be a positive number, got {number}")
        for name, number in {"gamma": self.gamma, "gae_lambda": self.gae_lambda}.items():
            if not 0.0 <= number <= 1.0:
                raise DistillError(f"--{name.replace('_', '-')} must be in [0, 1], got {number}")
        if not (0.0 < self.clip_range < 1.0):
            raise DistillError(f"--clip-range must be in (0, 1), got {self.clip_range}")
        if not (math.isfinite(self.lr_end) and 0 <= self.lr_end <= 1):
            raise DistillError(f"--lr-end must be in [0, 1], got {self.lr_end}")
        if not (math.isfinite(self.converged) and self.converged >= 0):
            raise DistillError(f"--converged must be a non-negative number, got {self.converged}")
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise DistillError(f"--max-grad-norm must be positive, got {self.max_grad_norm}")
        if not (math.isfinite(self.logprob_floor) and -1000 <= self.logprob_floor < 0):
            raise DistillError(f"--logprob-floor must be a negative number down to -1000, got {self.logprob_floor}")
        for name in ("out", "teacher"):
            value = getattr(self, name)
            if value is not None and not value.startswith(("hf:", "bundled:")):
                check_path(value, f"--{name}")
        if self.device not in ("auto", "cpu") and not (
            self.device == "cuda" or (self.device.startswith("cuda:") and self.device[5:].isdigit())
        ):
            raise DistillError(f"--device must be auto, cpu, cuda or cuda:N, got {short(self.device, 40)!r}")


def field_type(name: str) -> Any:
    """The declared type of a RunConfig field (its Literal choices included)."""
    return typing.get_type_hints(RunConfig)[name]


def choices(name: str) -> tuple[str, ...] | None:
    """The allowed values of a Literal field (None for a free one)."""
    hint = field_type(name)
    args = [a for a in get_args(hint) if a is not type(None)] if get_origin(hint) is not Literal else [hint]
    for arg in args:
        if get_origin(arg) is Literal:
            return tuple(get_args(arg))
    return None


def _fits(value: Any, hint: Any) -> bool:
    """A JSON value of a field's type; ints count as floats, but bools never count as numbers."""
    origin = get_origin(hint)
    if origin is Literal:
        return value in get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_fits(value, arg) for arg in get_args(hint))
    if hint is type(None):
        return value is None
    if hint in (int, float) and isinstance(value, bool):
        return False  # bool is a subclass of int in Python, but `true` is not a number of environments
    if hint is float:
        return isinstance(value, int | float)
    return isinstance(value, hint)


def check_type(name: str, value: Any, where: str, label: str | None = None) -> None:
    """One line if ``value`` is not of the field's type: ``{where} {label} must be ...``."""
    hint = field_type(name)
    if _fits(value, hint):
        return
    label = label or f"--{name.replace('_', '-')}"
    valid = choices(name)
    if valid is not None:
        raise DistillError(f"{where} {label} must be one of {', '.join(valid)}, got {short(value, 60)!r}")
    expected = next((a.__name__ for a in (get_args(hint) or (hint,)) if a is not type(None)), "value")
    raise DistillError(f"{where} {label} must be {expected}, got {short(value, 60)!r}")


def defaults() -> dict[str, Any]:
    """Every field's default, for the tests that check the CLI's flags against them."""
    return {f.name: f.default for f in fields(RunConfig) if f.default is not MISSING}
