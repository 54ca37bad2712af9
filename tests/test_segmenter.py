"""Mask fidelity (smis.segmenter): the shipped SynthScenes segmenter (high mIoU on real test images, low against
other scenes' masks), files and training (scripts/train_segmenter.py; confusion matrices and mIoU: test_stats.py)."""
import json
import math

import pytest
import torch

from smis.data.synthetic import synthscenes_arrays
from smis.segmenter import FORMAT, MaskFidelity, Segmenter, load_segmenter, mask_fidelity, predict, save_segmenter
from smis.stats import confusion_matrix, miou
from smis.utils import CheckpointError, project_root, safe_load

SHIPPED = project_root() / "checkpoints" / "synthscenes_segmenter.pt"


def train_segmenter(**kw):
    """scripts/train_segmenter.py's train_segmenter (the SynthScenes training lives with its script)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("train_segmenter", project_root() / "scripts" / "train_segmenter.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script.train_segmenter(**kw)


def test_bad_inputs_are_clear_errors():
    lab = torch.zeros(2, 8, 8, dtype=torch.long)
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
