"""The sidecar JSON (what a program needs to feed the exported graph) and the model card (the Hugging Face hub's
README.md format: YAML front matter with library_name, tags and model-index, then the text)."""

from __future__ import annotations

import json
import math
from typing import Any

from distillcli import __version__

CARD_MARKER = "<!-- written by distill export: replaced when the model is exported again -->"


def _number(value: Any, digits: int = 2) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "n/a"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def _us(value: Any) -> str:
    return "n/a" if not isinstance(value, int | float) or not math.isfinite(value) else f"{value:,.1f} us"


def _yaml_str(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid YAML scalar


def _run_snippet(sidecar: dict[str, Any]) -> str:
    env = sidecar["env"]
    fmt = sidecar["format"]
    name = sidecar["file"]
    masked = any(i["name"] == "action_mask" for i in sidecar["inputs"])
    env_line = f'env = gym.make("{env["env_id"]}")'
    if env.get("env_kwargs"):
        env_line = f'env = gym.make("{env["env_id"]}", **{env["env_kwargs"]!r})'
    mask = (
        '\n        feed["action_mask"] = np.asarray(env.unwrapped.action_masks(), dtype=bool)[None]' if masked else ""
    )
    if fmt != "onnx":
        return (
            "```python\nimport torch\n\n"
            f'policy = torch.jit.load("{name}")  # no SB3 needed\n'
            "action = policy(torch.as_tensor(obs)[None])[0].numpy()  # obs as the env gives it\n```\n"
        )
    wrappers = env.get("env_wrapper") or env.get("vec_env_wrapper") or env.get("frame_stack")
    note = (
        "\n# This env was wrapped in training (see env in the sidecar): wrap it the same way before feeding it.\n"
        if wrappers
        else ""
    )
    return f"""```python
import json

import gymnasium as gym  # only for the environment: the policy needs onnxruntime and numpy alone
import numpy as np
import onnxruntime as ort

meta = json.load(open("{sidecar["sidecar"]}"))
session = ort.InferenceSession("{name}")
dtype = meta["inputs"][0]["dtype"]
{note}{env_line}
obs, _ = env.reset(seed=0)
done, total = False, 0.0
while not done:
    feed = {{"obs": np.asarray(obs, dtype=dtype)[None]}}  # the raw observation: normalisation is in the graph{mask}
    action = session.run(None, feed)[0][0]
    obs, reward, terminated, truncated, _ = env.step(action)
    total += float(reward)
    done = terminated or truncated
print(total)
```
"""


def model_card(sidecar: dict[str, Any]) -> str:
    """README.md for the folder of an exported model (the hub's model-card format)."""
    env_id = sidecar["env"]["env_id"]
    fmt = sidecar["format"]
    evaluation = sidecar.get("evaluation") or {}
    teacher = sidecar.get("teacher") or {}
    run = sidecar.get("run") or {}
    mean = evaluation.get("return_mean")
    std = evaluation.get("return_std")
    reward = f"{_number(mean)} +/- {_number(std)}" if isinstance(mean, int | float) else "n/a"
    library = "onnx" if fmt == "onnx" else "pytorch"
    tags = ["reinforcement-learning", "deep-reinforcement-learning", "stable-baselines3", "distillation", env_id]
    tags += ["onnx"] if fmt == "onnx" else ["torchscript"]
    if sidecar.get("quantization"):
        tags.append("int8")
    name = f"distilled student on {env_id} ({fmt})"
    front = [
        "---",
        f"library_name: {library}",
        "tags:",
        *[f"- {_yaml_str(tag)}" for tag in tags],
        "model-index:",
        f"- name: {_yaml_str(name)}",
        "  results:",
        "  - task:",
        "      type: reinforcement-learning",
        "      name: reinforcement-learning",
        "    dataset:",
        f"      name: {_yaml_str(env_id)}",
        f"      type: {_yaml_str(env_id)}",
        "    metrics:",
        "    - type: mean_reward",
        f"      value: {_yaml_str(reward)}",
        "      name: mean_reward",
        "      verified: false",
        "---",
    ]
    parity = sidecar["parity"]
    latency = {(r["runtime"], r["model"]): r for r in sidecar.get("latency") or []}
    runtime = "onnxruntime int8" if sidecar.get("quantization") else ("onnxruntime" if fmt == "onnx" else "torchscript")
    own = latency.get((runtime, "student"), {})
    sb3 = latency.get(("sb3 predict", "student"), {})
    inputs = ", ".join(f"`{i['name']}` {i['dtype']} {i['shape']}" for i in sidecar["inputs"])
    outputs = ", ".join(f"`{o['name']}` {o['dtype']} {o['shape']}" for o in sidecar["outputs"])
    pre = sidecar["preprocessing"]
    steps = []
    if pre.get("normalize"):
        steps.append("frozen VecNormalize statistics (clip_obs, epsilon as VecNormalize applies them)")
    if pre.get("transpose_images"):
        steps.append("channel-last frames to channel-first")
    if pre.get("scale_images"):
        steps.append("pixels / 255")
    steps.append(pre["action"]["description"])
    frame_stack = pre.get("frame_stack")
    stacked = (
        f"\nThe graph takes the last {frame_stack['frames']} observations stacked on the last axis, as SB3's "
        "`VecFrameStack` gives them (zeros before an episode's first frame): stacking stays outside the graph.\n"
        if frame_stack
        else ""
    )
    masked = (
        "\n`action_mask` is the env's `action_masks()`, flat, True where an action is valid "
        "(MaskablePPO's convention).\n"
        if pre.get("action_mask")
        else ""
    )
    lines = [
        *front,
        "",
        CARD_MARKER,
        "",
        f"# {name}",
        "",
        f"A student policy distilled by [distillcli](https://github.com/distillcli/distillcli) {__version__} and "
        f"exported as one {'ONNX' if fmt == 'onnx' else 'TorchScript'} graph from the raw {env_id} observation "
        "to the env action: no Python RL library is needed to act with it.",
        "",
        "| | |",
        "|---|---|",
        f"| environment | {env_id} |",
        f"| teacher | {teacher.get('algo') or 'n/a'} from `{teacher.get('source') or 'n/a'}` |",
        f"| teacher return | {_number(teacher.get('return'))} |",
        f"| method | {run.get('method') or 'n/a'} |",
        f"| budget | {_number(run.get('env_steps'))} env steps (of {_number(run.get('budget'))}) |",
        f"| score (0 = random, 1 = teacher) | {_number(evaluation.get('score'), 3)} (the zip's: "
        f"{_number(evaluation.get('zip_score'), 3)}) |",
        f"| return, {evaluation.get('episodes', 'n/a')} episodes | {reward} (the zip's: "
        f"{_number(evaluation.get('zip_return_mean'))}) |",
        f"| parameters | {_number(sidecar.get('student_params'))} (teacher: {_number(teacher.get('params'))}) |",
        f"| latency, 1 observation | {_us(own.get('single_us'))} ({runtime}, 1 thread; SB3 predict: "
        f"{_us(sb3.get('single_us'))}) |",
        f"| latency, batch of 256 | {_us(own.get('batch_us'))} (SB3 predict: {_us(sb3.get('batch_us'))}) |",
        f"| quantisation | {sidecar.get('quantization') or 'none (float32)'} |",
        "",
        f"Parity: on {parity['observations']:,} observations from the env the graph's actions "
        f"{'equal' if parity['discrete'] else 'match (max |difference| ' + format(parity['max_abs_diff'], '.2g') + ')'}"
        " SB3's `predict(obs, deterministic=True)` on the student's zip.",
        "",
        "## The graph",
        "",
        f"Inputs: {inputs}. Output: {outputs}.",
        "",
        "Inside: " + "; ".join(steps) + ".",
        stacked,
        masked,
        f"`{sidecar['sidecar']}` beside this file holds the spaces, the preprocessing, the env and these numbers.",
        "",
        "## Run it",
        "",
        _run_snippet(sidecar),
    ]
    return "\n".join(lines).replace("\n\n\n", "\n\n").rstrip() + "\n"
