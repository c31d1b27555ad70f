"""Record golden metrics: ``python -m tests.golden [CASE ...]`` (default: every case)."""

import json
import sys

from tests.golden import CASES, HERE, run_case

for name in sys.argv[1:] or list(CASES):
    if name not in CASES:
        sys.exit(f"error: unknown case {name!r}; the cases: {', '.join(CASES)}")
    path = HERE / f"{name}.json"
    path.write_text(json.dumps(run_case(name), indent=1) + "\n")
    print(f"wrote {path}")
