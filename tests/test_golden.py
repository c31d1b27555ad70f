"""Learning is unchanged: short fixed-seed trainings reproduce their stored metrics.

Each case (``tests/golden/__init__.py``) trains 3-5 iterations of 2D navigation (TRPO, ProMP,
ANIL, Meta-SGD), the sinusoid (all six algorithms) or a tiny synthetic Omniglot, and compares
every logged metric and the norm of the final parameters with ``tests/golden/CASE.json``
to a relative tolerance of 1e-4: far above float rounding from another BLAS or thread count,
far below what a change in the algorithm moves. After a deliberate change in learning, record
the files again with ``python -m tests.golden`` and say why in the commit.
"""

import json

import pytest

from tests.golden import CASES, HERE, compare, run_case


@pytest.mark.parametrize("name", list(CASES))
def test_golden_metrics_reproduce(name):
    stored = json.loads((HERE / f"{name}.json").read_text())
    problems = compare(stored, run_case(name))
    assert not problems, f"{name} differs from tests/golden/{name}.json:\n" + "\n".join(problems)


def test_compare_notices_a_change():
    stored = {"loss": [1.0, 0.5], "kl": [0.01, 0.02]}
    assert compare(stored, {"loss": [1.0, 0.5], "kl": [0.01, 0.02], "new": [3.0]}) == []
    assert compare(stored, {"loss": [1.0, 0.5 * (1 + 1e-3)], "kl": [0.01, 0.02]}) == [
        "loss[1]: 0.5005, stored 0.5"]
    assert compare(stored, {"loss": [1.0]}) == ["loss: 1 values, stored 2", "kl: missing"]
