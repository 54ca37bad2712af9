"""smis.curves and scripts/eval_curves.py: checkpoints of short real runs scored on shared masks."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from smis import curves
from smis.train import TrainConfig, Trainer
from smis.utils import project_root

TINY = {"ngf": 4, "nef": 4, "ndf": 4, "spade_hidden": 8, "z_dim": 8, "z_dim_local": 4}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for v in ("clvae", "gaugan"):
        cfg = TrainConfig(run_dir=str(root / f"demo_{v}"), variant=v, preset="synthscenes", preset_overrides=TINY,
                          perceptual="none", data_length=16, steps=3, batch_size=2, log_every=1, image_every=0,
                          ckpt_every=1, keep_last=5, tensorboard=False, progress=False)
        Trainer(cfg).fit()
    return root


def test_every_checkpoint_is_scored_on_the_same_masks_and_cached_rows_are_kept(runs):
    rows = curves.checkpoint_scores({"clvae": runs / "demo_clvae", "gaugan": runs / "demo_gaugan"}, n_masks=3, k=2,
                                    lpips="effnet", fd="effnet", progress=False)
    assert list(zip(rows["variant"], rows["step"])) == [("clvae", 1), ("clvae", 2), ("clvae", 3),
                                                        ("gaugan", 1), ("gaugan", 2), ("gaugan", 3)]
    assert (rows.loc[rows["variant"] == "gaugan", "diversity"] == 0).all()          # no latents: one image per mask
    assert (rows.loc[rows["variant"] == "clvae", "diversity"] > 0).all()
    assert rows["mask mIoU"].between(0, 1).all() and np.isfinite(rows["FD"]).all()
    kl = curves.layer_kl_table(rows, "clvae")
    assert list(kl.index) == [1, 2, 3] and list(kl.columns) == [f"KL layer {l}" for l in range(5)]
    assert (kl.to_numpy() >= 0).all()
    with pytest.raises(ValueError, match="no per-layer KL"):
        curves.layer_kl_table(rows, "gaugan")
    diag = curves.layer_diagnostics_table(rows, "clvae")                 # every checkpoint: the layers' diagnostics
    assert list(diag.index) == [1, 2, 3] and list(diag.columns.levels[0]) == sorted(curves.DIAGNOSTICS)
    assert diag["active units"].shape == (3, 5) and diag["classes visible"].to_numpy().max() <= 1
    assert np.allclose(diag["KL"].to_numpy(), kl.to_numpy())
    again = curves.checkpoint_scores({"clvae": runs / "demo_clvae"}, n_masks=3, k=2, done=rows, progress=False)
    pd.testing.assert_frame_equal(again, rows)                                        # nothing left to score
    plateau = curves.plateau_table(rows)
    assert plateau.loc["clvae", "checkpoints"] == 3 and plateau.loc["clvae", "from step"] == 2
    c = rows[rows["variant"] == "clvae"].set_index("step")["FD"]
    assert plateau.loc["clvae", "FD: last-quarter change"] == pytest.approx(c[3] - c[2])
    assert 0 <= plateau.loc["clvae", "FD: share of range"] <= 1
    with pytest.raises(FileNotFoundError, match="smis.train"):
        curves.checkpoint_scores({"clvae": runs / "nothing"})       # smis.checkpoint.list_checkpoints(missing_ok=False)


def test_rows_scored_before_the_diagnostics_get_them_from_their_checkpoints_or_keep_nan(runs):
    old = pd.DataFrame({"variant": ["clvae"] * 3 + ["gaugan", "clvae"], "step": [1, 2, 3, 1, 99],
                        "FD": [5.0, 4.0, 3.0, 6.0, 2.0],
                        **{f"KL layer {l}": [0.5, 0.4, 0.3, np.nan, 0.1] for l in range(5)}})   # as the shipped JSON
    table = curves.layer_diagnostics_table(old, "clvae")               # before filling: KL only, NaN elsewhere
    assert list(table.columns.levels[0]) == ["KL"] and table.shape == (4, 5)
    filled = curves.fill_diagnostics(old, {"clvae": runs / "demo_clvae", "gaugan": runs / "demo_gaugan"}, n_masks=3,
                                     progress=False)
    got = filled.set_index(["variant", "step"])
    assert np.isfinite(got.loc[("clvae", 2), [f"active units layer {l}" for l in range(5)]].to_numpy(float)).all()
    assert np.isnan(got.loc[("clvae", 99), "active units layer 0"])    # its checkpoint is gone: NaN kept
    assert np.isnan(got.loc[("gaugan", 1), "active units layer 0"])    # no latent layers
    assert got.loc[("clvae", 1), "FD"] == 5.0 and got.loc[("clvae", 99), "KL layer 0"] == 0.1   # the rest as it was
    assert got.loc[("clvae", 2), "KL layer 3"] == 0.4                  # a scored KL is kept, not re-measured
    table = curves.layer_diagnostics_table(filled, "clvae")
    assert table.loc[99, ("active units", 0)] != table.loc[99, ("active units", 0)]   # NaN in the table too
    assert (table.loc[[1, 2, 3], "classes visible"].to_numpy() > 0).all()


@pytest.mark.slow
def test_eval_curves_script_writes_json_and_figure(runs, tmp_path):
    out, fig = tmp_path / "c.json", tmp_path / "c.png"
    r = subprocess.run([sys.executable, "scripts/eval_curves.py", "--runs", str(runs), "--n", "3", "--k", "2",
                        "--out", str(out), "--figure", str(fig)], cwd=project_root(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads(out.read_text())
    assert len(data["rows"]) == 6 and data["masks"] == 3 and "cpu" in data and "torch" in data
    assert 0.5 < data["real"]["mask mIoU"] <= 1 and data["real"]["colour in class modes (%)"] > 90
    assert fig.stat().st_size > 10_000


def test_plateau_findings_and_layer_kl_finding():
    """By hand: over steps 1..4, clvae's scores all change only before 3/4 of the run (flattened) but its FD
    keeps falling; gaugan's diversity stays 0 (no range: flattened)."""
    def rows_of(variant, fd):
        return pd.DataFrame({"variant": variant, "step": [1, 2, 3, 4], "diversity": [0.0, 0.2, 0.3, 0.3]
                             if variant == "clvae" else 0.0, "FD": fd, "colour in class modes (%)": [50, 80, 90, 90],
                             "texture in class set (%)": [60, 70, 75, 75], "mask mIoU": [0.2, 0.5, 0.6, 0.6],
                             **{f"KL layer {l}": [1.0, 2.0, 3.0, 4.0] if l == 0 else [0.01] * 4 for l in range(5)}})
    rows = pd.concat([rows_of("clvae", [9.0, 8.0, 7.0, 4.0]), rows_of("gaugan", [9.0, 8.0, 8.0, 8.0])])
    plateau = curves.plateau_table(rows)
    assert plateau.loc["clvae", "FD: share of range"] == pytest.approx(3 / 5)
    assert "FD: last-quarter change" not in curves.plateau_table(rows, changes=False).columns
    assert "FD: share of range" in curves.plateau_table(rows, changes=False).columns
    flat = curves.flattened(plateau)
    assert flat["clvae"] == [s for s in curves.SCORES if s != "FD"] and flat["gaugan"] == list(curves.SCORES)
    assert curves.flattened(plateau, share=0.7)["clvae"] == list(curves.SCORES)
    lines = curves.plateau_findings(plateau)
    assert lines[0] == ("- `clvae` (4 steps, 4 checkpoints): flattened on diversity, colour in class modes (%), "
                        "texture in class set (%), mask mIoU; still moving over the last quarter: FD.")
    assert lines[1].startswith("- `gaugan` (4 steps, 4 checkpoints): flattened on diversity, FD,")
    assert "moving" not in lines[1]
    kl = curves.layer_kl_table(rows, "clvae")
    line = curves.layer_kl_finding(kl)
    assert "at step 1: 1.000, 0.010, 0.010, 0.010, 0.010; at step 4: 4.000, 0.010" in line
    assert line.endswith("stay collapsed however long it trains.")
    assert curves.layer_kl_finding(kl, collapsed=0.005).endswith("Coarser layers carry information by the end.")


def test_training_curves_and_layer_diagnostics_by_run_read_a_curves_file(tmp_path, capsys):
    assert curves.training_curves("", tmp_path / "c.png") == (None, None, None)
    assert "no curves file at ''" in capsys.readouterr().out and not (tmp_path / "c.png").exists()
    shipped = project_root() / "checkpoints" / "synthscenes_curves.json"
    plateau, layer_kl, by_step = curves.training_curves(shipped, tmp_path / "c.png")
    rows, real = curves.read_curves(shipped)
    pd.testing.assert_frame_equal(plateau, curves.plateau_table(rows, changes=False))
    pd.testing.assert_frame_equal(layer_kl, curves.layer_kl_table(rows, "clvae"))
    pd.testing.assert_frame_equal(by_step, curves.layer_diagnostics_table(rows, "clvae"))
    assert (tmp_path / "c.png").stat().st_size > 0 and real is not None
    experiment = project_root() / "docs" / "layer_experiment_curves.json"
    by_run = curves.layer_diagnostics_by_run(experiment)
    runs = list(curves.read_curves(experiment)[0]["variant"].unique())
    assert len(runs) == 2 and [k.split(":")[0] for k in by_run] == runs
    assert all(k.endswith(": each latent layer at each checkpoint: KL, active units, active share, classes visible")
               for k in by_run)
    for run, table in zip(runs, by_run.values()):
        pd.testing.assert_frame_equal(table, curves.layer_diagnostics_table(curves.read_curves(experiment)[0], run))
