"""Mask fidelity: does an image follow its mask? A small segmenter's mIoU against the mask.

The field's standard check (SPADE, CLADE, OASIS report it as mIoU): segment the generated image
with a network trained on real images only, and compare the predicted label map with the mask the
image was generated from. On real test images the same number is the ceiling a generator can reach;
an image that ignores its mask scores about what a shuffled mask does.

    seg = load_segmenter("checkpoints/synthscenes_segmenter.pt")
    mask_fidelity(seg, images, labels)        # {"miou", "pixel_acc", "per_class", "confusion", "images"}

`Segmenter` is a 3-level U-Net (GroupNorm + ReLU, 0.3 M parameters at widths 16-32-64) taking
(B, 3, H, W) images in [-1, 1], the generator's range, to (B, C, H, W) logits. `scripts/train_segmenter.py`
fits it on SynthScenes training images and ships `checkpoints/synthscenes_segmenter.pt` and its JSON.

mIoU is the dataset-level one of the field (`smis.stats.confusion_matrix`, `miou`, `miou_ci`): one confusion
matrix accumulated over all pixels of all images, IoU_c = TP / (TP + FP + FN) per class, averaged over the
classes that occur in the labels or the predictions (the others are NaN and left out).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from smis.stats import check_ids, confusion_matrices, miou, pixel_accuracy
from smis.utils import CheckpointError, atomic_torch_save, check_images, pick_device, plain_data, safe_load

FORMAT = "smis-segmenter-v1"


# ---------------------------------------------------------------------------------------------
# The network


def _groups(channels: int) -> int:
    """GroupNorm groups: 8 channels per group where possible (16 -> 2, 32 -> 4, 64 -> 8)."""
    for size in (8, 4, 2, 1):
        if channels % size == 0:
            return channels // size
    return 1


def _block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 convolutions, each followed by GroupNorm and ReLU; the resolution is kept."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.GroupNorm(_groups(c_out), c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.GroupNorm(_groups(c_out), c_out), nn.ReLU(inplace=True))


class Segmenter(nn.Module):
    """A 3-level U-Net: (B, 3, H, W) images in [-1, 1] -> (B, C, H, W) class logits, H and W divisible by 8.

    Encoder levels at 1, 1/2 and 1/4 of the input with `widths` channels, a bottleneck at 1/8 (widths[-1]
    channels), a decoder that upsamples (bilinear) and concatenates the encoder level of the same size.
    GroupNorm (per image, no running statistics) makes a prediction independent of the other images of
    the batch and of train / eval mode. The bottleneck sees about 70 pixels: enough context to tell
    classes that share colour modes apart by shape and position.
    """

    def __init__(self,
                 num_classes: int,                              # C, output channels
                 widths: Sequence[int] = (16, 32, 64),          # channels of the three encoder levels
                 image_size: tuple[int, int] = (64, 64),        # (H, W) it was (or will be) trained at
                 class_names: Sequence[str] | None = None,      # C names, for tables (default "0".."C-1")
                 ):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) != 3 or min(widths) < 1:
            raise ValueError(f"widths={widths}: give three positive channel counts, e.g. (24, 48, 96)")
        if int(num_classes) < 2:
            raise ValueError(f"num_classes={num_classes}: a segmenter needs at least 2 classes")
        names = [str(c) for c in range(num_classes)] if class_names is None else [str(n) for n in class_names]
        if len(names) != num_classes:
            raise ValueError(f"{len(names)} class names for num_classes={num_classes}; give one name per class")
        self.num_classes, self.widths = int(num_classes), widths
        self.image_size, self.class_names = (int(image_size[0]), int(image_size[1])), names
        self.meta: dict = {}
        a, b, c = widths
        self.enc1, self.enc2, self.enc3, self.mid = _block(3, a), _block(a, b), _block(b, c), _block(c, c)
        self.dec3, self.dec2, self.dec1 = _block(2 * c, c), _block(c + b, b), _block(b + a, a)
        self.head = nn.Conv2d(a, self.num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:                # (B, 3, H, W) -> (B, C, H, W)
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] % 8 or x.shape[3] % 8:
            raise ValueError(f"the segmenter takes (B, 3, H, W) images with H and W divisible by 8, got "
                             f"{tuple(x.shape)}; add a batch axis with x[None] or resize the images "
                             "(mask_fidelity resizes to the training size by itself)")
        x1 = self.enc1(x)                                               # (B, a, H, W)
        x2 = self.enc2(F.max_pool2d(x1, 2))                             # (B, b, H/2, W/2)
        x3 = self.enc3(F.max_pool2d(x2, 2))                             # (B, c, H/4, W/4)
        m = self.mid(F.max_pool2d(x3, 2))                               # (B, c, H/8, W/8)
        up = lambda t, ref: F.interpolate(t, size=ref.shape[-2:], mode="bilinear", align_corners=False)
        y = self.dec3(torch.cat([up(m, x3), x3], 1))                    # (B, c, H/4, W/4)
        y = self.dec2(torch.cat([up(y, x2), x2], 1))                    # (B, b, H/2, W/2)
        y = self.dec1(torch.cat([up(y, x1), x1], 1))                    # (B, a, H, W)
        return self.head(y)                                             # (B, C, H, W)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ---------------------------------------------------------------------------------------------
# Prediction and mask fidelity


def _working_size(segmenter: Segmenter, hw: tuple[int, int]) -> tuple[int, int]:
    """The size to run the segmenter at for (H, W) images: the objects' scale of its training images
    (short side = its training short side), each side rounded to a multiple of 8."""
    scale = min(segmenter.image_size) / min(hw)
    return tuple(max(8, int(round(s * scale / 8)) * 8) for s in hw)


@torch.no_grad()
def predict(segmenter: Segmenter,          # a trained segmenter (eval mode is set here)
            images: torch.Tensor,          # (N, 3, H, W) in [-1, 1], any device
            batch_size: int = 64,          # images per forward pass
            ) -> torch.Tensor:
    """Predicted label maps (N, H, W) int64 on the segmenter's device. Images at another scale than the
    training images are resized to it (bilinear, antialiased) and the logits resized back (bilinear)."""
    check_images(images, per_mask=True)
    if images.dim() != 4:
        raise ValueError(f"predict takes (N, 3, H, W) images, got {tuple(images.shape)}; flatten K samples per "
                         "mask with images.flatten(0, 1)")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be >= 1")
    segmenter.eval()
    if hasattr(segmenter, "predict_labels"):        # a published segmenter with its protocol (smis.real_segmenters)
        return segmenter.predict_labels(images, batch_size)
    hw = tuple(images.shape[-2:])
    work = _working_size(segmenter, hw)
    out = []
    for chunk in images.split(batch_size):
        x = chunk.to(segmenter.device, torch.float32)
        if work != hw:
            x = F.interpolate(x, size=work, mode="bilinear", align_corners=False, antialias=True)
        logits = segmenter(x.contiguous(memory_format=torch.channels_last))          # (b, C, h, w)
        if work != hw:
            logits = F.interpolate(logits, size=hw, mode="bilinear", align_corners=False)
        out.append(logits.argmax(1))                                                 # (b, H, W)
    return torch.cat(out) if out else torch.zeros(0, *hw, dtype=torch.long, device=segmenter.device)


class MaskFidelity:
    """Accumulates the confusion matrix of a segmenter's predictions against the masks over batches,
    so that a sampling loop can score its samples as it makes them:

        acc = MaskFidelity(seg)
        for label, samples in batches:        # samples (B, 3, H, W), or (B, K, 3, H, W): K per mask
            acc.update(samples, label)        # label (B, H, W)
        acc.compute()                         # {"miou", "pixel_acc", "per_class", "confusion", "images"}
    """

    def __init__(self,
                 segmenter: Segmenter,              # trained on real images of the dataset
                 num_classes: int | None = None,    # C of the masks; None: the segmenter's (must match)
                 batch_size: int = 64,              # images per segmenter pass
                 ignore_index: int | None = None,   # mask id whose pixels are not counted (e.g. dontcare)
                 ):
        if num_classes is not None and int(num_classes) != segmenter.num_classes:
            raise ValueError(f"num_classes={num_classes} but the segmenter predicts {segmenter.num_classes} classes; "
                             "use a segmenter trained on this dataset (scripts/train_segmenter.py)")
        if ignore_index is None:                     # a published segmenter's protocol names the id it ignores
            ignore_index = getattr(segmenter, "ignore_index", None)
        self.segmenter, self.batch_size, self.ignore_index = segmenter, int(batch_size), ignore_index
        self.num_classes = segmenter.num_classes
        self.reset()

    def reset(self) -> "MaskFidelity":
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)
        self.per_mask: list[torch.Tensor] = []          # (B, C, C) per update: the intervals resample masks
        self.images = 0
        return self

    def update(self,
               images: torch.Tensor,   # (B, 3, H, W), or (B, K, 3, H, W) = K images per mask, in [-1, 1]
               labels: torch.Tensor,   # (B, H, W) integer masks the images were made from
               ) -> "MaskFidelity":
        check_images(images, per_mask=True)
        if not isinstance(labels, torch.Tensor) or labels.dim() != 3:
            shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise ValueError(f"labels must be (B, H, W) masks, got {shape}; add a batch axis with label[None]")
        if images.shape[0] != labels.shape[0] or images.shape[-2:] != labels.shape[-2:]:
            raise ValueError(f"images {tuple(images.shape)} and labels {tuple(labels.shape)} do not pair up: give one "
                             "(H, W) mask per image (or per group of K samples, images (B, K, 3, H, W)) at the "
                             "images' size")
        check_ids(labels, self.num_classes, "labels", self.ignore_index)
        k = images.shape[1] if images.dim() == 5 else 1
        pred = predict(self.segmenter, images.reshape(-1, *images.shape[-3:]), self.batch_size)   # (B K, H, W)
        pred = pred.view(labels.shape[0], k, *labels.shape[1:])                                    # (B, K, H, W)
        target = labels.to(pred.device)[:, None].expand_as(pred)                                   # no copy
        per_mask = confusion_matrices(pred, target, self.num_classes, self.ignore_index).cpu()     # (B, C, C)
        self.per_mask.append(per_mask)
        self.confusion += per_mask.sum(0)
        self.images += pred.shape[0] * k
        return self

    def compute(self) -> dict:
        """{"miou": float, "pixel_acc": float, "per_class": (C,) float64 IoU (NaN: class absent from masks
        and predictions), "confusion": (C, C) int64, "per_mask": (masks, C, C) int64 (the K samples of a
        mask pooled; `miou_ci` resamples these), "images": int}."""
        if not self.images:
            raise ValueError("MaskFidelity has seen no image; call update(images, labels) first")
        mean, per_class = miou(self.confusion)
        return {"miou": mean, "pixel_acc": pixel_accuracy(self.confusion), "per_class": per_class,
                "confusion": self.confusion.clone(), "per_mask": torch.cat(self.per_mask), "images": self.images}


def mask_fidelity(segmenter: Segmenter,              # trained on real images of the dataset
                  images: torch.Tensor,              # (N, 3, H, W) or (N, K, 3, H, W) in [-1, 1]
                  labels: torch.Tensor,              # (N, H, W) integer masks the images should follow
                  num_classes: int | None = None,    # C; None: the segmenter's (a different one is an error)
                  batch_size: int = 64,              # images per segmenter pass
                  ignore_index: int | None = None,   # mask id not counted
                  ) -> dict:
    """mIoU and pixel accuracy of the segmenter's predictions on `images` against `labels`, over all
    pixels of all images (one confusion matrix). Returns {"miou", "pixel_acc", "per_class", "confusion",
    "images"} (see `MaskFidelity.compute`)."""
    return MaskFidelity(segmenter, num_classes, batch_size, ignore_index).update(images, labels).compute()


def per_class_iou(result: dict, class_names: Sequence[str]) -> dict[str, float | None]:
    """{class name: IoU} of a `mask_fidelity` result, None for classes absent from masks and predictions."""
    iou = result["per_class"].tolist()
    if len(iou) != len(class_names):
        raise ValueError(f"{len(class_names)} class names for {len(iou)} classes")
    return {str(n): (None if math.isnan(v) else float(v)) for n, v in zip(class_names, iou)}


# ---------------------------------------------------------------------------------------------
# Files


def save_segmenter(segmenter: Segmenter,           # the network to store
                   path: str | Path,              # file to write (atomically)
                   extra: dict | None = None,     # plain data stored beside the weights (e.g. test scores)
                   half: bool = True,             # fp16 storage of the weights (loaded back as fp32)
                   ) -> Path:
    """Write the weights and what rebuilds the network (tensors and plain data only, so that
    `load_segmenter` reads it with weights_only=True)."""
    state = {k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
             for k, v in segmenter.state_dict().items()}
    obj = {"format": FORMAT, "num_classes": segmenter.num_classes, "widths": list(segmenter.widths),
           "image_size": list(segmenter.image_size), "class_names": list(segmenter.class_names),
           "storage": "fp16" if half else "fp32", "meta": plain_data(segmenter.meta), "extra": plain_data(extra or {}),
           "state": state}
    atomic_torch_save(obj, path)
    return Path(path)


def load_segmenter(path: str | Path,                              # a file written by save_segmenter
                   device: str | torch.device | None = "cpu",     # None: CUDA when present
                   ) -> Segmenter:
    """The segmenter in eval mode, fp32, with `.meta` (training record) and `.extra` (e.g. test scores).
    Read with weights_only=True; another kind of file or weights that do not fit raise CheckpointError."""
    ck = safe_load(path)
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        fmt = ck.get("format") if isinstance(ck, dict) else type(ck).__name__
        raise CheckpointError(f"{path} is not an smis segmenter (format {fmt!r}, expected {FORMAT!r}). Fix: train one "
                              "with `python scripts/train_segmenter.py` or pass checkpoints/synthscenes_segmenter.pt")
    try:
        net = Segmenter(ck["num_classes"], ck["widths"], tuple(ck["image_size"]), ck.get("class_names"))
        net.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in ck["state"].items()})
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: the segmenter's weights do not fit its recorded architecture "
                              f"({str(e).splitlines()[0]}). Fix: re-train it with scripts/train_segmenter.py") from None
    net.meta, net.extra = dict(ck.get("meta") or {}), dict(ck.get("extra") or {})
    return net.to(pick_device(device)).to(memory_format=torch.channels_last).eval()
