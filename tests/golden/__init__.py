"""Golden metrics: short, fixed-seed trainings whose metrics are stored in this folder, so that
refactors and speed-ups of the meta-iteration can show that learning is unchanged.

    python -m tests.golden            # record every case (after a deliberate change in learning)
    python -m tests.golden nav_trpo   # record one

``tests/test_golden.py`` reruns each case and compares it with its stored file.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from maml_rl.checkpoint import load_checkpoint
from maml_rl.config import load_config
from maml_rl.logger import read_metrics
from maml_rl.trainer import Trainer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

_COMMON = ["logging.progress=false", "logging.tensorboard=false", "evaluation.at_end=false",
           "device=cpu", "threads=1", "seed=3"]
_NAV = ["sampling.meta_batch_size=6", "sampling.support_size=5", "sampling.query_size=5",
        "sampling.horizon=50", "policy.hidden_sizes=[32,32]", "training.iterations=5",
        "training.checkpoint_every=5"]
_SINE = ["sampling.meta_batch_size=5", "policy.hidden_sizes=[20,20]", "training.iterations=5",
         "training.checkpoint_every=5"]
_OMNIGLOT = ["sampling.meta_batch_size=4", "training.iterations=3", "evaluation.query_size=25",
             "training.checkpoint_every=3", "policy.conv_filters=8"]


def _omniglot_data(folder: Path) -> list[str]:
    """A tiny synthetic Omniglot (the loader's layout) so that the case needs no download."""
    from tests.test_omniglot import _write_alphabets

    _write_alphabets(folder / "data", {f"A{i}": 5 for i in range(6)}, 6, seed=3)
    return [f"env.kwargs.data_root={folder / 'data'}", f"env.kwargs.cache_dir={folder / 'cache'}"]


#: case name -> (config, overrides, extra setup returning more overrides)
CASES: dict[str, tuple[str, list[str], Callable[[Path], list[str]] | None]] = {
    "nav_trpo": ("configs/navigation_2d.yaml", _NAV, None),
    "nav_promp": ("configs/navigation_2d_promp.yaml", _NAV, None),
    "nav_anil": ("configs/navigation_2d.yaml", [*_NAV, "algorithm=anil"], None),
    "nav_metasgd": ("configs/navigation_2d.yaml",
                    [*_NAV, "algorithm=metasgd", "inner.lr=0.5", "meta.curvature=hessian"], None),
    **{f"sine_{name}": ("configs/sinusoid.yaml", [*_SINE, f"algorithm={name}"], None)
       for name in ("maml", "fomaml", "anil", "metasgd", "reptile", "imaml")},
    "omniglot": ("configs/omniglot_5way1shot.yaml", _OMNIGLOT, _omniglot_data),
}

#: metrics that measure the machine, not the learning
_MACHINE = ("time/", "perf/")


def run_case(name: str) -> dict[str, list[float]]:
    """Train case ``name`` in a temporary folder; its metrics per iteration (timings left
    out) and the L2 norm of all final parameters together, as ``param/l2``.

    One norm over all tensors, not one per tensor: a convolution's bias followed by batch norm
    has a zero gradient in exact arithmetic, so Adam turns rounding noise into lr-sized steps
    there and that bias alone differs between thread counts."""
    config_path, overrides, setup = CASES[name]
    previous = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        extra = setup(Path(tmp)) if setup else []
        config = load_config(ROOT / config_path, [*overrides, *_COMMON, *extra])
        try:
            Trainer(config, Path(tmp) / "run").train()
        finally:
            torch.set_num_threads(previous)
        rows = read_metrics(Path(tmp) / "run")
        out = {key: [float(r[key]) for r in rows] for key in rows[0]
               if not key.startswith(_MACHINE)}
        model = load_checkpoint(Path(tmp) / "run" / "checkpoint.pt")["learner"]["model"]
        squares = sum(float(v.double().square().sum()) for v in model.values()
                      if torch.is_tensor(v) and v.is_floating_point())
        out["param/l2"] = [math.sqrt(squares)]
    return out


def compare(stored: dict[str, list[float]], new: dict[str, list[float]],
            rtol: float = 1e-4, atol: float = 1e-6) -> list[str]:
    """The differences between a stored and a new run, one line each (empty when equal to
    tolerance). New keys are allowed; every stored key must be reproduced."""
    problems = []
    for key, values in stored.items():
        if key not in new:
            problems.append(f"{key}: missing")
            continue
        if len(values) != len(new[key]):
            problems.append(f"{key}: {len(new[key])} values, stored {len(values)}")
            continue
        for i, (a, b) in enumerate(zip(values, new[key], strict=True)):
            same = (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rtol,
                                                                      abs_tol=atol)
            if not same:
                problems.append(f"{key}[{i}]: {b!r}, stored {a!r}")
                break
    return problems
