"""rl-baselines3-zoo run folders: which zip to load, and the environment stack the teacher was trained behind.

A folder ``logs/<algo>/<EnvName>_<N>/`` holds ``<EnvName>.zip`` (the final model), ``best_model.zip``,
``rl_model_<steps>_steps.zip`` checkpoints and a subfolder ``<EnvName>/`` with ``config.yml`` (hyperparameters:
``env_wrapper``, ``vec_env_wrapper``, ``frame_stack``, ``normalize``), ``args.yml`` (``env``, ``env_kwargs``,
``gym_packages``) and ``vecnormalize.pkl``. rl-zoo reads these with yaml's unsafe loader, ``eval`` and
``pickle``; here nothing runs without ``--trust-checkpoint``: the YAML goes through a safe loader that knows
only rl-zoo's OrderedDict tag, ``normalize`` strings through ``ast``, wrapper classes through an allow-list of
library modules, and ``vecnormalize.pkl`` through an unpickler that builds nothing but arrays and plain records.
"""

from __future__ import annotations

import ast
import importlib
import io
import json
import pickle
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import yaml
from stable_baselines3.common.vec_env import VecEnvWrapper

from distillcli.envs import EnvStack, Normalization, Wrapper, register_hinted, resolve_class
from distillcli.errors import DistillError
from distillcli.metrics import atomic_write_bytes, atomic_write_json
from distillcli.sb3.checkpoint import NeedsTrust

ENV_FILE = "env.json"
STATS_FILE = "vecnormalize.pkl"
HUB_STATS_FILE = "vec_normalize.pkl"  # the same statistics, as rl-zoo's push_to_hub names them on the hub
_CHECKPOINT = re.compile(r"rl_model_(\d+)_steps\.zip")


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


def read_yaml(path: Path) -> dict[str, Any]:
    """A zoo YAML file as a dict; Python objects other than OrderedDict stay :class:`Opaque`."""
    try:
        data = yaml.load(path.read_text(), Loader=_ZooLoader)  # a SafeLoader subclass: constructs only data
    except (OSError, UnicodeDecodeError) as error:
        raise DistillError(f"cannot read {path}: {error}") from None
    except yaml.YAMLError as error:
        raise DistillError(f"{path} is not readable YAML ({str(error).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DistillError(f"{path} must hold a mapping of options, got {type(data).__name__}")
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
    with path.open() as handle:
        full = yaml.load(handle, Loader=yaml.UnsafeLoader)  # --trust-checkpoint: rl-zoo's own load
    return {key: full.get(key) for key in keys}


def parse_normalize(value: Any, where: str) -> bool:
    """rl-zoo's ``normalize``: a bool, or a string of VecNormalize kwargs (a dict literal or ``dict(...)``)."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, dict):
        return True
    if not isinstance(value, str):
        raise DistillError(f"{where}: normalize must be true/false or a dict of VecNormalize options, got {value!r}")
    try:
        kwargs = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        kwargs = _dict_call(value)
    if not isinstance(kwargs, dict):
        raise DistillError(f"{where}: normalize {value!r} is not a dict like {{'norm_obs': True}}")
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


def parse_wrappers(value: Any, base: type, trust: bool, where: str) -> list[Wrapper]:
    """rl-zoo's ``env_wrapper`` / ``vec_env_wrapper``: a class path, or a list of paths or {path: kwargs}."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    wrappers = []
    for item in items:
        kwargs: Any = {}
        if isinstance(item, str):
            path = item
        elif isinstance(item, dict) and len(item) == 1:
            path, kwargs = next(iter(item.items()))
            kwargs = {} if kwargs is None else kwargs
        else:
            raise DistillError(f"{where}: {item!r} is not a wrapper class path or {{class_path: kwargs}}")
        if not isinstance(path, str) or not isinstance(kwargs, dict):
            raise DistillError(f"{where}: the wrapper {item!r} needs a class path and a mapping of kwargs")
        wrappers.append(Wrapper(path, resolve_class(path, base, trust, where), dict(kwargs)))
    return wrappers


def _frame_stack(value: Any, where: str) -> int:
    if value is None or value is False:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DistillError(f"{where} must be a non-negative integer, got {value!r}")  # where: "<file> frame_stack"
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
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DistillError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        try:
            saved: Any = _StatsUnpickler(io.BytesIO(raw)).load()
        except _Refused as error:
            if not trust:
                raise _needs_trust(
                    path, f"it names {error}, which is not VecNormalize statistics; reading it would run its code"
                ) from None
            saved = pickle.loads(raw)  # --trust-checkpoint: as VecNormalize.load
    except NeedsTrust:
        raise
    except Exception as error:  # any decoder failure of these bytes means "unreadable"
        raise DistillError(f"{path} is not a readable VecNormalize save ({type(error).__name__}: {error})") from None
    state = getattr(saved, "__dict__", None)
    if not isinstance(state, dict) or ("obs_rms" not in state and "norm_obs" not in state):
        raise DistillError(f"{path} is not a VecNormalize save (VecNormalize.save writes one)")
    norm_obs = state.get("norm_obs", True)
    if not isinstance(norm_obs, bool | np.bool_):
        raise DistillError(f"{path}: norm_obs must be true or false, got {norm_obs!r}")
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
            raise DistillError(f"{path}: {key} must be a number, got {value!r}")
        return float(value)

    normalization = Normalization(
        mean=np.asarray(mean, dtype=np.float64),
        var=np.asarray(var, dtype=np.float64),
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


def _import_packages(value: Any, where: str) -> None:
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DistillError(f"{where}: gym_packages must be a list of module names, got {value!r}")
    for package in value:
        if not all(part.isidentifier() for part in package.split(".")):
            raise DistillError(f"{where}: gym_packages entry {package!r} is not a module name")
        try:  # registers the package's environments, as rl-zoo's enjoy does; only installed packages
            importlib.import_module(package)
        except ImportError as error:
            raise DistillError(f"{where}: gym package {package} cannot be imported ({error})") from None


def zoo_stack(stats: Path, env: str | None, trust: bool) -> EnvStack:
    """The teacher's env as rl-zoo's ``enjoy`` rebuilds it from ``<EnvName>/args.yml`` and ``config.yml``."""
    args_file, config_file, stats_file = stats / "args.yml", stats / "config.yml", stats / STATS_FILE
    if not stats_file.is_file() and (stats / HUB_STATS_FILE).is_file():
        stats_file = stats / HUB_STATS_FILE
    args = read_yaml(args_file) if args_file.is_file() else {}
    config = read_yaml(config_file) if config_file.is_file() else {}
    used_args = _used(args_file, args, ("env", "env_kwargs", "gym_packages"), trust)
    used = _used(config_file, config, ("env_wrapper", "vec_env_wrapper", "frame_stack", "normalize"), trust)
    _import_packages(used_args["gym_packages"], str(args_file))
    recorded = used_args["env"]
    env_id = env or (recorded if isinstance(recorded, str) and recorded else env_id_of(stats.name))
    register_hinted(env_id)
    env_kwargs = used_args["env_kwargs"] or {}
    if not isinstance(env_kwargs, dict):
        raise DistillError(f"{args_file}: env_kwargs must be a mapping, got {env_kwargs!r}")
    # Without config.yml rl-zoo has nothing to say; statistics beside it are still the teacher's.
    normalize = parse_normalize(used["normalize"], str(config_file)) if config else stats_file.is_file()
    if normalize and not stats_file.is_file():
        raise DistillError(f"{config_file} says normalize but {stats_file} is missing (rl-zoo saves it there)")
    return EnvStack(
        env_id,
        env_kwargs=dict(env_kwargs),
        env_wrappers=parse_wrappers(used["env_wrapper"], gym.Wrapper, trust, f"{config_file} env_wrapper"),
        vec_env_wrappers=parse_wrappers(
            used["vec_env_wrapper"], VecEnvWrapper, trust, f"{config_file} vec_env_wrapper"
        ),
        normalization=read_vecnormalize(stats_file, trust) if normalize else None,
        frame_stack=_frame_stack(used["frame_stack"], f"{config_file} frame_stack"),
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
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        raise DistillError(f"{path} is not JSON (distill run writes it)") from None
    if not isinstance(data, dict) or not isinstance(data.get("env_id"), str):
        raise DistillError(f"{path} does not describe an environment (no env_id)")
    env_kwargs = data.get("env_kwargs") or {}
    if not isinstance(env_kwargs, dict):
        raise DistillError(f"{path}: env_kwargs must be a mapping")
    normalize = data.get("normalize")
    return EnvStack(
        env or data["env_id"],
        env_kwargs=env_kwargs,
        env_wrappers=parse_wrappers(data.get("env_wrapper"), gym.Wrapper, trust, f"{path} env_wrapper"),
        vec_env_wrappers=parse_wrappers(data.get("vec_env_wrapper"), VecEnvWrapper, trust, f"{path} vec_env_wrapper"),
        normalization=read_vecnormalize(run_dir / STATS_FILE, trust) if normalize else None,
        frame_stack=_frame_stack(data.get("frame_stack"), f"{path} frame_stack"),
        source="run directory",
    )
