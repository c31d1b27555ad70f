"""What adaptation looks like: rollouts before and after K inner steps on a few held-out tasks.

The MAML paper's videos (Finn et al. 2017, Sec. 5.3) show the meta-learned policy and the same
policy after adaptation on one task. Here, for each of a few held-out tasks, the policy is adapted
with the evaluation protocol (:meth:`RLMetaLearner.adaptation_rollouts`: K inner steps, fresh
episodes per step) and then

* MuJoCo families (any family rendering ``rgb_array``): one episode before and one after, from the
  same initial state, rendered side by side into an MP4 (a GIF where imageio has no MP4 encoder),
  plus a PNG of stills for a quick look;
* 2D navigation: a plot of the sampled trajectories before and after, with the goal.

Rendering is headless: ``MUJOCO_GL`` defaults to ``egl`` here.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch

from envs.tasks import thaw_task
from envs.wrappers import task_features
from maml_rl.adaptation import Params, forward, model_params

if TYPE_CHECKING:
    from maml_rl.family import TaskFamily
    from maml_rl.learners.reinforcement import RLMetaLearner

#: Frame rate above which rendered frames are dropped: GIF players round delays below 20 ms.
MAX_FPS = 50


@dataclass
class Rollout:
    """One rendered episode: its frames, a caption per frame (time, and the forward position
    and velocity where the env reports them: the gait is hard to judge from a tracking camera
    alone) and its undiscounted return."""

    frames: list[np.ndarray]
    captions: list[str]
    total_return: float


def _caption(t: int, dt: float, info: dict[str, Any]) -> str:
    text = f"t={t * dt:.2f}s"
    if "x_position" in info:
        text += f"  x={info['x_position']:+.2f}"
    if "x_velocity" in info:
        text += f"  vx={info['x_velocity']:+.2f}"
    return text


def task_label(task: Any) -> str:
    """A short description of a task for titles and file names, e.g. ``velocity=1.23``."""
    if hasattr(task, "__dataclass_fields__"):
        values = {name: getattr(task, name) for name in task.__dataclass_fields__}
    elif isinstance(task, dict):
        values = task
    else:
        return str(task)
    return ",".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in values.items())


def renders_rgb(family: TaskFamily) -> bool:
    """Whether the family's env offers the ``rgb_array`` render mode."""
    return "rgb_array" in family.unwrapped.metadata.get("render_modes", [])


def plots_trajectories(family: TaskFamily) -> bool:
    """Whether the family declares ``metadata["trajectory_plot"]``: its observation starts with
    a planar position and its task with a goal position (2D navigation), drawn as paths."""
    return bool(family.unwrapped.metadata.get("trajectory_plot", False))


def check_video_support(family: TaskFamily) -> None:
    """Raise ``ValueError`` for a family that can be neither rendered nor plotted."""
    if not (plots_trajectories(family) or renders_rgb(family)):
        raise ValueError(f"--video: '{family.env_id}' has no rgb_array render mode and does not "
                         "declare metadata['trajectory_plot']; nothing to draw")


def record_adaptation(
    learner: RLMetaLearner, num_tasks: int, steps: int, seed: int, out_dir: str | Path,
    episodes: int | None = None, width: int = 480, height: int = 320,
    tasks: Sequence[Any] | None = None,
) -> list[Path]:
    """Adapt to the first ``num_tasks`` held-out tasks of seed ``seed`` (or of ``tasks``, when
    given) with ``steps`` inner steps and write what the policy does before and after into
    ``out_dir``: for rendering families a video per task with one panel per policy (before
    adaptation, after 1 step, after ``steps`` steps) and a stills PNG; for families that
    declare ``metadata["trajectory_plot"]`` (2D navigation) ``trajectories.png`` (before and
    after ``steps`` steps). Returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    family = learner.family
    check_video_support(family)
    if tasks is None:
        tasks = family.sample_tasks(num_tasks, np.random.default_rng(seed))
    tasks = list(tasks)[:num_tasks]
    if plots_trajectories(family):
        return [navigation_trajectories(learner, tasks, steps, seed, out / "trajectories.png",
                                        episodes)]
    os.environ.setdefault("MUJOCO_GL", "egl")
    # Panels after 0, 1 and K steps: meta-training optimises the 1-step policy, the table
    # reports up to K. The same seed makes the first steps of both adaptations identical.
    shown = sorted({0, min(1, steps), steps})
    params = {0: {k: v.detach() for k, v in model_params(learner.model).items()}}
    for k in shown[1:]:
        params[k] = learner.adaptation_rollouts(tasks, k, seed, lambda *_: None, episodes)
    labels = ["before adaptation", *(f"after {k} step{'s' if k > 1 else ''}" for k in shown[1:])]
    paths = []
    for j, task in enumerate(tasks):
        reset_seed = seed + j  # the same initial state in every panel
        rollouts = [
            render_episode(learner, task,
                           params[k] if k == 0 else {n: v[j] for n, v in params[k].items()},
                           reset_seed, width, height)
            for k in shown
        ]
        frames = side_by_side(rollouts, labels, task_label(task))
        stem = out / f"task{j}_{task_label(task).replace('=', '').replace(',', '_')}"
        paths.append(write_video(frames, stem, fps=_video_fps(family)))
        paths.append(write_stills(frames, stem.with_name(stem.name + "_stills.png")))
    return paths


def _frame_stride(family: TaskFamily) -> int:
    fps = family.unwrapped.metadata.get("render_fps", MAX_FPS)
    return max(1, math.ceil(fps / MAX_FPS))


def _video_fps(family: TaskFamily) -> float:
    return family.unwrapped.metadata.get("render_fps", MAX_FPS) / _frame_stride(family)


def _make_rgb_env(family: TaskFamily, horizon: int, width: int, height: int) -> gym.Env:
    kwargs = {"render_mode": "rgb_array", "max_episode_steps": horizon, **family.env_kwargs}
    try:  # gymnasium's MuJoCo envs (and ours) take the frame size
        return gym.make(family.env_id, width=width, height=height, **kwargs)
    except TypeError:
        return gym.make(family.env_id, **kwargs)


def render_episode(
    learner: RLMetaLearner, task: Any, params: Params, seed: int, width: int, height: int
) -> Rollout:
    """One episode of the policy with ``params`` on ``task``, actions sampled as in the
    evaluation, rendered every ``_frame_stride`` steps (the reset frame included)."""
    family = learner.family
    env = _make_rgb_env(family, learner.horizon, width, height)
    stride = _frame_stride(family)
    try:
        env.unwrapped.set_task(thaw_task(task))
        obs, _ = env.reset(seed=seed)
        dt = float(getattr(env.unwrapped, "dt", 1.0))
        frames, captions, total = [env.render()], [_caption(0, dt, {})], 0.0
        space = env.action_space
        # The policy's actions from torch's generator, seeded here and restored afterwards.
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(seed)
            for t in range(learner.horizon):
                obs_tensor = torch.as_tensor(obs, dtype=torch.float32, device=learner.device)
                action = forward(learner.model, params, obs_tensor).sample().cpu().numpy()
                if isinstance(space, gym.spaces.Box):
                    action = np.clip(action, space.low, space.high)
                obs, reward, terminated, truncated, info = env.step(action)
                total += float(reward)
                if (t + 1) % stride == 0 or terminated or truncated:
                    frames.append(env.render())
                    captions.append(_caption(t + 1, dt, info))
                if terminated or truncated:
                    break
    finally:
        # Explicitly, while the GL context is alive: a garbage-collected renderer prints EGL
        # teardown errors at interpreter exit.
        env.close()
    return Rollout(frames, captions, total)


def side_by_side(
    rollouts: Sequence[Rollout], labels: Sequence[str], title: str
) -> list[np.ndarray]:
    """Frames of several rollouts next to each other, each labelled with its name and return;
    a rollout that ended early holds its last frame."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=max(12, rollouts[0].frames[0].shape[0] // 20))
    length = max(len(r.frames) for r in rollouts)
    out = []
    for t in range(length):
        panels = []
        for rollout, label in zip(rollouts, labels, strict=True):
            last = min(t, len(rollout.frames) - 1)
            image = Image.fromarray(rollout.frames[last])
            draw = ImageDraw.Draw(image)
            text = (f"{title}\n{label}: return {rollout.total_return:.1f}\n"
                    f"{rollout.captions[last]}")
            draw.multiline_text((8, 6), text, fill=(0, 0, 0), font=font, stroke_width=2,
                                stroke_fill=(255, 255, 255))
            panels.append(np.asarray(image))
        out.append(np.concatenate(panels, axis=1))
    return out


def write_video(frames: Sequence[np.ndarray], stem: Path, fps: float) -> Path:
    """``stem.mp4`` through imageio's pyav or ffmpeg plugin; ``stem.gif`` when neither is
    installed (``pip install imageio[pyav]`` gives MP4s). Returns the path written."""
    import imageio.v3 as iio

    stack = np.stack(frames)
    plugin = next((name for module, name in (("av", "pyav"), ("imageio_ffmpeg", "FFMPEG"))
                   if importlib.util.find_spec(module) is not None), None)
    if plugin is not None:
        mp4 = stem.with_name(stem.name + ".mp4")  # not with_suffix: task names hold dots
        if plugin == "pyav":
            iio.imwrite(mp4, stack, plugin=plugin, fps=fps, codec="libx264")
        else:
            iio.imwrite(mp4, stack, plugin=plugin, fps=fps, macro_block_size=1)
        return mp4
    gif = stem.with_name(stem.name + ".gif")
    iio.imwrite(gif, stack, duration=1000.0 / fps, loop=0)
    return gif


def write_stills(frames: Sequence[np.ndarray], path: Path, count: int = 4) -> Path:
    """``count`` frames evenly spaced over the episode, stacked vertically, as one PNG."""
    import imageio.v3 as iio

    index = np.linspace(0, len(frames) - 1, count).round().astype(int)
    iio.imwrite(path, np.concatenate([frames[i] for i in index], axis=0))
    return path


def navigation_trajectories(
    learner: RLMetaLearner, tasks: Sequence[Any], steps: int, seed: int, path: Path,
    episodes: int | None = None, shown: int = 5,
) -> Path:
    """Positions visited by ``shown`` sampled episodes per task before adaptation and after
    ``steps`` inner steps (the evaluation protocol), one panel per task with its goal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def keep(k: int, eps) -> None:
        if k in (0, steps):
            paths[k] = (eps.observations[:, :shown].cpu().numpy(),
                        eps.mask[:, :shown].cpu().numpy())

    learner.adaptation_rollouts(list(tasks), steps, seed, keep, episodes)
    cols = min(len(tasks), 3)
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.4 * rows), squeeze=False)
    for j, (ax, task) in enumerate(zip(axes.flat, tasks, strict=False)):
        for k, color, name in ((0, "tab:gray", "before"), (steps, "tab:orange",
                                                            f"after {steps} steps")):
            obs, mask = paths[k]
            for n in range(obs.shape[1]):
                valid = mask[j, n] > 0
                ax.plot(obs[j, n, valid, 0], obs[j, n, valid, 1], color=color, lw=1, alpha=0.8,
                        label=name if n == 0 else None)
        goal = task_features(task)
        ax.plot(*goal[:2], marker="*", color="tab:red", ms=14, ls="", label="goal")
        ax.plot(0, 0, marker="o", color="k", ms=4, ls="")
        ax.set_title(task_label(task), fontsize="small")
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize="x-small", loc="best")
    fig.suptitle(f"{learner.family.env_id}: {shown} sampled episodes per task, before and "
                 "after adaptation", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
