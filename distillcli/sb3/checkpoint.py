"""Read an SB3 ``.zip`` without running anything from it.

An SB3 zip stores its tensors as weights-only ``.pth`` members (safe) and its Python objects (policy class,
spaces, policy_kwargs) as base64 cloudpickle inside the JSON ``data`` member (unsafe: unpickling runs code). Here
nothing is unpickled by default: the policy class is read from the pickle's opcodes without executing them,
``policy_kwargs`` go through an allow-listing unpickler that can name classes but never call them (a
``torch.device`` excepted), the spaces come from the environment (checked against the readable attributes the zip
stores beside each pickle), and only the weights are loaded. ``--trust-checkpoint`` unpickles with cloudpickle,
as ``Model.load`` does, for checkpoints the safe path cannot read.

Every size that a file controls is capped before anything is allocated (member sizes, JSON nesting).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import pickle
import pickletools
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from distillcli.config import check_path
from distillcli.errors import DistillError, short

# Caps on what a checkpoint may make us read: far above any real policy (an Atari CNN is ~7 MB, rl-zoo's largest
# MLPs ~20 MB), far below what hurts a machine.
# The weights are held twice while torch reads them (the member's bytes and the tensors), and JSON objects take
# ~20x their text: these caps keep a hostile file under 1 GB of memory before it is refused.
MAX_DATA_BYTES = 16 << 20  # the JSON `data` member (SB3 writes tens of KB)
MAX_WEIGHTS_BYTES = 256 << 20  # one .pth member
MAX_JSON_DEPTH = 64
MAX_KWARGS_NODES = 10_000  # values in policy_kwargs, counting shared ones each time they are reached

# Modules whose classes policy_kwargs may name without --trust-checkpoint (activation functions, optimisers, SB3's
# feature extractors), by exact class name: naming a class imports it, nothing from the file ever runs.
SAFE_CLASSES = {
    "torch.nn.modules.activation": {
        "ReLU", "Tanh", "ELU", "LeakyReLU", "GELU", "SiLU", "Sigmoid", "Softplus", "SELU", "CELU", "Mish",
        "Hardtanh", "Hardswish", "ReLU6", "PReLU", "Tanhshrink", "Softsign", "LogSigmoid", "Identity",
    },
    "torch.nn.modules.linear": {"Identity"},
    "torch.optim.adam": {"Adam"},
    "torch.optim.adamw": {"AdamW"},
    "torch.optim.rmsprop": {"RMSprop"},
    "torch.optim.sgd": {"SGD"},
    "stable_baselines3.common.sb2_compat.rmsprop_tf_like": {"RMSpropTFLike"},
    "stable_baselines3.common.torch_layers": {
        "FlattenExtractor", "NatureCNN", "CombinedExtractor", "MlpExtractor",
    },
}  # fmt: skip
_SAFE_BUILTINS = {("builtins", "dict"), ("builtins", "list"), ("builtins", "tuple"), ("collections", "OrderedDict")}


class NeedsTrust(DistillError):
    """The checkpoint holds pickled objects the safe loader will not execute."""


def needs_trust(path: Path, what: str) -> NeedsTrust:
    return NeedsTrust(
        f"{path}: {what} can only be read by unpickling, which runs code from the file; "
        "pass --trust-checkpoint if you trust its source"
    )


@dataclass(frozen=True)
class ClassRef:
    """A class named by a pickle: kept as a reference, so the pickle cannot call it."""

    module: str
    name: str

    def resolve(self) -> type:
        import importlib

        return getattr(importlib.import_module(self.module), self.name)  # type: ignore[no-any-return]


def _device(*args: Any) -> torch.device:
    """``torch.device(...)`` as an old checkpoint pickles it: a short string or an index, nothing else."""
    if not (1 <= len(args) <= 2 and all(isinstance(a, str | int) and not isinstance(a, bool) for a in args)):
        raise pickle.UnpicklingError("torch.device with unexpected arguments")
    if any(isinstance(a, str) and len(a) > 16 for a in args):
        raise pickle.UnpicklingError("torch.device with an over-long name")
    return torch.device(*args)


class _AllowListUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_BUILTINS:
            return super().find_class(module, name)
        if (module, name) == ("torch", "device"):
            return _device
        if name in SAFE_CLASSES.get(module, ()):
            return ClassRef(module, name)  # not callable: a pickle that tries to build one fails to load
        raise pickle.UnpicklingError(f"{module}.{name} is not allow-listed")


def _resolve_refs(value: Any, budget: list[int] | None = None) -> Any:
    """The unpickled policy_kwargs with class references imported. A pickle can share one list many times over
    (each level doubling the next), so the walk counts every value it reaches and stops at MAX_KWARGS_NODES."""
    budget = [MAX_KWARGS_NODES] if budget is None else budget
    budget[0] -= 1
    if budget[0] < 0:
        raise pickle.UnpicklingError(f"more than {MAX_KWARGS_NODES:,} values")
    if isinstance(value, ClassRef):
        return value.resolve()
    if isinstance(value, dict):
        return {k: _resolve_refs(v, budget) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_resolve_refs(v, budget) for v in value)
    return value


def global_reference(payload: bytes) -> tuple[str, str] | None:
    """The (module, name) a pickle refers to, if the pickle is nothing but one class reference."""
    strings: list[str] = []
    found: tuple[str, str] | None = None
    try:
        for opcode, arg, _ in pickletools.genops(payload):
            name = opcode.name
            if name in ("PROTO", "FRAME", "MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT", "STOP"):
                continue
            if name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
                strings.append(str(arg))
            elif name == "STACK_GLOBAL" and len(strings) >= 2 and found is None:
                found = (strings[-2], strings[-1])
            elif name == "GLOBAL" and found is None:
                module, _, qualname = str(arg).partition(" ")
                found = (module, qualname)
            else:
                return None  # anything that builds or calls something is not a bare reference
    except (ValueError, EOFError, pickle.UnpicklingError):
        return None
    return found


def serialized(entry: Any) -> bytes | None:
    """The pickle bytes SB3 stored for one ``data`` entry (None for a plain JSON value)."""
    if isinstance(entry, dict) and ":serialized:" in entry:
        try:
            return base64.b64decode(str(entry[":serialized:"]).encode())
        except (binascii.Error, ValueError):
            return None
    return None


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of JSON data, without recursion (a deeply nested file must not blow the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if level > limit:
            return level
        deepest = max(deepest, level)
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


def read_member(archive: zipfile.ZipFile, name: str, cap: int, path: Path) -> bytes:
    """A member's bytes, refusing one that is (or inflates to) more than ``cap``: the size in the zip's
    directory can lie, so the read itself stops at the cap."""
    info = archive.getinfo(name)
    if info.file_size > cap:
        raise DistillError(f"{path}: its '{name}' member is {info.file_size:,} bytes, over the {cap:,} a policy needs")
    with archive.open(info) as member:
        data = member.read(cap + 1)
    if len(data) > cap:
        raise DistillError(f"{path}: its '{name}' member inflates past {cap:,} bytes; refusing it")
    return data


def load_weights(raw: bytes, what: str) -> dict[str, Any]:
    """A ``.pth`` member through torch's weights-only unpickler (tensors and plain containers only)."""
    try:
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as error:  # untrusted bytes: any decoder failure means "not weights"
        raise DistillError(
            f"{what} is not a readable SB3 checkpoint: its weights cannot be loaded safely ({short(error)})"
        ) from None
    if not isinstance(state, dict):
        raise DistillError(f"{what} is not a readable SB3 checkpoint (its weights are not a dict of tensors)")
    return state


@dataclass
class Checkpoint:
    """The readable contents of an SB3 zip: the ``data`` JSON and the policy's weights."""

    path: Path
    data: dict[str, Any]
    policy_state: dict[str, Tensor]
    version: str | None = None  # the SB3 version that wrote it; None for the oldest files, which do not say

    def class_reference(self, key: str = "policy_class") -> tuple[str, str] | None:
        """(module, name) of a class the zip names, read from its pickle without running it."""
        payload = serialized(self.data.get(key))
        return None if payload is None else global_reference(payload)

    @property
    def algo(self) -> str:
        """The algorithm that wrote it (PPO, A2C, TRPO, DQN, ...), from its family and readable keys."""
        from distillcli.sb3.families import family_of_class

        reference = self.class_reference()
        family = None if reference is None else family_of_class(*reference)
        return "unknown" if family is None else family.algo_of(self.data)

    def space_summary(self, key: str) -> dict[str, Any]:
        entry = self.data.get(key)
        return entry if isinstance(entry, dict) else {}

    def recorded_shape(self, key: str) -> list[int] | None:
        """A space's shape from its readable keys (``_shape`` in gymnasium, ``shape`` in gym)."""
        summary = self.space_summary(key)
        shape = summary.get("_shape", summary.get("shape"))
        if isinstance(shape, str):  # gym wrote it as text: "[3]"
            try:
                shape = json.loads(shape)
            except ValueError:
                return None
        if shape is None:
            return None
        if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in shape)):
            raise DistillError(f"{self.path}: the recorded {key} shape {shape!r} is not a list of sizes")
        return shape

    def policy_kwargs(self, trust: bool) -> dict[str, Any]:
        """``policy_kwargs``: plain JSON, or a pickle that names only allow-listed classes (a ``torch.device``)."""
        entry = self.data.get("policy_kwargs", {})
        payload = serialized(entry)
        if payload is None:
            return _plain_kwargs(self.path, entry)
        try:
            kwargs = _resolve_refs(_AllowListUnpickler(io.BytesIO(payload)).load())
        except Exception as error:  # untrusted bytes: whatever the unpickler raises, the safe path is over
            if not trust:
                raise needs_trust(self.path, f"its policy_kwargs ({short(error)})") from None
            import cloudpickle

            kwargs = cloudpickle.loads(payload)
        if not isinstance(kwargs, dict):
            raise DistillError(f"{self.path}: policy_kwargs is not a dict")
        return kwargs


# What plain-JSON policy_kwargs (a hand-edited ``data``) may hold: SB3 pickles classes, so JSON cannot name one.
_CLASS_KWARGS = ("activation_fn", "features_extractor_class", "optimizer_class", "net_arch_class")
_FLAG_KWARGS = ("squash_output", "ortho_init", "share_features_extractor", "normalize_images", "use_sde", "full_std")


def _plain_kwargs(path: Path, entry: Any) -> dict[str, Any]:
    """policy_kwargs written as JSON, checked for the types SB3's constructors need: one line naming the key,
    rather than the constructor's error far from its cause."""
    if not isinstance(entry, dict):
        return {}

    def widths(value: Any) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and widths(v) for k, v in value.items())
        if isinstance(value, list):
            return all(
                (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, dict) and widths(v)) for v in value
            )
        return False

    for key, value in entry.items():
        problem = None
        if key in _CLASS_KWARGS:
            problem = "a class, which plain JSON cannot name"
        elif key in _FLAG_KWARGS and not isinstance(value, bool):
            problem = "true or false"
        elif key == "net_arch" and not widths(value):
            problem = 'layer widths like [64, 64] or {"pi": [64], "vf": [64]}'
        elif key.endswith("_kwargs") and not isinstance(value, dict):
            problem = "a mapping"
        elif key == "log_std_init" and not (isinstance(value, int | float) and not isinstance(value, bool)):
            problem = "a number"
        if problem is not None:
            raise DistillError(
                f"{path}: policy_kwargs {short(key, 40)} must be {problem}, got {short(repr(value), 60)}"
            )
    return dict(entry)


def read_checkpoint(path: Path, role: str = "teacher") -> Checkpoint:
    """Open an SB3 zip without unpickling anything; every failure is a one-line DistillError."""
    check_path(str(path), f"the {role} checkpoint")
    if not path.exists():
        raise DistillError(f"{role} checkpoint not found: {path}")
    if path.is_dir():
        raise DistillError(f"{path} is a folder, not an SB3 .zip checkpoint")
    if not path.is_file():
        raise DistillError(f"{path} is not a regular file")
    if path.stat().st_size == 0:
        raise DistillError(f"{role} checkpoint is empty: {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "data" not in names or "policy.pth" not in names:
                raise DistillError(f"{path} is a zip but not an SB3 checkpoint (no 'data' or 'policy.pth' inside)")
            raw_data = read_member(archive, "data", MAX_DATA_BYTES, path)
            raw_weights = read_member(archive, "policy.pth", MAX_WEIGHTS_BYTES, path)
            version = (
                read_member(archive, "_stable_baselines3_version", 64, path).decode("ascii", "replace").strip()
                if "_stable_baselines3_version" in names
                else None
            )
    except DistillError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, KeyError, NotImplementedError) as error:
        raise DistillError(f"{path} is not a readable SB3 checkpoint (not a valid zip: {short(error)})") from None
    except Exception as error:  # a malformed archive can fail in the decompressor too
        raise DistillError(f"{path} is not a readable SB3 checkpoint (zip: {short(error)})") from None
    try:
        data = json.loads(raw_data)
    except (ValueError, RecursionError):
        raise DistillError(f"{path} is not a readable SB3 checkpoint (its 'data' member is not JSON)") from None
    if not isinstance(data, dict) or _depth(data, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise DistillError(f"{path} is not a readable SB3 checkpoint (unexpected contents)")
    state = load_weights(raw_weights, str(path))
    return Checkpoint(path, data, state, version)
