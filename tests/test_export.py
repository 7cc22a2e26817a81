"""distill export (ONNX, TorchScript, int8) and what distill eval does with exports (return beside the zip's, latency,
videos): parity with SB3's predict checked independently here (PPO.load + VecNormalize.load, not distill's code),
a numpy-and-onnxruntime-only script acting in the env, the sidecar and model card, and every bad input in one line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from stable_baselines3 import PPO
from stable_baselines3.common.envs import IdentityEnvMultiBinary, IdentityEnvMultiDiscrete, SimpleMultiObsEnv
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from distillcli.config import DEFAULT_METHOD
from distillcli.run.setup import bundled_teacher
from tests.conftest import CLI

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "teachers" / "rl-trained-agents"
MULTI_BINARY_ENV = "distillcli-export-test/MultiBinaryIdentity-v0"
MULTI_DISCRETE_ENV = "distillcli-export-test/MultiDiscreteIdentity-v0"
DICT_ENV = "distillcli-export-test/DictObs-v0"
if MULTI_BINARY_ENV not in gym.registry:
    gym.register(MULTI_BINARY_ENV, entry_point=IdentityEnvMultiBinary, kwargs={"dim": 3, "ep_length": 20})
    gym.register(MULTI_DISCRETE_ENV, entry_point=IdentityEnvMultiDiscrete, kwargs={"dim": 3, "ep_length": 20})
    gym.register(DICT_ENV, entry_point=SimpleMultiObsEnv)


def _distill(cli: CLI, out: Path, *args: str | Path, steps: int = 2048) -> Path:
    result = cli("run", *args, "--steps", str(steps), "--eval-episodes", "5", "--out", out, "--quiet", "--json")
    assert result.code == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def cartpole(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32x32 student of the bundled CartPole teacher, 4,096 steps."""
    out = tmp_path_factory.mktemp("export") / "cartpole"
    monkey = pytest.MonkeyPatch()
    monkey.setattr(sys, "argv", ["distill", "run", "--steps", "4096", "--out", str(out), "--quiet"])
    from distillcli.cli import main

    try:
        main()
    finally:
        monkey.undo()
    return out


def _lunar_zoo(folder: Path) -> Path:
    """An rl-zoo folder around the bundled LunarLander teacher, with VecNormalize statistics (not identity)."""
    run = folder / "logs" / "ppo" / "LunarLander-v3_1"
    (run / "LunarLander-v3").mkdir(parents=True)
    shutil.copy(bundled_teacher("ppo-LunarLander-v3"), run / "LunarLander-v3.zip")
    (run / "LunarLander-v3" / "args.yml").write_text(yaml.dump({"env": "LunarLander-v3", "env_kwargs": {}}))
    (run / "LunarLander-v3" / "config.yml").write_text(yaml.dump({"normalize": True}))
    venv = VecNormalize(DummyVecEnv([lambda: gym.make("LunarLander-v3")]), clip_obs=4.0)
    rng = np.random.default_rng(0)
    assert venv.obs_rms is not None
    venv.obs_rms.mean = rng.normal(0.0, 0.1, 8)
    venv.obs_rms.var = rng.uniform(0.5, 2.0, 8)
    venv.save(run / "LunarLander-v3" / "vecnormalize.pkl")
    return run


@pytest.fixture(scope="module")
def lunar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("Box2D")
    folder = tmp_path_factory.mktemp("lunar")
    zoo = _lunar_zoo(folder)
    out = folder / "run"
    from distillcli.cli import main

    monkey = pytest.MonkeyPatch()
    argv = ["distill", "run", "--teacher", str(zoo), "--steps", "2048", "--out", str(out), "--quiet"]
    monkey.setattr(sys, "argv", argv)
    try:
        main()
    finally:
        monkey.undo()
    assert (out / "vecnormalize.pkl").is_file()
    return out


def _sidecar(model: Path) -> dict[str, Any]:
    return json.loads(model.with_suffix(".json").read_text())  # type: ignore[no-any-return]


def _raw_and_normalised(run: Path, env_id: str, count: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Observations from random play; normalised by SB3's own VecNormalize.load of the run's statistics."""
    venv = DummyVecEnv([lambda: gym.make(env_id)])
    stats = run / "vecnormalize.pkl"
    normalizer = VecNormalize.load(str(stats), venv) if stats.is_file() else None
    env = gym.make(env_id)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    raws = []
    for _ in range(count):
        raws.append(obs)
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
    raw = np.asarray(raws)
    return raw, (normalizer.normalize_obs(raw) if normalizer is not None else raw)


def _onnx_actions(model: Path, obs: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    feed = {"obs": obs}
    if masks is not None:
        feed["action_mask"] = masks
    return session.run(None, feed)[0]  # type: ignore[no-any-return]


def _eval_json(cli: CLI, *args: str | Path, episodes: int = 5) -> dict[str, Any]:
    result = cli("eval", *args, "--episodes", str(episodes), "--json")
    assert result.code == 0, result.stderr
    return result.json()  # type: ignore[no-any-return]


# --- the three envs of the bar: CartPole, LunarLander with VecNormalize, Pendulum (Box) -------------------------


def test_cartpole_onnx_parity_sidecar_card_and_eval(cli: CLI, cartpole: Path) -> None:
    result = cli("export", cartpole, "--json")
    assert result.code == 0, result.stderr
    sidecar = result.json()
    model = cartpole / "student.onnx"
    assert model.is_file() and (cartpole / "student.json").is_file() and (cartpole / "README.md").is_file()
    assert sidecar["parity"] == {**sidecar["parity"], "observations": 1000, "mismatches": 0, "discrete": True}
    assert sidecar["inputs"] == [{"name": "obs", "dtype": "float32", "shape": ["batch", 4]}]
    assert sidecar["preprocessing"]["normalize"] is None and sidecar["preprocessing"]["action"]["kind"] == "argmax"
    assert sidecar["teacher"]["algo"] == "PPO" and sidecar["run"]["method"] == DEFAULT_METHOD
    # Independently: onnxruntime on raw observations == PPO.load(...).predict(deterministic=True).
    raw, _ = _raw_and_normalised(cartpole, "CartPole-v1", 1000)
    expected, _ = PPO.load(cartpole / "student.zip", device="cpu").predict(raw, deterministic=True)
    assert np.array_equal(_onnx_actions(model, raw), expected)
    # The model card: the hub's YAML front matter, then the text with the numbers and a way to run it.
    card = (cartpole / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "onnx"
    assert {"reinforcement-learning", "stable-baselines3", "distillation", "onnx", "CartPole-v1"} <= set(front["tags"])
    metric = front["model-index"][0]["results"][0]
    assert metric["dataset"]["name"] == "CartPole-v1" and metric["metrics"][0]["type"] == "mean_reward"
    for text in (DEFAULT_METHOD, "ppo-CartPole-v1", "latency", "import onnxruntime as ort", "parameters"):
        assert text in card
    # distill eval FILE.onnx: the exported model's score beside the zip's, on the same seeds.
    report = _eval_json(cli, model)
    assert report["format"] == "onnx" and report["zip"].endswith("student.zip")
    assert abs(report["score"] - report["zip_score"]) <= 0.02, report


def test_lunarlander_with_vecnormalize_in_the_graph(cli: CLI, lunar: Path) -> None:
    result = cli("export", lunar, "--episodes", "3", "--json")
    assert result.code == 0, result.stderr
    sidecar = result.json()
    normalize = sidecar["preprocessing"]["normalize"]
    assert normalize["in_graph"] and normalize["clip_obs"] == 4.0 and len(normalize["mean"]) == 8
    raw, normalised = _raw_and_normalised(lunar, "LunarLander-v3", 1000)
    assert not np.allclose(raw, normalised)
    expected, _ = PPO.load(lunar / "student.zip", device="cpu").predict(normalised, deterministic=True)
    assert np.array_equal(_onnx_actions(lunar / "student.onnx", raw.astype(np.float32)), expected)
    report = _eval_json(cli, lunar / "student.onnx")
    assert abs(report["score"] - report["zip_score"]) <= 0.02, report


def test_script_with_onnxruntime_and_numpy_alone_acts_in_the_env(lunar: Path, tmp_path: Path) -> None:
    """The sidecar and the .onnx are all a program needs: no torch, no SB3, no distillcli, no statistics file."""
    shutil.copy(lunar / "student.onnx", tmp_path / "student.onnx")
    shutil.copy(lunar / "student.json", tmp_path / "student.json")
    code = textwrap.dedent(
        """
        import json, sys
        import gymnasium as gym
        import numpy as np
        import onnxruntime as ort

        meta = json.load(open("student.json"))
        session = ort.InferenceSession(meta["file"], providers=["CPUExecutionProvider"])
        env = gym.make(meta["env"]["env_id"])
        returns = []
        for seed in (5, 6):
            obs, _ = env.reset(seed=seed)
            done, total = False, 0.0
            while not done:
                action = session.run(None, {"obs": np.asarray(obs, dtype=meta["inputs"][0]["dtype"])[None]})[0][0]
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
        heavy = [m for m in ("torch", "stable_baselines3", "distillcli") if m in sys.modules]
        print(json.dumps({"returns": returns, "heavy": heavy}))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    assert answer["heavy"] == []
    # The same episodes with SB3: PPO.load + the run's VecNormalize statistics.
    model = PPO.load(lunar / "student.zip", device="cpu")
    normalizer = VecNormalize.load(str(lunar / "vecnormalize.pkl"), DummyVecEnv([lambda: gym.make("LunarLander-v3")]))
    env = gym.make("LunarLander-v3")
    for seed, got in zip((5, 6), answer["returns"], strict=True):
        obs, _ = env.reset(seed=seed)
        done, total = False, 0.0
        while not done:
            action, _ = model.predict(normalizer.normalize_obs(obs), deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        assert got == pytest.approx(total, abs=1e-6)


@pytest.mark.skipif(not SHARED.is_dir(), reason="the shared rl-zoo teachers are not there")
def test_pendulum_box_parity_from_an_rl_zoo_teacher(cli: CLI, tmp_path: Path) -> None:
    run = _distill(cli, tmp_path / "run", "--teacher", SHARED / "ppo" / "Pendulum-v1_1")
    result = cli("export", run, "--episodes", "3", "--json")
    assert result.code == 0, result.stderr
    sidecar = result.json()
    assert sidecar["parity"]["max_abs_diff"] <= 1e-5 and sidecar["preprocessing"]["action"]["kind"] == "clip"
    raw, normalised = _raw_and_normalised(run, "Pendulum-v1", 1000)
    expected, _ = PPO.load(run / "student.zip", device="cpu").predict(normalised, deterministic=True)
    got = _onnx_actions(run / "student.onnx", raw.astype(np.float32))
    assert got.shape == expected.shape == (1000, 1)
    assert np.abs(got - expected).max() <= 1e-5
    report = _eval_json(cli, run / "student.onnx")
    assert abs(report["score"] - report["zip_score"]) <= 0.02, report


def test_squashed_gsde_student_is_tanh_then_rescaled(cli: CLI, tmp_path: Path) -> None:
    model = PPO(
        "MlpPolicy", "Pendulum-v1", use_sde=True, policy_kwargs={"squash_output": True, "net_arch": [16]}, seed=0
    )
    with torch.no_grad():
        model.policy.action_net.weight.mul_(100.0)
        model.policy.action_net.bias.fill_(1.5)  # means past +-1: tanh and the rescaling both matter
    model.save(tmp_path / "ppo-Pendulum-v1.zip")
    result = cli("export", tmp_path / "ppo-Pendulum-v1.zip", "--episodes", "1", "--json")
    assert result.code == 0, result.stderr
    assert result.json()["preprocessing"]["action"]["kind"] == "squash"
    raw, _ = _raw_and_normalised(tmp_path, "Pendulum-v1", 500)
    expected, _ = PPO.load(tmp_path / "ppo-Pendulum-v1.zip", device="cpu").predict(raw, deterministic=True)
    got = _onnx_actions(tmp_path / "ppo-Pendulum-v1.onnx", raw.astype(np.float32))
    assert np.abs(got - expected).max() <= 1e-5 and np.abs(expected).max() > 1.9  # reaches the bounds (+-2)


# --- the other spaces: MultiDiscrete, MultiBinary, action masks, Atari frames ------------------------------------


@pytest.mark.parametrize(("env_id", "kind"), [(MULTI_DISCRETE_ENV, "multi-argmax"), (MULTI_BINARY_ENV, "threshold")])
def test_multidiscrete_and_multibinary_actions(cli: CLI, tmp_path: Path, env_id: str, kind: str) -> None:
    model = PPO("MlpPolicy", env_id, policy_kwargs={"net_arch": [16]}, seed=0)
    with torch.no_grad():
        model.policy.action_net.weight.mul_(20.0)
    model.save(tmp_path / "model.zip")
    result = cli("export", tmp_path / "model.zip", "--env", env_id, "--episodes", "1", "--json")
    assert result.code == 0, result.stderr
    sidecar = result.json()
    assert sidecar["preprocessing"]["action"]["kind"] == kind and sidecar["parity"]["mismatches"] == 0
    env = gym.make(env_id)
    obs = np.stack([env.observation_space.sample() for _ in range(300)])
    expected, _ = PPO.load(tmp_path / "model.zip", device="cpu").predict(obs, deterministic=True)
    assert np.array_equal(_onnx_actions(tmp_path / "model.onnx", obs), expected)


def test_maskable_student_takes_the_mask_as_an_input(cli: CLI, tmp_path: Path) -> None:
    pytest.importorskip("sb3_contrib")
    from sb3_contrib import MaskablePPO
    from sb3_contrib.common.envs import InvalidActionEnvDiscrete

    env_id = "distillcli-export-test/MaskedIdentity-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=InvalidActionEnvDiscrete, kwargs={"dim": 6, "n_invalid_actions": 3})
    model = MaskablePPO("MlpPolicy", gym.make(env_id), policy_kwargs={"net_arch": [16]}, seed=0)
    model.save(tmp_path / "maskable.zip")
    result = cli("export", tmp_path / "maskable.zip", "--env", env_id, "--episodes", "2", "--json")
    assert result.code == 0, result.stderr
    sidecar = result.json()
    assert [i["name"] for i in sidecar["inputs"]] == ["obs", "action_mask"]
    assert sidecar["inputs"][1]["shape"] == ["batch", 6]
    rng = np.random.default_rng(0)
    obs = rng.integers(0, 6, 200)
    masks = rng.random((200, 6)) < 0.5
    masks[np.arange(200), rng.integers(0, 6, 200)] = True  # at least one valid action
    loaded = MaskablePPO.load(tmp_path / "maskable.zip", device="cpu")
    expected = np.array(
        [loaded.predict(o, action_masks=m, deterministic=True)[0] for o, m in zip(obs, masks, strict=True)]
    )
    got = _onnx_actions(tmp_path / "maskable.onnx", obs, masks)
    assert np.array_equal(got, expected) and masks[np.arange(200), got].all()
    report = _eval_json(cli, tmp_path / "maskable.onnx")  # this env draws its masks from numpy's global state:
    assert report["return_mean"] > 0 and report["zip_return_mean"] > 0  # the two runs see other masks


def test_atari_frames_transposed_and_scaled_in_the_graph_stack_outside(cli: CLI, tmp_path: Path) -> None:
    pytest.importorskip("ale_py")
    from tests.test_atari import _dump, _pong_teacher

    folder = tmp_path / "ALE-Pong-v5_1"
    (folder / "ALE-Pong-v5").mkdir(parents=True)
    _pong_teacher(folder / "ALE-Pong-v5.zip")
    wrapper = "stable_baselines3.common.atari_wrappers.AtariWrapper"
    _dump(folder / "ALE-Pong-v5" / "config.yml", {"env_wrapper": [wrapper], "frame_stack": 4, "normalize": False})
    _dump(folder / "ALE-Pong-v5" / "args.yml", {"env": "ALE/Pong-v5", "env_kwargs": {"max_episode_steps": 120}})
    out = tmp_path / "pong.onnx"
    result = cli("export", folder, "--out", out, "--episodes", "1", "--json")
    assert result.code == 0, result.stderr
    sidecar = result.json()
    assert sidecar["inputs"][0] == {"name": "obs", "dtype": "uint8", "shape": ["batch", 84, 84, 4]}
    pre = sidecar["preprocessing"]
    assert pre["transpose_images"] and pre["scale_images"] and pre["frame_stack"]["frames"] == 4
    assert not pre["frame_stack"]["in_graph"] and sidecar["parity"]["mismatches"] == 0
    report = _eval_json(cli, out, "--video", tmp_path / "pong.mp4", episodes=1)
    import imageio.v2 as imageio

    reader = imageio.get_reader(tmp_path / "pong.mp4")
    assert reader.count_frames() == report["video"]["frames"] > 10
    assert tuple(reader.get_meta_data()["size"]) == (report["video"]["width"], report["video"]["height"])


# --- TorchScript, int8 ---------------------------------------------------------------------------------------


def test_torchscript_export_matches_predict(cli: CLI, cartpole: Path, tmp_path: Path) -> None:
    out = tmp_path / "student.pt"
    result = cli("export", cartpole, "--format", "torchscript", "--out", out, "--episodes", "2")
    assert result.code == 0, result.stderr
    assert "1000/1000 actions equal" in result.stdout
    module = torch.jit.load(str(out))
    raw, _ = _raw_and_normalised(cartpole, "CartPole-v1", 300)
    expected, _ = PPO.load(cartpole / "student.zip", device="cpu").predict(raw, deterministic=True)
    assert np.array_equal(module(torch.as_tensor(raw)).numpy(), expected)
    front = yaml.safe_load((tmp_path / "README.md").read_text().split("---")[1])
    assert front["library_name"] == "pytorch" and "torchscript" in front["tags"]
    # PyTorch treats loading TorchScript as running its code: distill eval needs the flag typed for it.
    _one_line(cli("eval", out, "--episodes", "1"), "TorchScript", "--trust-checkpoint")
    report = _eval_json(cli, out, "--trust-checkpoint")
    assert report["format"] == "torchscript" and report["return_mean"] == report["zip_return_mean"]


def test_int8_quantisation_is_kept_within_its_score_or_refused(
    cli: CLI, cartpole: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "student.int8.onnx"
    result = cli("export", cartpole, "--quantize", "int8", "--out", out, "--episodes", "3", "--json")
    if result.code == 0:
        check = result.json()["quantization_check"]
        assert abs(check["score"] - check["float_score"]) <= 0.02 and result.json()["quantization"] == "int8"
        assert _eval_json(cli, out)["quantization"] == "int8"
    else:
        assert "int8 model scores" in result.stderr and not out.exists()
    import distillcli.export.exporter as exporter

    monkeypatch.setattr(exporter, "QUANTIZE_TOLERANCE", -1.0)  # any difference, even none, is too large
    refused = tmp_path / "refused" / "student.int8.onnx"
    result = cli("export", cartpole, "--quantize", "int8", "--out", refused, "--episodes", "2")
    assert result.code == 2 and "int8 model scores" in result.stderr and "float model's" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not refused.exists()
    assert not refused.with_suffix(".json").exists() and not (refused.parent / "README.md").exists()


# --- distill eval: latency and videos ---------------------------------------------------------------------------


def test_eval_latency_table_side_by_side(cli: CLI, cartpole: Path) -> None:
    report = _eval_json(cli, cartpole / "student.zip", "--teacher", "bundled:ppo-CartPole-v1", "--latency")
    rows = {(row["runtime"], row["model"]): row for row in report["latency"]}
    expected = {"sb3 predict", "torch eager", "torchscript", "onnxruntime", "onnxruntime int8"}
    assert {runtime for runtime, _ in rows} == expected
    assert ("sb3 predict", "teacher") in rows
    for row in rows.values():
        assert row["single_us"] > 0 and row["batch_us"] > 0 and row["batch"] == 256
    # The bar (docs/benchmarks.md) is 5x; a loaded CI machine must still show a clear gap.
    assert rows[("onnxruntime", "student")]["single_us"] * 3 < rows[("sb3 predict", "student")]["single_us"]


def test_video_with_the_teacher_beside_the_student(cli: CLI, cartpole: Path, tmp_path: Path) -> None:
    import imageio.v2 as imageio

    video = tmp_path / "play.mp4"
    args = ["--teacher", "bundled:ppo-CartPole-v1", "--video", video, "--video-episodes", "1"]
    shown = _eval_json(cli, cartpole / "student.zip", *args)["video"]
    assert shown["width"] == 1200 and shown["height"] == 400  # CartPole's 600x400, twice
    reader = imageio.get_reader(video)
    assert reader.count_frames() == shown["frames"] == 501  # the teacher balances for 500 steps
    assert tuple(reader.get_meta_data()["size"]) == (1200, 400)


def test_gif_video(cli: CLI, cartpole: Path, tmp_path: Path) -> None:
    import imageio.v3 as iio

    shown = _eval_json(cli, cartpole / "student.zip", "--video", tmp_path / "play.gif")["video"]
    frames = iio.imread(tmp_path / "play.gif")  # Pillow merges identical frames in a GIF: the size is checked
    assert frames.shape[1:3] == (400, 600) == (shown["height"], shown["width"])
    assert 1 < frames.shape[0] <= shown["frames"]


def test_video_of_an_exported_model(cli: CLI, cartpole: Path, tmp_path: Path) -> None:
    assert cli("export", cartpole, "--out", tmp_path / "student.onnx", "--episodes", "1").code == 0
    report = _eval_json(cli, tmp_path / "student.onnx", "--video", tmp_path / "v.mp4", "--video-episodes", "2")
    import imageio.v2 as imageio

    assert imageio.get_reader(tmp_path / "v.mp4").count_frames() == report["video"]["frames"]
    assert (report["video"]["width"], report["video"]["height"]) == (600, 400)


# --- bad input: one line, nothing written ---------------------------------------------------------------------


def _one_line(result: Any, *texts: str) -> None:
    assert result.code == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in texts:
        assert text in lines[0], lines[0]


def test_missing_extra_is_one_line(cli: CLI, cartpole: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    _one_line(cli("export", cartpole, "--out", tmp_path / "m.onnx"), "distillcli[export]")
    _one_line(cli("eval", cartpole / "student.zip", "--latency"), "distillcli[export]")
    assert not (tmp_path / "m.onnx").exists()


def test_bad_inputs_are_one_line_and_write_nothing(cli: CLI, cartpole: Path, tmp_path: Path) -> None:
    from stable_baselines3 import DQN

    DQN("MlpPolicy", "CartPole-v1", policy_kwargs={"net_arch": [8]}).save(tmp_path / "dqn-CartPole-v1.zip")
    _one_line(cli("export", tmp_path / "dqn-CartPole-v1.zip"), "DQN", "export takes a distill student")
    PPO("MultiInputPolicy", DICT_ENV, policy_kwargs={"net_arch": [8]}).save(tmp_path / "dict.zip")
    _one_line(cli("export", tmp_path / "dict.zip", "--env", DICT_ENV), "Dict observations")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    _one_line(cli("export", cartpole, "--out", blocker / "student.onnx"), "cannot write")
    _one_line(cli("export", cartpole, "--out", tmp_path / "student.txt"), "must end in .onnx")
    _one_line(cli("export", cartpole, "--format", "tflite"), "--format must be one of onnx, torchscript")
    _one_line(cli("export", cartpole, "--format", "torchscript", "--quantize", "int8"), "--format onnx")
    _one_line(cli("export", tmp_path / "nothing-here"), "model not found")
    (tmp_path / "card").mkdir()
    (tmp_path / "card" / "README.md").write_text("# my project\n")
    _one_line(cli("export", cartpole, "--out", tmp_path / "card" / "s.onnx"), "not a distill model card")
    assert (tmp_path / "card" / "README.md").read_text() == "# my project\n"
    assert not list(tmp_path.glob("**/*.onnx"))
    lone = tmp_path / "lone.onnx"
    lone.write_bytes(b"not a model")
    _one_line(cli("eval", lone), "no lone.json beside lone.onnx")
    _one_line(cli("eval", cartpole / "student.zip", "--video", tmp_path / "v.avi"), ".mp4 or .gif")


def test_an_existing_export_is_replaced_only_with_force(cli: CLI, cartpole: Path, tmp_path: Path) -> None:
    out = tmp_path / "student.onnx"
    assert cli("export", cartpole, "--out", out, "--episodes", "1").code == 0
    before = out.read_bytes()
    _one_line(cli("export", cartpole, "--out", out, "--episodes", "1"), "already exists", "--force")
    assert cli("export", cartpole, "--out", out, "--episodes", "1", "--force").code == 0
    assert out.read_bytes() == before  # the same student exports to the same bytes


def test_a_failed_parity_check_writes_nothing(
    cli: CLI, cartpole: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import distillcli.export.exporter as exporter

    real = exporter.runner

    def off_by_one(model: bytes | Path, fmt: str) -> Any:
        act = real(model, fmt)
        return lambda obs, masks: 1 - act(obs, masks)

    monkeypatch.setattr(exporter, "runner", off_by_one)
    out = tmp_path / "student.onnx"
    _one_line(cli("export", cartpole, "--out", out), "parity check failed", "nothing was written")
    assert not list(tmp_path.iterdir())


def test_normalisation_with_frame_stacking_is_refused() -> None:
    from distillcli.envs import EnvStack, Normalization
    from distillcli.errors import DistillError
    from distillcli.export.graph import check_exportable_spaces

    stack = EnvStack("CartPole-v1", normalization=Normalization(np.zeros(4), np.ones(4), 1.0), frame_stack=4)
    space = gym.spaces.Box(-1.0, 1.0, (16,), np.float32)
    with pytest.raises(DistillError, match="frame stacking"):
        check_exportable_spaces(space, gym.spaces.Discrete(2), stack)


def test_an_env_that_cannot_render_is_one_line(
    cli: CLI, cartpole: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where MuJoCo has no GL (no display, no EGL or OSMesa), --video says so in one line and writes nothing."""
    import distillcli.export.video as video

    def no_gl(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("mujoco.FatalError: gladLoadGL error")

    monkeypatch.setattr(video, "open_env", no_gl)
    out = tmp_path / "v.mp4"
    _one_line(cli("eval", cartpole / "student.zip", "--episodes", "1", "--video", out), "cannot render", "MUJOCO_GL")
    assert not out.exists()


def test_mujoco_video_where_mujoco_is_installed(cli: CLI, tmp_path: Path) -> None:
    pytest.importorskip("mujoco")
    model = PPO("MlpPolicy", "Hopper-v5", policy_kwargs={"net_arch": [8]}, seed=0)
    model.save(tmp_path / "ppo-Hopper-v5.zip")
    out = tmp_path / "hopper.mp4"
    result = cli("eval", tmp_path / "ppo-Hopper-v5.zip", "--episodes", "1", "--video", out, "--json")
    if result.code == 0:  # a machine with EGL (or OSMesa with MUJOCO_GL=osmesa)
        import imageio.v2 as imageio

        assert imageio.get_reader(out).count_frames() == result.json()["video"]["frames"]
    else:
        _one_line(result, "cannot render Hopper-v5")
        assert not out.exists()


def test_a_hostile_sidecar_is_checked_like_a_run_directory(cli: CLI, cartpole: Path, tmp_path: Path) -> None:
    """distill eval FILE.onnx builds its env from the sidecar when the zip is gone: the same checks as env.json (no
    rendering, no file-writing wrapper arguments, bounded episodes), and a sidecar that is not a regular file is
    never read."""
    import os

    out = tmp_path / "export" / "student.onnx"
    assert cli("export", cartpole, "--out", out, "--episodes", "1").code == 0
    sidecar = _sidecar(out)
    sidecar["student_zip"] = "gone.zip"  # the env comes from the sidecar alone
    canary = tmp_path / "canary.txt"
    canary.write_text("the user's file\n")
    hostile = {
        "render_mode human": ({"env_kwargs": {"render_mode": "human"}}, "render_mode"),
        "VecMonitor filename": (
            {"vec_env_wrapper": [{"stable_baselines3.common.vec_env.VecMonitor": {"filename": str(canary)}}]},
            "filename",
        ),
        "endless episodes": ({"env_kwargs": {"max_episode_steps": 10**8}}, "max_episode_steps"),
        "huge frame stack": ({"frame_stack": 10**6}, "frame_stack"),
    }
    for change, expected in hostile.values():
        out.with_suffix(".json").write_text(json.dumps({**sidecar, "env": {**sidecar["env"], **change}}))
        _one_line(cli("eval", out, "--episodes", "1"), expected)
    assert canary.read_text() == "the user's file\n"
    out.with_suffix(".json").unlink()
    os.mkfifo(out.with_suffix(".json"))  # never waited on
    _one_line(cli("eval", out, "--episodes", "1"), "student.json")
