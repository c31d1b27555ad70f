"""A discrete-action family (categorical policy) through the generic vector env: MAML adapts."""

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from maml_rl.config import load_config
from maml_rl.logger import read_metrics
from maml_rl.policies import CategoricalMLPPolicy
from maml_rl.trainer import Trainer


@dataclass(frozen=True)
class SideTask:
    side: int  # 0: reward for action 0, 1: reward for action 1


class TwoArmedEnv(gym.Env):
    """Press the task's button: reward 1 for the right action, 0 otherwise, 10 steps."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self._task = SideTask(0)

    def sample_tasks(self, n, rng):
        return [SideTask(int(s)) for s in rng.integers(0, 2, size=n)]

    def set_task(self, task):
        self._task = task

    def get_task(self):
        return self._task

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        reward = float(int(action) == self._task.side)
        return np.zeros(1, dtype=np.float32), reward, False, False, {}


gym.register(id="test/TwoArmed-v0", entry_point=TwoArmedEnv, max_episode_steps=10)


def test_categorical_policy_adapts_to_the_task(tmp_path):
    config = load_config(None, [
        "env.id=test/TwoArmed-v0", "policy.hidden_sizes=[8]", "inner.lr=0.5",
        "meta.optimizer=adam", "meta.lr=0.05", "sampling.meta_batch_size=6",
        "sampling.support_size=4", "sampling.query_size=4", "training.iterations=25",
        "evaluation.num_tasks=10", "evaluation.steps=1", "evaluation.support_size=4",
        "logging.progress=false", "logging.tensorboard=false", "device=cpu",
    ])
    trainer = Trainer(config, tmp_path)
    assert isinstance(trainer.learner.model, CategoricalMLPPolicy)
    trainer.train()
    rows = read_metrics(tmp_path)
    post = np.mean([r["return/post_adaptation"] for r in rows[-5:]])
    pre = np.mean([r["return/pre_adaptation"] for r in rows[-5:]])
    assert post > pre + 1.0  # one step moves toward the task's arm (max return 10)
    curve = trainer.learner.evaluate(10, 1, seed=0)
    assert curve.mean[1] > curve.mean[0]
