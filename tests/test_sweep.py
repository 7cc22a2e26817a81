"""`distill sweep` and `distill report`: real grids of real runs on the bundled CartPole teacher, with the local
process pool and with a local Ray cluster, and every way a user can get them wrong.

Budgets are tiny (a few thousand env steps, two evaluation episodes): these tests check the plumbing, the table's
arithmetic and the failure handling, not how well a method distils.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from distillcli.config import RunConfig
from distillcli.envs import ATARI_WRAPPER
from distillcli.report import RunRecord
from distillcli.sb3.netspec import net_label, parse_nets
from distillcli.stats import mean_ci, reached, t975
from distillcli.sweep import SweepOptions, plan
from tests.conftest import CLI
from tests.test_atari import ENV_ID as PONG
from tests.test_atari import _dump, _pong_teacher
from tests.test_zoo import make_zoo_folder

GRID = ("--methods", "expected-entropy,bc", "--seeds", "0,1")
TINY = ("--steps", "4096", "--eval-every", "1024", "--eval-episodes", "2")
NAMES = ["expected-entropy-s0-32x32", "expected-entropy-s1-32x32", "bc-s0-32x32", "bc-s1-32x32"]
EXE = Path(sys.executable).with_name("distill")


def distill(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a user (or a batch script) runs it."""
    return subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def evals(run_dir: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if row["kind"] == "eval"]


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    """The issue's bar: 2 methods x 2 seeds on the bundled teacher with the local backend (--json, with progress)."""
    out = tmp_path_factory.mktemp("sweep") / "local"
    done = distill("sweep", *GRID, *TINY, "--out", out, "--json")
    assert done.returncode == 0, done.stderr
    return out, json.loads(done.stdout), done.stderr  # json.loads: stdout is one JSON document and nothing else


# ---------------------------------------------------------------------------------------------- arithmetic


def test_confidence_interval_is_the_t_interval() -> None:
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    assert mean_ci([0.5]) == (0.5, None) and mean_ci([]) == (None, None)
    assert mean_ci([1.0, math.nan, 3.0])[0] == 2.0  # an undefined ratio does not poison the mean
    assert t975(1) == 12.706 and t975(30) == 2.042 and t975(35) == 2.042 and t975(1000) == 1.960


def test_reaching_95_percent_with_positive_negative_and_zero_teacher_returns() -> None:
    # The normalised score (student - random) / (teacher - random) decides: 95% of the way from random to the teacher.
    assert reached(476.0, 500.0, 20.0) and not reached(475.0, 500.0, 20.0)
    assert reached(-190.0, -150.0, -950.0) and not reached(-191.0, -150.0, -950.0)  # negative returns alike
    assert reached(-100.0, -150.0, -950.0)  # better than the teacher
    # Summaries of earlier versions have no random return: the return ratio, where the teacher's is positive.
    nan = float("nan")
    assert reached(475.0, 500.0, nan) and not reached(474.0, 500.0, nan)
    assert reached(0.0, 0.0, nan) and not reached(-1.0, 0.0, nan)
    summary = {"teacher_return": 200.0, "random_return": 0.0}
    record = RunRecord("r", "r", "m", 0, "32x32", "E", "finished", summary=summary)
    record.curve = [(0.0, 10.0), (1024.0, 189.0), (2048.0, 195.0), (3072.0, 100.0)]
    assert record.steps_to_95 == 2048.0  # the first evaluation at 95%, even if a later one drops again
    record.curve = [(0.0, 10.0)]
    assert record.steps_to_95 is None


# ---------------------------------------------------------------------------------------------- local sweep


def test_local_sweep_runs_every_combination_and_writes_the_table(local_sweep: tuple[Path, dict[str, Any], str]) -> None:
    out, document, progress = local_sweep
    runs = document["runs"]
    assert [r["name"] for r in runs] == NAMES
    for run in runs:
        run_dir = out / run["name"]
        assert run["status"] == "finished" and not run["reused"] and run["error"] == ""
        assert (run_dir / "student.zip").is_file()
        summary = json.loads((run_dir / "summary.json").read_text())
        assert run["summary"] == summary  # the whole summary of an ordinary distill run
        assert (summary["method"], summary["seed"], summary["env_steps"]) == (run["method"], run["seed"], 4096)
        config = json.loads((run_dir / "config.json").read_text())
        assert config["student_net"] == "32,32" and config["eval_every"] == 1024
        # Steps to 95%, recomputed here from metrics.jsonl.
        teacher = summary["teacher_return"]
        hits = [row["env_steps"] for row in evals(run_dir) if row["student_return"] >= 0.95 * teacher]
        assert run["steps_to_95"] == (hits[0] if hits else None)
    assert all(f"done   {name}" in progress for name in NAMES)  # one progress view, on stderr

    table = read_csv(out / "table.csv")
    assert [(row["method"], row["net"], row["runs"], row["finished"]) for row in table] == [
        ("expected-entropy", "32x32", "2", "2"),
        ("bc", "32x32", "2", "2"),
    ]
    for row in table:
        group = [r["summary"] for r in runs if r["method"] == row["method"]]
        ratios = [s["return_ratio"] for s in group]
        walls = [s["wall_seconds"] for s in group]
        assert float(row["return_ratio_mean"]) == pytest.approx(statistics.mean(ratios))
        assert float(row["return_ratio_ci95"]) == pytest.approx(12.706 * statistics.stdev(ratios) / math.sqrt(2))
        assert float(row["wall_seconds_mean"]) == pytest.approx(statistics.mean(walls))
        steps = [r["steps_to_95"] for r in runs if r["method"] == row["method"] and r["steps_to_95"] is not None]
        assert int(row["reached_95"]) == len(steps)
        assert (float(row["steps_to_95_mean"]) if row["steps_to_95_mean"] else None) == (
            statistics.mean(steps) if steps else None
        )
    markdown = (out / "table.md").read_text()
    assert markdown.startswith("| method | student net | finished | score | return ratio |")
    assert "| expected-entropy | 32x32 | 2/2 |" in markdown and "| bc | 32x32 | 2/2 |" in markdown
    assert [row["name"] for row in read_csv(out / "runs.csv")] == NAMES
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_rerun_skips_finished_runs_and_report_rebuilds_the_same_table(
    local_sweep: tuple[Path, dict[str, Any], str], tmp_path: Path, cli: CLI
) -> None:
    out, first, _ = local_sweep
    written = {name: (out / name / "summary.json").stat().st_mtime_ns for name in NAMES}
    again = cli("sweep", *GRID, *TINY, "--out", out, "--json")
    assert again.code == 0, again.stderr
    second = again.json()
    assert all(run["reused"] for run in second["runs"])
    assert {name: (out / name / "summary.json").stat().st_mtime_ns for name in NAMES} == written
    assert second["groups"] == first["groups"]

    # A batch script that called `distill run` itself gets the same table from `distill report`.
    copies = tmp_path / "mine"
    for name in NAMES:
        shutil.copytree(out / name, copies / name)
    report = cli("report", copies, "--json")
    assert report.code == 0, report.stderr
    rebuilt = report.json()
    assert sorted(r["name"] for r in rebuilt["runs"]) == sorted(NAMES)
    by_method = {g["method"]: g for g in rebuilt["groups"]}
    assert [by_method[g["method"]] for g in first["groups"]] == first["groups"]
    assert {path.name for path in copies.iterdir()} >= {"table.md", "table.csv", "runs.csv", "curves.png"}
    human = cli("report", copies / NAMES[0], copies / NAMES[1], "--out", tmp_path / "two")
    assert human.code == 0 and "expected-entropy" in human.stdout and (tmp_path / "two" / "table.md").is_file()

    # Other options than the finished runs had: refused, not silently mixed into one table.
    changed = cli("sweep", *GRID, "--steps", "2048", "--eval-every", "1024", "--eval-episodes", "2", "--out", out)
    assert changed.code == 2 and "steps = 4096, not 2048" in changed.stderr and "--force" in changed.stderr
    assert len(changed.stderr.strip().splitlines()) == 1 and changed.stdout == ""


def test_a_failed_run_is_reported_and_the_others_go_on(cli: CLI, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "bc-s1-32x32").write_text("in the way")  # this run cannot create its run directory
    args = ("sweep", "--methods", "bc", "--seeds", "0,1", "--steps", "1024", "--eval-episodes", "1", "--out", out)
    result = cli(*args, "--json", "--quiet")
    assert result.code == 1
    assert result.stderr.strip().splitlines()[-1] == f"error: 1 of 2 runs did not finish; see {out}/table.md"
    runs = {run["name"]: run for run in result.json()["runs"]}
    assert runs["bc-s0-32x32"]["status"] == "finished"
    assert runs["bc-s1-32x32"]["status"] == "failed" and "is not a directory" in runs["bc-s1-32x32"]["error"]
    markdown = (out / "table.md").read_text()
    assert "| bc | 32x32 | 1/2 |" in markdown
    assert "| bc-s1-32x32 | failed |" in markdown and "is not a directory" in markdown

    (out / "bc-s1-32x32").unlink()
    fixed = cli(*args, "--json")
    assert fixed.code == 0, fixed.stderr
    runs = {run["name"]: run for run in fixed.json()["runs"]}
    assert runs["bc-s0-32x32"]["reused"] and not runs["bc-s1-32x32"]["reused"]
    assert runs["bc-s1-32x32"]["status"] == "finished"
    assert "did not finish" not in (out / "table.md").read_text()


def test_report_lists_a_diverged_run_beside_a_finished_one(cli: CLI, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    # One method for both (expected-entropy: its score term diverges at --lr 1e30), so they share a table row.
    good = cli("run", "-m", "expected-entropy", "--steps", "1024", "--eval-episodes", "1", "--out", runs / "good", "-q")
    assert good.code == 0, good.stderr
    assert (
        cli(
            "run",
            "-m",
            "expected-entropy",
            "--lr",
            "1e30",
            "--steps",
            "1024",
            "--eval-episodes",
            "1",
            "--out",
            runs / "bad",
            "-q",
        ).code
        != 0
    )
    result = cli("report", runs)
    assert result.code == 0, result.stderr
    assert "bad: diverged" in result.stdout
    markdown = (runs / "table.md").read_text()
    assert "| expected-entropy | 32x32 | 1/2 |" in markdown and "| bad | diverged | – |" in markdown


@pytest.mark.slow
def test_ctrl_c_stops_the_runs_cleanly_and_a_rerun_resumes_them(tmp_path: Path) -> None:
    out, steps = tmp_path / "sweep", 32768  # long enough that the Ctrl-C lands in training
    command = [str(EXE), "sweep", "--methods", "bc", "--seeds", "0,1", "--steps", str(steps), "--eval-episodes", "1"]
    # All the environments from the start (0 would be bc's default, 8 growing to 64): the rows below are whole
    # segments.
    command += ["--start-envs", str(RunConfig.n_envs)]
    command += ["--out", str(out), "--jobs", "2"]
    # Its own process group, as a terminal's Ctrl-C reaches every process of the foreground group; SIGINT is
    # reset in case this test itself runs where SIGINT is ignored (a background job).
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        metrics = list(out.glob("*/metrics.jsonl"))
        if len(metrics) == 2 and all('"kind": "train"' in m.read_text() for m in metrics):
            break
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 2 and stdout == "" and "Traceback" not in stderr
    assert "interrupted" in stderr.splitlines()[-1] and "Run the same command again" in stderr.splitlines()[-1]
    for name in ("bc-s0-32x32", "bc-s1-32x32"):
        summary = json.loads((out / name / "summary.json").read_text())
        assert summary["status"] == "interrupted" and 0 < summary["env_steps"] < steps
    assert "interrupted" in (out / "table.md").read_text()

    resumed = distill(*command[1:], "--json")
    assert resumed.returncode == 0, resumed.stderr
    for run in json.loads(resumed.stdout)["runs"]:
        assert run["status"] == "finished" and run["summary"]["env_steps"] == steps
        rows = [json.loads(line) for line in (out / run["name"] / "metrics.jsonl").read_text().splitlines()]
        trained = [row["env_steps"] for row in rows if row["kind"] == "train"]
        segment = RunConfig.n_envs * RunConfig.n_steps
        assert trained == [segment * (i + 1) for i in range(steps // segment)]  # continued, not restarted


# ---------------------------------------------------------------------------------------------- Ray


@pytest.mark.slow
def test_ray_backend_gives_the_same_runs_and_table(
    local_sweep: tuple[Path, dict[str, Any], str], tmp_path: Path
) -> None:
    pytest.importorskip("ray")
    local_out, local, _ = local_sweep
    done = distill("sweep", *GRID, *TINY, "--out", tmp_path / "ray", "--backend", "ray", "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)  # Ray's own chatter stays off stdout
    assert document["backend"] == "ray"
    runs = {run["name"]: run for run in document["runs"]}
    assert list(runs) == NAMES and all(run["status"] == "finished" for run in runs.values())
    for run in local["runs"]:
        # Same seeds on the CPU give the same runs, whichever process or Ray worker ran them.
        assert runs[run["name"]]["summary"]["return_ratio"] == run["summary"]["return_ratio"]
        assert runs[run["name"]]["steps_to_95"] == run["steps_to_95"]
        assert (tmp_path / "ray" / run["name"] / "student.zip").is_file()
    strip = ("wall_seconds_mean", "wall_seconds_ci95")
    same = [{k: v for k, v in g.items() if k not in strip} for g in document["groups"]]
    assert same == [{k: v for k, v in g.items() if k not in strip} for g in local["groups"]]
    table = (tmp_path / "ray" / "table.md").read_text()
    assert "| expected-entropy | 32x32 | 2/2 |" in table and "| bc | 32x32 | 2/2 |" in table
    assert (local_out / "table.md").is_file()


# ---------------------------------------------------------------------------------------------- teacher families


def test_student_nets_keep_a_cnn_spec_whole() -> None:
    # A CNN spec's own '/' binds the widths right after it; anything else starts the next student.
    def specs(text: str) -> list[str]:
        return [str(spec) for spec in parse_nets(text)]

    assert specs("32,32/cnn:256/64,64/cnn/auto") == ["32,32", "cnn:256/64,64", "cnn", "auto"]
    assert specs("64,64/cnn:256") == ["64,64", "cnn:256"]
    assert specs("cnn:128/cnn:64/32") == ["cnn:128", "cnn:64/32"]
    # Run names are directory names: no '/' and no ':'.
    assert net_label("cnn:256/64,64") == "cnn256-64x64" and net_label("cnn:256") == "cnn256"
    assert net_label("32,32") == "32x32" and net_label([8, 8]) == "8x8"


def test_sweep_over_an_rl_zoo_folder_with_load_best(cli: CLI, tmp_path: Path) -> None:
    folder = make_zoo_folder(tmp_path)
    out = tmp_path / "sweep"
    args = ("sweep", "--methods", "bc", "--seeds", "0", "--teacher", folder, "--steps", "1024", "--eval-every", "0")
    args += ("--eval-episodes", "1", "--out", out, "-q")
    result = cli(*args, "--load-best", "--teacher-noise", "0.2", "--json")
    assert result.code == 0, result.stderr
    (run,) = result.json()["runs"]
    assert run["name"] == "bc-s0-32x32" and run["status"] == "finished", run
    assert run["summary"]["teacher"].endswith("Pendulum-v1_1/best_model.zip")
    config = json.loads((out / run["name"] / "config.json").read_text())
    assert config["load_best"] is True and config["teacher_noise"] == 0.2
    assert (out / run["name"] / "vecnormalize.pkl").is_file()  # the folder's env, as with distill run

    again = cli(*args, "--load-best", "--teacher-noise", "0.2", "--json")
    assert again.code == 0 and again.json()["runs"][0]["reused"], again.stderr
    # Another model of the same folder is another teacher: not mixed into the finished run.
    other = cli(*args, "--load-checkpoint", "1000", "--teacher-noise", "0.2")
    assert other.code == 2 and "rl_model_1000_steps.zip" in other.stderr and "--force" in other.stderr
    missing = cli(*args[:-3], "--out", tmp_path / "none", "--load-checkpoint", "5")
    assert missing.code == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert "error: --load-checkpoint 5: no rl_model_5_steps.zip in" in missing.stderr
    assert "(checkpoints saved: 1000)" in missing.stderr and not (tmp_path / "none").exists()

    # A wrapper outside the allow-list: refused with a line naming --trust-checkpoint, which the sweep takes.
    _dump(folder / "Pendulum-v1" / "config.yml", {"env_wrapper": "mypackage.wrappers.MyWrapper"})
    refused = cli("sweep", "--methods", "bc", "--teacher", folder, "--out", tmp_path / "none")
    assert refused.code == 2 and "pass --trust-checkpoint" in refused.stderr
    trusted = cli("sweep", "--methods", "bc", "--teacher", folder, "--out", tmp_path / "none", "--trust-checkpoint")
    assert trusted.code == 2 and "cannot import wrapper mypackage.wrappers.MyWrapper" in trusted.stderr
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize("spec", ["cnn", "cnn:64/32"])
def test_cnn_student_nets_on_vector_observations_fail_like_run(cli: CLI, tmp_path: Path, spec: str) -> None:
    swept = cli("sweep", "--methods", "bc", "--student-nets", f"32,32/{spec}", "--out", tmp_path / "sweep")
    ran = cli("run", "--student-net", spec, "--out", tmp_path / "run")
    assert swept.code == ran.code == 2 and swept.stdout == ""
    assert swept.stderr == ran.stderr and len(swept.stderr.strip().splitlines()) == 1
    assert swept.stderr.startswith(f"error: --student-net {spec}: a CNN needs image observations")
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "run").exists()


def test_sweep_distils_cnn_students_on_image_observations(cli: CLI, tmp_path: Path) -> None:
    teacher = _pong_teacher(tmp_path / "ppo-ALE-Pong-v5.zip")  # skips without the atari extra
    # An rl-zoo folder: env_kwargs keep evaluation episodes short.
    folder = tmp_path / "logs" / "ppo" / "ALE-Pong-v5_1"
    (folder / "ALE-Pong-v5").mkdir(parents=True)
    (folder / "ALE-Pong-v5.zip").write_bytes(teacher.read_bytes())
    config = {"env_wrapper": [ATARI_WRAPPER], "frame_stack": 4, "normalize": False, "policy": "CnnPolicy"}
    _dump(folder / "ALE-Pong-v5" / "config.yml", config)
    args = {"algo": "ppo", "env": PONG, "env_kwargs": {"max_episode_steps": 200}, "gym_packages": [], "seed": 0}
    _dump(folder / "ALE-Pong-v5" / "args.yml", args)

    # The names and specs of the runs, as run would build them: auto is half the teacher's NatureCNN.
    nets = parse_nets("auto/cnn:64/32/16,16")
    the_plan = plan(SweepOptions(["bc"], [0], nets, {"teacher": str(folder)}, out=tmp_path / "planned"))
    assert [(task.name, task.config.student_net) for task in the_plan.tasks] == [
        ("bc-s0-cnn256", "cnn:256"),
        ("bc-s0-cnn64-32", "cnn:64/32"),
        ("bc-s0-16x16", "16,16"),
    ]
    assert not (tmp_path / "planned").exists()

    tiny = tmp_path / "tiny.json"
    tiny.write_text(json.dumps({"n_envs": 2, "n_steps": 32, "minibatch_size": 64, "epochs": 1}))
    out = tmp_path / "sweep"
    result = cli(
        "sweep", "--methods", "bc", "--seeds", "0", "--teacher", folder, "--config", tiny, "--steps", "128",
        "--eval-every", "0", "--eval-episodes", "1", "--out", out, "-q", "--json",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    (run,) = result.json()["runs"]
    assert run["name"] == "bc-s0-cnn256" and run["status"] == "finished", run
    assert run["summary"]["student_net"] == "cnn:256" and run["net"] == "cnn256"


def test_maskable_teacher_without_masks_fails_before_the_sweep(cli: CLI, tmp_path: Path) -> None:
    contrib = pytest.importorskip("sb3_contrib")
    teacher = tmp_path / "maskable-CartPole-v1.zip"
    contrib.MaskablePPO("MlpPolicy", "CartPole-v1", seed=0, device="cpu").save(teacher)
    result = cli("sweep", "--methods", "bc", "--teacher", teacher, "--out", tmp_path / "out")
    assert result.code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.strip() == (
        "error: a MaskablePPO policy needs an environment with an action_masks() method; this one has none"
    )
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------- mistakes


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


MISTAKES = [
    (("--methods", "expected-entropi"), "unknown method 'expected-entropi'; valid methods:"),
    (("--methods", "bc", "--student-nets", "32,x"), "--student-nets must be layer widths like 32,32"),
    (("--methods", "bc", "--student-nets", "32,32//16"), "--student-nets must be student sizes separated by '/'"),
    (("--methods", "bc", "--student-nets", "0,32"), "--student-nets widths must be between 1 and"),
    (("--methods", "bc", "--seeds", "one"), "--seeds must be comma-separated integers like 0,1,2, got 'one'"),
    (("--methods", "bc", "--seeds", "0,0"), "--seeds lists 0 more than once"),
    (("--methods", "bc", "--teacher", "missing.zip"), "teacher checkpoint not found: missing.zip"),
    (("--methods", "bc", "--backend", "slurm"), "--backend must be one of local, ray, got 'slurm'"),
    (("--methods", "bc", "--jobs", "0"), "--jobs must be positive, got 0"),
    (("--methods", "bc", "--steps", "-1"), "--steps must be positive (or 0 for the task's default), got -1"),
    (("--methods", "bc", "--address", "127.0.0.1:6379"), "--address is for --backend ray"),
    (("--methods", "bc", "--backend", "ray", "--address", "nowhere"), "--address must be HOST:PORT"),
]


@pytest.mark.parametrize(("args", "says"), MISTAKES, ids=[" ".join(a) for a, _ in MISTAKES])
def test_sweep_mistakes_get_one_line_and_write_nothing(
    cli: CLI, tmp_path: Path, args: tuple[str, ...], says: str
) -> None:
    if "--backend" in args and "ray" in args:
        pytest.importorskip("ray")
    # A tiny budget first (the case's own options come later and win): a slipped-through mistake costs seconds.
    result = cli("sweep", "--steps", "512", "--eval-episodes", "1", "--out", tmp_path / "out", "-q", *args)
    assert result.code == 2
    assert result.stderr.startswith("error: ") and says in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
    assert not (tmp_path / "out").exists()


def test_ray_not_installed_names_the_extra(cli: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as it does without the extra
    result = cli("sweep", "--methods", "bc", "--backend", "ray", "--out", tmp_path / "out")
    assert result.code == 2
    assert result.stderr.strip() == "error: --backend ray needs Ray, an optional extra: pip install 'distillcli[ray]'"
    assert not (tmp_path / "out").exists()


def test_unreachable_ray_address_fails_fast(cli: CLI, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    address = f"127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    result = cli("sweep", "--methods", "bc", "--backend", "ray", "--address", address, "--out", tmp_path / "out")
    assert result.code == 2 and time.monotonic() - started < 30
    assert result.stderr.startswith(f"error: cannot reach a Ray cluster at {address}")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_report_mistakes(cli: CLI, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "a").mkdir()
    cases = [
        ((tmp_path / "empty",), f"error: no runs in {tmp_path / 'empty'}"),
        ((tmp_path / "missing",), f"error: no such directory: {tmp_path / 'missing'}"),
        ((tmp_path / "empty", tmp_path / "a"), "error: several directories: say where the table goes with --out"),
    ]
    for args, says in cases:
        result = cli("report", *args)
        assert result.code == 2 and result.stderr.startswith(says), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
    assert list((tmp_path / "empty").iterdir()) == []
