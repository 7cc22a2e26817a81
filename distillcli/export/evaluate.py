"""What ``distill eval`` does with exports: evaluate an exported file (through onnxruntime or TorchScript) beside
its student.zip, the latency table (``--latency``), and the videos (``--video``) of a zip or an exported file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnvWrapper

from distillcli.envs import EnvStack
from distillcli.errors import DistillError, short
from distillcli.export import SUFFIXES
from distillcli.export.exporter import sidecar_path
from distillcli.export.graph import MASK, Deployable
from distillcli.export.latency import Row, act_row, eager_act, one_thread, predict_row, table
from distillcli.export.runtime import Act, quantize_int8, runner, to_onnx, to_torchscript
from distillcli.export.source import Observations, Policy, Source, collect, episodes_returns, open_env, source_for
from distillcli.metrics import read_bounded
from distillcli.sb3.teacher import Teacher
from distillcli.stats import score

LATENCY_OBSERVATIONS = 256


def exported_format(path: Path) -> str | None:
    """The export format a file name says (``.onnx``, ``.pt``), or None for anything else (an SB3 zip)."""
    return next((fmt for fmt, suffix in SUFFIXES.items() if path.suffix.lower() == suffix), None)


MAX_SIDECAR_BYTES = 1 << 20  # distill export writes a few KB


def read_sidecar(path: Path) -> dict[str, Any]:
    side = sidecar_path(path)
    if not os.path.lexists(side):
        raise DistillError(f"no {side.name} beside {short(path.name, 80)}: distill export writes the two together")
    raw = read_bounded(side, MAX_SIDECAR_BYTES, "export sidecar")  # never a FIFO or /dev/zero
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise DistillError(f"{short(side)} is not JSON (distill export writes it)") from None
    if not isinstance(data, dict) or not isinstance(data.get("env"), dict) or not isinstance(data.get("inputs"), list):
        raise DistillError(f"{short(side)} is not an export sidecar (no env or inputs)")
    return data


def sidecar_stack(data: dict[str, Any], env: str | None, trust: bool, where: str) -> EnvStack:
    """The env the sidecar describes (its statistics are inside the graph, so none here)."""
    from distillcli.envs import register_hinted
    from distillcli.zoo import check_env_kwargs, frame_stack_of, parse_wrappers

    env_id = env or data.get("env_id")
    if not isinstance(env_id, str) or not env_id:
        raise DistillError(f"{where}: no env_id; pass --env")
    register_hinted(env_id)
    # The same checks as a run directory's env.json: no rendering, no paths without the flag, bounded episodes,
    # allow-listed wrappers and their keyword arguments, at most 64 stacked frames.
    return EnvStack(
        env_id,
        env_kwargs=check_env_kwargs(data.get("env_kwargs"), trust, where),
        env_wrappers=parse_wrappers(data.get("env_wrapper"), gym.Wrapper, trust, f"{where} env_wrapper"),
        vec_env_wrappers=parse_wrappers(data.get("vec_env_wrapper"), VecEnvWrapper, trust, f"{where} vec_env_wrapper"),
        frame_stack=frame_stack_of(data.get("frame_stack"), f"{where} frame_stack"),
        source="export sidecar",
    )


def graph_policy(act: Act) -> Policy:
    """An exported graph as an env policy: it reads the raw observations."""

    def policy(raw: np.ndarray, normalised: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
        return act(raw, masks)

    return policy


def predict_policy(teacher: Teacher) -> Policy:
    """Any SB3 policy's ``predict(obs, deterministic=True)`` as an env policy (normalised observations), carrying
    a recurrent policy's state and passing a masked one's action masks: a fresh one per episode."""
    policy = teacher.policy
    state: Any = None
    start = True

    def act(raw: np.ndarray, normalised: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
        nonlocal state, start
        kwargs: dict[str, Any] = {"deterministic": True}
        if teacher.family.masked and masks is not None:
            kwargs["action_masks"] = masks
        if teacher.family.session is not None:
            kwargs.update(state=state, episode_start=np.full(len(normalised), start))
        action, state = policy.predict(normalised, **kwargs)
        start = False
        return np.asarray(action)

    return act


def latency_rows(
    source: Source, teacher: Teacher | None, observations: Observations | None = None, quantized: bool = True
) -> list[Row]:
    """SB3's predict (teacher, student), and the student's graph in eager torch, TorchScript, onnxruntime (and its
    int8 quantisation): one observation and a batch of 256, on one thread."""
    obs = observations or collect(source, LATENCY_OBSERVATIONS, 0)
    restore = one_thread()
    try:
        rows = []
        if teacher is not None:
            rows.append(predict_row(teacher.policy, "teacher", obs.normalised, None))
        rows.append(predict_row(source.policy, "student", obs.normalised, obs.masks))
        module = Deployable(
            source.policy, source.raw_space, source.stack.normalization, source.transpose, source.masked
        ).eval()
        rows.append(act_row("torch eager", eager_act(module), obs.raw, obs.masks))
        rows.append(act_row("torchscript", runner(to_torchscript(module), "torchscript"), obs.raw, obs.masks))
        model = to_onnx(module)
        rows.append(act_row("onnxruntime", runner(model, "onnx"), obs.raw, obs.masks))
        if quantized:
            rows.append(act_row("onnxruntime int8", runner(quantize_int8(model), "onnx"), obs.raw, obs.masks))
    finally:
        restore()
    return rows


def evaluate_exported(
    path: Path,
    teacher_path: str | None,
    env: str | None,
    episodes: int,
    seed: int,
    trust: bool,
    *,
    device_name: str = "auto",
    latency: bool = False,
    video: Path | None = None,
    video_episodes: int = 1,
) -> dict[str, Any]:
    """``distill eval FILE.onnx|FILE.pt``: the exported model's return and score beside its student.zip's, on the
    same seeds (the zip from the sidecar; the env from the zip's run directory, the teacher's, or the sidecar)."""
    from distillcli.run.evaluate import EVAL_SEED_OFFSET, evaluate, random_return
    from distillcli.run.setup import prepare, say

    fmt = exported_format(path)
    assert fmt is not None
    if not path.is_file():
        raise DistillError(f"model not found: {short(path)}")
    if fmt == "torchscript" and not trust:
        # PyTorch's security policy: loading a TorchScript file is running its code.
        raise DistillError(
            f"{short(path.name, 80)} is TorchScript, a program that runs when loaded; evaluate it with "
            "--trust-checkpoint if you trust whoever made it, or evaluate the .onnx export"
        )
    data = read_sidecar(path)
    act = runner(path, fmt)
    source: Source | None = None
    zip_name = data.get("student_zip")
    zip_path = (path.parent / zip_name) if isinstance(zip_name, str) else None
    if zip_path is not None and zip_path.is_file():
        from distillcli.export.source import load_source

        recorded = data["env"].get("env_id")
        source = load_source(zip_path, env or (recorded if isinstance(recorded, str) else None), trust)
        say(source.notices)
    setup = None
    if teacher_path is not None:
        setup = prepare(teacher_path, env, device_name, trust=trust)
        say(setup.notices)
        stack = setup.stack
    elif source is not None:
        stack = source.stack
    else:
        stack = sidecar_stack(data["env"], env, trust, str(sidecar_path(path)))
    masked = any(isinstance(i, dict) and i.get("name") == MASK for i in data["inputs"])
    _check_input(stack, data)
    eval_seed = seed + EVAL_SEED_OFFSET
    returns = episodes_returns(stack, graph_policy(act), episodes, eval_seed, masked)
    random = random_return(stack, episodes, eval_seed)
    report: dict[str, Any] = {
        "model": str(path),
        "format": fmt,
        "quantization": data.get("quantization"),
        "env_id": stack.env_id,
        "episodes": episodes,
        "deterministic": True,
        "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "random_return": random,
    }
    teacher_return = (data.get("teacher") or {}).get("return")
    if setup is not None:

        def eval_env(n: int) -> Any:
            return stack.make(n, eval_seed)

        result = evaluate(setup.teacher, eval_env, episodes, setup.device)
        teacher_return = result.mean
        report.update(teacher=str(setup.checkpoint.path), teacher_return_mean=result.mean)
    top = teacher_return if isinstance(teacher_return, int | float) else None
    report["teacher_return"] = top
    report["score"] = score(report["return_mean"], top, random) if top is not None else None
    if source is not None:
        zip_returns = episodes_returns(stack, source.predict(), episodes, eval_seed, source.masked)
        zip_mean = float(np.mean(zip_returns))
        report.update(
            zip=str(source.zip_path),
            zip_return_mean=zip_mean,
            zip_return_std=float(np.std(zip_returns)),
            zip_score=score(zip_mean, top, random) if top is not None else None,
            return_difference=report["return_mean"] - zip_mean,
        )
        if top is not None:
            report["score_difference"] = report["score"] - report["zip_score"]
    else:
        report["zip"] = None  # the sidecar's student.zip is not there: the exported model is evaluated alone
    if latency:
        restore = one_thread()
        try:
            rows: list[Row] = []
            obs = collect(source, LATENCY_OBSERVATIONS, 0) if source is not None else None
            if setup is not None and obs is not None:
                rows.append(predict_row(setup.teacher.policy, "teacher", obs.normalised, None))
            if source is not None and obs is not None:
                rows.append(predict_row(source.policy, "student", obs.normalised, obs.masks))
                raw, masks = obs.raw, obs.masks
            else:
                raw, masks = _sample_inputs(stack, masked)
            runtime = "onnxruntime" if fmt == "onnx" else "torchscript"
            if data.get("quantization"):
                runtime += f" {data['quantization']}"
            rows.append(act_row(runtime, act, raw, masks))
        finally:
            restore()
        report["latency"] = table(rows)
    if video is not None:
        from distillcli.export.video import record

        teacher = setup.teacher if setup is not None else None
        report["video"] = record(
            video,
            stack,
            lambda: graph_policy(act),
            video_episodes,
            eval_seed,
            student_masked=masked,
            teacher=(lambda: predict_policy(teacher)) if teacher is not None else None,
            teacher_masked=teacher is not None and teacher.family.masked,
        )
    return report


def _check_input(stack: EnvStack, data: dict[str, Any]) -> None:
    """The env's raw observations must have the shape the graph takes (a sidecar of another env, --env)."""
    expected = data["inputs"][0].get("shape", [])[1:] if isinstance(data["inputs"][0], dict) else []
    probe = open_env(stack, 1, 0)
    try:
        shape = list(probe.observation_space.shape or ())
    finally:
        probe.close()
    if expected != shape:
        raise DistillError(
            f"the exported model takes observations of shape {tuple(expected)} but {stack.env_id} gives "
            f"{tuple(shape)}: it was exported for another environment (use --env, or --teacher)"
        )


def _sample_inputs(stack: EnvStack, masked: bool) -> tuple[np.ndarray, np.ndarray | None]:
    from distillcli.export.source import env_masks

    venv = open_env(stack, 1, 0)
    try:
        obs = np.asarray(venv.reset())
        masks = env_masks(venv) if masked else None
    finally:
        venv.close()
    reps = (LATENCY_OBSERVATIONS,) + (1,) * (obs.ndim - 1)
    return np.tile(obs, reps), None if masks is None else np.tile(masks, (LATENCY_OBSERVATIONS, 1))


def zip_extras(
    model: Path,
    checkpoint: Any,
    stack: EnvStack,
    teacher: Teacher | None,
    trust: bool,
    *,
    seed: int,
    latency: bool,
    video: Path | None,
    video_episodes: int,
) -> dict[str, Any]:
    """``distill eval student.zip --latency / --video``: the latency table, and the video (student, teacher)."""
    from distillcli.run.evaluate import EVAL_SEED_OFFSET

    source = source_for(model, checkpoint, stack, trust, exportable=latency)
    out: dict[str, Any] = {}
    if latency:
        out["latency"] = table(latency_rows(source, teacher))
    if video is not None:
        from distillcli.export.video import record

        student = source.student
        out["video"] = record(
            video,
            stack,
            lambda: predict_policy(student),
            video_episodes,
            seed + EVAL_SEED_OFFSET,
            student_masked=source.masked,
            teacher=(lambda: predict_policy(teacher)) if teacher is not None else None,
            teacher_masked=teacher is not None and teacher.family.masked,
        )
    return out
