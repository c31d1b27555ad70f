"""Every check of a config against its task family, in one place.

:func:`maml_rl.config.load_config` checks what a config says on its own (types, ranges, keys
that contradict each other). What depends on the family (RL or supervised, its spaces, its
episode length, its classes' shots) and on the chosen algorithm and meta-update is checked here,
once, before a learner builds anything; each problem is one :class:`ConfigError` line naming
the key, the value and what is allowed.
"""

from __future__ import annotations

from maml_rl.algorithms import ALGORITHMS, rl_algorithms
from maml_rl.config import Config, ConfigError
from maml_rl.family import TaskFamily
from maml_rl.meta_updates import META_UPDATES


def validate(config: Config, family: TaskFamily, eval_family: TaskFamily | None = None) -> None:
    """Raise :class:`ConfigError` when ``config`` cannot run on ``family`` (``eval_family``:
    the held-out tasks' family, default ``family``)."""
    eval_family = eval_family or family
    algorithm = ALGORITHMS[config.algorithm]
    if config.inner.first_order and algorithm.first_order_by_construction:
        allowed = [n for n, cls in ALGORITHMS.items() if not cls.first_order_by_construction]
        raise ConfigError(
            f"inner.first_order: true has no meaning for algorithm '{config.algorithm}' (first "
            f"order by construction); allowed with: {', '.join(allowed)}"
        )
    algorithm.check(config.algorithm, config, family.supervised, family.env_id, rl_algorithms())
    meta = config.meta
    if family.supervised:
        if META_UPDATES[meta.optimizer].needs_policy:
            # TRPO and ProMP constrain a policy's change in KL: undefined for a regression or a
            # classifier.
            allowed = [n for n, cls in META_UPDATES.items() if not cls.needs_policy]
            raise ConfigError(
                f"meta.optimizer: '{meta.optimizer}' is for RL families and "
                f"'{family.env_id}' is supervised; allowed here: {', '.join(allowed)}"
            )
        if meta.task_batching == "stacked":
            # The stacked path evaluates the MLP policies' layers per task by batched matmuls;
            # supervised models (batch norm, convolutions) and losses are written per task.
            raise ConfigError(
                f"meta.task_batching: 'stacked' is for RL families and '{family.env_id}' is "
                "supervised; allowed here: auto, vmap, loop"
            )
        if config.evaluation.max_backtracks and algorithm.stochastic:
            # Its first step draws the parameters; shortening a draw has no meaning.
            raise ConfigError(
                f"evaluation.max_backtracks: {config.evaluation.max_backtracks} is not "
                f"implemented for algorithm '{config.algorithm}' (its adaptation samples "
                "parameters); allowed with it: 0"
            )
        _check_shots(config, family, eval_family)
        return
    if config.evaluation.max_backtracks:
        raise ConfigError(
            f"evaluation.max_backtracks: {config.evaluation.max_backtracks} applies to "
            f"supervised families and '{family.env_id}' is an RL family; allowed here: 0"
        )
    if config.evaluation.query_batch:
        raise ConfigError(
            f"evaluation.query_batch: {config.evaluation.query_batch} applies to supervised "
            f"families and '{family.env_id}' is an RL family; allowed here: 0"
        )
    if not (config.sampling.horizon or family.max_episode_steps):
        raise ConfigError(
            f"sampling.horizon: 0 needs env '{family.env_id}' to be registered with "
            "max_episode_steps; set sampling.horizon to a positive integer"
        )


def _check_shots(config: Config, family: TaskFamily, eval_family: TaskFamily) -> None:
    """Support and query shots that the family's tasks can give (e.g. N-way K-shot needs K
    distinct examples of each class, and support and query must not share one)."""
    s, ev = config.sampling, config.evaluation
    for section, fam, support, query in (
        ("sampling", family, s.support_size, s.query_size),
        ("evaluation", eval_family, ev.support_size or s.support_size,
         ev.query_size or s.query_size),
    ):
        problem = fam.shots_problem(support, query)
        if problem:
            raise ConfigError(f"{section}: {problem}")
    if ev.query_batch:
        query = ev.query_size or s.query_size
        if query % ev.query_batch:
            raise ConfigError(
                f"evaluation.query_batch: {ev.query_batch} must divide the evaluation "
                f"query size {query}; allowed: 0 or a divisor of {query}"
            )
        # Each batch must hold every class equally often, like a meta-training query set.
        if eval_family.shots_problem(0, ev.query_batch):
            raise ConfigError(
                f"evaluation.query_batch: {ev.query_batch} does not hold every class "
                f"equally often; allowed: 0 or a multiple of the classes per task that "
                f"divides {query}"
            )
