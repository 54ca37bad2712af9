"""A training run's log: losses.csv (always) and TensorBoard scalars and images (optional).

    with RunLog(run_dir, resume_step=trainer.step, tensorboard=True) as log:
        log.scalars(step, {"g_total": 3.2, "d_hinge": 1.9, "images_per_s": 41.0})
        log.image("mask|real|fake|prior samples", grid, step)         # grid (3, H, W) in [0, 1]

On resume the CSV's rows past the checkpoint's step are dropped and TensorBoard's purged, so a run killed
after a log step and resumed from an older checkpoint has each step once.
"""
from __future__ import annotations

import csv
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter

from smis.utils import atomic_path

SPEED_KEYS = ("images_per_s", "lr_factor")          # logged as speed/<key>; every other scalar as loss/<key>


class CsvLog:
    """losses.csv, rewritten atomically at each row; on resume rows past the checkpoint's step are dropped."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        self.rows: list[dict] = []
        if path.exists():
            with open(path) as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        self.keys = list(self.rows[0].keys()) if self.rows else None
        self._flush()

    def write(self, step: int, losses: dict[str, float]):
        row = {"step": step, **{k: f"{v:.6g}" for k, v in losses.items()}}
        if self.keys is None:
            self.keys = list(row)
        self.rows.append(row)
        self._flush()

    def _flush(self):
        if self.keys is None:
            return
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.keys, extrasaction="ignore")
            w.writeheader()
            w.writerows(self.rows)

    def close(self):
        self._flush()


class RunLog:
    """losses.csv + TensorBoard (run_dir/tensorboard) of one run, from `resume_step` on."""

    def __init__(self,
                 run_dir: Path,                 # the run's folder
                 resume_step: int = 0,          # the step training restarts from (later rows are dropped)
                 tensorboard: bool = True,      # also write TensorBoard events
                 ):
        self.csv = CsvLog(Path(run_dir) / "losses.csv", resume_step)
        self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=resume_step) if tensorboard else None

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """One CSV row and one TensorBoard scalar per value (loss/<key>, or speed/<key> for SPEED_KEYS)."""
        self.csv.write(step, values)
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"speed/{k}" if k in SPEED_KEYS else f"loss/{k}", v, step)

    def image(self, tag: str, grid: torch.Tensor, step: int) -> None:
        """A (3, H, W) image in [0, 1] on TensorBoard (nothing without it)."""
        if self.tb is not None:
            self.tb.add_image(tag, grid, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        self.csv.close()

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
