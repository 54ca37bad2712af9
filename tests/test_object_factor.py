"""SynthScenes' opt-in object-scale factor (issue 22 item 2): a shading direction per class region."""
import copy
import hashlib
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from smis import edit_measures
from smis import train as T
from smis.checkpoint import load_model
from smis.config import TINY
from smis.curves import run_object_factor
from smis.data import make_dataset, synthetic
from smis.data.synthetic import CLASSES, SHADINGS, estimate_factors, generate, render
from smis import evaluate as ev
from smis.checkpoint import object_factor_of
from smis.networks import Latents

# sha256 of the factor records (less the label-derived "pixels" counts) of 32 default images, computed with the
# code before the object-scale factor existed (git show 6a4c339:smis/data/synthetic.py). The records are drawn by
# numpy's PCG64 in float64 arithmetic, so the digest does not depend on the CPU's SIMD kernels.
OLD_RECORDS_SHA256 = "4e0bdb8e3cb989fa71c15fc2ddcdbf7186d7498cb16be4f1006e1a8d66366987"


def strip(record: dict) -> dict:
    """The record without the object-scale factor's entries."""
    rec = copy.deepcopy(record)
    rec.pop("shading_amplitude", None)
    for c in rec["classes"].values():
        c.pop("shading", None)
    return rec


def test_option_off_is_the_old_data():
    h = hashlib.sha256()
    for split in ("train", "test"):
        for size in (64, (64, 96)):
            for i in range(8):
                img, lab, rec = generate(i, size, 3, split)
                img0, lab0, rec0 = generate(i, size, 3, split, object_factor=False)
                assert np.array_equal(img, img0) and np.array_equal(lab, lab0) and rec == rec0
                assert "shading_amplitude" not in rec and all("shading" not in c for c in rec["classes"].values())
                h.update(json.dumps({**rec, "classes": {k: {n: v for n, v in c.items() if n != "pixels"}
                                                        for k, c in rec["classes"].items()}},
                                    sort_keys=True).encode())
    assert h.hexdigest() == OLD_RECORDS_SHA256


@pytest.mark.parametrize("size", [64, (64, 128)])
def test_option_on_keeps_masks_and_other_factors_and_adds_shading(size):
    for i in range(6):
        img0, lab0, rec0 = generate(i, size, 1, "train")
        img, lab, rec = generate(i, size, 1, "train", object_factor=True)
        assert np.array_equal(lab, lab0) and strip(rec) == rec0      # same masks, same other factors
        assert np.array_equal(render(lab, strip(rec)), img0)         # without the shading: the default image
        assert np.array_equal(render(lab, rec), img)                 # the record re-creates the image exactly
        assert rec["shading_amplitude"] == synthetic.SHADE_AMPLITUDE
        for c, f in rec["classes"].items():
            assert f["shading"] in SHADINGS[CLASSES[int(c)].name]
        assert np.abs(img.astype(int) - img0.astype(int)).max() > 20  # clearly visible


def test_shading_is_mean_preserving_and_brightest_on_its_side():
    """On flat, unclipped regions: the region mean stays (within rounding), and the side named by the record
    is brighter than the opposite one by a margin that is visible at 64x64."""
    checked = 0
    for i in range(40):
        img0, lab, rec0 = generate(i, 64, 0, "test")
        img, _, rec = generate(i, 64, 0, "test", object_factor=True)
        yy, xx = np.mgrid[0:64, 0:64]
        for c, f in rec["classes"].items():
            m = lab == int(c)
            if f["texture"] != "flat" or m.sum() < 100 or (img[m] >= 254).any() or (img[m] <= 1).any():
                continue
            assert abs(img[m].mean() - img0[m].mean()) < 1.0
            dx, dy = synthetic.SHADE_DIRS[f["shading"]]
            p = (xx * dx + yy * dy)[m]
            lum = img[m].mean(-1)
            hi, lo = lum[p >= np.quantile(p, 0.75)].mean(), lum[p <= np.quantile(p, 0.25)].mean()
            assert hi > 1.25 * lo
            checked += 1
    assert checked >= 20


def test_estimator_reads_the_shading_back_from_test_images():
    """>= 95 % of the regions of 200 test images at 64x64 (the issue's bar); colour and texture stay readable."""
    ok = {"colour": [], "texture": [], "shading": []}
    for i in range(200):
        img, lab, rec = generate(i, 64, 0, "test", object_factor=True)
        for c, e in estimate_factors(img, lab, rec["global"], object_factor=True).items():
            t = rec["classes"][str(c)]
            ok["colour"].append(e["colour_mode"] == t["colour_mode"])
            ok["texture"].append(e["texture"] == t["texture"])
            ok["shading"].append(e["shading"] == t["shading"])
    rate = {k: float(np.mean(v)) for k, v in ok.items()}
    assert len(ok["shading"]) > 1000
    assert rate["shading"] >= 0.95 and rate["colour"] >= 0.98 and rate["texture"] >= 0.95, rate


def test_estimator_follows_the_pixels_not_the_record():
    """Re-rendering a region with the opposite direction flips the estimate; default estimates carry no shading."""
    opposite = {"top": "bottom", "bottom": "top", "left": "right", "right": "left"}
    flipped = 0
    for i in range(20):
        img, lab, rec = generate(i, 64, 0, "test", object_factor=True)
        assert all("shading" not in e for e in estimate_factors(img, lab, rec["global"]).values())
        est = estimate_factors(img, lab, rec["global"], object_factor=True)
        for c, f in rec["classes"].items():
            name = CLASSES[int(c)].name
            if (int(c) not in est or opposite[f["shading"]] not in SHADINGS[name]
                    or est[int(c)]["shading"] != f["shading"]):
                continue
            other = copy.deepcopy(rec)
            other["classes"][c]["shading"] = opposite[f["shading"]]
            img2 = render(lab, other)
            est2 = estimate_factors(img2, lab, rec["global"], object_factor=True)
            flipped += est2[int(c)]["shading"] == opposite[f["shading"]]
            assert all(est2[k]["shading"] == est[k]["shading"] for k in est if k != int(c))
            break
    assert flipped >= 15


def test_written_dataset_records_and_scores_the_shading(tmp_path):
    root = synthetic.write_synthscenes(tmp_path / "of", n_train=2, n_test=12, size=64, seed=2, progress=False,
                                       object_factor=True)
    meta = json.loads((root / "meta.json").read_text())
    assert meta["object_factor"] is True
    recs = synthetic.read_factors(root, "test")
    assert all(rec == generate(rec["index"], 64, 2, "test", object_factor=True)[2] for rec in recs)
    summary = synthetic.factor_recovery(root, "test")
    assert list(summary.columns) == ["colour ok", "texture ok", "shading ok", "regions"]
    assert summary.loc["all", "regions"] == sum(len(estimate_factors(*generate(r["index"], 64, 2, "test", True)[:2]))
                                                for r in recs)
    assert summary.loc["all", "shading ok"] >= 0.85
    with pytest.raises(FileExistsError, match="overwrite"):   # default settings on an object-factor dataset
        synthetic.write_synthscenes(root, n_train=2, n_test=12, size=64, seed=2, progress=False)
    synthetic.main(["--out", str(tmp_path / "cli"), "--train", "1", "--test", "2", "--size", "64", "--object-factor"])
    cli = synthetic.read_factors(tmp_path / "cli", "test")
    assert len(cli) == 2 and all("shading" in c for r in cli for c in r["classes"].values())


def test_cli_flag_reaches_training_and_evaluation_data(tmp_path):
    run = tmp_path / "run"
    cfg, _ = T.parse_args(["--variant", "clvae", "--preset", "synthscenes", "--synth-object-factor",
                           "--run-dir", str(run), "--steps", "2", "--batch-size", "2", "--data-length", "8",
                           "--perceptual", "none", "--no-tensorboard", "--no-progress", "--ckpt-every", "2",
                           "--image-every", "0", "--no-flip",
                           "--set", *(f"{k}={v}" for k, v in TINY.items())])
    assert cfg.synth_object_factor
    trainer = T.Trainer(cfg)
    assert trainer.dataset.object_factor
    item = trainer.dataset[3]
    img = generate(3, trainer.dataset.size, 0, "train", object_factor=True)[0]
    assert np.array_equal(((item["image"].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8), img)
    trainer.fit()
    assert json.loads((run / "config.json").read_text())["synth_object_factor"] is True
    assert run_object_factor(run)
    nets = load_model(run / "checkpoints" / "step_00000002.pt")
    assert object_factor_of(nets)
    test, _ = ev.test_set("synthscenes", "", "test", nets.preset.image_size, 4, 0, object_factor_of(nets))
    assert test.object_factor and "shading" in next(iter(test.factors(0)["classes"].values()))
    # the editing report of such a run measures on the same data, with the shading column
    ckpt = run / "checkpoints" / "step_00000002.pt"
    out = tmp_path / "e.json"
    assert edit_measures.main(["--model", str(ckpt), "--n", "2", "--threads", "1", "--out", str(out)]) == 0
    h, w = nets.preset.image_size                                      # the dataset line names the model's size
    assert json.loads(out.read_text())["dataset"] == f"synthscenes test split, {h}x{w}, seed 0"
    rep = json.loads(out.read_text())["models"][str(ckpt)]
    assert rep["object_factor"] is True and all("shading_changed" in r and "moves_most" in r for r in rep["layers"])


def test_option_is_refused_where_it_cannot_apply(tmp_path):
    with pytest.raises(ValueError, match="synth_object_factor"):
        T.TrainConfig(synth_object_factor=True, data_root=str(tmp_path))
    off = make_dataset("synthscenes", None, "train", size=64, length=2)
    assert not off.object_factor


# -- the per-layer factor table: shading changes, intervals, which factor a layer moves most ---------------

def shading_nets(records: list[dict], L: int = 3, K: int = len(CLASSES), N: int = 2):
    """A stand-in generator that renders SynthScenes from `records` (one per photo), where only the shading
    of each class depends on the codes: its sign at the coarsest layer (L - 1) picks one of the class's first
    two allowed directions. Resampling any other layer changes nothing."""
    spec = SimpleNamespace(num_classes=K, layers=tuple(range(1, L + 1)), z_dim=4, z_dim_local=N, has_class_codes=True,
                           code_classes=K, classwise=True,
                           presence=lambda lab: torch.ones(lab.shape[0], L, K, dtype=torch.bool))

    def G(label, z):
        out = []
        for b in range(label.shape[0]):          # a test stand-in: one numpy render per photo
            rec = copy.deepcopy(records[int(z.z[b, 0])])
            for c, f in rec["classes"].items():
                allowed = SHADINGS[CLASSES[int(c)].name]
                f["shading"] = allowed[int(z.zc[b, L - 1, int(c), 0] > 0)]
            img = render(label[b].numpy(), rec)
            out.append(torch.from_numpy(img).permute(2, 0, 1).float() / 127.5 - 1)
        return torch.stack(out)
    return SimpleNamespace(G=G, spec=spec, variant="shading stand-in")


def shading_photos(n: int = 6, L: int = 3, N: int = 2):
    photos = [generate(i, 64, 0, "test", object_factor=True) for i in range(n)]
    labels = torch.from_numpy(np.stack([p[1] for p in photos]))
    g = torch.Generator().manual_seed(0)
    lat = Latents(torch.arange(n, dtype=torch.float32)[:, None].expand(n, 4).clone(),   # z[b, 0]: photo id
                  torch.randn(n, L, len(CLASSES), N, generator=g), torch.ones(n, L, len(CLASSES), dtype=torch.bool))
    return [p[2] for p in photos], labels, lat


def test_only_the_shading_column_moves_when_only_the_shading_changes():
    records, labels, lat = shading_photos()
    nets = shading_nets(records)
    samples, classes = edit_measures.edit_cases(labels, len(CLASSES))
    rows = edit_measures.layer_effects(nets, labels, lat, samples, classes, torch.Generator().manual_seed(1),
                                 batch_size=16, object_factor=True)
    coarse, fine = rows[2], rows[:2]
    assert coarse["shading_changed"] > 0.3 and coarse["moves_most"] == "shading"
    assert coarse["mode_changed"] == 0 and coarse["texture_changed"] <= 0.1
    assert coarse["shading_changed_lo"] < coarse["shading_changed"] < coarse["shading_changed_hi"]
    assert coarse["shading_changed_lo"] > coarse["texture_changed_hi"]       # the intervals separate
    for r in fine:                     # resampling a layer the generator ignores changes no factor
        assert r["mode_changed"] == r["texture_changed"] == r["shading_changed"] == 0 and r["moves_most"] is None
        assert r["colour_shift"] == 0 and r["shading_changed_lo"] == 0 and 0 < r["shading_changed_hi"] < 0.2
    assert all(r["shading_changed_n"] <= r["cases"] == len(samples) for r in rows)
    # without object_factor the same table has no shading column, and the other columns keep their numbers
    off = edit_measures.layer_effects(nets, labels, lat, samples, classes, torch.Generator().manual_seed(1),
                                      batch_size=16)
    assert all("shading_changed" not in r for r in off)
    assert [r["colour_shift"] for r in off] == [r["colour_shift"] for r in rows]
    table = edit_measures.layer_table(SimpleNamespace(G=SimpleNamespace(code_index={"up_0": 0, "up_1": 1, "head_0": 2}),
                                                spec=nets.spec), {"layers": rows})
    assert {"shading changed", "shading changed lo", "shading changed hi", "shading n", "moves most",
            "colour mode changed lo", "texture kind changed hi"} <= set(table.columns)
    summary = edit_measures.layer_factor_summary(table.round(3))
    assert [s["moves_most"] for s in summary] == [None, None, "shading"]
    assert set(summary[2]["shares"]) == {"colour mode", "texture kind", "shading"}
    lo, hi = summary[2]["intervals"]["shading"]
    assert lo <= summary[2]["shares"]["shading"] <= hi


def test_factor_rates_of_shaded_images_are_read_shading_aware():
    """The factor-aware scores (colour / texture in the class's distribution) of real object-factor images stay
    near those of default images when the evaluation knows the data (SampleFactors of an object-factor test set)."""
    ds = make_dataset("synthscenes", None, "test", size=64, length=40, object_factor=True)
    items = [ds[i] for i in range(len(ds))]
    batch = SimpleNamespace(indices=list(range(len(ds))), label=torch.stack([it["label"] for it in items]),
                            samples=torch.stack([it["image"] for it in items])[:, None])   # (N, K=1, 3, H, W)
    aware, naive = ev.SampleFactors(ds.object_factor), ev.SampleFactors()
    aware.update(batch)
    naive.update(batch)
    a, n = aware.result(), naive.result()
    assert len(a) == len(n) > 150 and a["colour_in"].mean() > 0.97
    assert a["texture_in"].mean() > 0.97 > 0.85 > n["texture_in"].mean()
