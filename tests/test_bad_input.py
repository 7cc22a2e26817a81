"""Every user mistake ends the same way: one line on stderr starting with ``error:``, a non-zero exit, no
traceback, nothing on stdout, and no half-written run directory.

Each ``distill run`` case also passes a tiny budget (``--steps 256``, one evaluation episode) before its own
options, so a mistake that slips through validation costs a second of training instead of minutes.
"""

from __future__ import annotations

import io
import json
import math
import pickle
import shutil
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.policies import ActorCriticPolicy

from distillcli.config import RunConfig
from distillcli.errors import DistillError
from distillcli.sb3.checkpoint import read_checkpoint
from distillcli.sb3.student import resolve_net
from distillcli.sb3.teacher import check_spaces, load_teacher
from tests.test_zoo import _dump, make_zoo_folder


class Result(Protocol):
    """What the ``cli`` fixture of conftest.py returns for one invocation."""

    code: int
    stdout: str
    stderr: str


CLI = Callable[..., Result]
Unreadable = Callable[[Path, bytes], Path]
CUDA = torch.cuda.is_available()
TINY_RUN = ("--quiet", "--steps", "256", "--eval-episodes", "1", "--eval-every", "0")
FUZZ = settings(max_examples=25, deadline=None, derandomize=True)


# ---------------------------------------------------------------------------------------------- bad files


def _rezip(source: Path, target: Path, replace: dict[str, bytes]) -> Path:
    """A copy of the SB3 zip ``source`` with some members' bytes replaced."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for name in old.namelist():
            new.writestr(name, replace.get(name, old.read(name)))
    return target


def _central_directory_entry(raw: bytes, member: str) -> int:
    """Offset of ``member``'s central-directory record in the zip ``raw``."""
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        offset = archive.start_dir
        for info in archive.infolist():
            if info.filename == member:
                return offset
            offset += 46 + len(info.filename.encode()) + len(info.extra) + len(info.comment)
    raise KeyError(member)


def _with_compression(raw: bytes, member: str, method: int) -> bytes:
    """The zip with the compression method of ``member`` in the central directory overwritten."""
    corrupt = bytearray(raw)
    corrupt[_central_directory_entry(raw, member) + 10] = method
    return bytes(corrupt)


@pytest.fixture(scope="session")
def bad(tmp_path_factory: pytest.TempPathFactory, teacher_zip: Path) -> Path:
    """A folder of things that are not usable teachers, named by what is wrong with them."""
    folder = tmp_path_factory.mktemp("bad-files")
    raw = teacher_zip.read_bytes()
    (folder / "empty.zip").write_bytes(b"")
    (folder / "truncated.zip").write_bytes(raw[: len(raw) // 2])
    (folder / "binary.zip").write_bytes(bytes(range(256)) * 64)
    (folder / "notes.txt").write_text("this is a note, not a policy\n")
    with zipfile.ZipFile(folder / "foreign.zip", "w") as archive:
        archive.writestr("hello.txt", "hello")
    _rezip(teacher_zip, folder / "corrupt-data.zip", {"data": b'{"policy_class": {'})
    _rezip(teacher_zip, folder / "list-data.zip", {"data": b"[1, 2, 3]"})
    _rezip(teacher_zip, folder / "bad-weights.zip", {"policy.pth": b"these are not weights"})
    _rezip(teacher_zip, folder / "no-policy-class.zip", {"data": b"{}"})
    with zipfile.ZipFile(teacher_zip) as archive:
        data = json.loads(archive.read("data"))
    data["observation_space"]["_shape"] = 4  # a hand-edited file: a number where SB3 writes a list
    _rezip(teacher_zip, folder / "odd-shape.zip", {"data": json.dumps(data).encode()})
    (folder / "deflate-weights.zip").write_bytes(_with_compression(raw, "policy.pth", zipfile.ZIP_DEFLATED))
    (folder / "lzma-weights.zip").write_bytes(_with_compression(raw, "policy.pth", zipfile.ZIP_LZMA))
    (folder / "empty-dir").mkdir()
    (folder / "model").mkdir()  # a valid checkpoint whose file and folder names name no environment
    (folder / "model" / "student.zip").write_bytes(raw)
    (folder / "unknown-key.json").write_text(json.dumps({"steps": 256, "stepz": 10}))
    (folder / "wrong-type.json").write_text(json.dumps({"steps": "many"}))
    (folder / "null-lr.json").write_text(json.dumps({"lr": None}))
    (folder / "bool-n-envs.json").write_text(json.dumps({"n_envs": True}))
    (folder / "not-json.json").write_text("steps = 256\n")
    (folder / "list.json").write_text("[256]")
    return folder


# ---------------------------------------------------------------------------------------------- the contract


def assert_one_error_line(result: Result, says: str) -> str:
    """The user-facing contract of a mistake; returns the line."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.code != 0, result
    assert result.stdout == "", result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert says in lines[0], lines[0]
    assert result.code == 2, result
    return lines[0]


def _fill(args: tuple[str, ...], **places: Path) -> list[str]:
    return [arg.format(**places) for arg in args]


# (id, options after `distill run <tiny budget> --out OUT`, a fragment the error line must contain)
RUN_CASES = [
    pytest.param(("--teacher", "{tmp}/no-such-teacher.zip"), "teacher checkpoint not found", id="teacher-missing"),
    pytest.param(("--teacher", "{bad}/empty.zip"), "teacher checkpoint is empty", id="teacher-empty"),
    # torch's .pth members are zips too: a truncated checkpoint can end on an inner archive's directory
    pytest.param(("--teacher", "{bad}/truncated.zip"), "SB3 checkpoint", id="teacher-truncated"),
    pytest.param(("--teacher", "{bad}/binary.zip"), "not a valid zip", id="teacher-binary"),
    pytest.param(("--teacher", "{bad}/notes.txt"), "not a valid zip", id="teacher-text"),
    pytest.param(("--teacher", "{bad}/foreign.zip"), "not an SB3 checkpoint", id="teacher-foreign-zip"),
    pytest.param(("--teacher", "{bad}/corrupt-data.zip"), "'data' member is not JSON", id="teacher-corrupt-data"),
    pytest.param(("--teacher", "{bad}/list-data.zip"), "unexpected contents", id="teacher-data-not-object"),
    pytest.param(
        ("--teacher", "{bad}/bad-weights.zip"),
        "not a readable SB3 checkpoint",
        id="teacher-bad-weights",
    ),
    pytest.param(
        ("--teacher", ""),
        "--teacher",
        id="teacher-empty-string",
    ),
    pytest.param(
        ("--teacher", "{bad}/no-policy-class.zip", "--env", "CartPole-v1"), "no policy class", id="teacher-no-class"
    ),
    pytest.param(
        ("--teacher", "{bad}/odd-shape.zip", "--env", "CartPole-v1"),
        "observation_space",
        id="teacher-odd-shape",
    ),
    pytest.param(
        ("--teacher", "{bad}/deflate-weights.zip"),
        "not a readable SB3 checkpoint",
        id="teacher-deflate-garbage",
    ),
    pytest.param(
        ("--teacher", "{bad}/lzma-weights.zip"),
        "not a readable SB3 checkpoint",
        id="teacher-lzma-garbage",
    ),
    pytest.param(("--teacher", "{bad}/empty-dir"), "is a folder", id="teacher-directory"),
    pytest.param(("--method", "expected-entropi"), "expected-entropy", id="method-unknown"),
    pytest.param(("--env", "NoSuchEnv-v9"), "unknown environment id 'NoSuchEnv-v9'", id="env-unknown"),
    pytest.param(("--env", "CartPole-v9"), "did you mean CartPole", id="env-typo"),
    pytest.param(("--env", "MountainCar-v0"), "not trained on this environment", id="env-mountaincar"),
    pytest.param(("--env", "Pendulum-v1"), "not trained on this environment", id="env-pendulum"),
    pytest.param(
        ("--device", "cuda"),
        "CUDA is not available",
        id="device-cuda",
        marks=pytest.mark.skipif(CUDA, reason="this machine has CUDA"),
    ),
    pytest.param(("--device", "tpu"), "--device must be auto, cpu, cuda or cuda:N", id="device-tpu"),
    pytest.param(("--steps", "-5"), "--steps must be positive", id="steps-negative"),
    pytest.param(("--steps", "-5"), "--steps must be positive", id="steps-negative"),
    pytest.param(("--steps", "many"), "Invalid value for '--steps'", id="steps-word"),
    pytest.param(("--steps",), "requires an argument", id="steps-no-value"),
    pytest.param(("--lr", "-1"), "--lr must be a positive number", id="lr-negative"),
    pytest.param(("--lr", "nan"), "--lr must be a positive number", id="lr-nan"),
    pytest.param(("--n-envs", "0"), "--n-envs must be positive", id="n-envs-zero"),
    pytest.param(("--gamma", "1.5"), "--gamma must be in [0, 1]", id="gamma-above-one"),
    pytest.param(("--eval-every", "-1"), "--eval-every must be >= 0", id="eval-every-negative"),
    pytest.param(("--clip-range", "1.5"), "--clip-range must be in (0, 1)", id="clip-range-above-one"),
    pytest.param(("--student-net", "a,b"), "--student-net must be layer widths like 32,32", id="net-words"),
    pytest.param(("--student-net", "0,32"), "--student-net widths must be between 1 and", id="net-zero-width"),
    pytest.param(("--student-net", ""), "--student-net must be layer widths like 32,32", id="net-empty"),
    pytest.param(("--temperature", "0"), "--temperature must be a positive number", id="temperature-zero"),
    pytest.param(("--control", "nobody"), "'nobody' is not one of 'teacher', 'student'", id="control-unknown"),
    pytest.param(("--control", "mix", "--mix", "2.0"), "--mix values must be in [0, 1]", id="mix-above-one"),
    pytest.param(("--control", "mix", "--mix", "nan"), "--mix values must be in [0, 1]", id="mix-nan"),
    pytest.param(("--mix", "1:0:1"), "--mix must be a number or START:END", id="mix-three-parts"),
    pytest.param(("--reward-weight", "x"), "--reward-weight must be a number or START:END", id="reward-weight-word"),
    pytest.param(
        ("--method", "expected-entropy+r", "--reward-weight", "inf"),
        "--reward-weight values must be finite numbers",
        id="reward-weight-inf",
    ),
    pytest.param(
        ("--method", "proximal", "--proximal-lambda", "nan"),
        "--proximal-lambda",
        id="proximal-lambda-nan",
    ),
    pytest.param(
        ("--kl-direction", "sideways"), "'sideways' is not one of 'teacher-student'", id="kl-direction-unknown"
    ),
    pytest.param(
        ("--seed", "-1"),
        "--seed must be in [0, 2**32)",
        id="seed-negative",
    ),
    pytest.param(("--stepz", "10"), "No such option: --stepz", id="option-unknown"),
    pytest.param(("--config", "{tmp}/no-such-config.json"), "config file not found", id="config-missing"),
    pytest.param(("--config", "{bad}/unknown-key.json"), "unknown option 'stepz'", id="config-unknown-key"),
    pytest.param(("--config", "{bad}/wrong-type.json"), "steps must be int, got 'many'", id="config-wrong-type"),
    pytest.param(("--config", "{bad}/not-json.json"), "is not JSON", id="config-not-json"),
    pytest.param(("--config", "{bad}/list.json"), "must hold a JSON object", id="config-not-object"),
    pytest.param(
        ("--config", "{bad}/null-lr.json"),
        "lr",
        id="config-null-value",
    ),
    pytest.param(
        ("--config", "{bad}/bool-n-envs.json"),
        "n_envs must be int",
        id="config-bool-for-int",
    ),
]


@pytest.mark.parametrize(("options", "says"), RUN_CASES)
def test_run_mistake(cli: CLI, tmp_path: Path, bad: Path, options: tuple[str, ...], says: str) -> None:
    out = tmp_path / "out"
    result = cli("run", *TINY_RUN, "--out", out, *_fill(options, tmp=tmp_path, bad=bad))
    assert_one_error_line(result, says)
    assert not out.exists(), sorted(p.name for p in out.iterdir())


# (options after `distill eval`)
EVAL_CASES = [
    pytest.param(("{teacher}", "--episodes", "0"), "--episodes must be between 1 and", id="episodes-zero"),
    pytest.param(("{teacher}", "--episodes", "-3"), "--episodes must be between 1 and", id="episodes-negative"),
    pytest.param(("{tmp}/no-such-student.zip",), "not found", id="model-missing"),
    pytest.param(("{bad}/notes.txt",), "not a valid zip", id="model-text"),
    pytest.param(("{bad}/empty.zip",), "is empty", id="model-empty"),
    pytest.param(("{bad}/empty-dir",), "is a folder", id="model-directory"),
    pytest.param(
        ("{teacher}", "--teacher", "{tmp}/no-such-teacher.zip"), "teacher checkpoint not found", id="teacher-missing"
    ),
    pytest.param(("{bad}/model/student.zip",), "pass --env or --teacher", id="env-not-inferable"),
    pytest.param(("{teacher}", "--env", "NoSuchEnv-v9"), "unknown environment id", id="env-unknown"),
    pytest.param(("{teacher}", "--env", "MountainCar-v0"), "not trained on this environment", id="env-mismatch"),
    pytest.param(
        ("{teacher}", "--device", "cuda"),
        "CUDA is not available",
        id="device-cuda",
        marks=pytest.mark.skipif(CUDA, reason="this machine has CUDA"),
    ),
    pytest.param(
        ("{teacher}", "--device", "tpu"),
        "--device",
        id="device-tpu",
    ),
    pytest.param((), "Missing argument 'model'", id="model-argument-missing"),
]


@pytest.mark.parametrize(("options", "says"), EVAL_CASES)
def test_eval_mistake(
    cli: CLI, tmp_path: Path, bad: Path, teacher_zip: Path, options: tuple[str, ...], says: str
) -> None:
    result = cli("eval", *_fill(options, tmp=tmp_path, bad=bad, teacher=teacher_zip))
    assert_one_error_line(result, says)


def test_unknown_command(cli: CLI) -> None:
    assert_one_error_line(cli("distil"), "No such command 'distil'")


# ---------------------------------------------------------------------------------------------- teacher families
# The rl-zoo folder, CNN and sb3-contrib cases of docs/bad-input.md that tests/test_zoo.py, test_atari.py and
# test_contrib.py do not already check.


class _CustomPolicy(ActorCriticPolicy):
    """A policy class outside SB3: its checkpoint names a class only unpickling can rebuild."""


def _zoo_variant(source: Path, root: Path, name: str, config: dict[str, object] | None = None) -> Path:
    folder = root / name / source.name
    shutil.copytree(source, folder)
    if config is not None:
        _dump(folder / "Pendulum-v1" / "config.yml", config)
    return folder


@pytest.fixture(scope="session")
def families(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rl-zoo folders with one thing wrong each, a SAC teacher (no V_pi) and a custom-policy checkpoint."""
    root = tmp_path_factory.mktemp("families")
    source = make_zoo_folder(root / "source")
    _zoo_variant(source, root, "ok")
    _zoo_variant(source, root, "not-class-path", {"env_wrapper": "TimeLimit"})
    _zoo_variant(source, root, "no-such-wrapper", {"env_wrapper": "gymnasium.wrappers.NoSuchWrapper"})
    _zoo_variant(source, root, "not-vec-wrapper", {"vec_env_wrapper": "gymnasium.wrappers.TimeLimit"})
    _zoo_variant(source, root, "bad-frame-stack", {"frame_stack": -1, "normalize": True})
    stats = _zoo_variant(source, root, "not-vecnormalize") / "Pendulum-v1"
    (stats / "vecnormalize.pkl").write_bytes(pickle.dumps({"norm_obs": True}))
    stats = _zoo_variant(source, root, "bad-yaml") / "Pendulum-v1"
    (stats / "config.yml").write_text("normalize: [true\n")
    stats = _zoo_variant(source, root, "list-yaml") / "Pendulum-v1"
    (stats / "config.yml").write_text("- normalize\n")
    stats = _zoo_variant(source, root, "bad-gym-packages") / "Pendulum-v1"
    text = (stats / "args.yml").read_text()
    assert "- - gym_packages\n    - []" in text
    (stats / "args.yml").write_text(text.replace("- - gym_packages\n    - []", "- - gym_packages\n    - [no_such_pkg]"))
    SAC("MlpPolicy", "Pendulum-v1", seed=0, device="cpu").save(root / "sac-Pendulum-v1.zip")
    PPO(_CustomPolicy, "CartPole-v1", seed=0, device="cpu").save(root / "custom-CartPole-v1.zip")
    return root


FAMILY_CASES = [
    pytest.param(
        ("run", "--teacher", "{zoo}/ok/Pendulum-v1_1", "--load-best", "--load-checkpoint", "1000"),
        "error: --load-best and --load-checkpoint choose different models: give one of them",
        id="load-best-and-checkpoint",
    ),
    pytest.param(
        ("run", "--teacher", "{zoo}/ok/Pendulum-v1_1", "--load-checkpoint", "-1"),
        "error: --load-checkpoint must be a positive number of steps, got -1",
        id="load-checkpoint-negative",
    ),
    pytest.param(
        ("eval", "{zoo}/ok/Pendulum-v1_1", "--load-best"),
        "error: --load-best and --load-checkpoint pick the teacher's model: give --teacher too",
        id="eval-load-best-without-teacher",
    ),
    pytest.param(
        ("run", "--teacher", "{zoo}/not-class-path/Pendulum-v1_1"),
        "config.yml env_wrapper: 'TimeLimit' is not a class path like gymnasium.wrappers.TimeLimit",
        id="wrapper-not-a-class-path",
    ),
    pytest.param(
        ("run", "--teacher", "{zoo}/no-such-wrapper/Pendulum-v1_1"),
        "config.yml env_wrapper: gymnasium.wrappers has no wrapper NoSuchWrapper",
        id="wrapper-missing",
    ),
    pytest.param(
        ("run", "--teacher", "{zoo}/not-vec-wrapper/Pendulum-v1_1"),
        "config.yml vec_env_wrapper: gymnasium.wrappers.TimeLimit is not a VecEnvWrapper",
        id="wrapper-wrong-kind",
    ),
    pytest.param(
        ("run", "--teacher", "{zoo}/bad-frame-stack/Pendulum-v1_1"),
        "config.yml frame_stack must be a non-negative integer, got -1",
        id="frame-stack-negative",
    ),
    pytest.param(
        ("run", "--teacher", "{zoo}/not-vecnormalize/Pendulum-v1_1"),
        "vecnormalize.pkl is not a VecNormalize save (VecNormalize.save writes one)",
        id="stats-not-vecnormalize",
    ),
    pytest.param(
        ("run", "--teacher", "{zoo}/bad-yaml/Pendulum-v1_1"),
        "config.yml is not readable YAML (while parsing a flow sequence)",
        id="yaml-unreadable",
    ),
    pytest.param(
        ("run", "--teacher", "{zoo}/list-yaml/Pendulum-v1_1"),
        "config.yml must hold a mapping of options, got list",
        id="yaml-not-a-mapping",
    ),
    pytest.param(
        ("run", "--teacher", "{zoo}/bad-gym-packages/Pendulum-v1_1"),
        "args.yml: gym package no_such_pkg cannot be imported (No module named 'no_such_pkg')",
        id="gym-package-missing",
    ),
    pytest.param(
        ("run", "--teacher", "{zoo}/sac-Pendulum-v1.zip", "--method", "teacher-v-reward"),
        "error: method teacher-v-reward needs a teacher value function; a SAC teacher has none",
        id="v-pi-method-on-sac",
    ),
    pytest.param(
        ("run", "--teacher", "{zoo}/custom-CartPole-v1.zip"),
        "can only be read by unpickling, which runs code from the file; pass --trust-checkpoint",
        id="custom-policy-class",
    ),
]


@pytest.mark.parametrize(("options", "says"), FAMILY_CASES)
def test_teacher_family_mistake(cli: CLI, tmp_path: Path, families: Path, options: tuple[str, ...], says: str) -> None:
    command, *rest = _fill(options, zoo=families)
    out = tmp_path / "out"
    result = cli(command, *rest, *((*TINY_RUN, "--out", out) if command == "run" else ()))
    assert_one_error_line(result, says)
    assert not out.exists()


def test_cnn_specs_on_images_are_checked(teacher_zip: Path) -> None:
    teacher = load_teacher(
        read_checkpoint(teacher_zip), CARTPOLE.observation_space, CARTPOLE.action_space, torch.device("cpu")
    )
    frames = gym.spaces.Box(0, 255, (4, 84, 84), dtype=np.uint8)
    with pytest.raises(DistillError, match=r"^--student-net must be layer widths like 32,32, auto, or cnn"):
        resolve_net("cnn:wide", teacher.hidden_widths, teacher.policy, frames)
    small = gym.spaces.Box(0, 255, (3, 32, 32), dtype=np.uint8)
    with pytest.raises(DistillError, match=r"NatureCNN needs frames of at least 36x36, these are Box\(3, 32, 32\)"):
        resolve_net("cnn", teacher.hidden_widths, teacher.policy, small)


# ---------------------------------------------------------------------------------------------- the run directory


def test_existing_output_dir_is_untouched(cli: CLI, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "student.zip").write_bytes(b"an earlier student")
    (out / "notes").mkdir()
    (out / "notes" / "todo.txt").write_text("keep me")
    before = {p.relative_to(out): (p.read_bytes() if p.is_file() else None) for p in out.rglob("*")}
    result = cli("run", *TINY_RUN, "--out", out)
    assert_one_error_line(result, "already exists and is not empty (use --force or --out)")
    after = {p.relative_to(out): (p.read_bytes() if p.is_file() else None) for p in out.rglob("*")}
    assert after == before


def test_output_path_is_a_file(cli: CLI, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.write_text("not a folder")
    assert_one_error_line(cli("run", *TINY_RUN, "--out", out), "exists and is not a directory")
    assert out.read_text() == "not a folder"


def test_output_path_under_a_file(cli: CLI, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    out = blocker / "out"
    assert_one_error_line(cli("run", *TINY_RUN, "--out", out), "cannot write to output directory")
    assert blocker.read_text() == "a file where a folder should be"


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder made read-only (0o500); skips where permissions are not enforced (root with CAP_DAC_OVERRIDE)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        (folder / "probe").touch()
    except PermissionError:
        yield folder
    else:
        pytest.skip("file permissions are not enforced for this user (root)")
    finally:
        folder.chmod(0o700)


@pytest.fixture
def unreadable(read_only_dir: Path) -> Iterator[Unreadable]:
    """Write a file, then take away every permission on it (cleaned up with tmp_path's folder)."""
    made: list[Path] = []

    def make(path: Path, content: bytes) -> Path:
        path.write_bytes(content)
        path.chmod(0o000)
        made.append(path)
        return path

    yield make
    for path in made:
        path.chmod(0o600)


def test_unwritable_output_dir(cli: CLI, read_only_dir: Path) -> None:
    out = read_only_dir / "out"
    assert_one_error_line(cli("run", *TINY_RUN, "--out", out), "cannot write to output directory")
    assert not out.exists()


def test_unreadable_teacher(cli: CLI, tmp_path: Path, teacher_zip: Path, unreadable: Unreadable) -> None:
    teacher = unreadable(tmp_path / "ppo-CartPole-v1.zip", teacher_zip.read_bytes())
    out = tmp_path / "out"
    assert_one_error_line(cli("run", *TINY_RUN, "--out", out, "--teacher", teacher), "Permission denied")
    assert not out.exists()


def test_unreadable_config(cli: CLI, tmp_path: Path, unreadable: Unreadable) -> None:
    config = unreadable(tmp_path / "config.json", b"{}")
    out = tmp_path / "out"
    assert_one_error_line(cli("run", *TINY_RUN, "--out", out, "--config", config), "is not readable")
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- properties

CARTPOLE = gym.make("CartPole-v1")


def _load(path: Path) -> None:
    """What `distill run` does with a teacher file before training: read, check, rebuild."""
    checkpoint = read_checkpoint(path)
    check_spaces(checkpoint, CARTPOLE.observation_space, CARTPOLE.action_space, "CartPole-v1")
    load_teacher(checkpoint, CARTPOLE.observation_space, CARTPOLE.action_space, torch.device("cpu"))


@pytest.fixture(scope="session")
def teacher_bytes(teacher_zip: Path) -> bytes:
    return teacher_zip.read_bytes()


@pytest.fixture(scope="session")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "ppo-CartPole-v1.zip"


def _structure(raw: bytes) -> list[int]:
    """Offsets of the zip's headers and central directory: where one flipped byte does the most damage."""
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        offsets = {o for info in archive.infolist() for o in range(info.header_offset, info.header_offset + 30)}
        offsets.update(range(archive.start_dir, len(raw)))
    return sorted(offsets)


@FUZZ
@given(data=st.data())
def test_corrupted_teacher_loads_or_says_why(data: st.DataObject, teacher_bytes: bytes, scratch: Path) -> None:
    raw = bytearray(teacher_bytes)
    anywhere = st.integers(0, len(raw) - 1)
    positions = data.draw(st.lists(st.one_of(anywhere, st.sampled_from(_structure(teacher_bytes))), max_size=4))
    for position in positions:
        raw[position] = data.draw(st.integers(0, 255), label=f"byte at {position}")
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(raw))), label="truncate at")
    scratch.write_bytes(bytes(raw[:cut]))
    try:
        _load(scratch)
    except DistillError as error:
        assert "\n" not in str(error)
        event("DistillError")
    else:
        event("loaded")


@pytest.mark.parametrize(
    ("member", "method"),
    [
        pytest.param("policy.pth", zipfile.ZIP_DEFLATED),
        pytest.param("policy.pth", zipfile.ZIP_LZMA),
        pytest.param("data", zipfile.ZIP_LZMA),
        pytest.param("data", zipfile.ZIP_BZIP2),
        pytest.param("data", 99),
    ],
)
def test_corrupted_compression_method(member: str, method: int, teacher_bytes: bytes, tmp_path: Path) -> None:
    path = tmp_path / "ppo-CartPole-v1.zip"
    path.write_bytes(_with_compression(teacher_bytes, member, method))
    with pytest.raises(DistillError):
        _load(path)


def _number(text: str, kind: type[int] | type[float]) -> float | None:
    try:
        return kind(text)
    except ValueError:
        return None


def _joined(widths: list[int]) -> str:
    return ",".join(map(str, widths))


def _widths(text: str) -> list[int] | None:
    if text.strip().lower() == "auto":
        return [32]
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        return None


OPTION_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=8)


def _mostly(valid: st.SearchStrategy[str], anything: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Three parts valid values, one part anything (so that about a third of the drawn runs are all-valid)."""
    return st.one_of(valid, valid, valid, anything, OPTION_TEXT)


@settings(FUZZ, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=_mostly(st.integers(1, 10**6).map(str), st.integers(-(10**6), 10**6).map(str)),
    lr=_mostly(st.floats(1e-6, 1.0).map(repr), st.floats().map(repr)),
    gamma=_mostly(st.floats(0.0, 1.0).map(repr), st.sampled_from(["nan", "inf", "-0.0", "1e-400", "1.5", "-1"])),
    net=_mostly(
        st.one_of(st.just("auto"), st.lists(st.integers(1, 64), min_size=1, max_size=3).map(_joined)),
        st.lists(st.integers(-2, 64), max_size=3).map(_joined),
    ),
)
@example(steps="1", lr="1e-3", gamma="0.99", net="auto")
@example(steps="0", lr="nan", gamma="2", net="0")
def test_random_options_are_valid_or_one_error(
    cli: CLI, occupied: Path, steps: str, lr: str, gamma: str, net: str
) -> None:
    """Run options either pass every check (and the run then stops at the occupied --out) or give one error."""
    result = cli(
        "run", *TINY_RUN, "--out", occupied, "--steps", steps, "--lr", lr, "--gamma", gamma, "--student-net", net
    )
    line = assert_one_error_line(result, "")
    steps_n, lr_n, gamma_n, widths = _number(steps, int), _number(lr, float), _number(gamma, float), _widths(net)
    valid = (
        steps_n is not None
        and steps_n >= 0  # 0: the task's budget
        and lr_n is not None
        and math.isfinite(lr_n)
        and lr_n >= 0  # 0: the default
        and gamma_n is not None
        and 0 <= gamma_n <= 1
        and bool(widths)
        and all(w > 0 for w in widths or [])
    )
    event("accepted" if valid else "rejected")
    if "already exists and is not empty" in line:
        assert valid, line
    else:
        assert not valid, line
        assert any(option in line for option in ("--steps", "--lr", "--gamma", "--student-net")), line
    assert sorted(p.name for p in occupied.iterdir()) == ["keep.txt"]


@pytest.fixture(scope="session")
def occupied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("occupied")
    (out / "keep.txt").write_text("an earlier run")
    return out


@FUZZ
@given(
    steps=st.integers(-5, 5),
    n_envs=st.integers(-2, 2),
    lr=st.floats(),
    gamma=st.floats(),
    temperature=st.floats(),
    device=st.sampled_from(["auto", "cpu", "cuda", "cuda:0", "tpu", "", "CPU"]),
    control=st.sampled_from([None, "teacher", "student", "uniform", "mix", "nobody"]),
)
def test_validate_accepts_exactly_the_valid_configs(
    steps: int, n_envs: int, lr: float, gamma: float, temperature: float, device: str, control: str | None
) -> None:
    config = RunConfig(
        steps=steps, n_envs=n_envs, lr=lr, gamma=gamma, temperature=temperature, device=device, control=control
    )
    valid = (
        steps > 0
        and n_envs > 0
        and math.isfinite(lr)
        and lr >= 0  # 0: the default
        and 0 <= gamma <= 1
        and math.isfinite(temperature)
        and temperature > 0
        and (device in ("auto", "cpu", "cuda") or device.startswith("cuda:"))
        and control != "nobody"
    )
    if valid:
        config.validate()
    else:
        with pytest.raises(DistillError, match=r"^--[a-z-]+ must "):
            config.validate()
