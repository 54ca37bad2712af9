"""Mask fidelity (smis.segmenter): confusion matrix / mIoU against hand counts, the shipped SynthScenes
segmenter (high mIoU on real test images, low against other scenes' masks), files and training."""
import json
import math

import pytest
import torch

from smis.segmenter import (FORMAT, MaskFidelity, Segmenter, confusion_matrices, confusion_matrix, load_segmenter,
                            mask_fidelity, miou, miou_ci, pixel_accuracy, predict, save_segmenter, synthscenes_arrays,
                            train_segmenter)
from smis.utils import CheckpointError, project_root, safe_load

SHIPPED = project_root() / "checkpoints" / "synthscenes_segmenter.pt"


# ---- confusion matrix and mIoU --------------------------------------------------------------------------------------

def test_confusion_and_miou_by_hand():
    label = torch.tensor([[0, 0, 1], [1, 2, 2]])
    pred = torch.tensor([[0, 1, 1], [1, 2, 0]])
    cm = confusion_matrix(pred, label, 4)
    # (truth, prediction) pairs: (0,0) (0,1) (1,1) (1,1) (2,2) (2,0); class 3 occurs in neither
    want = torch.zeros(4, 4, dtype=torch.long)
    want[0, 0], want[0, 1], want[1, 1], want[2, 2], want[2, 0] = 1, 1, 2, 1, 1
    assert cm.dtype == torch.int64 and torch.equal(cm, want)
    mean, per_class = miou(cm)
    # IoU = TP / (TP + FP + FN): class 0: 1 / (1 + 1 + 1), class 1: 2 / (2 + 1 + 0), class 2: 1 / (1 + 0 + 1)
    assert per_class[:3].tolist() == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert math.isnan(per_class[3])                                      # absent from both: NaN, not 0
    assert mean == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)            # and left out of the mean
    assert pixel_accuracy(cm) == pytest.approx(4 / 6)


def test_class_only_predicted_counts_as_zero_and_ignore_index_skips():
    label = torch.tensor([0, 0, 1, 1, 255, 255])
    pred = torch.tensor([0, 2, 1, 1, 2, 0])                              # class 2 is a false positive only
    cm = confusion_matrix(pred, label, 3, ignore_index=255)
    assert int(cm.sum()) == 4                                           # the two ignored pixels are not counted
    mean, per_class = miou(cm)
    assert per_class.tolist() == pytest.approx([1 / 2, 1.0, 0.0])
    assert mean == pytest.approx(0.5)


def test_perfect_prediction_is_one():
    label = torch.randint(0, 10, (3, 16, 16), generator=torch.Generator().manual_seed(0))
    cm = confusion_matrix(label.clone(), label, 12)
    mean, per_class = miou(cm)
    assert mean == 1.0 and pixel_accuracy(cm) == 1.0
    assert per_class[10:].isnan().all() and (per_class[:10] == 1).all()


def test_per_mask_confusions_sum_to_the_pooled_one_and_match_each_mask():
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 5, (6, 3, 8, 8), generator=g)      # 6 masks, 3 samples each
    pred = torch.randint(0, 5, (6, 3, 8, 8), generator=g)
    per = confusion_matrices(pred, label, 5)
    assert per.shape == (6, 5, 5) and per.dtype == torch.int64
    for b in range(6):                                             # each mask against the pooled reference
        assert torch.equal(per[b], confusion_matrix(pred[b], label[b], 5))
    assert torch.equal(per.sum(0), confusion_matrix(pred, label, 5))
    label[0, 0, 0] = 255
    skipped = confusion_matrices(pred, label, 5, ignore_index=255)
    assert int(skipped[0].sum()) == 3 * 64 - 8 and int(skipped[1].sum()) == 3 * 64


def test_miou_ci_brackets_the_pooled_miou_and_pairs_variants():
    g = torch.Generator().manual_seed(1)
    label = torch.randint(0, 4, (40, 16, 16), generator=g)
    noisy = lambda p: torch.where(torch.rand(label.shape, generator=g) < p,                  # draws in this order
                                  torch.randint(0, 4, label.shape, generator=g), label)
    good, bad = confusion_matrices(noisy(0.2), label, 4), confusion_matrices(noisy(0.6), label, 4)
    r = miou_ci(good, bad, replicates=500, seed=0)
    assert r["miou"] == pytest.approx(miou(good.sum(0))[0])
    assert r["low"] < r["miou"] < r["high"] and r["high"] - r["low"] < 0.05
    assert r["difference"] == pytest.approx(miou(good.sum(0))[0] - miou(bad.sum(0))[0])
    assert 0 < r["difference_low"] < r["difference"] < r["difference_high"]       # a real gap: excludes 0
    same = miou_ci(good, good, replicates=200)
    assert same["difference"] == same["difference_low"] == same["difference_high"] == 0     # paired: no noise
    assert miou_ci(good, seed=3) == miou_ci(good, seed=3)                                   # seeded
    with pytest.raises(ValueError, match="same masks"):
        miou_ci(good, bad[:10])
    with pytest.raises(ValueError, match=r"\(N, C, C\)"):
        miou_ci(good.sum(0))


def test_bad_inputs_are_clear_errors():
    lab = torch.zeros(2, 8, 8, dtype=torch.long)
    with pytest.raises(TypeError, match="integer"):
        confusion_matrix(lab.float(), lab, 3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        confusion_matrix(lab, lab + 3, 3)
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(lab[0], lab, 3)
    with pytest.raises(ValueError, match="no pixel"):
        miou(torch.zeros(3, 3, dtype=torch.long))
    seg = Segmenter(3, (4, 8, 8))
    with pytest.raises(ValueError, match="divisible by 8"):
        seg(torch.zeros(1, 3, 12, 16))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        mask_fidelity(seg, torch.full((2, 3, 8, 8), 255.0), lab)
    with pytest.raises(ValueError, match="num_classes"):
        mask_fidelity(seg, torch.zeros(2, 3, 8, 8), lab, num_classes=4)
    with pytest.raises(ValueError, match="pair up"):
        mask_fidelity(seg, torch.zeros(3, 3, 8, 8), lab)


# ---- the shipped segmenter ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shipped():
    """The shipped 64x64 segmenter and 16 real SynthScenes test images ([-1, 1]) with their masks."""
    seg = load_segmenter(SHIPPED)
    images, labels = synthscenes_arrays("test", 64, 16, seed=0, progress=False)
    return seg, images.float() / 127.5 - 1, labels.long()


def test_shipped_segmenter_measures_mask_following(shipped):
    seg, images, labels = shipped
    real = mask_fidelity(seg, images, labels, num_classes=10, batch_size=8)
    other = mask_fidelity(seg, images, labels.roll(1, 0), num_classes=10)   # each image with another scene's mask
    assert real["images"] == 16 and real["per_class"].shape == (10,)
    assert real["miou"] > 0.8 and real["pixel_acc"] > 0.9
    assert other["miou"] < 0.4 or real["miou"] - other["miou"] >= 0.4
    assert real["miou"] - other["miou"] >= 0.4


def test_k_samples_per_mask_and_accumulation_match_flat_call(shipped):
    seg, images, labels = shipped
    flipped = images.flip(-1)                                          # a second "sample" of each mask (worse)
    grouped = mask_fidelity(seg, torch.stack([images, flipped], 1), labels)          # (N, K=2, 3, H, W)
    flat = mask_fidelity(seg, torch.cat([images, flipped]), torch.cat([labels, labels]))
    assert torch.equal(grouped["confusion"], flat["confusion"]) and grouped["images"] == 32
    acc = MaskFidelity(seg, batch_size=5)
    for part in range(0, 16, 6):                                       # batches of a sampling loop
        acc.update(images[part:part + 6], labels[part:part + 6])
    assert torch.equal(acc.compute()["confusion"], mask_fidelity(seg, images, labels)["confusion"])


def test_shipped_segmenter_at_another_size(shipped):
    seg = shipped[0]
    images, labels = synthscenes_arrays("test", 128, 8, seed=0, progress=False)
    pred = predict(seg, images.float() / 127.5 - 1)                    # run at 64x64, logits resized back
    assert pred.shape == (8, 128, 128)
    assert miou(confusion_matrix(pred, labels.long(), 10))[0] > 0.7


def test_shipped_files_document_the_model():
    assert SHIPPED.stat().st_size <= 5 * 2**20
    ck = safe_load(SHIPPED)                                            # weights_only=True: tensors + plain data
    assert ck["format"] == FORMAT and ck["storage"] == "fp16"
    assert all(v.dtype == torch.float16 for v in ck["state"].values() if v.is_floating_point())
    record = json.loads(SHIPPED.with_suffix(".json").read_text())
    assert record["command"].startswith("python scripts/train_segmenter.py ")
    assert f"--steps {record['steps']} " in record["command"] and f"--seed {record['seed']} " in record["command"]
    assert record["steps"] == ck["meta"]["steps"] and record["params"] == sum(v.numel() for v in ck["state"].values()
                                                                             if v.is_floating_point())
    assert record["file_bytes"] == SHIPPED.stat().st_size
    test = record["test"]
    assert test["split"] == "test" and test["images"] >= 100
    assert test["miou"] == ck["extra"]["provenance"]["test"]["miou"] and test["miou"] > 0.8
    assert set(test["per_class_iou"]) == set(ck["class_names"]) and len(ck["class_names"]) == 10
    assert test["shuffled_masks_miou"] < test["miou"] - 0.4
    for key in ("torch", "device", "wall_time_s", "batch_size", "data_seed", "pixel_acc"):
        assert key in record or key in test


# ---- files and training ---------------------------------------------------------------------------------------------

def test_training_lowers_the_loss_and_is_seeded(tmp_path):
    data = synthscenes_arrays("train", 64, 12, seed=3, progress=False)
    kw = dict(size=64, length=12, steps=30, batch_size=4, lr=1e-2, seed=1, widths=(8, 16, 16), device="cpu",
              progress=False, data=data)
    net, losses = train_segmenter(**kw)
    assert len(losses) == 30 and all(math.isfinite(l) for l in losses)
    assert not net.training and net.meta["steps"] == 30 and net.meta["data"]["length"] == 12
    x, y = data[0].float() / 127.5 - 1, data[1].long()
    torch.manual_seed(1)
    untrained = Segmenter(10, (8, 16, 16))
    with torch.no_grad():                                              # the whole tiny set, before and after
        before, after = (torch.nn.functional.cross_entropy(m(x), y).item() for m in (untrained, net))
    assert after < 0.85 * before
    again, losses2 = train_segmenter(**kw)                            # same seed: the same run
    assert losses2 == losses
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))

    path = save_segmenter(net, tmp_path / "seg.pt", extra={"note": "tiny"})
    back = load_segmenter(path)
    assert back.widths == (8, 16, 16) and back.image_size == (64, 64) and back.extra == {"note": "tiny"}
    assert back.meta["steps"] == 30 and back.class_names == net.class_names
    x = data[0][:2].float() / 127.5 - 1
    with torch.no_grad():
        ref = net.half().float()(x)                                   # the fp16-rounded weights
        assert torch.allclose(back(x), ref, atol=1e-4)
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an smis segmenter"):
        load_segmenter(tmp_path / "other.pt")
