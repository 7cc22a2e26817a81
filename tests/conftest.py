"""Shared fixtures: run the real ``distill`` entry point in-process and capture what a user would see."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from distillcli.cli import main
from distillcli.run import bundled_teacher


@dataclass
class Result:
    """What one `distill ...` invocation left behind: its exit code and both streams."""

    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


CLI = Callable[..., Result]


def pytest_configure(config: pytest.Config) -> None:
    """Each session gets its own temporary root: pytest otherwise prunes the numbered roots of concurrent sessions
    (two checkouts tested at once), deleting run directories under a running test."""
    if config.option.basetemp is None and not hasattr(config, "workerinput"):
        config.option.basetemp = tempfile.mkdtemp(prefix="distill-tests-")
        config._distill_basetemp = config.option.basetemp  # type: ignore[attr-defined]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The session's own root goes once every test passed (a failure keeps it, to look at)."""
    root = getattr(session.config, "_distill_basetemp", None)
    if root is not None and exitstatus == 0:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> Iterator[None]:
    torch.set_num_threads(1)  # small networks on a shared 2-core machine
    yield


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> CLI:
    """Call ``distill`` exactly as the console script does (sys.argv in, SystemExit out)."""

    def invoke(*args: str | Path) -> Result:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["distill", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return invoke


@pytest.fixture(scope="session")
def teacher_zip() -> Path:
    return bundled_teacher()


@pytest.fixture(scope="session")
def distilled(tmp_path_factory: pytest.TempPathFactory, teacher_zip: Path) -> Path:
    """One default-method run on the bundled teacher, shared by the tests that only read its outputs."""
    out = tmp_path_factory.mktemp("runs") / "default"
    monkey = pytest.MonkeyPatch()
    monkey.setattr(sys, "argv", ["distill", "run", "--out", str(out), "--quiet", "--tensorboard"])
    try:
        main()
    finally:
        monkey.undo()
    return out
