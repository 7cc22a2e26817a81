"""A fuzz pass: mutated checkpoint zips, rl-zoo YAML, config JSON and run directories through ``distill run``,
``distill eval`` and ``distill report``.

The property, for every input: a success, or a non-zero exit with exactly one ``error:`` line (never a traceback,
never the catch-all "internal error"); the process never needs more than MEMORY_CAP of address space (the CLI
runs under RLIMIT_AS, so a blow-up ends as a MemoryError the property rejects); no case takes a minute; and no
file appears or changes outside the run directories (a canary folder, which the hostile inputs name as a target,
is compared before and after, and so are the inputs themselves).

The corpus is fixed (seeded), so a failure reproduces; DISTILL_SMOKE=1 keeps the inputs that are valid tiny. All
cases run in one subprocess, in-process one after the other, to pay torch's import once.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import random
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import pytest

from distillcli.config import RunConfig
from tests.test_security import _CreatesFile, snapshot
from tests.test_zoo import _dump, make_zoo_folder

MEMORY_CAP = 3 << 30  # bytes of address space (torch alone maps ~1 GB)
CASE_SECONDS = 60
SEED = 17

# Runs the cases in one process under the memory cap; writes one result per case.
WORKER = textwrap.dedent(
    """\
    import json, os, resource, sys, time
    resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
    from distillcli.cli import main
    cases_file, results_file = sys.argv[1], sys.argv[2]
    cases = json.load(open(cases_file))
    results = []
    for case in cases:
        out, err = open("stdout.txt", "w+b"), open("stderr.txt", "w+b")
        saved = os.dup(1), os.dup(2)
        sys.stdout.flush(); sys.stderr.flush()
        os.dup2(out.fileno(), 1); os.dup2(err.fileno(), 2)
        sys.argv = ["distill", *case["argv"]]
        started, code = time.perf_counter(), 0
        try:
            main()
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        except BaseException as error:
            code, text = -1, repr(error)
        sys.stdout.flush(); sys.stderr.flush()
        os.dup2(saved[0], 1); os.dup2(saved[1], 2)
        out.seek(0); err.seek(0)
        results.append({{
            "name": case["name"], "code": code, "seconds": time.perf_counter() - started,
            "stdout": out.read().decode("utf-8", "replace")[:4000],
            "stderr": err.read().decode("utf-8", "replace")[:4000],
        }})
        json.dump(results, open(results_file, "w"))
    """
)


def _evil(canary: Path) -> dict[str, str]:
    payload = pickle.dumps(_CreatesFile(canary / "pwned"))
    return {":type:": "<class 'dict'>", ":serialized:": base64.b64encode(payload).decode()}


def _value(rng: random.Random, canary: Path, depth: int = 0) -> Any:
    """A JSON value a hostile or careless file might hold."""
    leaves: list[Any] = [
        0, -1, 1, 64, 2**31, 2**63, -(2**63), 10**30, 1e308, -1e308, 0.5, True, False, None,
        "", "auto", "\x1b[2J\x1b]0;owned\x07", "../../../etc/passwd", str(canary / "victim.txt"), "A" * 5000,
        "cuda:99", "nan", "inf", "32,32", "cnn:9999999", "1:0", "expected-entropy",
    ]  # fmt: skip
    if depth < 3 and rng.random() < 0.25:
        if rng.random() < 0.5:
            return [_value(rng, canary, depth + 1) for _ in range(rng.randint(0, 4))]
        return {rng.choice(["a", "net_arch", "pi", "vf", "x" * 300]): _value(rng, canary, depth + 1)}
    return rng.choice(leaves)


def _rezip(source: Path, target: Path, replace: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for name in old.namelist():
            new.writestr(name, replace.get(name, old.read(name)))
    return target


def _zips(rng: random.Random, teacher: Path, folder: Path, canary: Path) -> list[Path]:
    raw = teacher.read_bytes()
    with zipfile.ZipFile(teacher) as archive:
        data = json.loads(archive.read("data"))
    made = []
    for i in range(10):
        target = folder / f"z{i:02d}-ppo-CartPole-v1.zip"
        kind = i % 6
        if kind == 0:  # flipped bytes
            mutated = bytearray(raw)
            for _ in range(rng.randint(1, 8)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            target.write_bytes(bytes(mutated))
        elif kind == 1:  # truncated, or padded with garbage
            cut = rng.randrange(len(raw))
            target.write_bytes(raw[:cut] if rng.random() < 0.5 else raw + rng.randbytes(rng.randint(1, 4096)))
        elif kind == 2:  # data entries replaced or dropped
            changed = dict(data)
            for key in rng.sample(sorted(changed), 3):
                if rng.random() < 0.3:
                    del changed[key]
                else:
                    changed[key] = _value(rng, canary)
            _rezip(teacher, target, {"data": json.dumps(changed).encode()})
        elif kind == 3:  # plain-JSON policy_kwargs
            kwargs = {rng.choice(["net_arch", "activation_fn", "squash_output", "ortho_init", "log_std_init",
                                  "features_extractor_kwargs", "share_features_extractor"]): _value(rng, canary)
                      for _ in range(rng.randint(1, 3))}  # fmt: skip
            _rezip(teacher, target, {"data": json.dumps({**data, "policy_kwargs": kwargs}).encode()})
        elif kind == 4:  # a pickled payload where SB3 keeps pickles
            key = rng.choice(["policy_kwargs", "observation_space", "lr_schedule", "policy_class"])
            _rezip(teacher, target, {"data": json.dumps({**data, key: _evil(canary)}).encode()})
        else:  # members replaced by random bytes
            member = rng.choice(["policy.pth", "data", "policy.optimizer.pth"])
            _rezip(teacher, target, {member: rng.randbytes(rng.randint(0, 2048))})
        made.append(target)
    return made


WRAPPERS = [
    "stable_baselines3.common.vec_env.VecMonitor",
    {"stable_baselines3.common.vec_env.VecMonitor": {"filename": "{canary}/monitor"}},
    {"gymnasium.wrappers.RecordVideo": {"video_folder": "{canary}"}},
    {"gymnasium.wrappers.TimeLimit": {"max_episode_steps": 10**8}},
    {"gymnasium.wrappers.TimeLimit": {"max_episode_steps": 20}},
    {"gymnasium.wrappers.TransformReward": {"func": "abs"}},
    "gymnasium.wrappers.ClipAction",
    "os.system",
    "gymnasium.wrappers.HumanRendering",
]
YAML_TEXTS = [
    "a: &a [1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nenv_kwargs: [*e,*e,*e,*e,*e]\n",
    "env_kwargs: !!python/object/apply:os.system ['touch {canary}/pwned']\n",
    "normalize: \"__import__('os').system('touch {canary}/pwned')\"\n",
    "env_kwargs: " + "[" * 5000 + "]" * 5000 + "\n",
    "? [a, b]\n: c\n",
    "- just\n- a list\n",
]


def _folders(rng: random.Random, zoo: Path, folder: Path, canary: Path) -> list[Path]:
    made = []
    for i in range(10):
        copy = folder / f"y{i:02d}" / zoo.name
        shutil.copytree(zoo, copy)
        stats = copy / "Pendulum-v1"
        if i < 6:  # structured edits, as a file might be hand-edited
            from distillcli.zoo import read_yaml

            config, args = read_yaml(stats / "config.yml"), read_yaml(stats / "args.yml")
            for _ in range(rng.randint(1, 3)):
                edit = rng.randrange(5)
                if edit == 0:
                    args["gym_packages"] = [rng.choice(["this", "antigravity", "gymnasium", "venv.__main__", "json"])]
                elif edit == 1:
                    wrapper = json.loads(json.dumps(rng.choice(WRAPPERS)).replace("{canary}", str(canary)))
                    config[rng.choice(["env_wrapper", "vec_env_wrapper"])] = [wrapper]
                elif edit == 2:
                    config["frame_stack"] = rng.choice([0, 2, -1, 10**9, "4", True])
                elif edit == 3:
                    args["env_kwargs"] = {
                        rng.choice(["max_episode_steps", "render_mode", "g", "xml_file"]): _value(rng, canary)
                    }
                else:
                    args["env"] = rng.choice(["this:Pendulum-v1", "Pendulum-v1", "CartPole-v1", "", 7])
            _dump(stats / "config.yml", config)
            _dump(stats / "args.yml", args)
        elif i < 9:  # hostile text
            name = rng.choice(["config.yml", "args.yml"])
            (stats / name).write_text(
                YAML_TEXTS[(i + rng.randrange(6)) % len(YAML_TEXTS)].replace("{canary}", str(canary))
            )
        else:  # flipped bytes in both files and the statistics
            for name in ("config.yml", "args.yml", "vecnormalize.pkl"):
                raw = bytearray((stats / name).read_bytes())
                for _ in range(rng.randint(1, 6)):
                    raw[rng.randrange(len(raw))] = rng.randrange(256)
                (stats / name).write_bytes(bytes(raw))
        made.append(copy)
    return made


def _configs(rng: random.Random, folder: Path, canary: Path, evil_zip: Path) -> list[Path]:
    """Config files: mostly values of the right type at their extremes (so most pass the type check and reach the
    run), some of the wrong type; keys only the command line may set; an evil teacher; an output in the canary."""
    from distillcli.config import choices, field_type

    pools: dict[Any, list[Any]] = {
        int: [0, 1, 2, 7, 4096, 100_001, 2**31, 2**63, -1],
        float: [0.0, 1e-12, 0.5, 1.0, 1e6, 1e308, -1e308, -1.0],
        str: ["", "auto", "1:0", "cuda:99", "cnn:9999999", "\x1b[2J", "a" * 300, "0.5", "64,64", "0,0"],
        bool: [True, False],
    }
    fields = {f.name: f for f in __import__("dataclasses").fields(RunConfig)}
    made = []
    for i in range(12):
        options: dict[str, Any] = {"trust_checkpoint": True, "force": True, "out": str(canary / "run")}
        if i % 3 == 0:
            options["teacher"] = str(evil_zip)
        for name in rng.sample(sorted(fields), rng.randint(1, 4)):
            if name in ("teacher", "out", "env"):
                continue
            valid = choices(name)
            hint = next((t for t in pools if t is field_type(name) or f"{t.__name__}" in str(field_type(name))), str)
            pool = list(valid) if valid else pools[hint]
            options[name] = rng.choice(pool) if rng.random() < 0.85 else _value(rng, canary)
        path = folder / f"c{i:02d}.json"
        text = json.dumps(options)
        if i == 11:
            text = text[: rng.randrange(len(text))]
        path.write_text(text)
        made.append(path)
    return made


def _run_dirs(rng: random.Random, folder: Path, canary: Path) -> list[Path]:
    made = []
    for i in range(4):
        top = folder / f"r{i:02d}"
        for j in range(3):
            run = top / f"run{j}"
            run.mkdir(parents=True)
            summary = {
                "status": "finished", "method": "bc", "env_id": "CartPole-v1", "student_net": [32, 32], "seed": j,
                "score": 0.9, "teacher_return": 500.0, "student_return": 450.0, "random_return": 20.0,
                "return_ratio": 0.9, "wall_seconds": 3.0,
            }  # fmt: skip
            for key in rng.sample(sorted(summary), 3):
                summary[key] = _value(rng, canary)
            text = json.dumps(summary) if rng.random() < 0.8 else rng.choice(["[]", "{", "null", "\x00\x01"])
            (run / "summary.json").write_text(text)
            rows = [{"kind": "eval", "env_steps": 2048 * k, "student_return": _value(rng, canary)} for k in range(3)]
            (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"kind": "ev')
        if i == 3:  # a link loop and a FIFO where a metrics file belongs
            (top / "loop").symlink_to(top)
            (top / "run0" / "metrics.jsonl").unlink()
            os.mkfifo(top / "run0" / "metrics.jsonl")
        made.append(top)
    return made


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and FIFOs as Linux has them")
def test_fuzz_run_eval_report(tmp_path: Path, teacher_zip: Path) -> None:
    rng = random.Random(SEED)
    corpus, canary, work = tmp_path / "corpus", tmp_path / "canary", tmp_path / "work"
    for folder in (corpus, canary, work):
        folder.mkdir()
    (canary / "victim.txt").write_text("the user's data")
    (canary / "notes").mkdir()
    zoo = make_zoo_folder(corpus / "zoo")
    evil_zip = _rezip(teacher_zip, corpus / "evil-ppo-CartPole-v1.zip", {})
    with zipfile.ZipFile(teacher_zip) as archive:
        data = json.loads(archive.read("data"))
    _rezip(teacher_zip, evil_zip, {"data": json.dumps({**data, "policy_kwargs": _evil(canary)}).encode()})

    cases: list[dict[str, Any]] = []

    def case(name: str, *argv: str | Path) -> None:
        cases.append({"name": name, "argv": [str(a) for a in argv]})

    tiny = ("--quiet", "--eval-episodes", "1")
    for i, path in enumerate(_zips(rng, teacher_zip, corpus, canary)):
        case(f"run {path.name}", "run", "--teacher", path, "--out", work / f"out-z{i}", *tiny)
        if i % 2:
            case(f"eval {path.name}", "eval", path, "--episodes", "1", "--json")
    for i, path in enumerate(_folders(rng, zoo, corpus, canary)):
        case(f"run {path.parent.name}", "run", "--teacher", path, "--out", work / f"out-y{i}", *tiny)
        if i % 3 == 0:
            case(f"eval {path.parent.name}", "eval", path, "--episodes", "1")
    for i, path in enumerate(_configs(rng, corpus, canary, evil_zip)):
        case(f"config {path.name}", "run", "--config", path, "--out", work / f"out-c{i}", *tiny)
    for i, path in enumerate(_run_dirs(rng, corpus, canary)):
        case(f"report {path.name}", "report", path, "--out", work / f"report-{i}")
        case(f"report --json {path.name}", "report", path, "--out", work / f"report-{i}", "--json")

    (work / "cases.json").write_text(json.dumps(cases))
    (work / "worker.py").write_text(WORKER.format(cap=MEMORY_CAP))
    corpus_before, canary_before = snapshot(corpus), snapshot(canary)
    env = {**os.environ, "DISTILL_SMOKE": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    budget = 30 + 10 * len(cases)  # a ceiling for a loaded machine; the cases take ~1 s each
    finished = subprocess.run(
        [sys.executable, "worker.py", "cases.json", "results.json"],
        cwd=work, env=env, capture_output=True, text=True, timeout=budget,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-3000:]
    results = json.loads((work / "results.json").read_text())
    assert len(results) == len(cases)

    failures = []
    for result in results:
        lines = result["stderr"].strip().splitlines()
        ok_error = (
            result["code"] > 0
            and len(lines) == 1
            and lines[0].startswith("error: ")
            and "internal error" not in lines[0]
            and "out of memory" not in lines[0]
            and result["stdout"] == ""
        )
        ok_success = result["code"] == 0 and "Traceback" not in result["stderr"]
        if not (ok_error or ok_success) or result["seconds"] > CASE_SECONDS:
            failures.append(f"{result['name']}: exit {result['code']} in {result['seconds']:.1f} s: {lines[-3:]}")
    assert not failures, "\n".join(failures)
    assert snapshot(canary) == canary_before  # nothing written, truncated or created where an input pointed
    assert snapshot(corpus) == corpus_before  # the inputs are read, never changed
    left = sorted(p.name for p in work.iterdir())
    assert all(name.startswith(("out-", "report-")) or name in ("cases.json", "worker.py", "results.json",
               "stdout.txt", "stderr.txt") for name in left), left  # fmt: skip
    outcomes = [r["code"] == 0 for r in results]
    assert any(outcomes) and not all(outcomes)  # the corpus reaches both sides
