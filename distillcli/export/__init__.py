"""``distill export``: the student as one self-contained graph (ONNX or TorchScript) from the raw env observation to
the env action, checked against SB3's ``predict`` before it is written, with a sidecar JSON and a model card; and
what ``distill eval`` does with an exported file (its return beside the zip's, latency, videos).

Modules: :mod:`~distillcli.export.graph` (the torch module that is exported), :mod:`~distillcli.export.runtime`
(serialising and running the formats; the optional ``export`` extra), :mod:`~distillcli.export.source` (the model,
its env and its run, and the loops that step that env), :mod:`~distillcli.export.exporter` (``distill export``),
:mod:`~distillcli.export.card` (sidecar and model card), :mod:`~distillcli.export.latency`,
:mod:`~distillcli.export.video` and :mod:`~distillcli.export.evaluate` (``distill eval FILE.onnx``).
Nothing here is imported until a command needs it: the CLI's start-up stays light.
"""

from __future__ import annotations

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}
QUANTIZATIONS = ("int8",)
EXPORT_EXTRA = "pip install 'distillcli[export]'"
