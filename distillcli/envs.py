"""Make the teacher's environment as a vectorised env, with errors a user can act on.

A plain gymnasium id gives Monitor-wrapped copies of the env. An :class:`EnvStack` adds what the teacher was
trained behind, in the order rl-baselines3-zoo's ``create_test_env`` builds it: ``make_vec_env`` with the
``env_wrapper`` list (inside, after Monitor), the ``vec_env_wrapper`` list, frozen ``VecNormalize`` statistics,
``VecFrameStack``, and last SB3's own ``VecTransposeImage`` for channel-last images (what ``PPO(...)`` adds when it
trains on images), so teacher and student both see exactly the observations the teacher was trained on.
"""

from __future__ import annotations

import functools
import importlib
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import (
    DummyVecEnv,
    VecEnv,
    VecFrameStack,
    VecNormalize,
    VecTransposeImage,
)

from distillcli.errors import DistillError, short
from distillcli.gridworld import register as register_grid_world

# Environment families that need an optional extra of distillcli (gymnasium extra, our extra).
_EXTRAS = {"box2d": "box2d", "mujoco": "mujoco", "ale_py": "atari", "ALE": "atari"}

# Modules whose wrapper classes a checkpoint folder may name without --trust-checkpoint: library wrappers only.
# Importing one of these runs only that library's own code; a class from anywhere else could run anything.
SAFE_WRAPPER_MODULES = (
    "gymnasium.wrappers",
    "stable_baselines3.common.atari_wrappers",
    "stable_baselines3.common.vec_env",
    "sb3_contrib.common.wrappers",
    "rl_zoo3.wrappers",
    "rl_zoo3.vec_env_wrappers",
    "distillcli.conditions",  # --extra-actions, recorded in a run directory's env.json
)
ATARI_WRAPPER = "stable_baselines3.common.atari_wrappers.AtariWrapper"


def _register_optional(env_id: str) -> None:
    """Atari ids exist only once ale-py is imported: register it when an id is unknown and ale-py is there."""
    register_grid_world()  # the paper's grid worlds: distillcli/GridWorld-v0
    if env_id in gym.registry:
        return
    try:
        import ale_py
    except ImportError:
        if env_id.startswith("ALE/") or "NoFrameskip" in env_id:
            raise DistillError(
                f"environment {env_id} needs an optional dependency: pip install 'distillcli[atari]'"
            ) from None
        return
    gym.register_envs(ale_py)


def check_env_id(env_id: str) -> None:
    _register_optional(env_id)
    if env_id not in gym.registry:
        close = [name for name in gym.registry if name.lower().startswith(env_id.lower().split("-")[0])][:3]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise DistillError(f"unknown environment id {short(env_id, 80)!r}{hint}")


def env_successors(env_id: str) -> list[str]:
    """Registered later versions of an env id (``LunarLander-v2`` -> ``LunarLander-v3``), oldest first."""
    try:
        namespace, name, version = gym.envs.registration.parse_env_id(env_id)
    except gym.error.Error:
        return []
    if version is None:
        return []
    _register_optional(env_id)
    later = []
    for other in gym.registry:
        ns, other_name, other_version = gym.envs.registration.parse_env_id(other)
        if ns == namespace and other_name == name and other_version is not None and other_version > version:
            later.append((other_version, other))
    return [other for _, other in sorted(later)]


_ENV_TOKEN = re.compile(r"(?:[A-Za-z0-9_]+[/-])?[A-Za-z][A-Za-z0-9_]*-v\d+")


def infer_env_id(path: Path) -> str | None:
    """The env id a checkpoint's file name carries (``ppo-CartPole-v1.zip``, rl-zoo's ``ALE-Pong-v5.zip``); a retired
    id with a registered successor (``LunarLander-v2``) counts too: it is mapped when the env is made."""
    text = " ".join([path.stem, path.parent.name])
    register_grid_world()  # ppo-GridWorldWindow-v0.zip names distillcli/GridWorldWindow-v0: our own namespace
    matches = [
        env_id
        for env_id in gym.registry
        if env_id in text
        or ("/" in env_id and env_id.replace("/", "-") in text)
        or (env_id.startswith("distillcli/") and env_id.removeprefix("distillcli/") in text)
    ]
    if matches:
        return max(matches, key=len)
    for token in _ENV_TOKEN.findall(text):
        for candidate in (token, token.split("-", 1)[-1]):  # "ppo-LunarLander-v2" names LunarLander-v2
            if env_successors(candidate):
                return candidate
    return None


def register_hinted(text: str) -> None:
    """Register ale-py's ids before an env id is inferred from a file name that looks like an Atari one."""
    if "ALE-" in text or "ALE/" in text or "NoFrameskip" in text:
        try:
            import ale_py

            gym.register_envs(ale_py)
        except ImportError:
            pass


def is_atari(env_id: str) -> bool:
    _register_optional(env_id)
    spec = gym.registry.get(env_id)
    return spec is not None and "ale_py" in str(spec.entry_point)


def make_env(env_id: str, n_envs: int, seed: int, env_kwargs: dict[str, Any] | None = None) -> VecEnv:
    """A DummyVecEnv of ``n_envs`` Monitor-wrapped copies of ``env_id``, seeded ``seed, seed + 1, ...``."""
    return EnvStack(env_id, dict(env_kwargs or {})).make(n_envs, seed, transpose=False)


def resolve_class(path: str, base: type, trust: bool, where: str) -> type:
    """Import a wrapper class named by a checkpoint folder: allow-listed library modules only, unless trusted."""
    module, _, name = path.rpartition(".")
    if not module or not name.isidentifier():
        raise DistillError(f"{where}: {path!r} is not a class path like gymnasium.wrappers.TimeLimit")
    safe = any(module == m or module.startswith(m + ".") for m in SAFE_WRAPPER_MODULES) and not name.startswith("_")
    if not (safe or trust):
        raise DistillError(
            f"{where}: wrapper {path} is not from a library allow-list (gymnasium.wrappers, SB3, sb3-contrib, "
            "rl_zoo3.wrappers); importing it runs its code: pass --trust-checkpoint if you trust its source"
        )
    try:
        cls = getattr(importlib.import_module(module), name)
    except ImportError as error:
        raise DistillError(f"{where}: cannot import wrapper {path} ({error})") from None
    except AttributeError:
        raise DistillError(f"{where}: {module} has no wrapper {name}") from None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise DistillError(f"{where}: {path} is not a {base.__name__}")
    return cls


@dataclass
class Wrapper:
    """One wrapper of the stack: its class path (as the folder names it), the class, and its keyword arguments."""

    path: str
    cls: type
    kwargs: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {self.path: self.kwargs} if self.kwargs else {self.path: {}}


@dataclass
class Normalization:
    """Frozen VecNormalize statistics (what ``VecNormalize.load`` restores), applied without reward scaling."""

    mean: np.ndarray
    var: np.ndarray
    count: float
    norm_obs: bool = True
    clip_obs: float = 10.0
    clip_reward: float = 10.0
    gamma: float = 0.99
    epsilon: float = 1e-8
    raw: bytes = b""  # the file as read, copied to the run directory for deployment
    origin: str = "vecnormalize.pkl"

    def check(self) -> None:
        for name in ("clip_obs", "clip_reward", "gamma", "epsilon", "count"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise DistillError(f"{self.origin}: {name} must be a non-negative number, got {value!r}")
        if self.norm_obs:
            if self.mean.shape != self.var.shape or not (np.isfinite(self.mean).all() and np.isfinite(self.var).all()):
                raise DistillError(f"{self.origin}: the observation statistics are not finite arrays of one shape")
            if (self.var < 0).any():
                raise DistillError(f"{self.origin}: the observation variance has negative entries")

    def apply(self, venv: VecEnv) -> VecNormalize:
        shape = tuple(venv.observation_space.shape or ())
        if self.norm_obs and tuple(self.mean.shape) != shape:
            raise DistillError(
                f"{self.origin}: the statistics are for observations of shape {tuple(self.mean.shape)} but the "
                f"environment gives {shape} (wrong folder, or --env changed the environment?)"
            )
        try:
            normalized = VecNormalize(
                venv,
                training=False,  # frozen: evaluation must not move the teacher's statistics
                norm_obs=self.norm_obs,
                norm_reward=False,  # returns are the environment's own
                clip_obs=self.clip_obs,
                clip_reward=self.clip_reward,
                gamma=self.gamma,
                epsilon=self.epsilon,
            )
        except ValueError as error:
            raise DistillError(f"{self.origin}: cannot normalise these observations ({error})") from None
        if self.norm_obs:
            stats = normalized.obs_rms
            assert isinstance(stats, RunningMeanStd)  # Dict statistics were refused when the file was read
            stats.mean = self.mean.astype(np.float64).copy()
            stats.var = self.var.astype(np.float64).copy()
            stats.count = float(self.count)
        return normalized


def _make_unrendered(env_id: str, **kwargs: Any) -> gym.Env:
    """``gym.make`` without rendering unless the kwargs ask for it.

    SB3's ``make_vec_env`` defaults ``render_mode`` to "rgb_array". Nothing here renders, and some envs pay for it
    at every step: LunarLander then creates an engine particle per firing that lives until the episode ends, which
    made its steps along a good lander's trajectory about 4x slower.
    """
    if "render_mode" in kwargs:
        return gym.make(env_id, **kwargs)
    try:
        return gym.make(env_id, render_mode=None, **kwargs)
    except TypeError as error:
        if "render_mode" not in str(error):
            raise
        return gym.make(env_id, **kwargs)  # an env whose constructor takes no render_mode


@dataclass
class EnvStack:
    """The teacher's environment: an id, its make kwargs and the wrappers it was trained behind."""

    env_id: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    env_wrappers: list[Wrapper] = field(default_factory=list)
    vec_env_wrappers: list[Wrapper] = field(default_factory=list)
    normalization: Normalization | None = None
    frame_stack: int = 0
    source: str = "gymnasium"  # gymnasium | rl-zoo | atari (inferred) | run directory
    mapped_from: str | None = None  # the retired id the checkpoint recorded, when env_id is its successor

    @property
    def plain(self) -> bool:
        """Nothing but the env id: no file is needed beside the student to rebuild it."""
        return not (
            self.env_kwargs or self.env_wrappers or self.vec_env_wrappers or self.normalization or self.frame_stack
        )

    def describe(self) -> dict[str, Any]:
        """The stack as JSON (``env.json`` in a run directory); the statistics stay in ``vecnormalize.pkl``."""
        return {
            "env_id": self.env_id,
            "env_kwargs": self.env_kwargs,
            "env_wrapper": [w.describe() for w in self.env_wrappers],
            "vec_env_wrapper": [w.describe() for w in self.vec_env_wrappers],
            "normalize": "vecnormalize.pkl" if self.normalization is not None else None,
            "frame_stack": self.frame_stack,
            "transpose_images": True,
            "source": self.source,
            "mapped_from": self.mapped_from,
        }

    def make(self, n_envs: int, seed: int, *, transpose: bool = True) -> VecEnv:
        """``n_envs`` copies seeded ``seed, seed + 1, ...``, wrapped as the teacher saw them."""
        check_env_id(self.env_id)
        wrappers = self.env_wrappers

        def wrap(env: gym.Env) -> gym.Env:
            for wrapper in wrappers:
                env = wrapper.cls(env, **wrapper.kwargs)
            return CountCutEpisodes(env)

        try:
            # gymnasium's notices ("out of date", "consider upgrading") would print at every make; a retired id
            # is said once, by the run's setup.
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"gymnasium\.")
            venv: VecEnv = make_vec_env(
                functools.partial(_make_unrendered, self.env_id),
                n_envs=n_envs,
                seed=seed,
                env_kwargs=self.env_kwargs or None,
                wrapper_class=wrap if wrappers else None,
                vec_env_cls=DummyVecEnv,
            )
        except gym.error.DependencyNotInstalled as error:
            extra = next((e for key, e in _EXTRAS.items() if key in str(error) or key in self.env_id), None)
            hint = f"pip install 'distillcli[{extra}]'" if extra else str(error).splitlines()[0]
            raise DistillError(f"environment {self.env_id} needs an optional dependency: {hint}") from None
        except (gym.error.Error, TypeError) as error:
            raise DistillError(f"cannot make environment {self.env_id}: {_first_line(error)}") from None
        except Exception as error:  # a wrapper named by a file may fail in any way: name it
            names = ", ".join(w.path for w in wrappers) or "none"
            raise DistillError(
                f"cannot make environment {self.env_id} with wrappers {names}: {type(error).__name__}: "
                f"{_first_line(error)}"
            ) from None
        try:
            for wrapper in self.vec_env_wrappers:
                venv = wrapper.cls(venv, **wrapper.kwargs)
        except Exception as error:
            venv.close()
            raise DistillError(f"cannot apply vec_env_wrapper {wrapper.path}: {_first_line(error)}") from None
        if self.normalization is not None:
            venv = self.normalization.apply(venv)
        if self.frame_stack > 0:
            venv = VecFrameStack(venv, self.frame_stack)
        space = venv.observation_space
        if transpose and is_image_space(space) and not is_image_space_channels_first(space):  # type: ignore[arg-type]
            venv = VecTransposeImage(venv)  # channel-first, as SB3's algorithms wrap image envs themselves
        return venv


class CountCutEpisodes(gym.Wrapper):
    """Report episodes that a wrapper outside Monitor cuts short (a TimeLimit in ``env_wrapper``).

    ``make_vec_env`` puts Monitor under the wrappers, so its returns are the env's own rewards (not an
    AtariWrapper's clipped ones), but it never sees an outer time limit end an episode, and evaluation, which
    counts Monitor's episodes, would wait forever. A truncation Monitor did not report is reported here with
    Monitor's return so far. Terminations (an Atari life lost) are left alone: they are not episode ends.
    """

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        if truncated and not terminated and "episode" not in info:
            monitor = self.env
            while not isinstance(monitor, Monitor) and isinstance(monitor, gym.Wrapper):
                monitor = monitor.env
            if isinstance(monitor, Monitor) and monitor.rewards:
                rewards = monitor.rewards
                info = {**info, "episode": {"r": round(sum(rewards), 6), "l": len(rewards), "t": 0.0}}
        return obs, reward, terminated, truncated, info


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def image_shape(shape: list[int] | tuple[int, ...]) -> tuple[int, int, int] | None:
    """(height, width, frames) of a recorded image observation shape, channel-first or channel-last."""
    if len(shape) != 3:
        return None
    if shape[0] < shape[1] and shape[0] < shape[2]:
        return int(shape[1]), int(shape[2]), int(shape[0])
    if shape[2] < shape[0] and shape[2] < shape[1]:
        return int(shape[0]), int(shape[1]), int(shape[2])
    return None


def atari_stack(env_id: str, recorded_shape: Any) -> EnvStack | None:
    """The stack a bare zip of an Atari teacher implies: SB3's ``make_atari_env`` + ``VecFrameStack(K)``.

    Only when the recorded observations are square grey-scale frames (K stacked, 84x84 by default): the
    AtariWrapper's output. A raw-screen teacher gets the plain env; an rl-zoo folder is authoritative.
    """
    if not (isinstance(recorded_shape, list) and all(isinstance(d, int) for d in recorded_shape)):
        return None
    image = image_shape(recorded_shape)
    if image is None or not is_atari(env_id):
        return None
    height, width, frames = image
    if height != width or height > 1024 or frames > 64:  # a hand-edited shape must not allocate gigabytes
        return None
    kwargs = {} if height == 84 else {"screen_size": height}
    atari = resolve_class(ATARI_WRAPPER, gym.Wrapper, False, "atari")
    return EnvStack(
        env_id,
        env_wrappers=[Wrapper(ATARI_WRAPPER, atari, kwargs)],
        frame_stack=frames if frames > 1 else 0,
        source="atari (inferred)",
    )


class ConcatVecEnv(VecEnv):
    """Several vectorised envs stepped as one: ``append`` adds more environments between segments, while the
    running ones keep their episodes (a run starts with few environments and grows; see trainer.EnvSchedule).
    Each part is a whole env stack (wrappers, frozen statistics, frame stacking), so a part's observations are
    exactly what a single stack of the same size gives."""

    def __init__(self, parts: list[VecEnv]) -> None:
        self.parts = list(parts)
        first = self.parts[0]
        super().__init__(sum(p.num_envs for p in self.parts), first.observation_space, first.action_space)

    def append(self, part: VecEnv) -> None:
        self.parts.append(part)
        self.num_envs += part.num_envs

    def _split(self, actions: np.ndarray) -> list[np.ndarray]:
        bounds = np.cumsum([p.num_envs for p in self.parts])[:-1]
        return np.split(actions, bounds)

    def reset(self) -> Any:
        return np.concatenate([p.reset() for p in self.parts])

    def step_async(self, actions: np.ndarray) -> None:
        for part, chunk in zip(self.parts, self._split(actions), strict=True):
            part.step_async(chunk)

    def step_wait(self) -> Any:
        results = [p.step_wait() for p in self.parts]
        obs = np.concatenate([r[0] for r in results])
        rewards = np.concatenate([r[1] for r in results])
        dones = np.concatenate([r[2] for r in results])
        infos = [info for r in results for info in r[3]]
        return obs, rewards, dones, infos

    def close(self) -> None:
        for part in self.parts:
            part.close()

    def _route(self, indices: Any) -> list[tuple[VecEnv, list[int]]]:
        """(part, local indices) for global env indices (all of them when None)."""
        wanted = range(self.num_envs) if indices is None else [indices] if isinstance(indices, int) else indices
        routes: list[tuple[VecEnv, list[int]]] = []
        offset = 0
        for part in self.parts:
            local = [i - offset for i in wanted if offset <= i < offset + part.num_envs]
            if local:
                routes.append((part, local))
            offset += part.num_envs
        return routes

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [v for part, local in self._route(indices) for v in part.get_attr(attr_name, local)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        for part, local in self._route(indices):
            part.set_attr(attr_name, value, local)

    def env_method(self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any) -> list[Any]:
        return [
            v
            for part, local in self._route(indices)
            for v in part.env_method(method_name, *args, indices=local, **kwargs)
        ]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: Any = None) -> list[bool]:
        return [v for part, local in self._route(indices) for v in part.env_is_wrapped(wrapper_class, local)]

    def get_images(self) -> list[Any]:
        return [image for part in self.parts for image in part.get_images()]
