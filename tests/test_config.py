"""Every class of config mistake is rejected with one line (exit status 2, no traceback)."""

import pytest

from maml_rl.cli import train_main
from maml_rl.config import Config, ConfigError, load_config, save_config, step_sizes


def _error(overrides, path=None):
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_and_overrides_are_typed():
    config = load_config(
        None,
        [
            "inner.lr=[0.1, 0.05]",
            "inner.steps=3",
            "meta.lr=1e-4",
            "env.kwargs={amplitude_range: [1, 2]}",
            "device=cpu",
        ],
    )
    assert config.inner.lr == [0.1, 0.05]
    assert config.inner_step_sizes() == [0.1, 0.05, 0.05]
    assert config.meta.lr == pytest.approx(1e-4)
    assert config.env.kwargs == {"amplitude_range": [1, 2]}
    assert step_sizes(0.01, 2) == [0.01, 0.01]


def test_unknown_key_suggests_the_nearest():
    assert "'inner.lrr'" in _error(["inner.lrr=0.1"])
    assert "did you mean 'inner.lr'" in _error(["inner.lrr=0.1"])
    assert "did you mean 'sampling.meta_batch_size'" in _error(["sampling.meta_batchsize=4"])
    msg = _error(["nonsense.key=1"])
    assert "known keys" in msg and "sampling" in msg


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("inner.steps=abc", "inner.steps: expected an integer, got 'abc'"),
        ("inner.steps=1.5", "inner.steps: expected an integer, got 1.5"),
        ("inner.first_order=maybe", "inner.first_order: expected true or false, got 'maybe'"),
        (
            "meta.optimizer=rmsprop",
            "meta.optimizer: expected one of adam, sgd, trpo, ppo, got 'rmsprop'",
        ),
        ("policy.hidden_sizes=[]", "policy.hidden_sizes: expected a non-empty list of integers"),
        ("inner=3", "inner: expected a mapping of keys, got 3"),
    ],
)
def test_wrong_type(override, expected):
    assert expected in _error([override])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("inner.steps=0", "inner.steps: must be >= 1, got 0"),
        ("inner.lr=-0.1", "inner.lr: must be > 0, got -0.1"),
        ("inner.lr=[0.1, 0]", "inner.lr: must be > 0, got [0.1, 0.0]"),
        ("inner.gamma=1.5", "inner.gamma: must be <= 1, got 1.5"),
        ("sampling.meta_batch_size=0", "sampling.meta_batch_size: must be >= 1, got 0"),
        ("meta.lr=0", "meta.lr: must be > 0, got 0.0"),
    ],
)
def test_out_of_range(override, expected):
    assert expected in _error([override])


def test_missing_and_malformed_files(tmp_path):
    assert "config file 'nope.yaml' not found" in _error([], "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("inner: [unclosed\n")
    assert "is not valid YAML at line" in _error([], bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    assert "expected a mapping of sections" in _error([], scalar)
    assert "expected section.key=value" in _error(["inner.lr"])


def test_resolved_config_round_trips(tmp_path):
    config = load_config("configs/sinusoid.yaml", ["inner.steps=2"])
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config
    assert isinstance(config, Config)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["configs/sinusoid.yaml", "inner.lrr=1"], "did you mean 'inner.lr'"),
        (["configs/sinusoid.yaml", "inner.steps=zero"], "inner.steps: expected an integer"),
        (["configs/sinusoid.yaml", "inner.steps=-1"], "inner.steps: must be >= 1"),
        (["missing.yaml"], "config file 'missing.yaml' not found"),
        (["configs/sinusoid.yaml", "env.id=maml/Sinusoid-v9"], "Did you mean 'maml/Sinusoid-v0'"),
        ([], "missing CONFIG file"),
        (["--resume", "no/such/run"], "is not a run directory"),
    ],
)
def test_command_line_errors_exit_2_with_one_line(argv, expected, capsys, tmp_path):
    assert train_main([*argv, "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err
    assert len(err.splitlines()) == 1
    assert "Traceback" not in err
