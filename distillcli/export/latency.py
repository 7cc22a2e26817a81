"""Inference latency, one observation and a batch of 256, per runtime: SB3's ``predict`` (teacher and student),
the deployable graph in torch (eager and TorchScript) and in onnxruntime, all on one CPU thread."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from distillcli.export.runtime import Act

BATCH = 256


@dataclass
class Row:
    runtime: str  # sb3 predict | torch eager | torchscript | onnxruntime | onnxruntime int8
    model: str  # student | teacher
    single_us: float  # median wall time of one call on one observation, microseconds
    batch_us: float  # median wall time of one call on 256 observations, microseconds

    @property
    def per_observation_us(self) -> float:
        return self.batch_us / BATCH

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "batch": BATCH, "batch_per_observation_us": self.per_observation_us}


def median_us(call: Callable[[], Any], repeats: int, budget_s: float = 0.5) -> float:
    """Median wall time of ``call`` in microseconds, after two warm-up calls; fewer repeats where each call is
    slow (at most about ``budget_s`` seconds in all). NaN where the call fails: a measurement never ends a run."""
    try:
        call()
        start = time.perf_counter()
        call()
        first = time.perf_counter() - start
    except Exception:
        return math.nan
    repeats = max(5, min(repeats, int(budget_s / max(first, 1e-7))))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def one_thread() -> Callable[[], None]:
    """Set torch to one thread; returns the function that restores the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    return lambda: torch.set_num_threads(before)


def predict_row(policy: Any, model: str, normalised: np.ndarray, masks: np.ndarray | None, repeats: int = 300) -> Row:
    """SB3's ``policy.predict(obs, deterministic=True)`` on normalised observations."""
    extra: list[dict[str, Any]] = (
        [{"action_masks": masks[0]}, {"action_masks": masks[:BATCH]}] if masks is not None else [{}, {}]
    )
    single = median_us(lambda: policy.predict(normalised[0], deterministic=True, **extra[0]), repeats)
    batch = median_us(lambda: policy.predict(normalised[:BATCH], deterministic=True, **extra[1]), max(1, repeats // 10))
    return Row("sb3 predict", model, single, batch)


def act_row(runtime: str, act: Act, raw: np.ndarray, masks: np.ndarray | None, repeats: int = 300) -> Row:
    """An exported graph (a numpy runner) on raw observations."""
    single_mask = None if masks is None else masks[:1]
    batch_mask = None if masks is None else masks[:BATCH]
    single = median_us(lambda: act(raw[:1], single_mask), repeats)
    batch = median_us(lambda: act(raw[:BATCH], batch_mask), max(1, repeats // 10))
    return Row(runtime, "student", single, batch)


def eager_act(module: torch.nn.Module) -> Act:
    """The deployable module in eager torch (what TorchScript and ONNX were made from)."""

    @torch.inference_mode()
    def act(obs: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        inputs = [torch.as_tensor(obs)] + ([] if mask is None else [torch.as_tensor(mask)])
        return module(*inputs).numpy()  # type: ignore[no-any-return]

    return act


def table(rows: list[Row]) -> list[dict[str, Any]]:
    return [row.to_json() for row in rows]
