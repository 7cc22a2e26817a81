"""The security review of issue #17, as tests: what an untrusted checkpoint, rl-zoo folder, run directory or config
file can make distill do, and what it cannot. docs/security.md names these tests beside each promise.

Every attack's payload is real: where it is refused, a test shows elsewhere (or the library's own loader shows)
that it would have run. "Refused" always means: one ``error:`` line on stderr, a non-zero exit, no traceback,
nothing on stdout, and no file written outside the run directory (a marker file the payload would create).
"""

from __future__ import annotations

import base64
import errno
import fcntl
import io
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from stable_baselines3 import PPO

from distillcli.config import RunConfig
from distillcli.errors import DistillError
from tests.conftest import CLI, Result
from tests.test_bad_input import _central_directory_entry, _rezip
from tests.test_robustness import segment_ends
from tests.test_zoo import _dump, make_zoo_folder

EXE = Path(sys.executable).with_name("distill")
SEGMENT = RunConfig.n_envs * RunConfig.n_steps  # env steps per update once the environments have grown
TINY = ("--steps", str(SEGMENT), "--eval-episodes", "1", "--eval-every", "0", "--quiet")


class _CreatesFile:
    """Unpickling this runs ``open(marker, "w")``: the shape of any code-execution payload."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


class _Builds:
    """Unpickling this calls ``function(*args)``: a class the allow-list names, called instead of named."""

    def __init__(self, function: object, *args: object) -> None:
        self.function, self.args = function, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (self.function, self.args)


def one_line(result: Result, says: str = "", code: int | None = 2) -> str:
    """The contract of a refused input; returns the line."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.code != 0, result
    if code is not None:
        assert result.code == code, result
    assert result.stdout == "", result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "internal error" not in lines[0], lines[0]
    assert says in lines[0], lines[0]
    assert len(lines[0]) <= 2100
    return lines[0]


def distill(*args: str | Path, timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, timeout=timeout, **kwargs)


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` (links as links) and the bytes of its files."""
    found: dict[str, bytes | None] = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            key = str(path.relative_to(folder))
            if path.is_symlink():
                found[key] = b"-> " + os.readlink(path).encode()
            elif path.is_file():
                found[key] = path.read_bytes()
            else:
                found[key] = None
    return found


def _payload(obj: object) -> dict[str, str]:
    return {":type:": "<class 'dict'>", ":serialized:": base64.b64encode(pickle.dumps(obj)).decode()}


def _with_data(teacher: Path, target: Path, change: Any) -> Path:
    """A copy of the SB3 zip ``teacher`` whose ``data`` JSON went through ``change(data)``."""
    with zipfile.ZipFile(teacher) as archive:
        data = json.loads(archive.read("data"))
    change(data)
    return _rezip(teacher, target, {"data": json.dumps(data).encode()})


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "pwned"


@pytest.fixture
def evil_teacher(tmp_path: Path, teacher_zip: Path, marker: Path) -> Path:
    """The bundled teacher with policy_kwargs that create ``marker`` when unpickled."""

    def change(data: dict[str, Any]) -> None:
        data["policy_kwargs"] = _payload(_CreatesFile(marker))

    (tmp_path / "evil").mkdir()
    return _with_data(teacher_zip, tmp_path / "evil" / "ppo-CartPole-v1.zip", change)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_zoo_folder(tmp_path_factory.mktemp("zoo"))


@pytest.fixture
def folder(zoo: Path, tmp_path: Path) -> Path:
    """A fresh copy of an rl-zoo run folder (Pendulum-v1, VecNormalize statistics) to damage."""
    copy = tmp_path / "logs" / zoo.name
    shutil.copytree(zoo, copy)
    return copy


def _zoo_yaml(folder: Path, name: str, **changes: Any) -> None:
    """Set options in the folder's args.yml or config.yml, written as rl-zoo writes them."""
    from distillcli.zoo import read_yaml

    path = folder / "Pendulum-v1" / name
    options = read_yaml(path)
    options.update(changes)
    _dump(path, options)


# ---------------------------------------------------------------------------------- what held up: kept tested


def test_nothing_in_data_is_unpickled_even_with_trust(cli: CLI, tmp_path: Path, teacher_zip: Path) -> None:
    """Spaces, schedules, buffers: every pickled entry of ``data`` but the policy's own two is never unpickled."""
    markers: list[Path] = []

    def change(data: dict[str, Any]) -> None:
        for key, entry in data.items():
            if isinstance(entry, dict) and ":serialized:" in entry and key not in ("policy_class", "policy_kwargs"):
                markers.append(tmp_path / f"pwned-{key}")
                entry[":serialized:"] = _payload(_CreatesFile(markers[-1]))[":serialized:"]

    teacher = _with_data(teacher_zip, tmp_path / "ppo-CartPole-v1.zip", change)
    assert len(markers) >= 6
    result = cli("run", "--teacher", teacher, *TINY, "--out", tmp_path / "run", "--trust-checkpoint")
    assert result.code == 0, result.stderr
    assert not any(m.exists() for m in markers)
    with pytest.raises(Exception):  # noqa: B017 - the payloads are real: SB3's own load runs them
        PPO.load(teacher, device="cpu")
    assert any(m.exists() for m in markers)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip-format", "legacy-format"])
@pytest.mark.parametrize("trust", [False, True], ids=["untrusted", "trusted"])
def test_weights_only_refuses_both_pickle_routes(
    cli: CLI, tmp_path: Path, teacher_zip: Path, marker: Path, legacy: bool, trust: bool
) -> None:
    buffer = io.BytesIO()
    torch.save({"weight": _CreatesFile(marker)}, buffer, _use_new_zipfile_serialization=not legacy)
    teacher = _rezip(teacher_zip, tmp_path / "ppo-CartPole-v1.zip", {"policy.pth": buffer.getvalue()})
    result = cli("run", "--teacher", teacher, *TINY, "--out", tmp_path / "run", *(["--trust-checkpoint"] * trust))
    one_line(result, "weights cannot be loaded safely")
    assert not marker.exists() and not (tmp_path / "run").exists()
    torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)  # what a full unpickling would have done
    assert marker.exists()


@pytest.mark.parametrize(
    "wrapper",
    [
        "gymnasium.wrappers.os.system",  # a module the allow-listed one imports
        "gymnasium.wrappers._PrivateThing",
        "gymnasiumx.wrappers.TimeLimit",  # a prefix of an allow-listed name is not that name
        "stable_baselines3.common.vec_env.SubprocVecEnv",  # allow-listed module, not a wrapper
        "builtins.eval",
    ],
)
def test_wrapper_allow_list_cannot_be_escaped(cli: CLI, folder: Path, marker: Path, wrapper: str) -> None:
    _zoo_yaml(folder, "config.yml", env_wrapper=[{wrapper: {"command": f"touch {marker}"}}])
    result = cli("run", "--teacher", folder, *TINY, "--out", folder.parent / "run")
    one_line(result, "env_wrapper")
    assert not marker.exists() and not (folder.parent / "run").exists()


# ---------------------------------------------------------------------------------- trust: the command line only


def _interrupted_run(cli: CLI, out: Path) -> Path:
    """A run directory as an interrupt leaves it: a saved student, an ``interrupted`` summary, half its budget."""
    assert SEGMENT in segment_ends(2 * SEGMENT)  # where an update ends, with the environments grown from fewer
    assert cli("run", "--steps", str(2 * SEGMENT), "--eval-episodes", "1", "--out", out, "-q").code == 0
    summary = json.loads((out / "summary.json").read_text())
    summary.update(status="interrupted", env_steps=SEGMENT)
    (out / "summary.json").write_text(json.dumps(summary))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    kept = [row for row in rows if row["env_steps"] <= SEGMENT]
    (out / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in kept))
    config = json.loads((out / "config.json").read_text())
    config["steps"] = 4 * SEGMENT
    (out / "config.json").write_text(json.dumps(config))
    return out


def test_config_json_never_stores_out_force_or_trust(cli: CLI, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert cli("run", *TINY, "--out", out, "--force", "--trust-checkpoint").code == 0
    stored = json.loads((out / "config.json").read_text())
    assert stored.get("out") is None and "force" not in stored and "trust_checkpoint" not in stored


@pytest.mark.parametrize("route", ["run-config", "sweep-config", "resume"])
def test_trust_never_comes_from_a_file(cli: CLI, tmp_path: Path, evil_teacher: Path, marker: Path, route: str) -> None:
    evil = {"teacher": str(evil_teacher), "trust_checkpoint": True, "force": True, "steps": SEGMENT}
    if route == "run-config":
        (tmp_path / "x.json").write_text(json.dumps(evil))
        result = cli("run", "--config", tmp_path / "x.json", "--out", tmp_path / "run")
    elif route == "sweep-config":
        (tmp_path / "x.json").write_text(json.dumps(evil))
        result = cli(
            "sweep", "--methods", "bc", "--seeds", "0", "--config", tmp_path / "x.json", "--out", tmp_path / "s"
        )
    else:
        run = _interrupted_run(cli, tmp_path / "run")
        config = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps({**config, **evil, "steps": 4 * SEGMENT}))
        result = cli("run", "--resume", run)
    one_line(result, "pass --trust-checkpoint if you trust its source")
    assert not marker.exists()
    # The payload is real: typed on the command line, the flag does unpickle it.
    trusted = cli("run", "--teacher", evil_teacher, *TINY, "--out", tmp_path / "trusted", "--trust-checkpoint")
    assert trusted.code != 0 and marker.exists()


# ---------------------------------------------------------------------------------- 1. gym_packages


@pytest.mark.parametrize(
    ("package", "says"),
    [
        ("this", "not a known env package"),  # printed the Zen of Python on stdout, breaking --json
        ("antigravity", "not a known env package"),  # opened a browser
        ("os", "not a known env package"),
        ("venv.__main__", "a program or a private module"),  # created virtualenvs
        ("lib2to3.__main__", "a program or a private module"),
        ("typer.__main__", "a program or a private module"),
        ("tkinter.__main__", "a program or a private module"),
        ("_thread", "a program or a private module"),
        ("no_such_pkg", "No module named 'no_such_pkg'"),
        ("os;rm", "is not a module name"),
    ],
)
def test_gym_packages_import_only_env_registries(cli: CLI, folder: Path, package: str, says: str) -> None:
    _zoo_yaml(folder, "args.yml", gym_packages=[package])
    before = set(sys.modules)
    result = cli("run", "--teacher", folder, *TINY, "--out", folder.parent / "run")
    one_line(result, says)
    assert "--trust-checkpoint" in result.stderr or "program" in says or "module" in says
    assert package not in set(sys.modules) - before
    assert not (folder.parent / "run").exists()


def test_gym_packages_known_registry_imports_without_trust(cli: CLI, folder: Path) -> None:
    _zoo_yaml(folder, "args.yml", gym_packages=["gymnasium"])
    result = cli("run", "--teacher", folder, *TINY, "--out", folder.parent / "run")
    assert result.code == 0, result.stderr


def test_trusted_gym_package_cannot_write_to_stdout(folder: Path, tmp_path: Path) -> None:
    """With --trust-checkpoint the module is the user's call; still, stdout stays the one JSON document."""
    (tmp_path / "noisy_envs.py").write_text(
        "import os, sys\nprint('hello from noisy_envs')\nos.write(1, b'raw bytes on fd 1\\n')\nsys.stdout.flush()\n"
    )
    _zoo_yaml(folder, "args.yml", gym_packages=["noisy_envs"])
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "DISTILL_SMOKE": "1"}
    refused = distill("eval", folder, "--json", env=env)
    assert refused.returncode == 2 and "--trust-checkpoint" in refused.stderr and refused.stdout == ""
    trusted = distill("eval", folder, "--json", "--trust-checkpoint", env=env)
    assert trusted.returncode == 0, trusted.stderr
    assert json.loads(trusted.stdout)["env_id"] == "Pendulum-v1"
    assert "hello from noisy_envs" in trusted.stderr and "raw bytes on fd 1" in trusted.stderr


def test_env_id_cannot_import_a_module(cli: CLI, folder: Path) -> None:
    """gymnasium reads ``module:EnvId`` as "import module first": an id from a file never gets that far."""
    _zoo_yaml(folder, "args.yml", env="this:Pendulum-v1")
    before = set(sys.modules)
    result = cli("run", "--teacher", folder, *TINY, "--out", folder.parent / "run")
    one_line(result, "this:Pendulum-v1")
    assert "this" not in set(sys.modules) - before


# ---------------------------------------------------------------------------------- 3. wrapper arguments


@pytest.mark.parametrize(
    ("key", "wrapper", "says"),
    [
        ("vec_env_wrapper", {"stable_baselines3.common.vec_env.VecMonitor": {"filename": "{victim}"}}, "filename"),
        ("env_wrapper", {"gymnasium.wrappers.RecordVideo": {"video_folder": "{victim_dir}"}}, "writes files"),
        ("env_wrapper", {"gymnasium.wrappers.TransformObservation": {"func": "lambda x: x"}}, "'func'"),
        ("env_wrapper", {"gymnasium.wrappers.TimeLimit": {"max_episode_steps": 10**8}}, "up to 100000"),
        ("env_wrapper", {"gymnasium.wrappers.TimeLimit": {"max_episode_steps": "/etc/passwd"}}, "not a number"),
        ("env_wrapper", {"gymnasium.wrappers.HumanRendering": {}}, "opens windows"),
    ],
)
def test_wrapper_kwargs_need_an_allow_list(
    cli: CLI, folder: Path, tmp_path: Path, key: str, wrapper: dict[str, Any], says: str
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's data")
    (tmp_path / "videos").mkdir()
    text = json.dumps(wrapper).replace("{victim}", str(victim)).replace("{victim_dir}", str(tmp_path / "videos"))
    _zoo_yaml(folder, "config.yml", **{key: [json.loads(text)]})
    result = cli("run", "--teacher", folder, *TINY, "--out", tmp_path / "run")
    one_line(result, says)
    assert victim.read_text() == "the user's data" and not any((tmp_path / "videos").iterdir())
    assert not (tmp_path / "run").exists()


def test_env_json_of_a_run_directory_is_checked_the_same_way(cli: CLI, tmp_path: Path, folder: Path) -> None:
    out = tmp_path / "run"
    assert cli("run", "--teacher", folder, *TINY, "--out", out).code == 0
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's data")
    described = json.loads((out / "env.json").read_text())
    described["vec_env_wrapper"] = [{"stable_baselines3.common.vec_env.VecMonitor": {"filename": str(victim)}}]
    (out / "env.json").write_text(json.dumps(described))
    one_line(cli("eval", out / "student.zip", "--episodes", "1"), "filename")
    assert victim.read_text() == "the user's data"


# ---------------------------------------------------------------------------------- 4. tiny inputs, huge cost


def _timed(cli: CLI, *args: str | Path) -> tuple[Result, float]:
    started = time.perf_counter()
    result = cli(*args)
    return result, time.perf_counter() - started


def test_zip_bomb_data_member_is_refused_at_once(cli: CLI, tmp_path: Path, teacher_zip: Path) -> None:
    bomb = tmp_path / "ppo-CartPole-v1.zip"
    with zipfile.ZipFile(teacher_zip) as old, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as new:
        for name in old.namelist():
            new.writestr(name, b" " * (64 << 20) if name == "data" else old.read(name))
    assert bomb.stat().st_size < 1 << 20
    result, seconds = _timed(cli, "run", "--teacher", bomb, *TINY, "--out", tmp_path / "run")
    one_line(result, "'data' member is 67,108,864 bytes, over the")
    assert seconds < 10


def test_zip_member_that_lies_about_its_size(cli: CLI, tmp_path: Path, teacher_zip: Path) -> None:
    """The directory says 10 bytes; the data inflates to 64 MB: the read stops where the directory said."""
    raw = io.BytesIO()
    with zipfile.ZipFile(teacher_zip) as old, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as new:
        for name in old.namelist():
            new.writestr(name, b"[" * (64 << 20) if name == "data" else old.read(name))
    data = bytearray(raw.getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        local = archive.getinfo("data").header_offset
    central = _central_directory_entry(bytes(data), "data")
    data[local + 22 : local + 26] = data[central + 24 : central + 28] = (10).to_bytes(4, "little")
    bomb = tmp_path / "ppo-CartPole-v1.zip"
    bomb.write_bytes(bytes(data))
    result, seconds = _timed(cli, "run", "--teacher", bomb, *TINY, "--out", tmp_path / "run")
    one_line(result, "not a readable SB3 checkpoint")
    assert seconds < 10


def test_policy_weights_bomb_is_refused(cli: CLI, tmp_path: Path, teacher_zip: Path) -> None:
    from distillcli.sb3.checkpoint import MAX_WEIGHTS_BYTES

    bomb = tmp_path / "ppo-CartPole-v1.zip"
    with zipfile.ZipFile(teacher_zip) as old, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as new:
        for name in old.namelist():
            new.writestr(name, bytes(MAX_WEIGHTS_BYTES + 1) if name == "policy.pth" else old.read(name))
    result, seconds = _timed(cli, "run", "--teacher", bomb, *TINY, "--out", tmp_path / "run")
    one_line(result, "'policy.pth' member is")
    assert seconds < 10


BILLION_LAUGHS = textwrap.dedent(
    """\
    a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
    b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
    c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
    d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
    e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
    f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
    g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
    env_kwargs: [*g,*g,*g,*g,*g,*g,*g,*g,*g]
    """
)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        pytest.param(BILLION_LAUGHS, "expands to more than", id="alias-bomb"),
        pytest.param("a: &a [1]\n" + "".join(f"k{i}: *a\n" for i in range(100)), "aliases", id="many-aliases"),
        pytest.param("a: &a [*a]\n", "contains itself", id="recursive-alias"),
        pytest.param("env_kwargs: " + "[" * 20_000 + "]" * 20_000 + "\n", "nests deeper", id="deep-nesting"),
        pytest.param("? [1, 2]\n: unhashable\n", "is not", id="unhashable-key"),
        pytest.param(
            "env_kwargs: !!python/object/apply:collections.OrderedDict [[[[1, 2], 3]]]\n", "is not", id="odd-pairs"
        ),
        pytest.param("normalize: '" + "x" * 500_000 + "'\n", "normalize 'xxx", id="long-value"),
        pytest.param("x: " + "y" * (2 << 20) + "\n", "is over 1,048,576 bytes", id="huge-file"),
        pytest.param(b"\xff\xfe\x00binary", "not UTF-8", id="binary"),
    ],
)
def test_yaml_is_bounded_before_it_is_built(cli: CLI, folder: Path, text: str | bytes, says: str) -> None:
    path = folder / "Pendulum-v1" / "config.yml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    result, seconds = _timed(cli, "run", "--teacher", folder, *TINY, "--out", folder.parent / "run")
    one_line(result, says)
    assert seconds < 20


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory"])
@pytest.mark.parametrize("name", ["config.yml", "vecnormalize.pkl"])
def test_folder_files_that_are_not_regular_files(cli: CLI, folder: Path, kind: str, name: str) -> None:
    path = folder / "Pendulum-v1" / name
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        path.symlink_to("/dev/zero")
    else:
        path.mkdir()
    result, seconds = _timed(cli, "run", "--teacher", folder, *TINY, "--out", folder.parent / "run")
    if result.code == 0:  # a config.yml that is not a file is no config.yml: the statistics are still used
        assert name == "config.yml"
    else:
        one_line(result)
    assert seconds < 20


def test_statistics_that_are_not_numbers(cli: CLI, folder: Path) -> None:
    """An ndarray of strings passes the statistics unpickler (it builds arrays); it is not statistics."""
    import numpy as np
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    saved = VecNormalize(make_vec_env("Pendulum-v1", 1))
    saved.obs_rms.mean = np.array(["a", "b", "c"], dtype=object)
    saved.save(str(folder / "Pendulum-v1" / "vecnormalize.pkl"))
    one_line(cli("run", "--teacher", folder, *TINY, "--out", folder.parent / "run"), "not arrays of numbers")


def test_plain_json_net_arch_too_large(cli: CLI, tmp_path: Path, teacher_zip: Path) -> None:
    def change(data: dict[str, Any]) -> None:
        data["policy_kwargs"] = {"net_arch": [20000, 20000]}

    teacher = _with_data(teacher_zip, tmp_path / "ppo-CartPole-v1.zip", change)
    one_line(cli("run", "--teacher", teacher, *TINY, "--out", tmp_path / "run"), "do not belong together")


def test_allow_listed_classes_are_named_never_called(cli: CLI, tmp_path: Path, teacher_zip: Path) -> None:
    """MultiheadAttention(200000, 1) would allocate 480 GB; an allow-listed class (ReLU) cannot be called either."""

    def change(data: dict[str, Any]) -> None:
        attention = _Builds(torch.nn.MultiheadAttention, 200_000, 1)
        data["policy_kwargs"] = _payload({"activation_fn": _Builds(torch.nn.ReLU), "extra": attention})

    teacher = _with_data(teacher_zip, tmp_path / "ppo-CartPole-v1.zip", change)
    result, seconds = _timed(cli, "run", "--teacher", teacher, *TINY, "--out", tmp_path / "run")
    one_line(result, "--trust-checkpoint")
    assert seconds < 20


def test_policy_kwargs_shared_list_bomb(cli: CLI, tmp_path: Path, teacher_zip: Path) -> None:
    """Each level holds the one below twice: 2**60 values to walk, in a pickle of a few hundred bytes."""
    level: list[Any] = [64]
    for _ in range(60):
        level = [level, level]

    def change(data: dict[str, Any]) -> None:
        data["policy_kwargs"] = _payload({"net_arch": level})

    teacher = _with_data(teacher_zip, tmp_path / "ppo-CartPole-v1.zip", change)
    result, seconds = _timed(cli, "run", "--teacher", teacher, *TINY, "--out", tmp_path / "run")
    one_line(result)
    assert seconds < 20


@pytest.mark.parametrize("route", ["option", "config"])
def test_student_far_beyond_a_deployment_network(cli: CLI, tmp_path: Path, route: str) -> None:
    """Four 16384-wide layers ran for minutes at 10 GB before; typed or from a config file, refused at once."""
    net = "16384,16384,16384,16384"
    if route == "option":
        result, seconds = _timed(cli, "run", *TINY, "--out", tmp_path / "run", "--student-net", net)
    else:
        (tmp_path / "x.json").write_text(json.dumps({"student_net": net}))
        result, seconds = _timed(cli, "run", *TINY, "--out", tmp_path / "run", "--config", tmp_path / "x.json")
    one_line(result, "weights for these observations, over the 33,554,432 a student may have")
    assert seconds < 20 and not (tmp_path / "run").exists()


def test_segment_too_large_for_memory(cli: CLI, tmp_path: Path) -> None:
    """64 environments x 200 steps of 4 stacked Atari frames are 1.4 GB of observations per segment."""
    from tests.test_atari import _pong_teacher

    teacher = _pong_teacher(tmp_path / "ppo-ALE-Pong-v5.zip")
    result = cli("run", "--teacher", teacher, *TINY, "--out", tmp_path / "run", "--n-envs", "64", "--n-steps", "200")
    one_line(result, "take 1.3 GB per segment, over the 1 GB distill allows")


@pytest.mark.parametrize(
    ("env_kwargs", "says"),
    [
        ({"max_episode_steps": 100_000_000}, "over the 100,000 distill allows"),
        ({"render_mode": "human"}, "distill never renders"),
        ({"max_episode_steps": True}, "positive integer"),
        ({"xml_file": "/etc/passwd"}, "looks like a path"),
    ],
)
def test_env_kwargs_are_bounded(cli: CLI, folder: Path, env_kwargs: dict[str, Any], says: str) -> None:
    _zoo_yaml(folder, "args.yml", env_kwargs=env_kwargs)
    one_line(cli("run", "--teacher", folder, *TINY, "--out", folder.parent / "run"), says)


def test_frame_stack_is_capped(cli: CLI, folder: Path) -> None:
    _zoo_yaml(folder, "config.yml", frame_stack=10**9)
    one_line(cli("run", "--teacher", folder, *TINY, "--out", folder.parent / "run"), "over the 64 frames")


# ---------------------------------------------------------------------------------- 5. interrupts


def _start(*args: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen([str(EXE), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_rows(out: Path, process: subprocess.Popen[str], rows: int = 1, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        metrics = out / "metrics.jsonl"
        if metrics.exists() and metrics.read_text().count('"kind": "train"') >= rows:
            return
        time.sleep(0.05)
    raise AssertionError("the run did not start training")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["INT", "TERM", "HUP"])
@pytest.mark.parametrize("delay", [0.3, 1.0, 2.5])
def test_an_interrupt_at_any_moment_is_one_line_and_never_exit_0(
    tmp_path: Path, sig: signal.Signals, delay: float
) -> None:
    """Import time, setup, the evaluations before training: one line, exit 128 + the signal, and the run directory
    is either absent (nothing was saved) or an interrupted run that --resume continues. (The interpreter's own
    start, the first ~50 ms before any line of distill runs, is out of reach.)"""
    out = tmp_path / "run"
    process = _start("run", "--out", out, "--steps", str(100 * SEGMENT), "-q")
    time.sleep(delay)
    assert process.poll() is None
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode != 0 and stdout == "", (process.returncode, stderr)
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith("error: interrupted"), stderr
    if out.exists():
        assert (out / "summary.json").exists(), sorted(p.name for p in out.iterdir())
        assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
    else:
        assert process.returncode == 128 + sig


@pytest.mark.parametrize("moment", ["mkdir", "lock", "write-probe", "atomic-write"])
def test_a_stop_while_the_run_directory_is_claimed_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moment: str
) -> None:
    """A signal in each short window of the claim (the folders just made, the lock file just created, the write
    probe, an atomic write's temporary file) puts the directory back as it was: no empty folder, no stray file.
    (CI once found ``--out`` made but empty after a SIGTERM 2.5 s in.)"""
    from distillcli.run import rundir

    out = tmp_path / "a" / "run"

    def stop() -> None:
        os.kill(os.getpid(), signal.SIGINT)

    if moment == "mkdir":
        real_mkdir = Path.mkdir

        def mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
            real_mkdir(self, *args, **kwargs)
            stop()

        monkeypatch.setattr(Path, "mkdir", mkdir)
    elif moment == "lock":
        real_lock = rundir._lock

        def lock(run_dir: Path) -> int:
            fd = real_lock(run_dir)
            stop()
            return fd

        monkeypatch.setattr(rundir, "_lock", lock)
    elif moment == "write-probe":
        real_mkstemp = rundir.tempfile.mkstemp

        def mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
            made = real_mkstemp(*args, **kwargs)
            stop()
            return made

        monkeypatch.setattr(rundir.tempfile, "mkstemp", mkstemp)
    with (
        pytest.raises(KeyboardInterrupt),
        rundir.claim(str(out), "CartPole-v1", "on-policy-distill", force=False) as claimed,
    ):
        assert moment == "atomic-write"
        (claimed.path / ".config.json.k2j4x.tmp").write_text("{")  # an atomic write stopped before its rename
        stop()
    assert not (tmp_path / "a").exists(), sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_while_the_cli_loads_is_one_line() -> None:
    """A Ctrl-C while ``distillcli.cli`` imports its modules (the first second) is one line, exit 130."""
    code = textwrap.dedent(
        """\
        import builtins, os, signal
        real = builtins.__import__
        def hooked(name, *args, **kwargs):
            if name == "typer":
                os.kill(os.getpid(), signal.SIGINT)
            return real(name, *args, **kwargs)
        builtins.__import__ = hooked
        from distillcli.cli import main
        main()
        """
    )
    result = subprocess.run([sys.executable, "-c", code, "methods"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 130 and result.stderr == "error: interrupted\n", result


def test_ctrl_c_during_eval(tmp_path: Path, teacher_zip: Path) -> None:
    process = _start("eval", teacher_zip, "--episodes", "100000")
    time.sleep(4)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and stdout == "" and stderr == "error: interrupted\n", stderr


def test_ctrl_c_during_the_final_save_waits_for_the_summary(
    cli: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distillcli.sb3.student import Student

    real = Student.save

    def save_and_interrupt(self: Student, path: Path, env_steps: int) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # arrives while the student is being written
        real(self, path, env_steps)

    monkeypatch.setattr(Student, "save", save_and_interrupt)
    out = tmp_path / "run"
    result = cli("run", *TINY, "--out", out)
    one_line(result, "interrupted", code=130)
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"
    PPO.load(out / "student.zip", device="cpu")


@pytest.mark.parametrize("force", [False, True], ids=["new", "force"])
def test_an_interrupt_before_training_leaves_the_directory_as_it_was(
    cli: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, force: bool
) -> None:
    """After the directory is claimed, before the first update (the teacher's evaluation): a new run leaves
    nothing (a rerun is not refused as "not empty"); a --force rerun gives back the run it was replacing."""
    from distillcli.run.pipeline import Evaluator

    out = tmp_path / "run"
    if force:
        assert cli("run", *TINY, "--out", out).code == 0
    before = snapshot(tmp_path)

    def interrupted(self: Evaluator) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Evaluator, "teacher", interrupted)
    one_line(cli("run", *TINY, "--out", out, *(["--force"] * force)), "interrupted", code=130)
    assert snapshot(tmp_path) == before
    monkeypatch.undo()
    assert cli("run", *TINY, "--out", out, *(["--force"] * force)).code == 0


def test_sighup_during_training_saves_the_student(tmp_path: Path) -> None:
    out = tmp_path / "run"
    process = _start("run", "--out", out, "--steps", str(100 * SEGMENT), "-q", "--eval-episodes", "2")
    _wait_for_rows(out, process)
    process.send_signal(signal.SIGHUP)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0 and "--resume" in stderr and "Traceback" not in stderr
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
    PPO.load(out / "student.zip", device="cpu")


def test_random_chains_of_interrupts_and_resumes_lose_and_repeat_no_row(tmp_path: Path) -> None:
    out, budget = tmp_path / "run", 12 * SEGMENT
    rng = random.Random(17)
    process = _start("run", "--out", out, "--steps", str(budget), "-q", "--eval-episodes", "1", "--eval-every", "4096")
    for _ in range(3):
        _wait_for_rows(out, process, rows=1)
        time.sleep(rng.uniform(0.0, 0.5))
        process.send_signal(rng.choice([signal.SIGINT, signal.SIGTERM, signal.SIGHUP]))
        _, stderr = process.communicate(timeout=60)
        assert "Traceback" not in stderr, stderr
        if process.returncode == 0:
            break
        process = _start("run", "--resume", out, "-q")
    else:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [row["env_steps"] for row in rows if row["kind"] == "train"]
    assert steps == segment_ends(budget)  # the environments grow: segments of the default schedule
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"


# ---------------------------------------------------------------------------------- 6. --force


def test_force_refuses_a_directory_that_holds_no_run(cli: CLI, tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "README.md").write_text("my project")
    (project / "src" / "main.py").write_text("print('hi')")
    before = snapshot(project)
    one_line(cli("run", *TINY, "--out", project, "--force"), "holds none")
    assert snapshot(project) == before


@pytest.mark.parametrize(
    "damage",
    ["user-tensorboard", "symlinked-tensorboard", "foreign-summary", "foreign-config", "symlinked-metrics", "fifo"],
)
def test_force_never_touches_a_file_distill_did_not_write(cli: CLI, tmp_path: Path, damage: str) -> None:
    out, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    assert cli("run", *TINY, "--out", out).code == 0
    elsewhere.mkdir()
    (elsewhere / "events.out.tfevents.1").write_text("the user's own")
    (elsewhere / "notes.txt").write_text("keep me")
    if damage == "user-tensorboard":
        (out / "tensorboard").mkdir()
        (out / "tensorboard" / "my-experiment").mkdir()
        (out / "tensorboard" / "my-experiment" / "events.out.tfevents.2").write_text("mine")
    elif damage == "symlinked-tensorboard":
        (out / "tensorboard").symlink_to(elsewhere)
    elif damage == "foreign-summary":
        (out / "summary.json").write_text(json.dumps({"project": "mine", "accuracy": 0.9}))
    elif damage == "foreign-config":
        (out / "config.json").write_text(json.dumps({"database": "prod"}))
    elif damage == "symlinked-metrics":
        (out / "metrics.jsonl").unlink()
        (out / "metrics.jsonl").symlink_to(elsewhere / "notes.txt")
    else:
        (out / "metrics.jsonl").unlink()
        os.mkfifo(out / "metrics.jsonl")
    before = snapshot(tmp_path)
    one_line(cli("run", *TINY, "--out", out, "--force"), "was not written by distill")
    assert snapshot(tmp_path) == before


def test_force_rerun_that_fails_after_claiming_keeps_the_finished_run(
    cli: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distillcli.run.pipeline import Evaluator

    out = tmp_path / "run"
    assert cli("run", *TINY, "--out", out, "--tensorboard").code == 0
    (out / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)

    def fails(self: Evaluator) -> None:
        raise DistillError("the teacher's evaluation failed")

    monkeypatch.setattr(Evaluator, "teacher", fails)
    one_line(cli("run", *TINY, "--out", out, "--force", "--tensorboard"), "evaluation failed")
    assert snapshot(tmp_path) == before
    monkeypatch.undo()
    assert cli("run", *TINY, "--out", out, "--force").code == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # the earlier outputs are gone once saved
    assert not (out / "tensorboard").exists()  # the earlier run's, replaced by a run without TensorBoard


# ---------------------------------------------------------------------------------- 7. --resume that fails


def test_failed_resume_is_one_line_and_leaves_the_run_resumable(cli: CLI, tmp_path: Path) -> None:
    run = _interrupted_run(cli, tmp_path / "run")
    before = snapshot(run)
    one_line(cli("run", "--resume", run, "--student-net", "64,64"), "has shape (32, 4), this run's (64, 4)")
    assert snapshot(run) == before
    resumed = cli("run", "--resume", run, "--json")
    assert resumed.code == 0, resumed.stderr
    assert resumed.json()["env_steps"] == segment_ends(4 * SEGMENT)[-1]


@pytest.mark.parametrize("tamper", ["garbage", "nan", "wrong-shape"])
def test_tampered_optimizer_state_on_resume(cli: CLI, tmp_path: Path, tamper: str) -> None:
    run = _interrupted_run(cli, tmp_path / "run")
    with zipfile.ZipFile(run / "student.zip") as archive:
        state = torch.load(io.BytesIO(archive.read("policy.optimizer.pth")), weights_only=True)
    if tamper == "garbage":
        raw = b"not an optimiser state"
    else:
        for per_parameter in state["state"].values():
            if tamper == "nan":
                per_parameter["exp_avg"].fill_(float("nan"))
            else:
                per_parameter["exp_avg"] = torch.zeros(3, 3)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        raw = buffer.getvalue()
    original = (run / "student.zip").read_bytes()
    _rezip(run / "student.zip", tmp_path / "tampered.zip", {"policy.optimizer.pth": raw})
    shutil.move(tmp_path / "tampered.zip", run / "student.zip")
    one_line(cli("run", "--resume", run), "optimiser state")
    assert (run / "student.zip").read_bytes() != original  # left as the user made it, not repaired behind them


# ---------------------------------------------------------------------------------- 8. a crash after training


def _teacher_with(teacher_zip: Path, target: Path, change: Any) -> Path:
    model = PPO.load(teacher_zip, device="cpu")
    with torch.no_grad():
        change(model.policy)
    model.save(target)
    return target


def test_teacher_with_huge_weights_is_refused_at_setup(cli: CLI, tmp_path: Path, teacher_zip: Path) -> None:
    """Finite weights (3e38) whose outputs are not: the weight check passes them, the probe batch does not."""

    def change(policy: Any) -> None:
        for parameter in policy.mlp_extractor.policy_net.parameters():
            parameter.fill_(3e38)
        policy.action_net.weight.fill_(3e38)

    teacher = _teacher_with(teacher_zip, tmp_path / "ppo-CartPole-v1.zip", change)
    one_line(cli("run", "--teacher", teacher, *TINY, "--out", tmp_path / "run"), "not finite numbers")
    assert not (tmp_path / "run").exists()


def test_gaussian_teacher_with_vanishing_std(cli: CLI, folder: Path) -> None:
    model = PPO.load(folder / "Pendulum-v1.zip", device="cpu")
    with torch.no_grad():
        model.policy.log_std.fill_(-200.0)
    model.save(folder / "Pendulum-v1.zip")
    one_line(cli("run", "--teacher", folder, *TINY, "--out", folder.parent / "run"), "(log_std) are not finite")
    assert not (folder.parent / "run").exists()


@pytest.mark.parametrize("force", [False, True], ids=["new", "force"])
def test_full_disk_at_save_is_one_line_and_loses_nothing_of_the_users(
    cli: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, force: bool
) -> None:
    from distillcli.sb3.student import Student

    out = tmp_path / "run"
    if force:
        assert cli("run", *TINY, "--out", out).code == 0
    before = snapshot(tmp_path)

    def full(self: Student, path: Path, env_steps: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(Student, "save", full)
    one_line(cli("run", *TINY, "--out", out, *(["--force"] * force)), "No space left on device")
    assert snapshot(tmp_path) == before


def test_a_crash_in_training_still_saves_the_student(cli: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distillcli.run.pipeline import Training

    real = Training.on_update

    def crashes(self: Training, metrics: dict[str, float]) -> None:
        real(self, metrics)
        if self.steps >= 2 * SEGMENT:
            raise ValueError("a bug after two updates")

    monkeypatch.setattr(Training, "on_update", crashes)
    out = tmp_path / "run"
    result = cli("run", "--steps", str(4 * SEGMENT), "--eval-episodes", "1", "--out", out, "-q")
    one_line(result, f"failed after {2 * SEGMENT} env steps (ValueError: a bug after two updates)")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["env_steps"] == 2 * SEGMENT
    assert PPO.load(out / "student.zip", device="cpu").num_timesteps == 2 * SEGMENT


# ---------------------------------------------------------------------------------- 9. concurrency


def test_a_locked_run_directory_is_refused(cli: CLI, tmp_path: Path) -> None:
    run = _interrupted_run(cli, tmp_path / "run")
    before = snapshot(run)
    fd = os.open(run / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another distill run holds it
    try:
        one_line(cli("run", "--resume", run), "in use by another distill run")
        one_line(cli("run", *TINY, "--out", run, "--force"), "in use by another distill run")
    finally:
        os.close(fd)
        (run / ".lock").unlink()
    assert snapshot(run) == before
    assert cli("run", "--resume", run).code == 0
    assert not (run / ".lock").exists()


def test_two_concurrent_resumes_repeat_no_row(cli: CLI, tmp_path: Path) -> None:
    run = _interrupted_run(cli, tmp_path / "run")
    first, second = _start("run", "--resume", run, "-q"), _start("run", "--resume", run, "-q")
    results = [(p.wait(timeout=180), p.communicate()[1]) for p in (first, second)]
    assert sorted(code for code, _ in results)[0] == 0, results
    for code, stderr in results:
        assert "Traceback" not in stderr
        assert code == 0 or "in use by another distill run" in stderr or "changed while" in stderr, stderr
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [row["env_steps"] for row in rows if row["kind"] == "train"]
    assert steps == sorted(set(steps)), steps


def test_a_stale_resume_is_refused(cli: CLI, tmp_path: Path) -> None:
    """A resume that read the run before another one finished it must not run it again."""
    from distillcli.run import load_resume_state
    from distillcli.run import run as run_distillation

    run = _interrupted_run(cli, tmp_path / "run")
    options, state = load_resume_state(run)
    assert cli("run", "--resume", run).code == 0  # the other resume, done first
    with pytest.raises(DistillError, match=r"already finished its budget|changed while"):
        run_distillation(RunConfig(**{**options, "out": str(run)}), None, state)


def test_partial_last_line_of_metrics_is_repaired_before_appending(cli: CLI, tmp_path: Path) -> None:
    run = _interrupted_run(cli, tmp_path / "run")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    kept = [row for row in rows if row["kind"] != "train" or row["env_steps"] <= SEGMENT]
    (run / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in kept) + '{"kind": "tra')
    assert cli("run", "--resume", run).code == 0
    lines = (run / "metrics.jsonl").read_text().splitlines()
    parsed = [json.loads(line) for line in lines]  # every line is whole
    steps = [row["env_steps"] for row in parsed if row["kind"] == "train"]
    assert steps == segment_ends(4 * SEGMENT)


def test_orphaned_sweep_workers_stop_and_save(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    parent = _start("sweep", "--methods", "bc", "--seeds", "0", "--steps", str(400 * SEGMENT), "--jobs", "1",
                    "--eval-every", "0", "--eval-episodes", "1", "--out", out, "-q")  # fmt: skip
    _wait_for_rows(out / "bc-s0-32x32", parent, timeout=120)
    workers = [
        int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit() and _ppid(entry) == parent.pid
    ]
    assert workers
    parent.kill()  # SIGKILL: the sweep cannot tell its workers anything
    parent.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers)
    summary = json.loads((out / "bc-s0-32x32" / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    PPO.load(out / "bc-s0-32x32" / "student.zip", device="cpu")


def test_a_second_stop_just_after_saving_keeps_the_saved_run(
    cli: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An orphaned sweep worker gets SIGTERM twice (the kernel's, then its watcher's): one arriving after the summary
    was written, while the metrics file closes, must not put the directory back and delete the saved run."""
    from distillcli.metrics import MetricsSink

    real_exit = MetricsSink.__exit__

    def exit_then_stop(self: MetricsSink, *exc: object) -> None:
        real_exit(self, *exc)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(MetricsSink, "__exit__", exit_then_stop)
    out = tmp_path / "run"
    result = cli("run", "--steps", str(SEGMENT), "--eval-episodes", "1", "--out", out, "-q")
    assert result.code != 0 and result.stderr.startswith("error: interrupted"), result.stderr
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"
    PPO.load(out / "student.zip", device="cpu")


def _ppid(proc: Path) -> int | None:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# ---------------------------------------------------------------------------------- low: each one line


def test_plain_json_squash_output(cli: CLI, tmp_path: Path, teacher_zip: Path) -> None:
    def change(data: dict[str, Any]) -> None:
        data["policy_kwargs"] = {"squash_output": True}

    teacher = _with_data(teacher_zip, tmp_path / "ppo-CartPole-v1.zip", change)
    one_line(cli("run", "--teacher", teacher, *TINY, "--out", tmp_path / "run"))


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("run", "--out", "x" * 5000), "file name too long"),
        (("run", "--out", "a/" + "b" * 300), "file name too long"),
        (("run", "--out", "bad\0name"), "NUL"),
        (("run", "--teacher", "~nosuchuser/t.zip"), "no such user"),
        (("run", "--teacher", "t\0.zip"), "NUL"),
        (("run", "--config", "c\0.json"), "null byte"),
        (("run", "--config", "/dev/zero"), "is not a regular file"),
        (("run", "--config", "c" * 5000), "file name too long"),
        (("run", "--resume", "r\0"), "null byte"),
        (("run", "--resume", "r" * 5000), "file name too long"),
        (("eval", "m" * 5000), "ile name too long"),
        (("report", "d" * 5000), "file name too long"),
        (("run", "--logprob-floor", "-1e308"), "--logprob-floor"),
        (("run", "--threads", "100000"), "--threads must be at most 256"),
        (("run", "--n-envs", "100000000"), "--n-envs must be at most"),
        (("run", "--eval-episodes", "1000000000"), "--eval-episodes must be at most"),
    ],
)
def test_bad_paths_and_numbers(
    cli: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: tuple, says: str
) -> None:
    monkeypatch.chdir(tmp_path)
    one_line(cli(*args), says)
    assert not any(tmp_path.iterdir())


def test_config_and_metrics_that_are_fifos(cli: CLI, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "config.json")
    result, seconds = _timed(cli, "run", "--config", tmp_path / "config.json", "--out", tmp_path / "run")
    one_line(result, "not a regular file")
    run = _interrupted_run(cli, tmp_path / "interrupted")
    (run / "metrics.jsonl").unlink()
    os.mkfifo(run / "metrics.jsonl")
    result, seconds = _timed(cli, "run", "--resume", run)
    one_line(result, "not a regular file")
    assert seconds < 30


def _report_dir(root: Path, name: str, summary: dict[str, Any]) -> Path:
    run = root / name
    run.mkdir(parents=True)
    base = {"status": "finished", "method": "bc", "env_id": "CartPole-v1", "student_net": [32, 32], "seed": 0}
    (run / "summary.json").write_text(json.dumps({**base, **summary}))
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "eval", "env_steps": 1e308, "student_return": 1e308}) + "\n")
    return run


def test_report_survives_huge_numbers_deep_trees_and_escape_sequences(cli: CLI, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    huge = {"teacher_return": 1e308, "student_return": 1e308, "random_return": -1e308, "wall_seconds": 1e308}
    _report_dir(root, "a", {**huge, "score": 1e308, "return_ratio": 1e308})
    _report_dir(root, "b", {**huge, "score": -1e308, "seed": 1})
    _report_dir(root, "c\x1b[2J\x1b]0;pwned\x07", {"method": "bc\x1b[31mred", "seed": 2})
    deep = root
    for _ in range(1100):
        deep = deep / "d"
        deep.mkdir()
    (deep / "summary.json").write_text("{}")
    try:
        result = cli("report", root)
        assert result.code == 0, result.stderr
        assert "\x1b" not in result.stdout and "\x07" not in result.stdout and "Traceback" not in result.stderr
        as_json = cli("report", root, "--json")
        assert as_json.code == 0 and len(as_json.json()["runs"]) == 3
    finally:  # deepest first: pytest's own clean-up recurses and would not get through 1,100 levels
        (deep / "summary.json").unlink()
        while deep != root:
            deep.rmdir()
            deep = deep.parent


def test_teacher_algo_is_never_text_from_the_file(cli: CLI, tmp_path: Path, teacher_zip: Path) -> None:
    def change(data: dict[str, Any]) -> None:
        data["algo"] = "\x1b[2JEVIL"
        data.pop("clip_range")

    teacher = _with_data(teacher_zip, tmp_path / "ppo-CartPole-v1.zip", change)
    result = cli("run", "--teacher", teacher, *TINY, "--out", tmp_path / "run", "--json")
    assert result.code == 0, result.stderr
    assert result.json()["teacher_algo"] in ("PPO", "A2C", "TRPO", "ActorCritic")


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ("crc", "not a valid zip"),
        ("data-not-json", "'data' member is not JSON"),
        ("data-deep", "'data' member is not JSON"),
        ("weights-garbage", "its weights cannot be loaded safely"),
    ],
)
def test_zip_json_and_weight_errors_say_which(
    cli: CLI, tmp_path: Path, teacher_zip: Path, change: str, says: str
) -> None:
    teacher = tmp_path / "ppo-CartPole-v1.zip"
    if change == "crc":
        raw = bytearray(teacher_zip.read_bytes())
        with zipfile.ZipFile(teacher_zip) as archive:
            info = archive.getinfo("data")
        start = info.header_offset + 30 + len(info.filename) + len(info.extra)
        raw[start + 5] ^= 0xFF
        teacher.write_bytes(bytes(raw))
    elif change == "data-not-json":
        _rezip(teacher_zip, teacher, {"data": b"{'python': 'literal'}"})
    elif change == "data-deep":
        _rezip(teacher_zip, teacher, {"data": b"[" * 100_000 + b"]" * 100_000})
    else:
        _rezip(teacher_zip, teacher, {"policy.pth": b"PK\x03\x04 not a torch archive"})
    one_line(cli("run", "--teacher", teacher, *TINY, "--out", tmp_path / "run"), says)


def test_wrapper_func_as_a_string_with_trust_is_one_line(cli: CLI, folder: Path) -> None:
    _zoo_yaml(folder, "config.yml", env_wrapper=[{"gymnasium.wrappers.TransformReward": {"func": "abs"}}])
    result = cli("run", "--teacher", folder, *TINY, "--out", folder.parent / "run", "--trust-checkpoint")
    one_line(result, "fails when stepped (TypeError")
