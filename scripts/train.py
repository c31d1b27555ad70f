#!/usr/bin/env python
"""Meta-train a policy or model with MAML.

    python scripts/train.py configs/sinusoid.yaml [section.key=value ...] [--run-dir DIR]
    python scripts/train.py --resume RUN_DIR [section.key=value ...]
"""

import sys

from maml_rl.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
