"""Mask fidelity: does an image follow its mask? A small segmenter's mIoU against the mask.

The field's standard check (SPADE, CLADE, OASIS report it as mIoU): segment the generated image
with a network trained on real images only, and compare the predicted label map with the mask the
image was generated from. On real test images the same number is the ceiling a generator can reach;
an image that ignores its mask scores about what a shuffled mask does.

    seg = load_segmenter("checkpoints/synthscenes_segmenter.pt")
    mask_fidelity(seg, images, labels)        # {"miou", "pixel_acc", "per_class", "confusion", "images"}

`Segmenter` is a 3-level U-Net (GroupNorm + ReLU, 0.3 M parameters at widths 16-32-64) taking
(B, 3, H, W) images in [-1, 1], the generator's range, to (B, C, H, W) logits. `train_segmenter`
fits it on SynthScenes training images; `scripts/train_segmenter.py` ships
`checkpoints/synthscenes_segmenter.pt` and its JSON.

mIoU is the dataset-level one of the field: one confusion matrix accumulated over all pixels of all
images (one `torch.bincount`), IoU_c = TP / (TP + FP + FN) per class, averaged over the classes
that occur in the labels or the predictions (the others are NaN and left out).
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from smis.data.base import as_hw
from smis.data.synthetic import CLASSES, NUM_CLASSES, generate
from smis.progress import Progress
from smis.stats import bootstrap_weights, percentile_interval
from smis.utils import CheckpointError, atomic_torch_save, pick_device, plain_data, safe_load

FORMAT = "smis-segmenter-v1"
_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


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
# Validation


def _check_ids(ids: torch.Tensor,                # integer tensor of class ids, any shape
               num_classes: int,                 # C
               what: str,                        # the argument's name, for the message
               ignore_index: int | None = None,  # an id allowed besides [0, C) (pixels to skip)
               ) -> None:
    """Integer ids (bool / float refused, never truncated) in [0, C) or equal to `ignore_index`. One sync."""
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"{what} must be a torch tensor of class ids, got {type(ids).__name__}; "
                        "convert it with torch.as_tensor(x, dtype=torch.long)")
    if ids.dtype not in _INT_DTYPES:
        raise TypeError(f"{what} must hold integer class ids, got dtype {ids.dtype}; float or bool ids are refused "
                        "rather than truncated: take argmax(1) of logits, or cast deliberately with .long()")
    if not ids.numel():
        return
    kept = ids if ignore_index is None else ids[ids != ignore_index]
    if not kept.numel():
        return
    lo, hi = torch.stack([kept.min(), kept.max()]).tolist()            # one device sync
    if lo < 0 or hi >= num_classes:
        extra = "" if ignore_index is None else f" (or the ignore_index {ignore_index})"
        raise ValueError(f"{what} ids must lie in [0, {num_classes}){extra}, found [{lo}, {hi}]; map the dontcare "
                         "id to a class id or pass it as ignore_index, or raise num_classes")


def _check_images(images: torch.Tensor, what: str = "images") -> None:
    """(..., 3, H, W) floating point in [-1, 1] (a small overshoot is allowed). One sync."""
    if not isinstance(images, torch.Tensor) or images.dim() not in (4, 5) or images.shape[-3] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{what} must be (N, 3, H, W) or (N, K, 3, H, W) RGB images in [-1, 1], got {shape}; "
                         "add a batch axis with x[None]")
    if not images.is_floating_point():
        raise TypeError(f"{what} must be floating point in [-1, 1], got dtype {images.dtype}; convert uint8 "
                        "images with x.float() / 127.5 - 1")
    if images.numel():
        lo, hi = torch.stack([images.min(), images.max()]).float().tolist()
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo < -1.05 or hi > 1.05:
            raise ValueError(f"{what} must lie in [-1, 1] (the generator's range), found [{lo:.3g}, {hi:.3g}]; "
                             "convert [0, 1] images with 2 x - 1 and uint8 ones with x / 127.5 - 1")


# ---------------------------------------------------------------------------------------------
# Confusion matrix and mIoU


def confusion_matrix(pred: torch.Tensor,                 # predicted ids, any shape
                     label: torch.Tensor,                # true ids, the same shape
                     num_classes: int,                   # C
                     ignore_index: int | None = None,    # label id whose pixels are not counted
                     ) -> torch.Tensor:
    """(C, C) int64 counts: entry [t, p] = pixels of true class t predicted as p (rows truth, columns
    prediction), by one `torch.bincount` over t C + p. Ids must be integers in [0, C); label pixels
    equal to `ignore_index` are skipped (their prediction may be anything in [0, C))."""
    if not isinstance(pred, torch.Tensor) or not isinstance(label, torch.Tensor) or pred.shape != label.shape:
        shapes = [tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in (pred, label)]
        raise ValueError(f"pred {shapes[0]} and label {shapes[1]} must be tensors of the same shape; take "
                         "logits.argmax(1) for pred and pass the (B, H, W) mask as label")
    num_classes = int(num_classes)
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes}: must be >= 1")
    _check_ids(label, num_classes, "label", ignore_index)
    _check_ids(pred, num_classes, "pred")
    label, pred = label.reshape(-1).long(), pred.reshape(-1).to(label.device).long()   # (P,)
    if ignore_index is not None:
        keep = label != ignore_index
        label, pred = label[keep], pred[keep]
    counts = torch.bincount(label * num_classes + pred, minlength=num_classes * num_classes)
    return counts.view(num_classes, num_classes)                        # (C, C)


def confusion_matrices(pred: torch.Tensor,               # (B, ...) predicted ids
                       label: torch.Tensor,              # (B, ...) true ids, the same shape
                       num_classes: int,                 # C
                       ignore_index: int | None = None,  # label id whose pixels are not counted
                       ) -> torch.Tensor:
    """(B, C, C) int64: one confusion matrix per leading index (per mask), by one `torch.bincount` over
    b C^2 + t C + p. Their sum over B is `confusion_matrix(pred, label)`."""
    if not isinstance(pred, torch.Tensor) or not isinstance(label, torch.Tensor) or pred.shape != label.shape \
            or pred.dim() < 1:
        shapes = [tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in (pred, label)]
        raise ValueError(f"pred {shapes[0]} and label {shapes[1]} must be tensors of the same shape (B, ...)")
    C, B = int(num_classes), pred.shape[0]
    _check_ids(label, C, "label", ignore_index)
    _check_ids(pred, C, "pred")
    label, pred = label.reshape(B, -1).long(), pred.reshape(B, -1).to(label.device).long()   # (B, P)
    idx = torch.arange(B, device=label.device)[:, None] * (C * C) + label * C + pred         # (B, P)
    if ignore_index is not None:
        idx = idx[label != ignore_index]
    return torch.bincount(idx.reshape(-1), minlength=B * C * C).view(B, C, C)


def miou(confusion: torch.Tensor) -> tuple[float, torch.Tensor]:
    """(mean IoU over the classes that occur in the labels or the predictions, per-class IoU (C,) float64
    with NaN for classes absent from both). IoU_c = TP / (TP + FP + FN) from the (C, C) confusion
    matrix of `confusion_matrix` (rows truth, columns prediction)."""
    if not isinstance(confusion, torch.Tensor) or confusion.dim() != 2 or confusion.shape[0] != confusion.shape[1]:
        shape = tuple(confusion.shape) if isinstance(confusion, torch.Tensor) else type(confusion).__name__
        raise ValueError(f"confusion must be a square (C, C) tensor from confusion_matrix, got {shape}")
    cm = confusion.double()
    tp = cm.diagonal()                                                  # (C,)
    union = cm.sum(0) + cm.sum(1) - tp                                  # TP + FP + FN, (C,)
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    if not bool((union > 0).any()):
        raise ValueError("the confusion matrix counts no pixel, so mIoU is undefined; pass images and labels "
                         "(with pixels that are not all ignore_index)")
    return float(iou.nanmean()), iou.cpu()


def miou_ci(per_mask: torch.Tensor | np.ndarray,       # (N, C, C) confusion matrices of N masks
            other: torch.Tensor | np.ndarray | None = None,  # (N, C, C) of another variant on the same masks
            replicates: int = 1000,                      # bootstrap replicates
            seed: int = 0,                               # the replicates' seed (same seed: same resampled masks)
            level: float = 0.95,
            ) -> dict[str, float]:
    """mIoU of the pooled masks with a bootstrap interval over masks: {"miou", "low", "high"}; with `other`
    also the paired difference mIoU(per_mask) - mIoU(other) under the same resampled masks:
    {"difference", "difference_low", "difference_high"}. Vectorised: each replicate's pooled confusion is
    a row of (R, N) resampling counts times the (N, C^2) per-mask matrices."""
    def as_np(x, what):
        x = x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if x.ndim != 3 or x.shape[1] != x.shape[2] or x.shape[0] < 1:
            raise ValueError(f"{what} must be (N, C, C) per-mask confusion matrices (MaskFidelity(...).compute()"
                             f"['per_mask']), got shape {x.shape}")
        return x.astype(np.float64)

    def miou_rows(cm):                                                  # (R, C, C) -> (R,)
        tp = np.diagonal(cm, axis1=1, axis2=2)
        union = cm.sum(1) + cm.sum(2) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
        return np.nanmean(iou, axis=1)

    a = as_np(per_mask, "per_mask")
    N, C = a.shape[0], a.shape[1]
    w = bootstrap_weights(N, replicates, seed)                          # (R, N)
    pooled = np.concatenate([np.ones((1, N)), w])                       # row 0: the data itself
    ra = miou_rows((pooled @ a.reshape(N, -1)).reshape(-1, C, C))
    out = {"miou": float(ra[0])}
    out["low"], out["high"] = percentile_interval(ra[1:], level)
    if other is not None:
        b = as_np(other, "other")
        if b.shape != a.shape:
            raise ValueError(f"paired mIoU needs the same masks: per_mask {a.shape} vs other {b.shape}")
        d = ra - miou_rows((pooled @ b.reshape(N, -1)).reshape(-1, C, C))
        out["difference"] = float(d[0])
        out["difference_low"], out["difference_high"] = percentile_interval(d[1:], level)
    return out


def pixel_accuracy(confusion: torch.Tensor) -> float:
    """Correctly labelled pixels / counted pixels of a (C, C) confusion matrix."""
    total = confusion.sum()
    if not int(total):
        raise ValueError("the confusion matrix counts no pixel, so pixel accuracy is undefined")
    return float(confusion.diagonal().sum().double() / total.double())


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
    _check_images(images)
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
        _check_images(images)
        if not isinstance(labels, torch.Tensor) or labels.dim() != 3:
            shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise ValueError(f"labels must be (B, H, W) masks, got {shape}; add a batch axis with label[None]")
        if images.shape[0] != labels.shape[0] or images.shape[-2:] != labels.shape[-2:]:
            raise ValueError(f"images {tuple(images.shape)} and labels {tuple(labels.shape)} do not pair up: give one "
                             "(H, W) mask per image (or per group of K samples, images (B, K, 3, H, W)) at the "
                             "images' size")
        _check_ids(labels, self.num_classes, "labels", self.ignore_index)
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
# Training on SynthScenes


def synthscenes_arrays(split: str = "train",         # "train", "test" or "val"
                       size: int | Sequence[int] = 64,  # S or (H, W)
                       length: int = 4000,            # images 0..length-1 of the split
                       seed: int = 0,                 # dataset seed
                       progress: bool = True,         # progress bar
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """SynthScenes images (N, 3, H, W) uint8 and labels (N, H, W) uint8, generated in memory (the
    pixels `make_dataset("synthscenes", None, split, size=..., seed=...)` yields, before its [-1, 1]
    scaling: x / 127.5 - 1). uint8 keeps 4000 64x64 images at 65 MB."""
    if int(length) < 1:
        raise ValueError(f"length={length}: ask for at least one image")
    hw = as_hw(size)
    images = torch.empty(length, 3, *hw, dtype=torch.uint8)
    labels = torch.empty(length, *hw, dtype=torch.uint8)
    for i in Progress(range(length), desc=f"SynthScenes {split} {hw[0]}x{hw[1]}", disable=not progress, leave=False):
        img, lab, _ = generate(i, hw, seed, split)                       # per-image generator (numpy, vectorised)
        images[i] = torch.from_numpy(img).permute(2, 0, 1)
        labels[i] = torch.from_numpy(lab.astype(np.uint8))
    return images, labels


def _lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to 0 at `steps`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def train_segmenter(size: int | Sequence[int] = 64,          # training image size, S or (H, W), divisible by 8
                    length: int = 4000,                      # SynthScenes training images (0..length-1)
                    steps: int = 4500,                       # optimiser steps
                    batch_size: int = 16,                    # images per step
                    lr: float = 6e-3,                        # Adam peak learning rate (warm-up, cosine decay)
                    seed: int = 0,                           # weights, batch order and flips
                    data_seed: int = 0,                      # SynthScenes seed of the training split
                    widths: Sequence[int] = (16, 32, 64),    # U-Net level widths
                    class_weights: str = "sqrt_inverse",     # cross-entropy class weights: "sqrt_inverse"
                                                             # (1 / sqrt(pixel frequency)) or "none"
                    device: str | torch.device | None = None,  # None: CUDA when present
                    progress: bool = True,                   # progress bars
                    data: tuple[torch.Tensor, torch.Tensor] | None = None,  # (uint8 images, labels) instead
                    ) -> tuple[Segmenter, list[float]]:
    """Train a `Segmenter` on SynthScenes TRAIN images with random horizontal flips (vertical ones would
    put the sky at the bottom), cross-entropy and Adam. Returns (segmenter in eval mode, loss per step).

    mIoU weighs every class alike while thin poles and small objects hold few pixels: with
    class_weights="sqrt_inverse" a pixel of class c weighs 1 / sqrt(f_c), f_c the class's share of the
    training pixels, scaled so that the average pixel weighs 1 (+3 points of mIoU, +14 on poles, in a
    1300-step trial).

    `data` (images (N, 3, H, W) uint8, labels (N, H, W)) replaces the generated split, e.g. to reuse it.
    Batches are drawn from a torch.Generator seeded with `seed`: two runs with the same arguments on the
    same device give the same weights.
    """
    hw = as_hw(size)
    if hw[0] % 8 or hw[1] % 8:
        raise ValueError(f"size={size}: the U-Net needs H and W divisible by 8, e.g. 64 or 128")
    for name, v in (("steps", steps), ("batch_size", batch_size), ("length", length)):
        if int(v) < 1:
            raise ValueError(f"{name}={v}: must be >= 1")
    if not lr > 0:
        raise ValueError(f"lr={lr}: must be > 0")
    device = pick_device(device)
    images, labels = data if data is not None else synthscenes_arrays("train", hw, length, data_seed, progress)
    if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[-2:]) != hw:
        raise ValueError(f"data images must be (N, 3, {hw[0]}, {hw[1]}) uint8, got {tuple(images.shape)} "
                         f"{images.dtype}; make them with synthscenes_arrays(\"train\", size, ...)")
    _check_ids(labels, NUM_CLASSES, "data labels")
    freq = torch.bincount(labels.reshape(-1).long(), minlength=NUM_CLASSES).double()
    freq = freq / freq.sum()                                            # (C,) share of the training pixels
    if class_weights == "sqrt_inverse":
        weight = freq.clamp(min=1e-6).rsqrt()
        weight = (weight / (weight * freq).sum()).float()               # (C,) mean weight per pixel = 1
    elif class_weights == "none":
        weight = torch.ones(NUM_CLASSES)
    else:
        raise ValueError(f"class_weights={class_weights!r}: choose 'sqrt_inverse' or 'none'")
    torch.manual_seed(seed)
    net = Segmenter(NUM_CLASSES, widths, hw, [c.name for c in CLASSES]).to(device)
    net = net.to(memory_format=torch.channels_last)                     # ~25% faster convolutions on CPU
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    images, labels, weight = images.to(device), labels.to(device), weight.to(device)
    n, warmup = images.shape[0], max(1, min(100, steps // 10))
    losses: list[float] = []
    t0 = time.perf_counter()
    net.train()
    bar = Progress(range(steps), desc="segmenter", disable=not progress)
    for step in bar:
        idx = torch.randint(0, n, (batch_size,), generator=gen)         # (b,)
        flip = (torch.rand(batch_size, generator=gen) < 0.5).to(device)  # (b,)
        idx = idx.to(device)
        x = images[idx].float().div_(127.5).sub_(1.0)                   # (b, 3, H, W) in [-1, 1]
        y = labels[idx].long()                                          # (b, H, W)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)       # horizontal flips, vectorised
        y = torch.where(flip[:, None, None], y.flip(-1), y)
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, steps, lr, warmup)
        loss = F.cross_entropy(net(x.contiguous(memory_format=torch.channels_last)), y, weight=weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 25 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    net.eval()
    net.meta = {"steps": int(steps), "batch_size": int(batch_size), "lr": float(lr), "seed": int(seed),
                "data": {"dataset": "synthscenes", "split": "train", "length": int(n), "seed": int(data_seed),
                         "size": list(hw), "augmentation": "random horizontal flips"},
                "class_weights": class_weights, "class_weight_values": [round(float(w), 4) for w in weight],
                "train_seconds": round(time.perf_counter() - t0, 1), "final_loss": float(np.mean(losses[-50:]))}
    return net, losses


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
