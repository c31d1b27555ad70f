"""maml-rl: Model-Agnostic Meta-Learning for task-parametrized environments."""

__version__ = "0.1.0"
