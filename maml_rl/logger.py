"""Metrics of a run: ``metrics.csv`` (a row per iteration, flushed as written) and TensorBoard."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any


class MetricsLogger:
    """Append-only metrics writer. On resume, rows after the checkpoint are dropped first, so
    the file reads as if the run had never stopped."""

    def __init__(
        self, run_dir: str | Path, tensorboard: bool = True, resume_from: int | None = None
    ):
        self.path = Path(run_dir) / "metrics.csv"
        self.fields: list[str] | None = None
        if resume_from is not None and self.path.exists():
            self._truncate_after(resume_from)
        elif self.path.exists():
            self.path.unlink()
        self._file = self.path.open("a", newline="")
        self._writer: csv.DictWriter | None = None
        if self.fields is not None:
            self._writer = csv.DictWriter(self._file, fieldnames=self.fields, lineterminator="\n")
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def _truncate_after(self, iteration: int) -> None:
        with self.path.open(newline="") as f:
            reader = csv.DictReader(f)
            self.fields = reader.fieldnames
            rows = [r for r in reader if int(r["iteration"]) <= iteration]
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields or ["iteration"], lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)

    def log(self, iteration: int, metrics: dict[str, Any]) -> None:
        row = {"iteration": iteration, **metrics}
        if self._writer is None:
            self.fields = list(row)
            self._writer = csv.DictWriter(self._file, fieldnames=self.fields, lineterminator="\n")
            self._writer.writeheader()
        elif any(k not in self.fields for k in row):
            self._extend_fields([k for k in row if k not in self.fields])
        self._writer.writerow({k: row.get(k, "") for k in self.fields})
        self._file.flush()
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, int | float):
                    self._tb.add_scalar(key, value, iteration)

    def _extend_fields(self, new: list[str]) -> None:
        """Rewrite the file with ``new`` columns appended (empty in earlier rows): metrics that
        appear only on some iterations (periodic evaluation) are never dropped."""
        self._file.close()
        with self.path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        self.fields = [*self.fields, *new]
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        self._file = self.path.open("a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=self.fields, lineterminator="\n")

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    """The rows of a run's ``metrics.csv`` as floats."""
    with (Path(run_dir) / "metrics.csv").open(newline="") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
