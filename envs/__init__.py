"""Task-parametrized Gymnasium environments for meta-learning.

Importing this package registers every family under the ``maml`` namespace, e.g.
``gymnasium.make("maml/Sinusoid-v0")``. Each family is a ``gymnasium.Env`` with
``sample_tasks(n, rng)`` and ``set_task(task)``; most have a batched ``gymnasium.vector.VectorEnv``
(``envs.generic.make_task_vector_env``) whose sub-envs each hold their own task
(``set_tasks(tasks)``).
"""

from envs.registration import register_all

register_all()
