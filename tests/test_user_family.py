"""A user's own family works end to end: checked, trained, evaluated, as the docs say.

The task-families guide (docs/guide/task_families.md) lists a family module, its config and the
commands to run; the tests below take them from that page and run them verbatim in a temporary
folder outside the repository, with the installed console scripts, as a user would.
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

from envs.checker import check_task_family
from maml_rl.cli import train_main
from maml_rl.logger import read_metrics

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "guide" / "task_families.md"


def _documented_example() -> tuple[dict[str, str], list[str]]:
    """The guide's files (``<!-- file: NAME -->`` before a code block) and commands."""
    text = GUIDE.read_text()
    files = dict(re.findall(r"<!-- file: (\S+) -->\n```\w+\n(.*?)```", text, re.S))
    block = re.search(r"<!-- commands -->\n```bash\n(.*?)```", text, re.S)
    assert files and block, "the guide lost its example files or commands"
    return files, [line for line in block.group(1).splitlines() if line.strip()]


def test_the_guides_module_is_the_tested_example():
    files, _ = _documented_example()
    assert files["my_point.py"] == (REPO / "tests" / "examples" / "point_1d.py").read_text()


def test_the_documented_commands_run_verbatim_in_a_folder_outside_the_repo(tmp_path):
    files, commands = _documented_example()
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    scripts = Path(sys.executable).parent  # the venv's bin: maml-train, maml-evaluate, ...
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PATH=f"{scripts}{os.pathsep}{env.get('PATH', '')}", OMP_NUM_THREADS="1")
    outputs = []
    for line in commands:
        proc = subprocess.run(shlex.split(line), cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, (line, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stdout + proc.stderr, line
        outputs.append(proc.stdout)
    assert "ok   my/Point1D-v0" in outputs[0]
    # Training ends by saying where the run and its evaluation files are.
    tail = outputs[1].splitlines()[-4:]
    assert tail[0] == "run directory: runs/my_point"
    assert [Path(line.strip()).name for line in tail[1:]] == [
        "results.json", "results.csv", "adaptation.png"]
    run = tmp_path / "runs" / "my_point"
    rows = read_metrics(run)
    assert len(rows) == 10
    first = np.mean([r["return/post_adaptation"] for r in rows[:3]])
    last = np.mean([r["return/post_adaptation"] for r in rows[-3:]])
    assert last > first
    assert (run / "eval" / "results.json").is_file() and (run / "eval" / "adaptation.png").is_file()
    assert "return on 8 held-out tasks" in outputs[-1]


def test_user_family_passes_the_checker():
    import tests.examples.point_1d  # noqa: F401  (registers my/Point1D-v0)

    check_task_family("my/Point1D-v0", n_tasks=3, seed=0, steps=20)


def test_unknown_env_lists_the_known_families(capsys):
    assert train_main(["tests/examples/point_1d.yaml", "env.id=my/Point2D-v0"]) == 2
    err = capsys.readouterr().err
    assert "Did you mean 'my/Point1D-v0'" in err and "maml/HalfCheetahVel-v0" in err


def test_a_missing_family_module_is_one_line_naming_where_it_looked(tmp_path, capsys):
    config = tmp_path / "mine.yaml"
    config.write_text("env: {id: my/Nothing-v0, module: not_here}\n")
    assert train_main([str(config), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: env.module: cannot import 'not_here'") and "\n" not in err
    assert str(tmp_path) in err  # the config's folder was searched
    assert not (tmp_path / "run").exists()


def test_a_config_with_its_module_beside_it_trains_and_evaluates_from_another_folder(tmp_path):
    """``env.module`` next to the config file, the commands run from elsewhere: training finds
    the module beside the config, and evaluating the run (in a new process, from yet another
    folder) finds it through the folder the run recorded."""
    scripts = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PATH=f"{scripts}{os.pathsep}{env.get('PATH', '')}", OMP_NUM_THREADS="1")
    config = REPO / "tests" / "examples" / "point_1d.yaml"
    (tmp_path / "elsewhere").mkdir()
    for cwd, line in ((tmp_path, f"maml-train {config} training.iterations=2 "
                                 "logging.progress=false --run-dir run"),
                      (tmp_path / "elsewhere", "maml-evaluate ../run --tasks 2 --steps 1")):
        proc = subprocess.run(shlex.split(line), cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, (line, proc.stdout, proc.stderr)
    assert (tmp_path / "run" / "eval" / "results.json").is_file()
