"""The wheel as users get it, ``python -m distillcli``, and shell completion.

The editable install the other tests run under imports distillcli from the checkout, so it cannot see a package or
data file that the wheel leaves out; these tests build the wheel and look inside. (scripts/check_install.sh goes
further: it installs the wheel into a fresh venv and runs ``distill`` from there.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from email.message import Message
from email.parser import Parser
from pathlib import Path

import pytest

import distillcli

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "distillcli"
EXE = Path(sys.executable).with_name("distill")  # the console script of this environment


def _source_files() -> list[Path]:
    """The checkout's files as a clean clone would have them: tracked, or new and not ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    if listed.returncode == 0 and listed.stdout:
        names = [Path(n) for n in listed.stdout.decode().split("\0") if n]
    else:  # not a git checkout (an unpacked sdist): everything but what a build or a test run leaves
        skip = {"build", "dist", ".venv", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", "runs"}
        names = [
            p.relative_to(ROOT)
            for p in ROOT.rglob("*")
            if p.is_file() and not skip & set(p.relative_to(ROOT).parts) and ".egg-info" not in str(p)
        ]
    return [n for n in names if (ROOT / n).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the wheel from a copy of the checkout.

    A build in the checkout itself would reuse build/ and distillcli.egg-info/SOURCES.txt, whose stale entries
    can put a package into the wheel that the configuration leaves out.
    """
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for name in _source_files():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src), "-w", str(tmp)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"pip wheel failed:\n{done.stdout}\n{done.stderr}"
    (built,) = tmp.glob("distillcli-*.whl")
    return built


def _metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return Parser().parsestr(archive.read(name).decode())


def test_wheel_holds_every_package_and_data_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = sorted(p.parent for p in PACKAGE.rglob("__init__.py") if "__pycache__" not in p.parts)
    assert {PACKAGE / "sb3", PACKAGE / "run", PACKAGE / "studies"} <= set(packages)  # subpackages, found
    missing = []
    for package in packages:
        modules = list(package.glob("*.py"))
        missing += [str(p.relative_to(ROOT)) for p in modules if str(p.relative_to(ROOT)) not in names]
    data = [p for p in (PACKAGE / "data").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert any(p.suffix == ".zip" for p in data), "no bundled teacher in distillcli/data"
    missing += [str(p.relative_to(ROOT)) for p in data if str(p.relative_to(ROOT)) not in names]
    missing += [n for n in ("distillcli/py.typed",) if n not in names]
    assert not missing, f"the wheel leaves out: {', '.join(missing)}"
    assert not [n for n in names if n.startswith("tests/") or "__pycache__" in n or n.endswith(".pyc")]


def test_wheel_metadata(wheel: Path) -> None:
    metadata = _metadata(wheel)
    assert metadata["Name"] == "distillcli"
    assert metadata["Version"] == distillcli.__version__
    assert metadata["License-Expression"] == "MIT"
    assert metadata["License-File"] == "LICENSE"
    assert "License" not in metadata  # the deprecated free-text field is gone
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL") or [])
    assert {"Homepage", "Documentation", "Issues", "Changelog"} <= set(urls)
    classifiers = metadata.get_all("Classifier") or []
    assert "License :: OSI Approved :: MIT License" not in classifiers  # PEP 639: the expression says it
    assert "Typing :: Typed" in classifiers
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in zipfile.ZipFile(wheel).namelist())
    entry_points = next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith("entry_points.txt"))
    assert "distill = distillcli.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_python_m_distillcli(tmp_path: Path) -> None:
    version = subprocess.run(
        [sys.executable, "-m", "distillcli", "--version"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"distill {distillcli.__version__}"
    helped = subprocess.run(
        [sys.executable, "-m", "distillcli", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb"},
    )
    assert helped.returncode == 0, helped.stderr
    assert "Usage: distill " in helped.stdout  # named as the console script, not "python -m distillcli"


def test_console_script_version(tmp_path: Path) -> None:
    done = subprocess.run([EXE, "--version"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"distill {distillcli.__version__}"


def _completion_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PATH": f"{EXE.parent}{os.pathsep}{os.environ.get('PATH', '')}", **extra}


def test_show_completion_bash(tmp_path: Path) -> None:
    # Typer's --show-completion takes a shell name only when shell detection is off; otherwise it detects it.
    env = _completion_env(_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1")
    done = subprocess.run(
        [EXE, "--show-completion", "bash"], cwd=tmp_path, capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "complete -o default -F _distill_completion distill" in done.stdout
    assert "_DISTILL_COMPLETE=complete_bash" in done.stdout


def _complete(tmp_path: Path, words: str) -> list[str]:
    """Ask the console script for completions, as the bash completion function does."""
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)  # the word being completed, maybe a new one
    env = _completion_env(_DISTILL_COMPLETE="complete_bash", COMP_WORDS=words, COMP_CWORD=str(cword))
    done = subprocess.run([EXE], cwd=tmp_path, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_completion_request(tmp_path: Path) -> None:
    assert _complete(tmp_path, "distill ru") == ["run"]
    assert {"run", "eval", "methods", "recommend", "paper", "sweep", "report"} <= set(_complete(tmp_path, "distill "))
    assert {"--steps", "--student-net"} <= set(_complete(tmp_path, "distill run --st"))


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completion_script_completes(tmp_path: Path) -> None:
    """Source the printed script in bash and call its function as bash's `complete` would."""
    script = (
        "source <(_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION=1 distill --show-completion bash)\n"
        "COMP_WORDS=(distill recom); COMP_CWORD=1\n"
        "_distill_completion distill\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=_completion_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["recommend"]
