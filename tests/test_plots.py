"""scripts/plot.py: training curves of runs, seeds of one config as one curve with a band."""

import pytest

from maml_rl.cli import plot_main
from maml_rl.config import load_config
from maml_rl.plots import group_by_config
from maml_rl.trainer import Trainer

TINY = ["training.iterations=4", "evaluation.at_end=false", "logging.progress=false",
        "logging.tensorboard=false", "device=cpu", "sampling.meta_batch_size=2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for name, extra in (("a", ["seed=0"]), ("b", ["seed=1"]), ("c", ["inner.lr=0.02"])):
        Trainer(load_config("configs/sinusoid.yaml", [*TINY, *extra]), root / name).train()
    return root


def test_seeds_of_one_config_form_one_group(runs):
    groups = group_by_config([runs / "a", runs / "b", runs / "c"])
    assert sorted(map(sorted, ([p.name for p in g] for g in groups.values()))) == [
        ["a", "b"], ["c"]]


def test_plot_writes_a_png_and_never_replaces_a_file_unasked(runs, tmp_path, capsys):
    out = tmp_path / "curves.png"
    assert plot_main([str(runs / "a"), str(runs / "b"), str(runs / "c"), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = out.read_bytes()
    assert plot_main([str(runs / "a"), "--out", str(out)]) == 2
    assert out.read_bytes() == before
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert plot_main([str(runs / "a"), "--out", str(out), "--metric", "kl"]) == 2
    assert "--metric: kl not in" in capsys.readouterr().err
    assert plot_main([str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists()
