#!/usr/bin/env python
"""Training curves of one or several runs.

    python scripts/plot.py RUN_DIR [RUN_DIR ...] [--metric NAME ...] [--smooth N] [--out FILE]

Runs that differ only in their seed are drawn as one curve: the mean over seeds and a band of
one standard deviation. Default metrics: pre- and post-adaptation return (RL) or loss.
"""

import sys

from maml_rl.cli import plot_main

if __name__ == "__main__":
    sys.exit(plot_main())
