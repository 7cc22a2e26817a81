"""rl-baselines3-zoo run folders: which zip to load, and the environment stack the teacher was trained behind.

A folder ``logs/<algo>/<EnvName>_<N>/`` holds ``<EnvName>.zip`` (the final model), ``best_model.zip``,
``rl_model_<steps>_steps.zip`` checkpoints and a subfolder ``<EnvName>/`` with ``config.yml`` (hyperparameters:
``env_wrapper``, ``vec_env_wrapper``, ``frame_stack``, ``normalize``), ``args.yml`` (``env``, ``env_kwargs``,
``gym_packages``) and ``vecnormalize.pkl``. rl-zoo reads these with yaml's unsafe loader, ``eval`` and
``pickle``; here nothing runs without ``--trust-checkpoint``: the YAML goes through a safe loader that knows
only rl-zoo's OrderedDict tag (and refuses alias bombs and deep nesting before building anything), ``normalize``
strings through ``ast``, wrapper classes through an allow-list of library modules and their keyword arguments
through an allow-list of plain options (no paths, no functions), ``gym_packages`` through an allow-list of env
registries, and ``vecnormalize.pkl`` through an unpickler that builds nothing but arrays and plain records. Every
file is read only if it is a regular file, and only up to a size cap.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import io
import json
import os
import pickle
import re
import sys
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import yaml
from stable_baselines3.common.vec_env import VecEnvWrapper

from distillcli.envs import EnvStack, Normalization, Wrapper, register_hinted, resolve_class
from distillcli.errors import DistillError, short
from distillcli.metrics import atomic_write_bytes, atomic_write_json, read_bounded
from distillcli.sb3.checkpoint import NeedsTrust

ENV_FILE = "env.json"
STATS_FILE = "vecnormalize.pkl"
HUB_STATS_FILE = "vec_normalize.pkl"  # the same statistics, as rl-zoo's push_to_hub names them on the hub
_CHECKPOINT = re.compile(r"rl_model_(\d+)_steps\.zip")

# What a folder's files may make us read and build: rl-zoo writes YAML of a few KB (no anchors, a few levels),
# statistics of at most a few MB (an Atari frame's mean and variance).
MAX_YAML_BYTES = 1 << 20
MAX_YAML_DEPTH = 32
MAX_YAML_ALIASES = 64
MAX_YAML_NODES = 20_000  # values after aliases are expanded: a 400-byte "billion laughs" file has 10**9
MAX_STATS_BYTES = 64 << 20
MAX_ENV_JSON_BYTES = 1 << 20
MAX_FRAME_STACK = 64
MAX_EPISODE_STEPS = 100_000  # a time limit past this is an evaluation that never ends (Atari's is 27,000 steps)

# Packages that ``gym_packages`` may import without --trust-checkpoint: libraries whose import registers
# environments and does nothing else. Any other module (``this`` prints to stdout, ``antigravity`` opens a browser,
# a ``__main__`` runs a program) needs the flag.
ENV_PACKAGES = (
    "ale_py",
    "gymnasium",
    "gymnasium_robotics",
    "highway_env",
    "minigrid",
    "miniworld",
    "mo_gymnasium",
    "panda_gym",
    "pybullet_envs",
    "pybullet_envs_gymnasium",
    "shimmy",
    "sumo_rl",
)

# Keyword arguments an allow-listed wrapper may take from a folder without --trust-checkpoint, with the largest
# number each may be: plain options of what the env computes. Anything else needs the flag: VecMonitor's
# ``filename`` or RecordVideo's ``video_folder`` would write wherever the file says, ``func`` would be code.
WRAPPER_KWARGS: dict[str, float] = {
    "max_episode_steps": MAX_EPISODE_STEPS,
    "max_steps": MAX_EPISODE_STEPS,
    "noop_max": 10_000,
    "frame_skip": 64,
    "skip": 64,
    "screen_size": 1024,
    "shape": 1024,
    "stack_size": MAX_FRAME_STACK,
    "num_stack": MAX_FRAME_STACK,
    "n_stack": MAX_FRAME_STACK,
    "horizon": MAX_FRAME_STACK,
    "delay": MAX_EPISODE_STEPS,
    "terminal_on_life_loss": 1,
    "clip_reward": 1e6,
    "action_repeat_probability": 1,
    "test_mode": 1,
    "grayscale_obs": 1,
    "grayscale_newaxis": 1,
    "scale_obs": 1,
    "keep_dim": 1,
    "norm_obs": 1,
    "norm_reward": 1,
    "training": 1,
    "gamma": 1,
    "epsilon": 1,
    "clip_obs": 1e6,
    "noise_std": 1e6,
    "min_action": 1e6,
    "max_action": 1e6,
    "low": 1e6,
    "high": 1e6,
    "channels_order": 0,
    "padding_type": 0,
    "key": 0,
    "dtype": 0,
    "copies": 1000,  # distillcli.conditions.ExtraActions (--extra-actions)
    "form": 0,
}
# Allow-listed modules' wrappers that write files or open windows whatever their arguments.
UNSAFE_WRAPPERS = {"RecordVideo", "HumanRendering", "VecVideoRecorder", "RenderCollection"}
RENDER_MODES = (None, "rgb_array")  # distill never renders; "human" would open a window


def _needs_trust(path: Path, what: str) -> NeedsTrust:
    return NeedsTrust(f"{path}: {what}; pass --trust-checkpoint if you trust its source")


# ---------------------------------------------------------------------------------------------------- YAML


class Opaque:
    """A YAML node with a Python tag other than OrderedDict: kept as its tag, never constructed."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def __repr__(self) -> str:
        return f"<{self.tag}>"


class _ZooLoader(yaml.SafeLoader):
    """yaml's safe loader plus the one tag rl-zoo writes (``yaml.dump`` of an OrderedDict)."""


def _ordered_dict(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.SequenceNode):
        args = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        args = loader.construct_mapping(node, deep=True).get("args", [])
    else:
        args = []
    pairs = args[0] if args else []
    if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
        raise yaml.constructor.ConstructorError(None, None, "an OrderedDict that is not pairs", node.start_mark)
    return OrderedDict((key, value) for key, value in pairs)


def _opaque(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Opaque:
    return Opaque(node.tag)


_ZooLoader.add_constructor("tag:yaml.org,2002:python/object/apply:collections.OrderedDict", _ordered_dict)
_ZooLoader.add_multi_constructor("", _opaque)


def _yaml_text(path: Path) -> str:
    """The text of a zoo YAML file: a regular file of at most MAX_YAML_BYTES, decoded."""
    try:
        return read_bounded(path, MAX_YAML_BYTES, "YAML file").decode("utf-8")
    except UnicodeDecodeError:
        raise DistillError(f"{short(path)} is not readable YAML (not UTF-8 text)") from None


def _expanded(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values ``node`` stands for once every alias is expanded (memoised: aliases share nodes)."""
    key = id(node)
    if key in sizes:
        if sizes[key] < 0:
            raise DistillError("an alias that contains itself")
        return sizes[key]
    sizes[key] = -1
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    total = 1 + sum(_expanded(child, sizes) for child in children)
    sizes[key] = min(total, MAX_YAML_NODES + 1)
    return sizes[key]


def _checked_node(text: str, path: Path) -> yaml.Node | None:
    """The YAML's node graph, refused before anything is built if it nests too deep or expands too far."""
    depth = aliases = 0
    # PyYAML's parser keeps its own stack: events can be counted at any depth without recursing.
    for event in yaml.parse(text, Loader=_ZooLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise DistillError(f"{short(path)} nests deeper than {MAX_YAML_DEPTH} levels: not an rl-zoo file")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_YAML_ALIASES:
                raise DistillError(f"{short(path)} has more than {MAX_YAML_ALIASES} aliases: not an rl-zoo file")
    node = yaml.compose(text, Loader=_ZooLoader)
    if node is not None and _expanded(node, {}) > MAX_YAML_NODES:
        raise DistillError(f"{short(path)} expands to more than {MAX_YAML_NODES:,} values: not an rl-zoo file")
    return node


def _load_yaml(path: Path, loader: type[yaml.SafeLoader] | type[yaml.UnsafeLoader]) -> Any:
    text = _yaml_text(path)
    try:
        node = _checked_node(text, path)
        if node is None:
            return None
        constructor = loader(text)
        try:
            return constructor.construct_document(node)
        finally:
            constructor.dispose()
    except DistillError as error:
        if str(error).startswith("an alias"):
            raise DistillError(f"{short(path)} has {error}: not an rl-zoo file") from None
        raise
    except yaml.YAMLError as error:
        raise DistillError(f"{short(path)} is not readable YAML ({short(error, 120)})") from None
    except (TypeError, ValueError, RecursionError) as error:  # unhashable keys, an OrderedDict of odd pairs
        raise DistillError(
            f"{short(path)} is not an rl-zoo file ({type(error).__name__}: {short(error, 120)})"
        ) from None


def read_yaml(path: Path) -> dict[str, Any]:
    """A zoo YAML file as a dict; Python objects other than OrderedDict stay :class:`Opaque`."""
    data = _load_yaml(path, _ZooLoader)  # a SafeLoader subclass: constructs only data
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DistillError(f"{short(path)} must hold a mapping of options, got {type(data).__name__}")
    return dict(data)


def _has_opaque(value: Any) -> bool:
    if isinstance(value, Opaque):
        return True
    if isinstance(value, dict):
        return any(_has_opaque(k) or _has_opaque(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_opaque(v) for v in value)
    return False


def _used(path: Path, data: dict[str, Any], keys: tuple[str, ...], trust: bool) -> dict[str, Any]:
    """The entries of ``data`` we use; a Python object among them needs --trust-checkpoint (rl-zoo's own load)."""
    unsafe = [key for key in keys if _has_opaque(data.get(key))]
    if not unsafe:
        return {key: data.get(key) for key in keys}
    if not trust:
        raise _needs_trust(path, f"{unsafe[0]} holds a Python object that only yaml's unsafe loader can build")
    with _stdout_to_stderr():
        full = _load_yaml(path, yaml.UnsafeLoader)  # --trust-checkpoint: rl-zoo's own load (still size-checked)
    if not isinstance(full, dict):
        raise DistillError(f"{short(path)} must hold a mapping of options, got {type(full).__name__}")
    return {key: full.get(key) for key in keys}


def parse_normalize(value: Any, where: str) -> bool:
    """rl-zoo's ``normalize``: a bool, or a string of VecNormalize kwargs (a dict literal or ``dict(...)``)."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, dict):
        return True
    if not isinstance(value, str):
        raise DistillError(
            f"{where}: normalize must be true/false or a dict of VecNormalize options, got {short(repr(value), 60)}"
        )
    try:
        kwargs = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        kwargs = _dict_call(value)
    if not isinstance(kwargs, dict):
        raise DistillError(f"{where}: normalize {short(repr(value), 60)} is not a dict like {{'norm_obs': True}}")
    return True


def _dict_call(text: str) -> dict[str, Any] | None:
    """``dict(norm_obs=True, gamma=0.99)`` read as data (rl-zoo would ``eval`` it): literal keywords only."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        return None
    if not (isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name) and tree.func.id == "dict") or tree.args:
        return None
    try:
        return {k.arg: ast.literal_eval(k.value) for k in tree.keywords if k.arg is not None}
    except ValueError:
        return None


def _plain(value: Any, cap: float) -> bool:
    """A number up to ``cap`` (bools are flags), a short name (no path), or a short list of those."""
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int | float):
        return cap > 0 and abs(value) <= cap
    if isinstance(value, str):
        return len(value) <= 64 and value.isprintable() and not any(c in value for c in "/\\~")
    if isinstance(value, list | tuple):
        return len(value) <= 16 and all(_plain(item, cap) for item in value)
    return False


def check_wrapper_kwargs(path: str, kwargs: dict[str, Any], where: str) -> None:
    """Without --trust-checkpoint a wrapper takes only the plain options of WRAPPER_KWARGS, within their bounds."""
    if path.rpartition(".")[2] in UNSAFE_WRAPPERS:
        raise DistillError(
            f"{where}: wrapper {short(path, 80)} writes files or opens windows; pass --trust-checkpoint if you "
            "trust its source"
        )
    for key, value in kwargs.items():
        if not isinstance(key, str) or key not in WRAPPER_KWARGS:
            raise DistillError(
                f"{where}: wrapper {short(path, 80)} argument {short(key, 40)!r} is not a plain option distill allows "
                "(a path, a function or something it does not know); pass --trust-checkpoint if you trust its source"
            )
        cap = WRAPPER_KWARGS[key]
        if not _plain(value, cap):
            bound = f"a number up to {cap:g}" if cap else "a short name"
            raise DistillError(
                f"{where}: wrapper {short(path, 80)} argument {key} = {short(repr(value), 60)} is not {bound}"
            )


def parse_wrappers(value: Any, base: type, trust: bool, where: str) -> list[Wrapper]:
    """rl-zoo's ``env_wrapper`` / ``vec_env_wrapper``: a class path, or a list of paths or {path: kwargs}."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    if len(items) > 32:
        raise DistillError(f"{where}: {len(items)} wrappers; an rl-zoo stack has a few")
    wrappers = []
    for item in items:
        kwargs: Any = {}
        if isinstance(item, str):
            path = item
        elif isinstance(item, dict) and len(item) == 1:
            path, kwargs = next(iter(item.items()))
            kwargs = {} if kwargs is None else kwargs
        else:
            raise DistillError(
                f"{where}: {short(repr(item), 80)} is not a wrapper class path or {{class_path: kwargs}}"
            )
        if not isinstance(path, str) or not isinstance(kwargs, dict):
            raise DistillError(
                f"{where}: the wrapper {short(repr(item), 80)} needs a class path and a mapping of kwargs"
            )
        cls = resolve_class(path, base, trust, where)
        if not trust:
            check_wrapper_kwargs(path, kwargs, where)
        wrappers.append(Wrapper(path, cls, dict(kwargs)))
    return wrappers


def check_env_kwargs(env_kwargs: Any, trust: bool, where: str) -> dict[str, Any]:
    """``env_kwargs`` for ``gym.make``: a mapping; no rendering (distill never renders: ``human`` would open a
    window); a bounded time limit; and without --trust-checkpoint no paths (an env that reads a file it names)."""
    if env_kwargs is None:
        return {}
    if not isinstance(env_kwargs, dict) or not all(isinstance(key, str) for key in env_kwargs):
        raise DistillError(f"{where}: env_kwargs must be a mapping of names, got {short(repr(env_kwargs), 80)}")
    if env_kwargs.get("render_mode") not in RENDER_MODES:
        raise DistillError(
            f"{where}: env_kwargs render_mode {short(repr(env_kwargs['render_mode']), 40)}: distill never renders "
            "(leave it out, or rgb_array)"
        )
    steps = env_kwargs.get("max_episode_steps")
    if steps is not None and not (isinstance(steps, int) and not isinstance(steps, bool) and steps > 0):
        raise DistillError(
            f"{where}: env_kwargs max_episode_steps must be a positive integer, got {short(repr(steps), 40)}"
        )
    if steps is not None and steps > MAX_EPISODE_STEPS:
        raise DistillError(
            f"{where}: env_kwargs max_episode_steps {steps:,} is over the {MAX_EPISODE_STEPS:,} distill allows "
            "(an evaluation would never end)"
        )
    if not trust:
        for key, value in env_kwargs.items():
            if _has_path(value):
                raise DistillError(
                    f"{where}: env_kwargs {short(key, 40)} = {short(repr(value), 60)} looks like a path; an env that "
                    "opens files needs --trust-checkpoint"
                )
    return dict(env_kwargs)


def _has_path(value: Any) -> bool:
    if isinstance(value, str):
        return any(c in value for c in "/\\") or value.startswith(("~", "."))
    if isinstance(value, dict):
        return any(_has_path(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_path(v) for v in value)
    return False


def frame_stack_of(value: Any, where: str) -> int:
    if value is None or value is False:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DistillError(f"{where} must be a non-negative integer, got {short(repr(value), 40)}")
    if value > MAX_FRAME_STACK:
        raise DistillError(f"{where} {value:,} is over the {MAX_FRAME_STACK} frames distill stacks")
    return value


# ------------------------------------------------------------------------------------------ vecnormalize.pkl


class _Record:
    """Stand-in for a pickled object: construction takes nothing, and its state becomes plain attributes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.__dict__.update(state)


class _SavedVecNormalize(_Record):
    pass


class _SavedRunningMeanStd(_Record):
    pass


class _Ignored(_Record):
    """Parts of the save we never use (the spaces and their random generators): absorbed, not built."""

    def __setstate__(self, state: Any) -> None:
        pass


def _ignored(*args: Any) -> _Ignored:
    return _Ignored()


_SPACE_NAMES = {"Box", "Discrete", "MultiDiscrete", "MultiBinary", "Dict", "Tuple", "Text", "Graph", "Sequence"}
_RANDOM = {
    ("numpy.random._pickle", "__generator_ctor"),
    ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__randomstate_ctor"),
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
}
_BIT_GENERATORS = {"PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64", "SeedSequence", "RandomState", "Generator"}
# numpy's own array and scalar reconstruction (numpy 2 and numpy 1 module names).
_NUMPY = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "scalar"),
    ("collections", "OrderedDict"),
}


class _Refused(pickle.UnpicklingError):
    """The pickle names something outside the allow-list."""


class _StatsUnpickler(pickle.Unpickler):
    """What ``VecNormalize.save`` pickles: the wrapper's attributes, RunningMeanStd records, numpy arrays, and
    gymnasium spaces (with their random generators), which are absorbed. Nothing else may be named."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY:
            return super().find_class(module, name)
        if (module, name) == ("stable_baselines3.common.vec_env.vec_normalize", "VecNormalize"):
            return _SavedVecNormalize
        if (module, name) == ("stable_baselines3.common.running_mean_std", "RunningMeanStd"):
            return _SavedRunningMeanStd
        if module.startswith(("gymnasium.spaces.", "gym.spaces.")) and name in _SPACE_NAMES:
            return _Ignored
        if (module, name) in _RANDOM:
            return _ignored
        if module.startswith("numpy.random.") and name in _BIT_GENERATORS:
            return _Ignored
        raise _Refused(f"{module}.{name}")


def read_vecnormalize(path: Path, trust: bool) -> Normalization:
    """The statistics of a ``VecNormalize.save`` file, without running anything from it."""
    raw = read_bounded(path, MAX_STATS_BYTES, "statistics file")  # never a FIFO or /dev/zero
    try:
        try:
            saved: Any = _StatsUnpickler(io.BytesIO(raw)).load()
        except _Refused as error:
            if not trust:
                raise _needs_trust(
                    path, f"it names {error}, which is not VecNormalize statistics; reading it would run its code"
                ) from None
            with _stdout_to_stderr():
                saved = pickle.loads(raw)  # --trust-checkpoint: as VecNormalize.load
    except NeedsTrust:
        raise
    except Exception as error:  # any decoder failure of these bytes means "unreadable"
        raise DistillError(
            f"{path} is not a readable VecNormalize save ({type(error).__name__}: {short(error, 120)})"
        ) from None
    state = getattr(saved, "__dict__", None)
    if not isinstance(state, dict) or ("obs_rms" not in state and "norm_obs" not in state):
        raise DistillError(f"{path} is not a VecNormalize save (VecNormalize.save writes one)")
    norm_obs = state.get("norm_obs", True)
    if not isinstance(norm_obs, bool | np.bool_):
        raise DistillError(f"{path}: norm_obs must be true or false, got {short(repr(norm_obs), 40)}")
    mean: Any = np.zeros(0)
    var: Any = np.ones(0)
    count: Any = 0.0
    if norm_obs:
        rms = state.get("obs_rms")
        if isinstance(rms, dict):
            raise DistillError(f"{path}: statistics per key of a Dict observation space are not supported yet")
        mean, var, count = getattr(rms, "mean", None), getattr(rms, "var", None), getattr(rms, "count", None)
        if not (isinstance(mean, np.ndarray) and isinstance(var, np.ndarray) and isinstance(count, int | float)):
            raise DistillError(f"{path}: its observation statistics (obs_rms) are not arrays and a count")

    def number(key: str, default: float) -> float:
        value = state.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
            raise DistillError(f"{path}: {key} must be a number, got {short(repr(value), 40)}")
        return float(value)

    try:  # an array of strings or objects unpickles as an ndarray too
        mean, var = np.asarray(mean, dtype=np.float64), np.asarray(var, dtype=np.float64)
    except (TypeError, ValueError):
        raise DistillError(f"{path}: its observation statistics (obs_rms) are not arrays of numbers") from None
    normalization = Normalization(
        mean=mean,
        var=var,
        count=float(count),
        norm_obs=bool(norm_obs),
        clip_obs=number("clip_obs", 10.0),
        clip_reward=number("clip_reward", 10.0),
        gamma=number("gamma", 0.99),
        epsilon=number("epsilon", 1e-8),
        raw=raw,
        origin=str(path),
    )
    normalization.check()
    return normalization


# ------------------------------------------------------------------------------------------ the folder


def is_hub_folder(folder: Path) -> bool:
    """A Hugging Face hub repo of an rl-zoo agent, as the hub holds it: the zip and the YAML side by side."""
    return (folder / "args.yml").is_file() and any(folder.glob("*-*.zip"))


def stats_folder(folder: Path) -> Path | None:
    """``<folder>/<EnvName>/`` of an rl-zoo run folder (``<EnvName>_<N>``), or the one subfolder with its YAML, or
    the folder itself where it is a hub repo (``config.yml``, ``args.yml`` beside ``<algo>-<Env>.zip``)."""
    if not folder.is_dir():
        return None
    if is_hub_folder(folder):
        return folder
    name = re.sub(r"_\d+$", "", folder.name)
    candidate = folder / name
    if candidate.is_dir() and any((candidate / f).is_file() for f in ("config.yml", "args.yml")):
        return candidate
    found = [d for d in sorted(folder.iterdir()) if d.is_dir() and (d / "args.yml").is_file()]
    return found[0] if len(found) == 1 else None


def _zips(folder: Path) -> str:
    names = sorted(p.name for p in folder.glob("*.zip"))
    return ", ".join(names) if names else "no .zip at all"


def select_model(path: Path, load_best: bool, load_checkpoint: int) -> tuple[Path, Path | None]:
    """The zip to load for ``--teacher PATH`` (a zip, or an rl-zoo run folder) and the folder's stats dir.

    ``--load-best`` / ``--load-checkpoint N`` pick ``best_model.zip`` / ``rl_model_N_steps.zip`` from the
    folder (the zip's own folder when PATH is a zip), as rl-zoo's ``enjoy`` does.
    """
    if load_best and load_checkpoint:
        raise DistillError("--load-best and --load-checkpoint choose different models: give one of them")
    if load_checkpoint < 0:
        raise DistillError(f"--load-checkpoint must be a positive number of steps, got {load_checkpoint}")
    folder = path if path.is_dir() else path.parent
    stats = stats_folder(folder)
    if path.is_dir() and stats is None:
        raise DistillError(
            f"{path} is a folder but not an rl-zoo run folder (no <EnvName>/config.yml or args.yml inside); "
            "pass the SB3 .zip itself"
        )
    if load_best:
        model = folder / "best_model.zip"
        if not model.is_file():
            raise DistillError(f"--load-best: no best_model.zip in {folder} (it holds {_zips(folder)})")
        return model, stats
    if load_checkpoint:
        model = folder / f"rl_model_{load_checkpoint}_steps.zip"
        if not model.is_file():
            steps = sorted(int(m.group(1)) for p in folder.glob("*.zip") if (m := _CHECKPOINT.fullmatch(p.name)))
            saved = ", ".join(map(str, steps)) if steps else "none"
            raise DistillError(
                f"--load-checkpoint {load_checkpoint}: no {model.name} in {folder} (checkpoints saved: {saved})"
            )
        return model, stats
    if path.is_dir() and stats == folder:  # a hub repo: its one agent zip (not train_eval_metrics.zip)
        agents = sorted(p for p in folder.glob("*-*.zip") if p.name != "train_eval_metrics.zip")
        if len(agents) != 1:
            raise DistillError(f"{folder} holds {_zips(folder)}: expected one <algo>-<Env>.zip")
        return agents[0], stats
    if path.is_dir():
        assert stats is not None
        model = folder / f"{stats.name}.zip"
        if not model.is_file():
            raise DistillError(
                f"{folder} has no final model {model.name} (it holds {_zips(folder)}); "
                "use --load-best or --load-checkpoint N, or pass a zip"
            )
        return model, stats
    return path, stats


def env_id_of(name: str) -> str:
    """rl-zoo's folder name of an env id: ``ALE-Pong-v5`` is ``ALE/Pong-v5`` (the namespace's '/' became '-')."""
    register_hinted(name)
    if name in gym.registry or "-" not in name:
        return name
    namespaced = name.replace("-", "/", 1)
    return namespaced if namespaced in gym.registry else name


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Anything printed while code from a folder runs goes to stderr: stdout is the summary's (``--json``)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)  # also what C extensions write to the descriptor
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _import_packages(value: Any, where: str, trust: bool) -> None:
    """rl-zoo's ``gym_packages``, imported to register their environments. Without --trust-checkpoint only the
    env registries of ENV_PACKAGES; never a ``__main__`` (a program) or a private module; installed ones only."""
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or len(value) > 16:
        raise DistillError(f"{where}: gym_packages must be a list of module names, got {short(repr(value), 80)}")
    for package in value:
        parts = package.split(".")
        if not all(part.isidentifier() for part in parts) or len(package) > 100:
            raise DistillError(f"{where}: gym_packages entry {short(repr(package), 80)} is not a module name")
        if "__main__" in parts or any(part.startswith("_") for part in parts):
            raise DistillError(
                f"{where}: gym_packages entry {package} is a program or a private module, not an env package"
            )
        try:  # the top-level name only: finding a package runs none of its code
            installed = importlib.util.find_spec(parts[0]) is not None
        except (ImportError, ValueError):
            installed = False
        if not installed:
            raise DistillError(f"{where}: gym package {package} cannot be imported (No module named {parts[0]!r})")
        if not trust and package not in ENV_PACKAGES:
            raise DistillError(
                f"{where}: gym_packages entry {package} is not a known env package ({', '.join(ENV_PACKAGES)}); "
                "importing it runs its code: pass --trust-checkpoint if you trust its source"
            )
        try:  # registers the package's environments, as rl-zoo's enjoy does
            with _stdout_to_stderr():
                importlib.import_module(package)
        except ImportError as error:
            raise DistillError(f"{where}: gym package {package} cannot be imported ({short(error, 120)})") from None
        except (Exception, SystemExit) as error:  # trusted code that failed (or exited): one line
            raise DistillError(
                f"{where}: importing gym package {package} failed ({type(error).__name__}: {short(error, 120)})"
            ) from None


def zoo_stack(stats: Path, env: str | None, trust: bool) -> EnvStack:
    """The teacher's env as rl-zoo's ``enjoy`` rebuilds it from ``<EnvName>/args.yml`` and ``config.yml``."""
    args_file, config_file, stats_file = stats / "args.yml", stats / "config.yml", stats / STATS_FILE
    if not stats_file.is_file() and (stats / HUB_STATS_FILE).is_file():
        stats_file = stats / HUB_STATS_FILE
    args = read_yaml(args_file) if args_file.is_file() else {}
    config = read_yaml(config_file) if config_file.is_file() else {}
    used_args = _used(args_file, args, ("env", "env_kwargs", "gym_packages"), trust)
    used = _used(config_file, config, ("env_wrapper", "vec_env_wrapper", "frame_stack", "normalize"), trust)
    _import_packages(used_args["gym_packages"], str(args_file), trust)
    recorded = used_args["env"]
    env_id = env or (recorded if isinstance(recorded, str) and recorded else env_id_of(stats.name))
    register_hinted(env_id)
    env_kwargs = check_env_kwargs(used_args["env_kwargs"], trust, str(args_file))
    # Without config.yml rl-zoo has nothing to say; statistics beside it are still the teacher's.
    normalize = parse_normalize(used["normalize"], str(config_file)) if config else stats_file.is_file()
    if normalize and not stats_file.is_file():
        raise DistillError(f"{config_file} says normalize but {stats_file} is missing (rl-zoo saves it there)")
    return EnvStack(
        env_id,
        env_kwargs=env_kwargs,
        env_wrappers=parse_wrappers(used["env_wrapper"], gym.Wrapper, trust, f"{config_file} env_wrapper"),
        vec_env_wrappers=parse_wrappers(
            used["vec_env_wrapper"], VecEnvWrapper, trust, f"{config_file} vec_env_wrapper"
        ),
        normalization=read_vecnormalize(stats_file, trust) if normalize else None,
        frame_stack=frame_stack_of(used["frame_stack"], f"{config_file} frame_stack"),
        source="rl-zoo",
    )


# ------------------------------------------------------------------------------------------ run directories


def write_env_files(stack: EnvStack, run_dir: Path) -> list[str]:
    """What a user needs beside student.zip to rebuild its env: ``env.json`` and ``vecnormalize.pkl``."""
    if stack.plain:
        return []
    atomic_write_json(run_dir / ENV_FILE, stack.describe())
    written = [ENV_FILE]
    if stack.normalization is not None:
        atomic_write_bytes(run_dir / STATS_FILE, stack.normalization.raw)
        written.append(STATS_FILE)
    return written


def read_env_file(run_dir: Path, env: str | None, trust: bool) -> EnvStack | None:
    """The stack ``write_env_files`` described, or None where the run directory has no ``env.json``."""
    path = run_dir / ENV_FILE
    if not os.path.lexists(path):
        return None
    try:
        data = json.loads(read_bounded(path, MAX_ENV_JSON_BYTES, "env file"))
    except (ValueError, RecursionError):
        raise DistillError(f"{path} is not JSON (distill run writes it)") from None
    if not isinstance(data, dict) or not isinstance(data.get("env_id"), str):
        raise DistillError(f"{path} does not describe an environment (no env_id)")
    env_kwargs = check_env_kwargs(data.get("env_kwargs"), trust, str(path))
    normalize = data.get("normalize")
    return EnvStack(
        env or data["env_id"],
        env_kwargs=env_kwargs,
        env_wrappers=parse_wrappers(data.get("env_wrapper"), gym.Wrapper, trust, f"{path} env_wrapper"),
        vec_env_wrappers=parse_wrappers(data.get("vec_env_wrapper"), VecEnvWrapper, trust, f"{path} vec_env_wrapper"),
        normalization=read_vecnormalize(run_dir / STATS_FILE, trust) if normalize else None,
        frame_stack=frame_stack_of(data.get("frame_stack"), f"{path} frame_stack"),
        source="run directory",
    )
