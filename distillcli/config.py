"""Every knob of ``distill run`` with its default, in one place.

The CLI fills a :class:`RunConfig` from (defaults < ``--config FILE`` < explicit options); the run writes the
resolved config as ``config.json``, which ``distill run --config`` accepts again.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from distillcli.errors import DistillError


def _knob(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


def _fits(value: Any, expected: type) -> bool:
    """JSON value of an option's type; ints count as floats, but bools never count as numbers."""
    if expected in (int, float) and isinstance(value, bool):
        return False  # bool is a subclass of int in Python, but `true` is not a number of environments
    if expected is float:
        return isinstance(value, int | float)
    return isinstance(value, expected)


@dataclass
class RunConfig:
    teacher: str | None = _knob(
        None, "teacher: an SB3 .zip or an rl-zoo run folder (logs/ppo/Env_1); default: the bundled CartPole-v1 PPO"
    )
    load_best: bool = _knob(False, "rl-zoo: load best_model.zip from the teacher's folder instead of the final model")
    load_checkpoint: int = _knob(
        0, "rl-zoo: load rl_model_N_steps.zip from the teacher's folder; 0 loads the final model"
    )
    method: str = _knob("expected-entropy", "distillation method (see `distill methods`)")
    env: str | None = _knob(None, "gymnasium env id; default: inferred from the checkpoint")
    student_net: str = _knob(
        "auto",
        "student hidden layers, e.g. 32,32; for images cnn, cnn:256 or cnn:256/64 (NatureCNN features, then layers); "
        "auto = half the teacher's widths (and features)",
    )
    steps: int = _knob(50_000, "env-step budget")
    n_envs: int = _knob(64, "parallel environments (many: the networks' per-call cost is shared by more env steps)")
    n_steps: int = _knob(32, "steps per environment per update (segment length)")
    epochs: int = _knob(0, "passes over each segment; 0: the method's (8 for a pure per-state loss, else 2)")
    minibatch_size: int = _knob(512, "states per gradient step")
    lr: float = _knob(0.0, "Adam learning rate; 0: 5e-3 for an MLP student, 1e-3 for a CNN")
    seed: int = _knob(0, "random seed")
    device: str = _knob("auto", "auto|cpu|cuda (auto: CUDA when present)")
    threads: int = _knob(1, "torch CPU threads (small networks run fastest on 1)")
    out: str | None = _knob(None, "run directory; default runs/<env>-<method>-<time>")
    force: bool = _knob(False, "write into an existing non-empty run directory")
    eval_every: int = _knob(10_000, "evaluate the student every N env steps (0: only at start and end)")
    eval_episodes: int = _knob(10, "episodes per evaluation")
    tensorboard: bool = _knob(False, "also write TensorBoard events to <out>/tensorboard")
    control: str | None = _knob(None, "control policy q: teacher|student|uniform|mix; default: the method's")
    mix: str = _knob("1.0:0.0", "teacher's share under control mix: a number or START:END (linear)")
    kl_direction: str = _knob("teacher-student", "teacher-student: Hx(pi||pi_th); student-teacher: Hx(pi_th||pi)")
    temperature: float = _knob(1.0, "teacher temperature: pi_T = softmax(logits / T)")
    teacher_noise: float = _knob(
        0.1, "TD3/DDPG teachers act as N(mu(s), sigma^2): sigma as a fraction of the action half-range"
    )
    reward_weight: str = _knob("1.0", "lambda_r for env reward (+r methods): a number or START:END")
    proximal_lambda: float = _knob(1.0, "distillation weight of the proximal method")
    loss_offset: str = _knob(
        "min", "min: pseudo-rewards subtract each state's minimum loss (see docs); none: Table 1 verbatim"
    )
    episode_ends: str = _knob(
        "auto", "pseudo-returns at episode ends: continue|absorb|auto (continue unless env reward)"
    )
    logprob_floor: float = _knob(-20.0, "floor for teacher log-probabilities (keeps -inf out)")
    gamma: float = _knob(0.99, "discount of the pseudo-return")
    gae_lambda: float = _knob(
        0.5, "GAE lambda for the score-function term (1: Monte-Carlo, unbiased; lower: less variance)"
    )
    baseline: str = _knob("critic", "baseline of the score-function term: critic|mean|none")
    clip_range: float = _knob(0.2, "PPO clip of the probability ratio on later epochs")
    max_grad_norm: float = _knob(0.5, "gradient norm clip")
    trust_checkpoint: bool = _knob(False, "allow unpickling the checkpoint (runs code from the file)")

    @classmethod
    def help(cls, name: str) -> str:
        for f in fields(cls):
            if f.name == name:
                default = f.default
                text = str(f.metadata["help"])
                return text if default is None or isinstance(default, bool) else f"{text} (default: {default})"
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_file(cls, path: Path) -> dict[str, Any]:
        """The options a config file sets (validated by name and type)."""
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise DistillError(f"config file not found: {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError, IsADirectoryError):
            raise DistillError(f"config file {path} is not JSON (write one with `distill run`)") from None
        if not isinstance(data, dict):
            raise DistillError(f"config file {path} must hold a JSON object")
        known = {f.name: f for f in fields(cls)}
        for key, value in data.items():
            if key not in known:
                raise DistillError(f"config file {path}: unknown option {key!r}")
            default = known[key].default
            if value is None and default is None:
                continue  # "not set": the default applies
            expected = type(default) if default is not None else str
            if not _fits(value, expected):
                raise DistillError(f"config file {path}: {key} must be {expected.__name__}, got {value!r}")
        return data

    def validate(self) -> None:
        """Reject impossible values with one line each, before anything is built or written."""
        positive: dict[str, int] = {
            "steps": self.steps,
            "n_envs": self.n_envs,
            "n_steps": self.n_steps,
            "minibatch_size": self.minibatch_size,
            "eval_episodes": self.eval_episodes,
            "threads": self.threads,
        }
        for name, value in positive.items():
            if value <= 0:
                raise DistillError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if self.epochs < 0:
            raise DistillError(f"--epochs must be positive (or 0 for the method's default), got {self.epochs}")
        if not 0 <= self.seed < 2**32:
            raise DistillError(f"--seed must be in [0, 2**32), got {self.seed}")
        if not (math.isfinite(self.proximal_lambda) and self.proximal_lambda >= 0):
            raise DistillError(f"--proximal-lambda must be a non-negative number, got {self.proximal_lambda}")
        if self.eval_every < 0:
            raise DistillError(f"--eval-every must be >= 0, got {self.eval_every}")
        if not (math.isfinite(self.lr) and self.lr >= 0):
            raise DistillError(f"--lr must be a positive number (or 0 for the default), got {self.lr}")
        for name, number in {
            "temperature": self.temperature,
            "teacher_noise": self.teacher_noise,
        }.items():
            if not (math.isfinite(number) and number > 0):
                raise DistillError(f"--{name} must be a positive number, got {number}")
        for name, number in {"gamma": self.gamma, "gae_lambda": self.gae_lambda}.items():
            if not 0.0 <= number <= 1.0:
                raise DistillError(f"--{name.replace('_', '-')} must be in [0, 1], got {number}")
        if not (0.0 < self.clip_range < 1.0):
            raise DistillError(f"--clip-range must be in (0, 1), got {self.clip_range}")
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise DistillError(f"--max-grad-norm must be positive, got {self.max_grad_norm}")
        if not (math.isfinite(self.logprob_floor) and self.logprob_floor < 0):
            raise DistillError(f"--logprob-floor must be a negative number, got {self.logprob_floor}")
        choices: dict[str, tuple[str, tuple[str, ...]]] = {
            "device": (self.device, ("auto", "cpu", "cuda")),
            "baseline": (self.baseline, ("critic", "mean", "none")),
            "kl_direction": (self.kl_direction, ("teacher-student", "student-teacher")),
            "loss_offset": (self.loss_offset, ("min", "none")),
            "episode_ends": (self.episode_ends, ("auto", "continue", "absorb")),
        }
        if self.control is not None:
            choices["control"] = (self.control, ("teacher", "student", "uniform", "mix"))
        for name, (choice, valid) in choices.items():
            if choice not in valid and not (name == "device" and choice.startswith("cuda:")):
                raise DistillError(f"--{name.replace('_', '-')} must be one of {', '.join(valid)}, got {choice!r}")
