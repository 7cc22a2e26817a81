"""The security review of issue #17, as tests: what an untrusted checkpoint, rl-zoo folder, run directory or config
file can make distill do, and what it cannot. docs/security.md names these tests beside each promise.

Every attack's payload is real: where it is refused, a test shows elsewhere (or the library's own loader shows)
that it would have run. "Refused" always means: one ``error:`` line on stderr, a non-zero exit, no traceback,
nothing on stdout, and no file written outside the run directory (a marker file the payload would create).
"""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
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
from tests.conftest import CLI, Result
from tests.test_bad_input import _central_directory_entry, _rezip
from tests.test_zoo import _dump, make_zoo_folder

EXE = Path(sys.executable).with_name("distill")
SEGMENT = RunConfig.n_envs * RunConfig.n_steps
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


# ---------------------------------------------------------------------------------- 8. a crash after training


def _teacher_with(teacher_zip: Path, target: Path, change: Any) -> Path:
    model = PPO.load(teacher_zip, device="cpu")
    with torch.no_grad():
        change(model.policy)
    model.save(target)
    return target


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


def _report_dir(root: Path, name: str, summary: dict[str, Any]) -> Path:
    run = root / name
    run.mkdir(parents=True)
    base = {"status": "finished", "method": "bc", "env_id": "CartPole-v1", "student_net": [32, 32], "seed": 0}
    (run / "summary.json").write_text(json.dumps({**base, **summary}))
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "eval", "env_steps": 1e308, "student_return": 1e308}) + "\n")
    return run


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
