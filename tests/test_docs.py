"""The documentation stands alone and stays current: the generated config reference matches
maml_rl/config.py, every relative link in README.md and docs/ resolves, and nothing points
outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from maml_rl.config_reference import REFERENCE_PATH, REGENERATE, render

ROOT = Path(__file__).resolve().parents[1]
MARKDOWN = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))

FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = ("http://", "https://", "mailto:")


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and code spans (their brackets are not links)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors of the headings of a markdown file."""
    anchors: set[str] = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in anchors:
            n += 1
            anchor = f"{slug}-{n}"
        anchors.add(anchor)
    return anchors


def _links(path: Path) -> list[str]:
    return LINK.findall(_prose(path.read_text()))


def test_config_reference_is_current() -> None:
    path = ROOT / REFERENCE_PATH
    assert path.is_file(), f"{REFERENCE_PATH} is missing; generate it with: {REGENERATE}"
    assert path.read_text() == render(), (
        f"{REFERENCE_PATH} is stale (maml_rl/config.py changed); regenerate it with: {REGENERATE}"
    )


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    broken = []
    for target in _links(path):
        if target.startswith(EXTERNAL):
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target} (no heading with anchor #{anchor})")
        elif ROOT not in (resolved, *resolved.parents):
            broken.append(f"{target} (outside the repository)")
    assert not broken, f"{path.relative_to(ROOT)}: broken links: " + ", ".join(broken)


def test_a_link_checker_that_finds_links() -> None:
    assert len([t for p in MARKDOWN for t in _links(p)]) > 50
    assert "docs/guide/training.md" in _links(ROOT / "README.md")


@pytest.mark.parametrize("path", MARKDOWN + CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_points_outside_the_repository(path: Path) -> None:
    text = path.read_text()
    for outside in ("../shared", "REFERENCE.md"):
        assert outside not in text, (
            f"{path.relative_to(ROOT)} mentions '{outside}', which is not part of this "
            "repository; cite the paper or a file in the repository instead"
        )


def test_results_tables_are_generated_from_the_shipped_runs() -> None:
    from maml_rl import results_tables

    assert results_tables.main(["--check"]) == 0, (
        "a results table differs from what pretrained/ gives; regenerate with: "
        "python -m maml_rl.results_tables"
    )


def test_sweep_blocks_tabulate_every_folder_with_the_paired_change() -> None:
    """A sweep block has one row per evaluation folder; each row's change after k steps is its
    mean there minus its mean at 0 steps (the paired mean equals the difference of means)."""
    from maml_rl.evaluation import read_results
    from maml_rl.results_tables import ROOT, render_sweep

    run = ROOT / "pretrained" / "halfcheetah_vel"
    folders = sorted(run.glob("eval/validation-lr*/results.json"))
    rows = render_sweep("halfcheetah_vel", "eval/validation-lr*").splitlines()[2:]
    assert len(rows) == len(folders) == 4
    for row, path in zip(rows, folders, strict=True):
        (curve,) = read_results(path)
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[0] == f"`{path.parent.relative_to(run)}`"
        for k in (1, 2, 3):
            mean, change = cells[1 + k].split(" (")
            assert float(mean) == round(curve.mean[k], 1)
            assert float(change.split(" ± ")[0]) == pytest.approx(
                curve.mean[k] - curve.mean[0], abs=0.051)


def test_the_training_command_names_each_resume_that_changed_a_setting(tmp_path, monkeypatch):
    # A run begun with the config's MAML and continued with ANIL from iteration 2: the first
    # command has the settings it began with, the second the changes (a new config default
    # must not leak into the first).
    import yaml

    from maml_rl import results_tables
    from maml_rl.config import load_config, save_config
    from maml_rl.trainer import RESUMES_NAME

    (tmp_path / "configs").mkdir()
    shipped = load_config("configs/sinusoid.yaml", ["algorithm=anil"])
    save_config(shipped, tmp_path / "configs" / "sine.yaml")
    run = tmp_path / "pretrained" / "sine"
    run.mkdir(parents=True)
    (run / RESUMES_NAME).write_text(yaml.safe_dump([
        {"iteration": 2, "changed": {"algorithm": "anil", "logging.progress": False},
         "was": {"algorithm": "maml", "logging.progress": True}}]))
    monkeypatch.setattr(results_tables, "ROOT", tmp_path)
    assert results_tables.training_command("sine", shipped) == (
        "`maml-train configs/sine.yaml algorithm=maml --run-dir pretrained/sine`, then from "
        "iteration 2 `maml-train --resume pretrained/sine algorithm=anil`")


def test_readme_results_come_from_the_shipped_runs() -> None:
    """Every number of ours in the README's results table is generated from pretrained/ (the
    --check above fails when one is stale), except Omniglot's, whose runs are not shipped."""
    from maml_rl.results_tables import CELL, render_cell

    table = (ROOT / "README.md").read_text().split("## Results", 1)[1].split("\n## ", 1)[0]
    rows = [r for r in table.splitlines() if r.startswith("| ") and not r.startswith("| task")]
    assert len(rows) >= 6
    for row in rows:
        ours = row.split(" | ")[3]
        if row.startswith("| Omniglot"):
            continue
        cells = CELL.findall(ours)
        assert cells, f"hand-typed result in the README: {row[:60]}"
        for match in CELL.finditer(ours):
            name, folder, step, success = match.groups()
            assert render_cell(name, folder, int(step), bool(success)) in match.group(0)
