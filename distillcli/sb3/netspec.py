"""The one grammar of ``--student-net`` (and of ``distill sweep --student-nets`` lists, and of the labels that name
run directories). Plain text in, plain records out: no torch, so the CLI checks it before anything heavy loads."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from distillcli.errors import DistillError, short

MAX_WIDTH = 16_384  # per layer: a student is a deployment network, and a typo must not ask for gigabytes
MAX_LAYERS = 16

_WIDTHS = r"\d+(?:,\d+)*"
_SPEC = re.compile(rf"auto|(?P<mlp>{_WIDTHS})|cnn(?::(?P<features>\d+))?(?:/(?P<layers>{_WIDTHS}))?")


@dataclass(frozen=True)
class NetSpec:
    """``--student-net`` as typed: ``auto``, widths ``32,32``, or a CNN ``cnn[:FEATURES][/WIDTHS]``."""

    kind: Literal["auto", "mlp", "cnn"]
    layers: tuple[int, ...] = ()
    features: int | None = None  # a CNN's features_dim (None: SB3's 512)

    @classmethod
    def parse(cls, text: str, option: str = "--student-net") -> NetSpec:
        spec = text.strip().lower().replace(" ", "")
        match = _SPEC.fullmatch(spec)
        if match is None:
            raise DistillError(
                f"{option} must be layer widths like 32,32, auto, or cnn, cnn:256 or cnn:256/64,64 for images; "
                f"got {short(text, 60)!r}"
            )
        if spec == "auto":
            return cls("auto")
        widths = match.group("mlp") or match.group("layers") or ""
        layers = tuple(int(w) for w in widths.split(",") if w)
        features = int(match.group("features")) if match.group("features") else None
        if any(w <= 0 or w > MAX_WIDTH for w in (*layers, *([features] if features is not None else []))):
            raise DistillError(f"{option} widths must be between 1 and {MAX_WIDTH}, got {short(text, 60)!r}")
        if len(layers) > MAX_LAYERS:
            raise DistillError(f"{option} has {len(layers)} layers; at most {MAX_LAYERS}")
        return cls("mlp" if match.group("mlp") else "cnn", layers, features)

    def __str__(self) -> str:
        widths = ",".join(map(str, self.layers))
        if self.kind != "cnn":
            return self.kind if self.kind == "auto" else widths
        return "cnn" + (f":{self.features}" if self.features else "") + (f"/{widths}" if widths else "")


def parse_nets(text: str, option: str = "--student-nets") -> list[NetSpec]:
    """Student sizes separated by '/', each in the grammar of ``--student-net``. A CNN spec keeps its own '/': the
    widths right after a ``cnn`` part are its layers (``32,32/cnn:256/64,64`` is an MLP and a CNN with a 64,64
    head)."""
    parts = [part.strip() for part in text.split("/")]
    specs: list[str] = []
    for part in parts:
        if specs and specs[-1].lower().startswith("cnn") and "/" not in specs[-1] and re.fullmatch(_WIDTHS, part):
            specs[-1] += f"/{part}"
        else:
            specs.append(part)
    if not specs or not all(specs):
        raise DistillError(
            f"{option} must be student sizes separated by '/', like 32,32/64,64; got {short(text, 60)!r}"
        )
    return [NetSpec.parse(spec, option) for spec in specs]


def net_label(net: Any) -> str:
    """[32, 32] or "32,32" -> "32x32"; "cnn:256/64,64" -> "cnn256-64x64" (what summaries record, as a label)."""
    if isinstance(net, list | tuple):
        return "x".join(str(w) for w in net)
    return str(net).replace(",", "x").replace(" ", "").replace(":", "").replace("/", "-")
