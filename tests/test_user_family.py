"""The README's 'Adding a task family' example works end to end: checked, trained, improves."""

import numpy as np

from envs.checker import check_task_family
from maml_rl.cli import train_main
from maml_rl.logger import read_metrics


def test_user_family_passes_the_checker():
    import tests.examples.point_1d  # noqa: F401  (registers my/Point1D-v0)

    check_task_family("my/Point1D-v0", n_tasks=3, seed=0, steps=20)


def test_user_family_trains_from_its_yaml(tmp_path, capsys):
    status = train_main(["tests/examples/point_1d.yaml", "--run-dir", str(tmp_path),
                         "logging.progress=false", "logging.tensorboard=false", "device=cpu"])
    assert status == 0
    rows = read_metrics(tmp_path)
    assert len(rows) == 10
    first = np.mean([r["return/post_adaptation"] for r in rows[:3]])
    last = np.mean([r["return/post_adaptation"] for r in rows[-3:]])
    assert last > first
    assert (tmp_path / "eval" / "results.json").is_file()
    assert "return on 8 held-out tasks" in capsys.readouterr().out


def test_unknown_env_lists_the_known_families(capsys):
    assert train_main(["tests/examples/point_1d.yaml", "env.id=my/Point2D-v0"]) == 2
    err = capsys.readouterr().err
    assert "Did you mean 'my/Point1D-v0'" in err and "maml/HalfCheetahVel-v0" in err
