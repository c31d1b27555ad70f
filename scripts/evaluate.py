#!/usr/bin/env python
"""Adapt a trained policy/model to held-out tasks with 0..K inner steps and report the curve;
optionally compare with the MAML paper's baselines and record rollouts before/after adaptation.

    python scripts/evaluate.py RUN_DIR [--checkpoint FILE] [--steps K] [--tasks N] [--seed S]
                               [--video] [--baselines [--baseline-steps T]] [--out DIR]
"""

import sys

from maml_rl.cli import evaluate_main

if __name__ == "__main__":
    sys.exit(evaluate_main())
