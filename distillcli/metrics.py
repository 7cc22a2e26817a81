"""Where a run's numbers go: atomic files, metrics.jsonl, TensorBoard."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, TextIO

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the user's usual mode
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def jsonable(value: Any) -> Any:
    """NaN and inf become null, so every file we write is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(jsonable(data), indent=2) + "\n").encode())


class MetricsSink:
    """One JSON line per update in metrics.jsonl (flushed per line), and TensorBoard scalars if asked."""

    def __init__(self, run_dir: Path, tensorboard: bool) -> None:
        self._file: TextIO = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self._writer: Any = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def write(self, record: dict[str, float], prefix: str = "train") -> None:
        self._file.write(json.dumps(jsonable({"kind": prefix, **record})) + "\n")
        self._file.flush()
        if self._writer is not None:
            step = int(record.get("env_steps", 0))
            for key, value in record.items():
                if key != "env_steps" and isinstance(value, int | float) and math.isfinite(value):
                    self._writer.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()
