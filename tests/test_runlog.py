"""smis.runlog: losses.csv (rows past a resumed step dropped) and TensorBoard (scalars and the sample grid)."""
import csv

import pytest
import torch

from conftest import cfg
from smis import train as T
from smis.runlog import RunLog


def test_run_log_drops_rows_past_the_resumed_step(tmp_path):
    with RunLog(tmp_path, tensorboard=False) as log:
        for step in (1, 2, 3):
            log.scalars(step, {"g_total": float(step), "images_per_s": 1.0})
    with RunLog(tmp_path, resume_step=2, tensorboard=False) as log:                   # resumed from step 2
        log.scalars(3, {"g_total": 30.0, "images_per_s": 1.0})
    rows = list(csv.DictReader(open(tmp_path / "losses.csv")))
    assert [(r["step"], r["g_total"]) for r in rows] == [("1", "1"), ("2", "2"), ("3", "30")]


@pytest.mark.parametrize("variant, samples", [("clvae", 3), ("gaugan", 1)])
def test_tensorboard_log_and_sample_grid(tmp_path, variant, samples):
    """TensorBoard gets the scalars and the labelled grid mask | real | fake | prior samples (smis.sampling)."""
    t = T.Trainer(cfg(tmp_path, variant=variant, steps=2, tensorboard=True, image_every=1))
    run = t.fit()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    batch = [t.dataset[i] for i in range(2)]
    image, label = torch.stack([b["image"] for b in batch]), torch.stack([b["label"] for b in batch])
    grid = t.sample_grid(image, label)
    H, W = t.preset.image_size
    assert grid.shape == (3, 2 * H, (3 + samples) * W) and 0 <= grid.min() and grid.max() <= 1
    assert torch.allclose(grid[:, :H, W:2 * W], (image[0] + 1) / 2)                # the real image, row 0
    assert torch.allclose(grid[:, :H, 2 * W:3 * W], (t.train_step.last_fake[0].clamp(-1, 1) + 1) / 2)
