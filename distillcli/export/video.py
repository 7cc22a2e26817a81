"""``distill eval --video``: N episodes of the student, and with ``--teacher`` the teacher beside it on the same
seeds, rendered in ``rgb_array`` mode (distill's envs otherwise never render) and encoded by imageio (ffmpeg from
imageio-ffmpeg for .mp4, Pillow for .gif)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from distillcli.envs import EnvStack
from distillcli.errors import DistillError, short
from distillcli.export.runtime import require
from distillcli.export.source import Policy, env_masks, open_env, views
from distillcli.metrics import atomic_write_bytes

VIDEO_SUFFIXES = (".mp4", ".gif")
MAX_FRAMES = 100_000  # frames of one episode: an env whose episodes never end is refused, not recorded forever
MAX_VIDEO_EPISODES = 100


def prepare_rendering() -> None:
    """Headless rendering where there is no display: MuJoCo through EGL (set before mujoco is first imported),
    pygame (classic control, Box2D) with SDL's dummy video driver. A user's own settings win."""
    if not os.environ.get("DISPLAY"):
        os.environ.setdefault("MUJOCO_GL", "egl")
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")


def check_video_path(path: Path, episodes: int) -> None:
    """Before anything runs: a suffix we can encode, a folder we can write, a sane episode count."""
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise DistillError(f"--video {short(path)}: the file must end in .mp4 or .gif")
    if not 1 <= episodes <= MAX_VIDEO_EPISODES:
        raise DistillError(f"--video-episodes must be between 1 and {MAX_VIDEO_EPISODES}, got {episodes}")
    require("imageio", "--video")
    if path.suffix.lower() == ".mp4":
        require("imageio_ffmpeg", "--video .mp4")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.parent / f".{path.name}.write-test"
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise DistillError(f"--video: cannot write to {short(path.parent)}: {error.strerror or short(error)}") from None


def _even(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """The frame padded with black to height x width (even sizes: what H.264's 4:2:0 needs)."""
    out = np.zeros((height, width, 3), dtype=np.uint8)
    h, w = frame.shape[:2]
    out[:h, :w] = frame[..., :3]
    return out


class _Player:
    """One policy in one rendered env, stepped until its episode ends; its last frame holds after that."""

    def __init__(self, stack: EnvStack, policy: Policy, seed: int, masked: bool) -> None:
        self.policy = policy
        self.masked = masked
        self.done = False
        try:
            self.venv = open_env(stack, 1, seed, render=True)
            self.obs = self.venv.reset()
            self.frame = self._render()
        except DistillError:
            raise
        except Exception as error:
            raise _unrenderable(stack.env_id, error) from None
        self.steps = 0

    def _render(self) -> np.ndarray:
        frames = self.venv.get_images()
        frame = frames[0] if frames else None
        if frame is None or np.asarray(frame).ndim != 3:
            raise DistillError("the environment returned no rgb_array frame")
        return np.asarray(frame, dtype=np.uint8)

    def step(self) -> None:
        if self.done:
            return
        raw, normalised = views(self.venv, self.obs)
        actions = self.policy(raw, normalised, env_masks(self.venv) if self.masked else None)
        self.obs, _, dones, infos = self.venv.step(np.asarray(actions))
        self.steps += 1
        if dones[0] and "episode" in infos[0]:
            self.done = True  # the env has reset itself: keep the episode's last frame
            return
        if self.steps > MAX_FRAMES:
            raise DistillError(f"--video: an episode did not end within {MAX_FRAMES:,} steps")
        self.frame = self._render()

    def close(self) -> None:
        self.venv.close()

    @property
    def fps(self) -> float:
        metadata = self.venv.get_attr("metadata")[0] or {}
        fps = metadata.get("render_fps") if isinstance(metadata, dict) else None
        return float(fps) if isinstance(fps, int | float) and 0 < fps <= 240 else 30.0


def _unrenderable(env_id: str, error: BaseException) -> DistillError:
    hint = ""
    if "mujoco" in str(error).lower() or "gl" in type(error).__name__.lower() or "egl" in str(error).lower():
        hint = "; MuJoCo needs MUJOCO_GL=egl or MUJOCO_GL=osmesa (and that library) where there is no display"
    return DistillError(f"cannot render {env_id} for --video ({type(error).__name__}: {short(error, 160)}){hint}")


def record(
    path: Path,
    stack: EnvStack,
    student: Callable[[], Policy],
    episodes: int,
    seed: int,
    *,
    student_masked: bool = False,
    teacher: Callable[[], Policy] | None = None,
    teacher_masked: bool = False,
) -> dict[str, Any]:
    """Write ``episodes`` episodes (seeds ``seed, seed + 1, ...``) of the student, the teacher to its right when
    given, to ``path`` (atomically). ``student`` and ``teacher`` make a fresh policy per episode (a recurrent
    teacher starts each episode from its initial state)."""
    imageio = require("imageio.v2", "--video")
    prepare_rendering()
    suffix = path.suffix.lower()
    frames = 0
    size: tuple[int, int] | None = None
    with tempfile.TemporaryDirectory(prefix="distill-video-") as folder:
        tmp = Path(folder) / f"video{suffix}"
        writer: Any = None
        try:
            for episode in range(episodes):
                players = [_Player(stack, student(), seed + episode, student_masked)]
                if teacher is not None:
                    players.append(_Player(stack, teacher(), seed + episode, teacher_masked))
                try:
                    if writer is None:
                        fps = players[0].fps
                        if suffix == ".mp4":
                            writer = imageio.get_writer(
                                tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264", macro_block_size=2,
                                pixelformat="yuv420p", ffmpeg_log_level="error",
                            )  # fmt: skip
                        else:
                            writer = imageio.get_writer(tmp, mode="I", duration=1000.0 / fps, loop=0)
                    while True:
                        row = [p.frame for p in players]
                        height = max(f.shape[0] for f in row)
                        if size is None:
                            width = sum(f.shape[1] for f in row)
                            size = (height + height % 2, width + width % 2)
                        joined = np.concatenate([_even(f, height, f.shape[1]) for f in row], axis=1)
                        writer.append_data(_even(joined, *size))
                        frames += 1
                        if all(p.done for p in players):
                            break
                        for player in players:
                            player.step()
                finally:
                    for player in players:
                        player.close()
        except DistillError:
            raise
        except Exception as error:
            raise _unrenderable(stack.env_id, error) from None
        finally:
            if writer is not None:
                writer.close()
        atomic_write_bytes(path, tmp.read_bytes())
    assert size is not None
    return {"path": str(path), "episodes": episodes, "frames": frames, "height": size[0], "width": size[1]}
