"""``distill export``: build the graph, check it against SB3's ``predict`` on observations from the env, evaluate
it, time it, and only then write the file, its sidecar JSON and the model card (each atomically)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from distillcli import __version__
from distillcli.errors import DistillError, short
from distillcli.export import FORMATS, QUANTIZATIONS, SUFFIXES
from distillcli.export.card import CARD_MARKER, model_card
from distillcli.export.graph import (
    ACTION,
    MASK,
    OBS,
    Deployable,
    action_kind,
    check_exportable_spaces,
    describe_space,
    mask_size,
)
from distillcli.export.latency import act_row, eager_act, one_thread, predict_row, table
from distillcli.export.runtime import OPSET, Act, quantize_int8, runner, serialise
from distillcli.export.source import Observations, Source, collect, episodes_returns, load_source
from distillcli.metrics import atomic_write_bytes, jsonable, read_bounded
from distillcli.stats import score

PARITY_OBSERVATIONS = 1000
BOX_TOLERANCE = 1e-5  # Box actions: max |exported - predict|; discrete actions must be equal
QUANTIZE_TOLERANCE = 0.02  # the int8 model's score may differ from the float model's by at most this
CARD = "README.md"
MAX_CARD_BYTES = 1 << 20  # a model card distill wrote is a few KB


@dataclass
class Parity:
    observations: int
    discrete: bool
    mismatches: int  # observations whose action differs (discrete) or differs by more than the tolerance (Box)
    max_abs_diff: float

    @property
    def ok(self) -> bool:
        return self.mismatches == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "observations": self.observations,
            "discrete": self.discrete,
            "mismatches": self.mismatches,
            "max_abs_diff": self.max_abs_diff,
            "tolerance": 0.0 if self.discrete else BOX_TOLERANCE,
            "reference": "SB3 policy.predict(obs, deterministic=True) on the VecNormalize-normalised observations",
        }


def parity(source: Source, act: Act, obs: Observations) -> Parity:
    """The exported graph on raw observations against ``predict`` on the normalised ones."""
    expected = np.asarray(source.predict()(obs.raw, obs.normalised, obs.masks))
    got = np.asarray(act(obs.raw, obs.masks))
    if got.shape != expected.shape:
        return Parity(len(obs.raw), True, len(obs.raw), math.inf)
    discrete = not isinstance(source.policy.action_space, gym.spaces.Box)
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64)).reshape(len(got), -1).max(axis=1)
    bad = int((diff > (0.0 if discrete else BOX_TOLERANCE)).sum())
    return Parity(len(got), discrete, bad, float(diff.max()) if len(diff) else 0.0)


def default_out(zip_path: Path, fmt: str, quantize: str | None) -> Path:
    return zip_path.with_name(zip_path.stem + (f".{quantize}" if quantize else "") + SUFFIXES[fmt])


def sidecar_path(out: Path) -> Path:
    return out.with_suffix(".json")


def check_outputs(out: Path, fmt: str, force: bool) -> None:
    """Before any work: the output's suffix, what it would replace, and that its folder is writable."""
    if out.suffix != SUFFIXES[fmt]:
        raise DistillError(f"--out {short(out)}: a {fmt} file must end in {SUFFIXES[fmt]}")
    if out.is_dir():
        raise DistillError(
            f"--out {short(out)} is a directory; name the file, e.g. {short(out / ('student' + out.suffix))}"
        )
    card = out.parent / CARD
    for path in (out, sidecar_path(out)):
        if path.exists() and not force:
            raise DistillError(f"{short(path)} already exists (use --force to replace it, or --out)")
    if card.exists() and not force:
        try:  # bounded, and never a FIFO waited on
            ours = CARD_MARKER in read_bounded(card, MAX_CARD_BYTES, "model card").decode(errors="replace")
        except DistillError:
            ours = False
        if not ours:
            raise DistillError(
                f"{short(card)} exists and is not a distill model card (use --force, or another --out folder)"
            )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe = out.parent / f".{out.name}.write-test"
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise DistillError(f"cannot write to {short(out.parent)}: {error.strerror or short(error)}") from None


def _relative(path: Path, start: Path) -> str:
    try:
        return str(path.resolve().relative_to(start.resolve()))
    except ValueError:
        return str(path.resolve())


def export_model(
    model: Path,
    fmt: str,
    out: Path | None,
    *,
    env: str | None = None,
    quantize: str | None = None,
    episodes: int = 10,
    seed: int = 0,
    force: bool = False,
    trust: bool = False,
) -> dict[str, Any]:
    """``distill export``: returns the sidecar (what was written, with the checks' numbers)."""
    from distillcli.run.evaluate import EVAL_SEED_OFFSET, random_return

    if fmt not in FORMATS:
        raise DistillError(f"--format must be one of {', '.join(FORMATS)}, got {short(fmt, 40)!r}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise DistillError(f"--quantize must be one of {', '.join(QUANTIZATIONS)}, got {short(quantize, 40)!r}")
    if quantize is not None and fmt != "onnx":
        raise DistillError("--quantize int8 is onnxruntime's quantisation: use it with --format onnx")
    if not 1 <= episodes <= 100_000:
        raise DistillError(f"--episodes must be between 1 and 100000, got {episodes}")
    if out is not None:
        check_outputs(out, fmt, force)
    if fmt == "onnx":
        from distillcli.export.runtime import require

        require("onnx", "ONNX export")
        require("onnxruntime", "the ONNX parity check")
    restore = one_thread()
    try:
        source = load_source(model, env, trust)
        target = out if out is not None else default_out(source.zip_path, fmt, quantize)
        if out is None:
            check_outputs(target, fmt, force)
        check_exportable_spaces(source.raw_space, source.policy.action_space, source.stack)
        module = Deployable(
            source.policy, source.raw_space, source.stack.normalization, source.transpose, source.masked
        ).eval()
        data = serialise(module, fmt)
        act = runner(data, fmt)
        observations = collect(source, PARITY_OBSERVATIONS, seed)
        check = parity(source, act, observations)
        if not check.ok:
            worst = "" if check.discrete else f", max |difference| {check.max_abs_diff:.3g} > {BOX_TOLERANCE:g}"
            raise DistillError(
                f"parity check failed: on {check.mismatches} of {check.observations} observations the exported "
                f"model's action differs from SB3's predict{worst}; nothing was written"
            )
        eval_seed = seed + EVAL_SEED_OFFSET
        teacher_return = source.summary.get("teacher_return")
        random = random_return(source.stack, episodes, eval_seed)
        zip_returns = episodes_returns(source.stack, source.predict(), episodes, eval_seed, source.masked)
        written, written_act = data, act
        quantization: dict[str, Any] | None = None
        if quantize is not None:
            written = quantize_int8(data)
            written_act = runner(written, fmt)
        returns = episodes_returns(source.stack, _policy(written_act), episodes, eval_seed, source.masked)
        reference = teacher_return if isinstance(teacher_return, int | float) else None
        # Without the teacher's return (a bare zip), the zip itself is the reference of the score: 1 = the zip.
        top = reference if reference is not None else float(np.mean(zip_returns))
        own_score = score(float(np.mean(returns)), top, random)
        zip_score = score(float(np.mean(zip_returns)), top, random)
        if quantize is not None:
            float_returns = episodes_returns(source.stack, _policy(act), episodes, eval_seed, source.masked)
            float_score = score(float(np.mean(float_returns)), top, random)
            quantization = {
                "type": quantize,
                "score": own_score,
                "float_score": float_score,
                "float_return_mean": float(np.mean(float_returns)),
                "tolerance": QUANTIZE_TOLERANCE,
                "score_reference": "teacher" if reference is not None else "the float student",
            }
            if not abs(own_score - float_score) <= QUANTIZE_TOLERANCE:
                raise DistillError(
                    f"--quantize int8: the int8 model scores {own_score:.3f} against the float model's "
                    f"{float_score:.3f} ({episodes} episodes), a difference of {abs(own_score - float_score):.3f} "
                    f"> {QUANTIZE_TOLERANCE}; nothing was written"
                )
        rows = [predict_row(source.policy, "student", observations.normalised, observations.masks)]
        runtime = "onnxruntime int8" if quantize else ("onnxruntime" if fmt == "onnx" else "torchscript")
        rows.append(act_row(runtime, written_act, observations.raw, observations.masks))
        if fmt == "onnx" and quantize is None:
            rows.append(act_row("torch eager", eager_act(module), observations.raw, observations.masks))
    finally:
        restore()
    sidecar = describe(source, module, fmt, target, quantize, check, rows=table(rows), quantization=quantization)
    sidecar["evaluation"] = {
        "episodes": episodes,
        "seed": eval_seed,
        "deterministic": True,
        "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "zip_return_mean": float(np.mean(zip_returns)),
        "zip_return_std": float(np.std(zip_returns)),
        "random_return": random,
        "score": own_score,
        "zip_score": zip_score,
        "score_reference": "teacher" if reference is not None else "the zip (no summary.json with a teacher return)",
    }
    atomic_write_bytes(target, written)
    atomic_write_bytes(sidecar_path(target), (json.dumps(jsonable(sidecar), indent=2) + "\n").encode())
    atomic_write_bytes(target.parent / CARD, model_card(sidecar).encode())
    sidecar["written"] = [str(target), str(sidecar_path(target)), str(target.parent / CARD)]
    return sidecar


def _policy(act: Act) -> Any:
    def policy(raw: np.ndarray, normalised: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
        return act(raw, masks)

    return policy


def _teacher_name(path: Any) -> Any:
    """A bundled teacher by the name --teacher takes (bundled:NAME), not the path inside site-packages."""
    from distillcli.run.setup import bundled_teacher

    if isinstance(path, str) and path.endswith(".zip"):
        name = Path(path).stem
        if Path(path) == bundled_teacher(name):
            return f"bundled:{name}"
    return path


def describe(
    source: Source,
    module: Deployable,
    fmt: str,
    target: Path,
    quantize: str | None,
    check: Parity,
    *,
    rows: list[dict[str, Any]],
    quantization: dict[str, Any] | None,
) -> dict[str, Any]:
    """The sidecar: everything a program needs to feed the graph, and where the model came from."""
    stack = source.stack
    raw = source.raw_space
    action_space = source.policy.action_space
    normalization = stack.normalization
    obs_dtype = np.dtype(getattr(raw, "dtype", None) or np.int64).name
    inputs = [{"name": OBS, "dtype": obs_dtype, "shape": ["batch", *list(raw.shape or ())]}]
    if source.masked:
        inputs.append({"name": MASK, "dtype": "bool", "shape": ["batch", mask_size(action_space)]})
    out_dtype = "float32" if isinstance(action_space, gym.spaces.Box) else "int64"
    outputs = [{"name": ACTION, "dtype": out_dtype, "shape": ["batch", *list(action_space.shape or ())]}]
    environment = {k: v for k, v in stack.describe().items() if k not in ("normalize", "transpose_images")}
    summary, config = source.summary, source.config
    teacher_source = _teacher_name(config.get("teacher") or summary.get("teacher"))
    action = action_kind(source.policy, source.masked)
    policy_space = source.policy.observation_space
    scale = (
        bool(module.normalize_images) and isinstance(policy_space, gym.spaces.Box) and policy_space.dtype == np.uint8
    )
    return {
        "format": fmt,
        "file": target.name,
        "sidecar": sidecar_path(target).name,
        "quantization": quantize,
        "distillcli": __version__,
        "opset": OPSET if fmt == "onnx" else None,
        "inputs": inputs,
        "outputs": outputs,
        "observation_space": describe_space(raw),
        "action_space": describe_space(action_space),
        "preprocessing": {
            "normalize": None
            if normalization is None or not normalization.norm_obs
            else {
                "in_graph": True,
                "formula": "clip((obs - mean) / sqrt(var + epsilon), -clip_obs, clip_obs), in float64",
                "mean": normalization.mean.tolist(),
                "var": normalization.var.tolist(),
                "epsilon": normalization.epsilon,
                "clip_obs": normalization.clip_obs,
            },
            "transpose_images": source.transpose,
            "scale_images": scale,
            "frame_stack": None
            if not stack.frame_stack
            else {
                "frames": stack.frame_stack,
                "in_graph": False,
                "note": "the graph takes the stacked observation as SB3's VecFrameStack gives it: the last frames "
                "concatenated on the last axis, zeros before an episode's first frame",
            },
            "recurrent_state": None,
            "action": {"kind": action.kind, "description": action.description},
            "action_mask": None
            if not source.masked
            else {"input": MASK, "length": mask_size(action_space), "note": "env.action_masks(), flat; True = valid"},
        },
        "env": environment,
        "teacher": {
            "source": teacher_source,
            "algo": summary.get("teacher_algo"),
            "return": summary.get("teacher_return"),
            "params": summary.get("teacher_params"),
        },
        "run": {
            "method": summary.get("method"),
            "env_steps": summary.get("env_steps"),
            "budget": summary.get("budget"),
            "score": summary.get("score"),
            "student_return": summary.get("student_return"),
            "student_return_std": summary.get("student_return_std"),
            "random_return": summary.get("random_return"),
            "seed": summary.get("seed"),
        },
        "student_zip": _relative(source.zip_path, target.parent),
        "student_params": source.student.n_params,
        "parity": check.to_json(),
        "quantization_check": quantization,
        "latency": rows,
    }
