"""Where a run's numbers go: atomic files, metrics.jsonl, TensorBoard; and reading files a user may have replaced
(bounded, regular files only)."""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, TextIO

from distillcli.errors import DistillError, short

METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename: readers never see half a file, and a symbolic link
    at ``path`` is replaced, never written through."""
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


def open_regular(path: Path, flags: int, what: str, mode: int = 0o666) -> int:
    """A descriptor of the regular file at ``path``. O_NONBLOCK: opening a FIFO must not wait for a writer."""
    try:
        fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as error:
        raise DistillError(f"{what} {short(path)} is not readable ({error.strerror or short(error)})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DistillError(f"{what} {short(path)} is not a regular file")
    os.set_blocking(fd, True)
    return fd


def read_bounded(path: Path, cap: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most ``cap`` bytes. A FIFO or a device (``/dev/zero``) is refused without
    being waited on or read, and so is a file larger than ``cap`` (the read itself stops there)."""
    fd = open_regular(path, os.O_RDONLY, what)
    try:
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(cap + 1)
    except OSError as error:
        raise DistillError(f"cannot read {what} {short(path)}: {error.strerror or short(error)}") from None
    if len(data) > cap:
        raise DistillError(f"{what} {short(path)} is over {cap:,} bytes")
    return data


def read_start(path: Path, size: int) -> bytes:
    """The first ``size`` bytes of a regular file (see :func:`read_bounded`)."""
    fd = open_regular(path, os.O_RDONLY, "file")
    try:
        return os.read(fd, size)
    except OSError as error:
        raise DistillError(f"cannot read {short(path)}: {error.strerror or short(error)}") from None
    finally:
        os.close(fd)


def _complete(fd: int) -> int:
    """The size of the file's complete lines: up to and including its last newline."""
    size = end = os.fstat(fd).st_size
    while end > 0:
        start = max(0, end - 65536)
        chunk = os.pread(fd, end - start, start)
        if end == size and chunk.endswith(b"\n"):
            return size
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0


def complete_size(path: Path) -> int:
    """The size of a regular file's complete lines (0 where it cannot be read)."""
    try:
        fd = open_regular(path, os.O_RDONLY, "file")
    except DistillError:
        return 0
    try:
        return _complete(fd)
    finally:
        os.close(fd)


class MetricsSink:
    """One JSON line per update in metrics.jsonl (flushed per line), and TensorBoard scalars if asked. Both are
    written inside the run directory only: a symbolic link or a FIFO in their place is refused."""

    def __init__(self, run_dir: Path, tensorboard: bool) -> None:
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
        fd = open_regular(run_dir / METRICS, flags, "metrics file")
        try:
            # A last line without its newline (a run killed mid-write) is cut: the rows appended now must start on
            # a line of their own, or the first of them would be glued to the broken one and lost with it.
            complete = _complete(fd)
            if complete < os.fstat(fd).st_size:
                os.ftruncate(fd, complete)
        except OSError as error:
            os.close(fd)
            raise DistillError(f"cannot write {short(run_dir / METRICS)}: {error.strerror or short(error)}") from None
        self._file: TextIO | None = os.fdopen(fd, "a", encoding="utf-8")
        self._writer: Any = None
        if tensorboard:
            folder = run_dir / TENSORBOARD
            if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
                self.close()
                raise DistillError(f"{short(folder)} is not a directory of distill's (a link or a file)")
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(folder))

    def __enter__(self) -> MetricsSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, record: dict[str, float], prefix: str = "train") -> None:
        assert self._file is not None, "metrics written after close()"
        self._file.write(json.dumps(jsonable({"kind": prefix, **record})) + "\n")
        self._file.flush()
        if self._writer is not None:
            step = int(record.get("env_steps", 0))
            for key, value in record.items():
                if key != "env_steps" and isinstance(value, int | float) and math.isfinite(value):
                    self._writer.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        """Close both; a second call does nothing."""
        file, self._file = self._file, None
        writer, self._writer = self._writer, None
        if file is not None:
            file.close()
        if writer is not None:
            writer.close()
