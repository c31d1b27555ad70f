"""The sinusoid config keeps improving over 10 adaptation steps (issue 16): the check of
experiments/sinusoid_stability.py on synthetic curves, and (``-m slow``, about 10 min on one free
core) on the shipped config trained in full, with plain steps and with the backtracking
safeguard. The full run passes with the config's seed 0 and
failed with ``seed=1`` (docs/results/sinusoid.md): a failure here after a change to training is
a reason to look, not proof of a bug."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from maml_rl.evaluation import AdaptationCurve

ROOT = Path(__file__).resolve().parents[1]


def _benchmark():
    spec = importlib.util.spec_from_file_location(
        "sinusoid_stability", ROOT / "experiments" / "sinusoid_stability.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stability_check_names_rises_overflows_and_diverging_tasks():
    check = _benchmark().stability_problems
    steady = np.tile([3.0, 1.0, 0.6, 0.5], (200, 1))
    assert check(AdaptationCurve("maml", "mse", [0, 1, 2, 3], steady)) == []
    # Three tasks of 200 blow up from step 2 on: the mean rises, 1.5% diverge at the end.
    rising = steady.copy()
    rising[:3, 2:] = [[100.0, 300.0]] * 3
    assert check(AdaptationCurve("maml", "mse", [0, 1, 2, 3], rising)) == [
        "mean MSE rises from step 1 to 2: 1.000 -> 2.091",
        "mean MSE rises from step 2 to 3: 2.091 -> 4.992",
        "3 of 200 tasks diverged after 3 steps (allowed: 1%)",
    ]
    overflow = steady.copy()
    overflow[0, 3] = np.inf
    assert check(AdaptationCurve("maml", "mse", [0, 1, 2, 3], overflow))[0] == (
        "1 tasks with a non-finite MSE")


@pytest.mark.slow
def test_sinusoid_config_trained_in_full_adapts_stably(tmp_path):
    bench = _benchmark()
    learner = bench.train(tmp_path / "run", [])
    try:
        problems = bench.check(learner)
    finally:
        learner.close()
    assert problems == []
    # The same run adapted with the backtracking safeguard (evaluation.max_backtracks).
    guarded = bench.load(tmp_path / "run", ["evaluation.max_backtracks=6"])
    try:
        assert bench.check(guarded) == []
    finally:
        guarded.close()
