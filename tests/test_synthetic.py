import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from smis.data import make_dataset, synthetic
from smis.data.synthetic import CLASSES, MAX_CLASSES, MIN_CLASSES, TEXTURES, estimate_factors, generate, render


def test_deterministic_from_seed_and_split():
    a = generate(5, 64, seed=3)
    b = generate(5, 64, seed=3)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert not np.array_equal(generate(5, 64, seed=4)[1], a[1])
    assert not np.array_equal(generate(5, 64, seed=3, split="test")[1], a[1])


@pytest.mark.parametrize("size", [64, (96, 160), (128, 64)])
def test_four_to_eight_visible_classes_per_image(size):
    H, W = (size, size) if isinstance(size, int) else size
    counts = []
    for i in range(40):
        img, label, rec = generate(i, size)
        assert img.shape == (H, W, 3) and img.dtype == np.uint8 and label.shape == (H, W)
        present = set(np.unique(label).tolist())
        assert present == {int(k) for k in rec["classes"]}
        assert MIN_CLASSES <= len(present) <= MAX_CLASSES
        px = np.bincount(label.ravel(), minlength=len(CLASSES))
        assert all(px[c] >= synthetic._min_pixels(H, W) for c in present)
        counts.append(len(present))
    assert len(set(counts)) >= 3  # the number of classes varies


def test_stuff_and_things_mixed():
    kinds = {CLASSES[c].kind for i in range(20) for c in np.unique(generate(i, 64)[1])}
    assert kinds == {"stuff", "thing"}
    assert len(CLASSES) >= 8


def test_record_is_complete_image_rerenders_exactly():
    for i in range(10):
        img, label, rec = generate(i, (80, 120))
        rec = json.loads(json.dumps(rec))  # survives the JSON round trip of factors.jsonl
        assert np.array_equal(render(label, rec), img)


def test_each_region_matches_its_factor_record():
    """Colour mode and texture kind read back from the pixels equal the record."""
    colour_ok = texture_ok = chroma_ok = total = 0
    for i in range(60):
        img, label, rec = generate(i, 128, split="test")
        est = estimate_factors(img, label, rec["global"])
        blind = estimate_factors(img, label)  # global factor unknown, as for generated images
        for c, e in est.items():
            truth = rec["classes"][str(c)]
            total += 1
            colour_ok += e["colour_mode"] == truth["colour_mode"]
            texture_ok += e["texture"] == truth["texture"]
            chroma_ok += blind[c]["colour_mode"] == truth["colour_mode"]
    assert total > 300
    assert colour_ok == total
    assert texture_ok / total >= 0.97
    assert chroma_ok / total >= 0.95


def test_appearance_is_multimodal_and_independent_per_class():
    modes = {c: set() for c in range(len(CLASSES))}
    textures = {c: set() for c in range(len(CLASSES))}
    for i in range(150):
        rec = generate(i, 64)[2]
        for k, v in rec["classes"].items():
            modes[int(k)].add(v["colour_mode"])
            textures[int(k)].add(v["texture"])
    for c, spec in enumerate(CLASSES):
        assert modes[c] == set(range(len(spec.colour_modes))), spec.name
        assert textures[c] == set(spec.textures), spec.name
        assert textures[c] <= set(TEXTURES)
    assert len(set().union(*textures.values())) == len(TEXTURES)


def test_size_is_validated():
    with pytest.raises(ValueError, match="between 64 and 512"):
        generate(0, 32)
    with pytest.raises(ValueError, match="64 and 512"):
        synthetic.SynthScenes(size=(64, 600))


def test_on_the_fly_dataset_equals_files_on_disk(tmp_path):
    root = synthetic.write_synthscenes(tmp_path / "ss", n_train=6, n_test=3, size=(64, 96), seed=2, progress=False)
    assert json.loads((root / "classes.json").read_text())["names"][0] == "sky"
    disk = make_dataset("synthscenes", root, "test", size=(64, 96))
    mem = make_dataset("synthscenes", None, "test", size=(64, 96), length=3, seed=2)
    assert len(disk) == 3 and len(mem) == 3 and disk.info.num_classes == mem.info.num_classes == 10
    for i in range(3):
        a, b = disk[i], mem[i]
        assert a["image"].dtype == torch.float32 and a["label"].dtype == torch.int64
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
        assert a["image"].min() >= -1 and a["image"].max() <= 1
    records = synthetic.read_factors(root, "test")
    assert [r["index"] for r in records] == [0, 1, 2]


def test_render_cache_returns_the_same_tensors_and_skips_rendering(monkeypatch):
    """Epochs after the first read renders back from memory: the same tensors as rendering anew, copies that a
    caller may change, a byte budget that stops the cache filling, and no cache in a pickled copy (workers)."""
    import pickle
    calls = []
    real_generate = synthetic.generate
    monkeypatch.setattr(synthetic, "generate", lambda *a, **k: calls.append(a[0]) or real_generate(*a, **k))
    fresh = synthetic.SynthScenes(size=64, length=6, seed=1, cache_mb=0)
    cached = synthetic.SynthScenes(size=64, length=6, seed=1)
    for _ in range(3):                                              # three epochs
        for i in range(6):
            a, b = fresh[i], cached[i]
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
            assert b["image"].dtype == torch.float32 and b["label"].dtype == torch.int64
    assert len(calls) == 3 * 6 + 6                                  # fresh: every time; cached: once per index
    item = cached[2]
    item["label"].zero_()
    item["image"].fill_(0.5)
    again = cached[2]
    assert torch.equal(again["label"], fresh[2]["label"]) and torch.equal(again["image"], fresh[2]["image"])
    one = (64 * 64 * 3 + 64 * 64) / 2**20                           # one 64x64 sample, MiB
    small = synthetic.SynthScenes(size=64, length=6, seed=1, cache_mb=2.5 * one)
    calls.clear()
    for _ in range(2):
        for i in range(6):
            small[i]
    assert sorted(calls) == [0, 1, 2, 2, 3, 3, 4, 4, 5, 5]          # two fit; the others render each time
    assert small._cached_bytes <= small.cache_bytes
    copy = pickle.loads(pickle.dumps(cached))
    assert copy._cache == {} and len(cached._cache) == 6
    calls.clear()
    assert torch.equal(copy[4]["image"], fresh[4]["image"]) and calls == [4, 4]
    with pytest.raises(ValueError, match="cache_mb=-1"):
        synthetic.SynthScenes(size=64, cache_mb=-1)


def test_write_is_idempotent_and_atomic(tmp_path, monkeypatch):
    root = synthetic.write_synthscenes(tmp_path / "ss", 4, 2, 64, progress=False)
    stamp = (root / "train" / "images" / "000000.png").stat().st_mtime_ns
    synthetic.write_synthscenes(root, 4, 2, 64, progress=False)  # same settings: nothing rewritten
    assert (root / "train" / "images" / "000000.png").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="overwrite"):
        synthetic.write_synthscenes(root, 5, 2, 64, progress=False)

    real = synthetic.generate

    def failing(i, *a, **k):
        if i == 2:
            raise RuntimeError("disk full")
        return real(i, *a, **k)

    monkeypatch.setattr(synthetic, "generate", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        synthetic.write_synthscenes(tmp_path / "broken", 4, 2, 64, progress=False)
    assert not (tmp_path / "broken").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ss"]  # no temporary folder left behind


def test_cli_writes_dataset(tmp_path, capsys):
    synthetic.main(["--out", str(tmp_path / "cli"), "--train", "3", "--test", "1", "--size", "64", "96"])
    assert "ready" in capsys.readouterr().out
    assert len(list((tmp_path / "cli" / "train" / "labels").glob("*.png"))) == 3
    meta = json.loads((tmp_path / "cli" / "meta.json").read_text())
    assert meta["size"] == [64, 96] and meta["splits"] == {"train": 3, "test": 1}


def test_factor_recovery_scores_every_region_of_a_written_split(tmp_path):
    """factor_recovery = estimate_factors on each written test image against its record, per class and overall
    (as notebook 01 computed it in a cell, through the dataset's load_raw)."""
    root = synthetic.write_synthscenes(tmp_path / "ss", n_train=1, n_test=5, size=64, seed=1, progress=False)
    test = make_dataset("synthscenes", root, "test", size=64)
    rows = []
    for rec in synthetic.read_factors(root, "test"):
        img = np.asarray(Image.open(root / "test" / "images" / f"{rec['index']:06d}.png"))
        for c, e in estimate_factors(img, test.load_raw(rec["index"])[1], rec["global"]).items():
            truth = rec["classes"][str(c)]
            rows.append({"class": truth["name"], "colour ok": e["colour_mode"] == truth["colour_mode"],
                         "texture ok": e["texture"] == truth["texture"]})
    regions = pd.DataFrame(rows)
    summary = synthetic.factor_recovery(root, "test")
    assert list(summary.columns) == ["colour ok", "texture ok"] and summary.index[-1] == "all"
    assert sorted(summary.index[:-1]) == sorted(regions["class"].unique())
    for cls, g in regions.groupby("class"):
        assert summary.loc[cls, "colour ok"] == round(g["colour ok"].mean(), 3)
    assert summary.loc["all", "texture ok"] == round(regions["texture ok"].mean(), 3)
    assert ((summary >= 0) & (summary <= 1)).all().all() and summary.loc["all", "colour ok"] > 0.5
    with pytest.raises(synthetic.DatasetError, match="does not exist"):
        synthetic.factor_recovery(root, "val")


def test_factor_draws_keep_the_mask_and_redraw_the_appearance():
    image, label, _ = generate(0, 64, 0, "train")
    g = synthetic.factor_draws(0, 64, 0, n=3, draw_seed=1)
    assert g.shape == (64, 5 * 64 + 4 * 2, 3)                          # mask | image | 3 draws, 2 px between
    tiles = [g[:, 66 * j:66 * j + 64] for j in range(5)]
    assert np.array_equal(tiles[0], np.asarray(synthetic.PALETTE, np.uint8)[label])
    assert np.array_equal(tiles[1], image)
    assert not any(np.array_equal(t, image) for t in tiles[2:])             # other draws of the factors
    assert np.array_equal(g, synthetic.factor_draws(0, 64, 0, n=3, draw_seed=1))       # deterministic
    assert not np.array_equal(g, synthetic.factor_draws(0, 64, 0, n=3, draw_seed=2))
