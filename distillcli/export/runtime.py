"""Serialise a :class:`~distillcli.export.graph.Deployable` (ONNX, TorchScript, int8 ONNX) and run the result.

onnx and onnxruntime are the optional ``export`` extra: a missing one is one line naming the extra. Every runner
is a numpy function ``(obs, mask or None) -> actions``, the contract of the exported file.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distillcli.errors import DistillError, short
from distillcli.export import EXPORT_EXTRA
from distillcli.export.graph import ACTION, MASK, OBS, Deployable

OPSET = 17
Act = Callable[[np.ndarray, np.ndarray | None], np.ndarray]


def require(module: str, why: str) -> Any:
    """Import an optional package of the ``export`` extra, or say in one line how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DistillError(f"{why} needs {module.partition('.')[0]}: {EXPORT_EXTRA}") from None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch's exporters warn about their own deprecations and about tracing, onnxruntime's quantiser logs advice
    on the root logger; none of it is the user's business."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def to_onnx(module: Deployable) -> bytes:
    """The module as an ONNX model (opset 17, batch axis dynamic), checked by onnx's own checker."""
    onnx = require("onnx", "ONNX export")
    buffer = io.BytesIO()
    names = module.input_names
    axes = {name: {0: "batch"} for name in [*names, ACTION]}
    try:
        with _quiet(), torch.no_grad():
            torch.onnx.export(
                module.eval(),
                module.example_inputs(2),
                buffer,  # type: ignore[arg-type]  # a file object works, as torch's own docs say
                input_names=names,
                output_names=[ACTION],
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,  # the TorchScript-based exporter: no onnxscript needed, a small static graph
            )
    except Exception as error:  # an exporter failure is a property of this network: name it in one line
        raise DistillError(
            f"torch could not export this student to ONNX ({type(error).__name__}: {short(error)})"
        ) from None
    model = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def to_torchscript(module: Deployable) -> bytes:
    """The module traced to TorchScript (``torch.jit.load`` opens it; no SB3 needed)."""
    buffer = io.BytesIO()
    try:
        with _quiet(), torch.no_grad():
            traced = torch.jit.trace(module.eval(), module.example_inputs(2), check_trace=False)
            torch.jit.save(traced, buffer)
    except Exception as error:
        raise DistillError(f"torch could not trace this student ({type(error).__name__}: {short(error)})") from None
    return buffer.getvalue()


def serialise(module: Deployable, fmt: str) -> bytes:
    return to_onnx(module) if fmt == "onnx" else to_torchscript(module)


def quantize_int8(model: bytes) -> bytes:
    """onnxruntime's dynamic quantisation: int8 weights, activations quantised on the fly (MatMul and Gemm)."""
    require("onnxruntime", "--quantize int8")
    quantization = require("onnxruntime.quantization", "--quantize int8")
    with tempfile.TemporaryDirectory(prefix="distill-quantize-") as folder:
        source, target = Path(folder) / "float.onnx", Path(folder) / "int8.onnx"
        source.write_bytes(model)
        try:
            with _quiet():
                quantization.quantize_dynamic(str(source), str(target), weight_type=quantization.QuantType.QInt8)
        except Exception as error:
            raise DistillError(f"onnxruntime could not quantise this model ({short(error)})") from None
        return target.read_bytes()


def onnx_session(model: bytes | Path, threads: int = 1) -> Any:
    """An onnxruntime session on the CPU with ``threads`` intra-op threads and one inter-op thread."""
    ort = require("onnxruntime", "running an ONNX model")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: no warnings on stderr
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as error:
        name = "the model" if isinstance(model, bytes) else short(model)
        raise DistillError(f"onnxruntime cannot open {name} ({short(error)})") from None


def onnx_runner(model: bytes | Path, threads: int = 1) -> Act:
    session = onnx_session(model, threads)
    masks = [i for i in session.get_inputs() if i.name == MASK]
    width = masks[0].shape[1] if masks else 0

    def act(obs: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        feed = {OBS: obs}
        if masks:  # no mask given: every action valid
            feed[MASK] = np.ones((len(obs), width), dtype=bool) if mask is None else mask.astype(bool)
        return session.run(None, feed)[0]  # type: ignore[no-any-return]

    return act


def torchscript_runner(model: bytes | Path) -> Act:
    try:
        if isinstance(model, bytes):
            module = torch.jit.load(io.BytesIO(model), map_location="cpu")
        else:
            module = torch.jit.load(os.fspath(model), map_location="cpu")
    except Exception as error:
        raise DistillError(f"torch cannot open this TorchScript file ({short(error)})") from None

    @torch.inference_mode()
    def act(obs: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        inputs = [torch.as_tensor(obs)]
        if mask is not None:
            inputs.append(torch.as_tensor(mask.astype(bool)))
        return module(*inputs).numpy()  # type: ignore[no-any-return]

    return act


def runner(model: bytes | Path, fmt: str) -> Act:
    return onnx_runner(model) if fmt == "onnx" else torchscript_runner(model)
