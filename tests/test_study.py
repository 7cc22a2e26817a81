"""``distill study`` and the teacher conditions it builds (--teacher-corrupt, --extra-actions)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

from distillcli.conditions import ExtraActions, state_hash
from distillcli.distributions import Categorical
from distillcli.run.setup import prepare, teacher_path
from distillcli.study import StudyOptions, plan
from distillcli.study.analyse import verdict_adversarial, verdict_control
from distillcli.study.grids import STUDIES, TEACHERS
from tests.conftest import CLI

LUNAR = "bundled:ppo-LunarLander-v3"


def _states(n: int = 2000) -> torch.Tensor:
    """LunarLander observations a random policy visits."""
    setup = prepare(LUNAR, None, "cpu")
    venv = setup.make_env(8, 0)
    rng = np.random.default_rng(0)
    obs, seen = venv.reset(), []
    for _ in range(n // 8):
        seen.append(obs)
        obs, _, _, _ = venv.step(rng.integers(4, size=8))
    venv.close()
    return torch.as_tensor(np.concatenate(seen))


def test_teacher_corrupt_is_uniform_on_a_fixed_share_of_states() -> None:
    states = _states()
    clean = prepare(LUNAR, None, "cpu").teacher
    corrupt = prepare(LUNAR, None, "cpu", teacher_corrupt=0.25).teacher
    base, dist = clean.actor(states), corrupt.actor(states)
    assert isinstance(base, Categorical) and isinstance(dist, Categorical)
    uniform = (dist.probs - 0.25).abs().max(-1).values < 1e-5
    assert 0.2 < float(uniform.float().mean()) < 0.3  # the share asked for
    assert torch.equal(dist.logits[~uniform], base.logits[~uniform])  # the others are the teacher's own
    # Fixed per state: the same in another batch order, another process's hash, and again.
    order = torch.randperm(len(states))
    assert torch.equal(corrupt.actor(states[order]).logits, dist.logits[order])
    assert torch.equal(state_hash(states), state_hash(states.clone()))
    # A deterministic evaluation acts at random on the corrupted states, not always with action 0.
    modes = dist.mode()[uniform]
    assert len(set(modes.tolist())) == 4


@pytest.mark.parametrize("form", ["repeat", "noop"])
def test_extra_actions_spread_the_teachers_probability_over_copies(form: str) -> None:
    states = _states(400)
    base = prepare(LUNAR, None, "cpu").teacher.actor(states)
    setup = prepare(LUNAR, None, "cpu", extra_actions=f"10:{form}")
    grown = setup.teacher.actor(states)
    assert isinstance(base, Categorical) and isinstance(grown, Categorical)
    assert grown.logits.shape == (len(states), 40)
    env_action = ExtraActions(setup.make_env(1, 0).envs[0].unwrapped, 10, form).base
    summed = torch.zeros_like(base.probs).index_add_(-1, torch.as_tensor(env_action), grown.probs)
    assert torch.allclose(summed, base.probs, atol=1e-5)  # the same behaviour in the env
    assert torch.equal(grown.mode(), base.mode())  # its deterministic action too
    assert torch.allclose(grown.probs.sum(-1), torch.ones(len(states)), atol=1e-5)
    venv = setup.make_env(2, 0)
    assert venv.action_space.n == 40  # type: ignore[attr-defined]
    venv.close()


def test_a_run_with_extra_actions_records_its_env_for_eval_and_ppo_load(cli: CLI, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = cli("run", "-t", LUNAR, "--extra-actions", "3:noop", "--teacher-corrupt", "0.15", "--steps", "2048",
                 "--out", out, "--eval-episodes", "2", "-q", "--json")  # fmt: skip
    assert result.code == 0, result.stderr
    env = json.loads((out / "env.json").read_text())
    assert env["env_wrapper"] == [{"distillcli.conditions.ExtraActions": {"copies": 3, "form": "noop"}}]
    config = json.loads((out / "config.json").read_text())
    assert config["extra_actions"] == "3:noop" and config["teacher_corrupt"] == 0.15
    assert PPO.load(out / "student.zip", device="cpu").action_space.n == 12
    evaluated = cli("eval", out / "student.zip", "-n", "2", "--json")
    assert evaluated.code == 0, evaluated.stderr
    assert np.isfinite(evaluated.json()["return_mean"])


@pytest.mark.parametrize(
    ("option", "value"),
    [("--extra-actions", "10"), ("--extra-actions", "0:repeat"), ("--extra-actions", "3:copy"),
     ("--teacher-corrupt", "1.0"), ("--teacher-corrupt", "-0.1")],
)  # fmt: skip
def test_condition_mistakes_get_one_line(cli: CLI, tmp_path: Path, option: str, value: str) -> None:
    result = cli("run", option, value, "--out", tmp_path / "r", "-q")
    assert result.code == 2 and result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
    assert option in result.stderr and not (tmp_path / "r").exists()


def test_conditions_need_a_discrete_feed_forward_teacher(cli: CLI, tmp_path: Path) -> None:
    pendulum = next(Path("../shared/teachers/rl-trained-agents/sac").glob("Pendulum-v1_1"), None)
    if pendulum is None:
        pytest.skip("needs ../shared/teachers")
    result = cli("run", "-t", pendulum, "--teacher-corrupt", "0.2", "--out", tmp_path / "r", "-q")
    assert result.code == 2 and "discrete actions" in result.stderr and not (tmp_path / "r").exists()


def test_every_study_teacher_ships_and_the_plan_shares_runs_between_studies() -> None:
    for options in TEACHERS.values():
        assert teacher_path(options["teacher"]).is_file(), options["teacher"]  # bundled:NAME, install-independent
    the_plan, cells = plan(StudyOptions(names=list(STUDIES), scale="full", out=Path("/nonexistent/study")))
    names = [cell.name for study_cells in cells.values() for cell in study_cells]
    assert len(the_plan.order) == len(set(names)) < len(names)  # a shared config runs once
    assert len(the_plan.tasks) == len(the_plan.order)
    configs = {Path(str(t.config.out)).name: t.config for t in the_plan.tasks}
    assert configs["lunar.corrupt25.rl.auto.s4"].teacher_corrupt == 0.25
    assert configs["lunar.early50.n-distill+r.reward-weight=0.01.auto.s1"].reward_weight == "0.01"
    assert (
        configs["lunar.early50.n-distill+r.reward-weight=0.01.auto.s1"].teacher
        == "bundled:study/ppo-LunarLander-v3-early50"
    )
    assert configs["lunar.strong.entropy-regularised.extra-actions=100-noop.auto.s0"].extra_actions == "100:noop"
    assert configs["lunar.strong.on-policy-distill.control=uniform.auto.s0"].control == "uniform"
    assert configs["lunar.strong.n-distill.8,8.s2".replace(",", "x")].student_net == "8,8"


def _row(**values: Any) -> dict[str, Any]:
    row = {"env": "E", "condition": "strong", "options": {}, "net": "auto", "finished": 5, "seeds": 5, "return_ci": 1.0}
    return {**row, **values}


def test_verdicts_follow_their_rules() -> None:
    kl = {"kl_under_student": 0.01, "kl_under_student_ci": 0.001}
    student = _row(variant="on-policy-distill", method="on-policy-distill", score=0.95, score_ci=0.02, **kl)
    teacher = _row(variant="on-policy-distill.control=teacher", method="on-policy-distill", score=0.5, score_ci=0.1,
                   kl_under_student=0.01, kl_under_student_ci=0.002)  # fmt: skip
    close = _row(variant="bc", method="bc", score=0.93, score_ci=0.05, kl_under_student=0.5, kl_under_student_ci=0.1)
    same = _row(variant="dagger", method="dagger", score=0.95, score_ci=0.03, **kl)
    verdict, lines = verdict_control([student, teacher, close, same])
    assert verdict == "holds in 67% of comparisons"  # better on the score; on the KL; on neither
    assert "(higher)" in lines[0] and "(lower)" in lines[1] and lines[2].count("no clear difference") == 2
    one_seed = [{**r, "score_ci": None} for r in (student, teacher)]
    assert verdict_control(one_seed)[0].startswith("inconclusive")
    copying = _row(variant="n-distill", method="n-distill", **{"return": -500.0}, recovered=0)
    reward = _row(variant="rl", method="rl", **{"return": 50.0}, recovered=3)
    assert verdict_adversarial([copying, reward])[0] == "holds"
    assert verdict_adversarial([{**copying, "recovered": 1}, reward])[0] == "partly holds"


def test_study_all_small_writes_every_artefact_and_a_rerun_reuses_its_runs(cli: CLI, tmp_path: Path) -> None:
    out = tmp_path / "study"
    result = cli("study", "all", "--out", out, "--json", "-q")
    assert result.code == 0, result.stderr
    document = result.json()
    assert set(document["studies"]) == set(STUDIES) and not document["failed"]
    text = (out / "study.md").read_text()
    for name, grid in STUDIES.items():
        for kind in ("csv", "json", "png", "md"):
            assert (out / f"{name}.{kind}").stat().st_size > 0, (name, kind)
        assert f"## {grid.title} ({grid.figure})" in text and f"![{name}]({name}.png)" in text
        saved = json.loads((out / f"{name}.json").read_text())
        assert saved["verdict"] == document["studies"][name]["verdict"] and saved["rows"]
        assert all(row["finished"] == row["seeds"] == 1 for row in saved["rows"])
    rows = json.loads((out / "control-policy.json").read_text())["rows"]
    assert all(row["kl_under_uniform"] is not None for row in rows)  # measured on the finished students
    action_rows = json.loads((out / "action-space.json").read_text())["rows"]
    assert all(row["snr_start"] > 0 and row["score_sampled"] is not None for row in action_rows)
    runs = sorted(p for p in (out / "runs").iterdir() if p.is_dir())
    assert len(runs) == document["runs"]
    for run in runs:
        with zipfile.ZipFile(run / "student.zip") as archive:
            assert "policy.pth" in archive.namelist()
    stamps = {run.name: (run / "summary.json").stat().st_mtime_ns for run in runs}
    again = cli("study", "all", "--out", out, "--json", "-q")
    assert again.code == 0, again.stderr
    assert {run.name: (run / "summary.json").stat().st_mtime_ns for run in runs} == stamps  # nothing ran again
    assert again.json()["studies"] == document["studies"]


def test_study_mistakes_get_one_line(cli: CLI, tmp_path: Path) -> None:
    for args in (("nope",), ("all", "--scale", "huge"), ("control-policy", "--seeds", "x")):
        result = cli("study", *args, "--out", tmp_path / "s")
        assert result.code == 2 and result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
        assert not (tmp_path / "s").exists()


def test_the_grid_world_teachers_file_name_names_its_env() -> None:
    """``bundled:study/ppo-GridWorldWindow-v0`` runs without --env: a name in distill's own namespace is found."""
    from distillcli.envs import infer_env_id

    assert infer_env_id(teacher_path("bundled:study/ppo-GridWorldWindow-v0")) == "distillcli/GridWorldWindow-v0"
    assert infer_env_id(Path("ppo-distillcli-GridWorld-v0.zip")) == "distillcli/GridWorld-v0"
    assert infer_env_id(Path("ppo-LunarLander-v3.zip")) == "LunarLander-v3"
