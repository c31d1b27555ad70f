"""Experiment: rllab's lagged linear baseline on 2D navigation (docs/results/navigation_2d.md).

rllab's sampler computes a batch's advantages with the linear feature baseline as fitted
*before* that batch, then refits it; MAML's training loop shares one baseline over the
meta-batch's tasks, so task i's advantages come from the fit on task i-1's episodes (the first
task's from the previous batch's last), and the paper code's test adapts each goal from no
baseline at the first step, then the fit of the previous step's episodes. The library fits the
baseline to each task's own episodes; this script swaps the learner's baseline for a lagged one
to measure the difference, without adding the protocol to the library.

    python experiments/lagged_baseline.py train RUN_DIR [key=value ...]   # lagged meta-training
    python experiments/lagged_baseline.py eval RUN_DIR [--lagged]        # paper's 40 test goals

``eval`` prints the 0..3-step returns on configs/tasks/navigation_2d_paper_test.yaml with the
run's own protocol, or with the paper's test protocol (``--lagged``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import yaml

from maml_rl.baselines import LinearFeatureBaseline
from maml_rl.checkpoint import load_checkpoint
from maml_rl.config import load_config
from maml_rl.family import load_family
from maml_rl.trainer import Trainer, build_learner

ROOT = Path(__file__).resolve().parents[1]

PAPER_GOALS = ROOT / "configs" / "tasks" / "navigation_2d_paper_test.yaml"


class LaggedBaseline(LinearFeatureBaseline):
    """The library's linear baseline, but each batch's values come from the previous fit: of
    the previous task in the batch (``across_tasks``, meta-training) or of the same task's
    previous batch (the paper's test, where each goal is its own run); zero before any fit.
    ``process_episodes`` reads it through ``fit_predict``, so returns, GAE and normalisation
    stay the library's own."""

    def __init__(self, across_tasks: bool) -> None:
        super().__init__()
        self.across_tasks = across_tasks
        self.previous: torch.Tensor | None = None

    def fit_predict(self, observations, returns, mask):
        fitted = self.fit(observations, returns, mask)
        if self.across_tasks:
            first = self.previous if self.previous is not None else torch.zeros_like(fitted[:1])
            weights = torch.cat([first, fitted[:-1]])
            self.previous = fitted[-1:]
        else:
            weights = self.previous if self.previous is not None else torch.zeros_like(fitted)
            self.previous = fitted
        return self.predict(observations, mask, weights)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["train", "eval"])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("overrides", nargs="*", help="train: key=value on navigation_2d.yaml")
    parser.add_argument("--lagged", action="store_true", help="eval: the paper's test protocol")
    args = parser.parse_intermixed_args()
    if args.mode == "train":
        config = load_config(ROOT / "configs" / "navigation_2d.yaml",
                             [*args.overrides, "evaluation.at_end=false"])
        trainer = Trainer(config, args.run_dir)
        trainer.learner.baseline = LaggedBaseline(across_tasks=True)
        print(trainer.train())
        return
    config = load_config(args.run_dir / "config.yaml")
    learner = build_learner(config, load_family(config.env.id, config.env.kwargs), "cpu")
    learner.load_state_dict(load_checkpoint(args.run_dir / "checkpoint.pt")["learner"])
    if args.lagged:
        learner.baseline = LaggedBaseline(across_tasks=False)
    tasks = yaml.safe_load(PAPER_GOALS.read_text())
    curve = learner.evaluate(len(tasks), 3, config.evaluation.seed, tasks=tasks)
    protocol = "paper's test protocol" if args.lagged else "per-task baseline"
    print(f"{args.run_dir} ({protocol}), paper's 40 goals, 0..3 steps: "
          + " / ".join(f"{m:.1f} ± {c:.1f}" for m, c in zip(curve.mean, curve.ci95, strict=True)))


if __name__ == "__main__":
    main()
