"""Sampling and scoring for the paper's experiments: reconstruction (Sec. 4.2, RQ1), diversity and
Top-1 GT-similarity (Sec. 4.3, RQ2) and the ablations, as the notebooks call them.

    nets = load_networks("checkpoints/synthscenes_clvae.pt")          # or a training run folder
    samples = sample_prior(nets, label, k=40, seeds=[0, 1])            # (B, K, 3, H, W)
    recon = reconstruct(nets, image, label)                            # G(M, mean of E(M, I))
    res = evaluate_prior(nets, test_set, range(200), k=40, metric=LPIPS("auto"), seed=0)
    diversity_table({"clvae": res, "gaugan_vae": other})               # columns name metric and backbone
    seg = load_segmenter_for("synthscenes")                            # mask fidelity: segmenter= of the loops
    paired_comparison(res, other)                                      # per-mask differences, 95 % intervals

Intervals: every table gives 95 % intervals over masks (`smis.stats`): mean +- 1.96 sd / sqrt(n) for
per-mask scores, a bootstrap over masks for the pooled mIoU; `paired_comparison` pairs two variants
mask by mask (same masks, same seeds).

Randomness: the K codes of mask `index` come from a generator seeded with `mask_seed(seed, index)`,
so every variant sees the same seeds on the same masks, whatever the batching. The codes are
bitwise the same for any `chunk` / `masks_per_batch`; the images are not: on a CPU, G at another
batch size runs other oneDNN/MKL kernels, so pixels move in the last bits (~1e-6; see BATCH_NOISE
in tests/test_evaluate.py). Compare such images with a tolerance, not bitwise.

Factor-aware scores (SynthScenes only): per class region of a generated image, `estimate_factors`
(without the global factor) gives the region's mean colour and texture kind. The colour is *in
distribution* when some colour mode of that class, under some time-of-day tint and brightness, lies
within `COLOUR_TOLERANCE` (RGB, [0, 1]) of it; the texture when it is one of the class's own kinds.
The tolerance is calibrated on real test images: 0.10 keeps 99.8 % of real regions and 10.6 % of
uniformly random colours (300 test images at 64x64, 1602 regions).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from smis.metrics import LPIPS, FrechetDistance, diversity, per_class_diversity, top1_gt_similarity
from smis.networks import Latents, Networks
from smis.networks.ops import label_presence
from smis.sampling import chunks as _chunks, generate, encode_means, prior_latents, reconstruct, sample_prior
from smis.segmenter import MaskFidelity, Segmenter, load_segmenter, miou_ci
from smis.stats import mean_ci, paired_ci
from smis.viz import to_uint8

MIOU = "mask mIoU"                 # column of the segmenter's mIoU (smis.segmenter; higher: follows the mask)
COLOUR_TOLERANCE = 0.10            # RGB distance to the nearest tinted colour mode (see module docstring)
SCALE_RANGE = (0.5, 1.5)           # brightness x texture-mean factors allowed when fitting a mode
TINT_STEPS = 41                    # time-of-day values tried when fitting a mode


# ---------------------------------------------------------------------------------------------
# Models and data


def load_networks(source: str | Path, device: str | torch.device | None = "cpu") -> Networks:
    """G and E in eval mode from
    - an exported model (.pt) or a training checkpoint (`smis.train.load_model`);
    - a run folder: its latest `checkpoints/step_*.pt`;
    - "official:DATASET:FOLDER": the authors' published latest_net_G.pth / latest_net_E.pth
      (DATASET in ade20k, deepfashion, gta5; `smis.official.load_official`)."""
    from smis.train import load_model
    from smis.utils import pick_device, resolve

    source = str(source)
    if source.startswith("official:"):
        from smis.config import get_preset
        from smis.official import load_official

        _, dataset, folder = (source.split(":", 2) + ["", ""])[:3]
        folder = resolve(folder)
        G, E = load_official(folder / "latest_net_G.pth", folder / "latest_net_E.pth", dataset, pick_device(device))
        nets = Networks(G, E, None, G.spec, "clvae", get_preset(dataset))
        nets.meta = {"step": None, "provenance": {"source": source}}
        return nets.eval()
    path = resolve(source)
    if path.is_dir():
        ckpts = sorted((path / "checkpoints").glob("step_*.pt"))
        if not ckpts:
            raise FileNotFoundError(f"run folder {path} has no checkpoints/step_*.pt. Fix: train it first "
                                    "(python -m smis.train --run-dir ...) or pass a model file.")
        path = ckpts[-1]
    elif not path.exists():
        raise FileNotFoundError(f"model {path} does not exist. Fix: pass an exported model (checkpoints/*.pt), a "
                                "training checkpoint, a run folder or official:DATASET:FOLDER; "
                                "scripts/train_demo_models.py makes the demo models.")
    return load_model(path, device)


SEGMENTERS = {"synthscenes": "checkpoints/synthscenes_segmenter.pt"}   # scripts/train_segmenter.py


def load_segmenter_for(dataset: str, source: str | Path | None = "auto",
                       device: str | torch.device | None = "cpu") -> Segmenter | None:
    """The mask-fidelity segmenter of `dataset`: `source` a file from scripts/train_segmenter.py, "auto"
    the shipped one (SEGMENTERS; None for datasets without one), "" / None: no mask fidelity."""
    from smis.utils import resolve

    if not source:
        return None
    if source == "auto":
        if dataset not in SEGMENTERS:
            return None
        source = SEGMENTERS[dataset]
    path = resolve(str(source))
    if not path.exists():
        raise FileNotFoundError(f"segmenter {path} does not exist. Fix: train one (python scripts/train_segmenter.py) "
                                "or pass SEGMENTER='' to skip mask fidelity")
    seg = load_segmenter(path, device)
    seg.source = str(source)
    return seg


def test_set(dataset: str, root: str | None, split: str, size, n: int = 0, seed: int = 0):
    """(dataset, indices): the evaluation split at the model's `size` and its first `n` items (0 = all).
    SynthScenes without `root` is generated on the fly: its test split is then `n` images long."""
    from smis.data import make_dataset

    if dataset == "synthscenes" and not root:
        if n < 1:
            raise ValueError("on-the-fly SynthScenes needs n >= 1 test images; or pass the root of a written copy")
        ds = make_dataset("synthscenes", None, split, size=size, length=n, seed=seed)
    else:
        ds = make_dataset(dataset, root or None, split, size=size)
    if len(ds) == 0:
        raise ValueError(f"{dataset} split {split!r} under {root!r} is empty. Fix: check DATA_ROOT and SPLIT")
    return ds, list(range(len(ds) if n < 1 else min(n, len(ds))))


def parse_models(spec: str) -> dict[str, str]:
    """'clvae:checkpoints/a.pt, gaugan_vae:outputs/runs/b' -> {name: source}, split at each entry's
    first ':' (a source may be official:DATASET:FOLDER); entries with an empty source are dropped."""
    out = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, sep, source = item.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"model entry {item!r} must read NAME:SOURCE, e.g. clvae:checkpoints/synthscenes_clvae.pt")
        if source.strip():
            out[name.strip()] = source.strip()
    return out


def load_pairs(dataset, indices: Sequence[int], device: str | torch.device | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, H, W) in [-1, 1] and labels (N, H, W) of dataset items `indices`."""
    items = [dataset[int(i)] for i in indices]
    image = torch.stack([it["image"] for it in items]).to(device)
    label = torch.stack([it["label"] for it in items]).to(device)
    return image, label


def mask_seed(seed: int, index: int) -> int:
    """The seed of the K prior codes of dataset item `index` (same for every variant)."""
    return int(seed) * 1_000_003 + int(index)


@torch.no_grad()
def style_guided(nets: Networks, label: torch.Tensor, ref_image: torch.Tensor, ref_label: torch.Tensor,
                 generator: torch.Generator | None = None, global_code: bool = True, chunk: int = 64) -> torch.Tensor:
    """Images for masks `label` (B, H, W) whose codes for every class shared with the reference
    (B references, all layers) are the reference's encoder means, other classes prior draws from
    `generator` (`smis.editing.style_latents`); `global_code`: also the reference's z1, the only
    code `gaugan_vae` has. (B, 3, H, W)."""
    from smis.editing import style_latents

    ref = encode_means(nets, ref_image, ref_label, chunk)
    z = style_latents(nets.spec, label, ref, ref_label, generator=generator, global_code=global_code)
    return generate(nets, label, z, chunk)


# ---------------------------------------------------------------------------------------------
# Factor-aware scores (SynthScenes)


def _mode_table():
    from smis.data import synthetic as S

    M = max(len(c.colour_modes) for c in S.CLASSES)
    modes = np.zeros((S.NUM_CLASSES, M, 3))
    valid = np.zeros((S.NUM_CLASSES, M), bool)
    for i, c in enumerate(S.CLASSES):                      # 10 classes, table assembly only
        modes[i, :len(c.colour_modes)] = c.colour_modes
        valid[i, :len(c.colour_modes)] = True
    tints = np.stack([S._tint(t) for t in np.linspace(0, 1, TINT_STEPS)])        # (T, 3)
    return modes, valid, tints


def fit_colour_modes(colours: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest colour mode of each region's class under any tint and scale.

    colours (R, 3) region means in [0, 1], classes (R,) SynthScenes ids -> (mode (R,), distance (R,)):
    min over modes m, tints t and scales s in SCALE_RANGE of |colour - s * mode_m * tint_t|.
    """
    modes, valid, tints = _mode_table()
    colours = np.asarray(colours, np.float64).reshape(-1, 3)
    classes = np.asarray(classes, np.int64).reshape(-1)
    cand = modes[classes][:, :, None, :] * tints[None, None]                      # (R, M, T, 3)
    scale = (cand * colours[:, None, None]).sum(-1) / np.maximum((cand * cand).sum(-1), 1e-9)
    scale = np.clip(scale, *SCALE_RANGE)                                          # (R, M, T)
    dist = np.linalg.norm(colours[:, None, None] - scale[..., None] * cand, axis=-1).min(-1)   # (R, M)
    dist = np.where(valid[classes], dist, np.inf)
    return dist.argmin(1), dist.min(1)


def factor_rows(images: np.ndarray, labels: np.ndarray, tolerance: float = COLOUR_TOLERANCE) -> pd.DataFrame:
    """One row per class region of each SynthScenes-like image: estimated colour mode and texture,
    and whether each belongs to the class's own distribution.

    images (N, H, W, 3) uint8, labels (N, H, W). Columns: image, class, name, colour_mode,
    colour_distance, colour_in, texture, texture_in. Regions under 48 interior pixels are skipped.
    """
    from smis.data import synthetic as S

    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or labels.shape != images.shape[:3]:
        raise ValueError(f"images must be (N, H, W, 3) uint8 and labels (N, H, W); got {images.shape} {images.dtype} "
                         f"and {labels.shape}. Fix: convert with smis.viz.to_uint8")
    rows = [(n, c, e["colour"], e["texture"])
            for n in range(len(images)) for c, e in S.estimate_factors(images[n], labels[n]).items()]
    if not rows:
        return pd.DataFrame(columns=["image", "class", "name", "colour_mode", "colour_distance", "colour_in",
                                     "texture", "texture_in"])
    img, cls, col, tex = map(list, zip(*rows))
    cls = np.array(cls)
    mode, dist = fit_colour_modes(np.array(col), cls)
    allowed = np.array([[t in c.textures for t in S.TEXTURES] for c in S.CLASSES])     # (C, 4)
    tex_id = np.array([S.TEXTURES.index(t) for t in tex])
    return pd.DataFrame({"image": img, "class": cls, "name": [S.CLASSES[c].name for c in cls], "colour_mode": mode,
                         "colour_distance": dist, "colour_in": dist < tolerance, "texture": tex,
                         "texture_in": allowed[cls, tex_id]})


def style_match(images: np.ndarray, labels: np.ndarray, ref_images: np.ndarray, ref_labels: np.ndarray,
                tolerance: float = COLOUR_TOLERANCE) -> pd.DataFrame:
    """Per class region found in both image n and reference n: do the estimated colour mode and
    texture kind agree? Columns: image, class, name, colour_match, texture_match."""
    a = factor_rows(images, labels, tolerance)
    b = factor_rows(ref_images, ref_labels, tolerance)
    m = a.merge(b, on=["image", "class", "name"], suffixes=("", "_ref"))
    return pd.DataFrame({"image": m["image"], "class": m["class"], "name": m["name"],
                         "colour_match": m["colour_mode"] == m["colour_mode_ref"],
                         "texture_match": m["texture"] == m["texture_ref"]})


# ---------------------------------------------------------------------------------------------
# Evaluation loops


def real_frechet(dataset, indices: Sequence[int], backbone: str | torch.nn.Module = "auto",
                 device: str | torch.device | None = None, batch: int = 32, progress: bool = True) -> FrechetDistance:
    """Feature statistics of the real images `indices` (the reference of every FD)."""
    from tqdm.auto import tqdm

    fd = FrechetDistance(backbone, device)
    for s in tqdm(_chunks(len(indices), batch), desc="FD real", disable=not progress):
        fd.update(load_pairs(dataset, list(indices)[s])[0])
    return fd


@dataclass
class ReconEval:
    """Reconstructions of one variant: per-image GT-similarity, FD, a few examples."""

    variant: str
    metric: str                             # LPIPS name (lpips_alex or a fallback)
    per_image: pd.DataFrame                 # index: dataset index; column f"GT-similarity ({metric})"
    fd: float | None = None
    fd_name: str | None = None
    examples: torch.Tensor | None = None    # (n, 3, H, W) first reconstructions, CPU
    confusion: np.ndarray | None = None     # (images, C, C) segmenter confusion per mask (mask fidelity)


@torch.no_grad()
def evaluate_reconstruction(nets: Networks, dataset, indices: Sequence[int], metric: LPIPS,
                            fd_real: FrechetDistance | None = None, batch: int = 16, keep: int = 8,
                            device: str | torch.device | None = None, progress: bool = True,
                            segmenter: Segmenter | None = None) -> ReconEval:
    """GT-similarity (LPIPS to I) of G(M, E(M, I) means) on every test pair, its FD to real and (with a
    `segmenter`) its mask fidelity."""
    from tqdm.auto import tqdm

    device = next(nets.G.parameters()).device if device is None else torch.device(device)
    indices = [int(i) for i in indices]
    fd = FrechetDistance(fd_real.extractor, batch_size=fd_real.batch_size) if fd_real is not None else None
    fidelity = MaskFidelity(segmenter, nets.spec.num_classes, batch) if segmenter is not None else None
    scores, kept = [], []
    for s in tqdm(_chunks(len(indices), batch), desc=f"reconstruct {nets.variant}", disable=not progress):
        image, label = load_pairs(dataset, indices[s], device)
        recon = reconstruct(nets, image, label, batch)
        scores.append(metric.distance(recon, image).double().cpu())
        if fd is not None:
            fd.update(recon)
        if fidelity is not None:
            fidelity.update(recon, label)
        if sum(len(k) for k in kept) < keep:
            kept.append(recon.cpu())
    col = f"GT-similarity ({metric.name})"
    per_image = pd.DataFrame({col: torch.cat(scores).numpy()}, index=pd.Index(indices, name="index"))
    return ReconEval(nets.variant, metric.name, per_image, None if fd is None else fd.compute(fd_real),
                     None if fd is None else fd.name, torch.cat(kept)[:keep] if kept else None,
                     None if fidelity is None else fidelity.compute()["per_mask"].numpy())


@dataclass
class PriorEval:
    """K prior samples per mask of one variant, scored."""

    variant: str
    metric: str                             # LPIPS name
    k: int                                  # samples per mask actually drawn (1 for gaugan)
    per_image: pd.DataFrame                 # index: dataset index; diversity and top-1 columns (metric named)
    per_class: pd.DataFrame | None = None   # (masks, classes) per-class diversity, NaN where absent
    factors: pd.DataFrame | None = None     # factor_rows of every sample (+ column "index", "sample")
    fd: float | None = None                 # FD of the first sample per mask to the real images
    fd_name: str | None = None
    examples: torch.Tensor | None = None    # (n, K, 3, H, W) samples of the first masks, CPU
    seconds: float = field(default=0.0)     # wall time of the evaluation
    confusion: np.ndarray | None = None     # (masks, C, C) segmenter confusion per mask, its K samples pooled


@torch.no_grad()
def evaluate_prior(nets: Networks, dataset, indices: Sequence[int], k: int, metric: LPIPS, seed: int = 0,
                   fd_real: FrechetDistance | None = None, masks_per_batch: int = 8, chunk: int = 64,
                   per_class: bool = True, factors: bool = False, keep: int = 4,
                   device: str | torch.device | None = None, progress: bool = True,
                   segmenter: Segmenter | None = None) -> PriorEval:
    """Diversity (mean pairwise LPIPS of K samples), Top-1 GT-similarity, per-class diversity,
    FD, (SynthScenes) factor-aware scores and (with a `segmenter`) mask fidelity of every prior sample
    on the masks `indices`.

    `gaugan` has no latents: one image per mask, diversity 0 by construction.
    """
    import time

    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    device = next(nets.G.parameters()).device if device is None else torch.device(device)
    indices = [int(i) for i in indices]
    C = nets.spec.num_classes
    fd = FrechetDistance(fd_real.extractor, batch_size=fd_real.batch_size) if fd_real is not None else None
    fidelity = MaskFidelity(segmenter, C, chunk) if segmenter is not None else None
    div, top1, pcd, frows, kept = [], [], [], [], []
    for s in tqdm(_chunks(len(indices), masks_per_batch), desc=f"prior samples {nets.variant}", disable=not progress):
        idx = indices[s]
        image, label = load_pairs(dataset, idx, device)
        samples = sample_prior(nets, label, k, [mask_seed(seed, i) for i in idx], chunk)   # (B, K', 3, H, W)
        kk = samples.shape[1]
        for b in range(len(idx)):              # each mask's K samples are one batched metric call
            div.append(diversity(samples[b], metric) if kk > 1 else 0.0)
            top1.append(top1_gt_similarity(samples[b], image[b], metric))
            if per_class:
                pcd.append(per_class_diversity(samples[b], label[b], C, metric).cpu().numpy() if kk > 1 else
                           np.where(label_presence(label[b:b + 1], C)[0].cpu().numpy(), 0.0, np.nan))
        if fd is not None:
            fd.update(samples[:, 0])
        if fidelity is not None:
            fidelity.update(samples, label)
        if factors:
            f = factor_rows(to_uint8(samples.flatten(0, 1)), label.repeat_interleave(kk, 0).cpu().numpy())
            pos = f.pop("image").to_numpy()                                      # b K' + j
            f.insert(0, "sample", pos % kk)
            f.insert(0, "index", np.asarray(idx, dtype=np.int64)[pos // kk])
            frows.append(f)
        if sum(len(x) for x in kept) < keep:
            kept.append(samples.cpu())
    m = metric.name
    per_image = pd.DataFrame({f"diversity ({m})": div, f"top-1 GT-similarity ({m})": top1},
                             index=pd.Index(indices, name="index"))
    names = list(dataset.info.class_names) if hasattr(dataset, "info") else [str(c) for c in range(C)]
    per_cls = pd.DataFrame(np.stack(pcd), index=per_image.index, columns=names[:C]) if per_class else None
    return PriorEval(nets.variant, m, kk, per_image, per_cls, pd.concat(frows, ignore_index=True) if frows else None,
                     None if fd is None else fd.compute(fd_real), None if fd is None else fd.name,
                     torch.cat(kept)[:keep] if kept else None, time.perf_counter() - t0,
                     None if fidelity is None else fidelity.compute()["per_mask"].numpy())


@torch.no_grad()
def real_mask_fidelity(segmenter: Segmenter, dataset, indices: Sequence[int], batch: int = 64,
                       progress: bool = True) -> np.ndarray:
    """(masks, C, C) confusion of the segmenter on the real images `indices`: the ceiling row of the
    mIoU column (what a generator that reproduced the real images exactly would score)."""
    from tqdm.auto import tqdm

    indices = [int(i) for i in indices]
    fidelity = MaskFidelity(segmenter, None, batch)
    for s in tqdm(_chunks(len(indices), batch), desc="mask fidelity real", disable=not progress):
        image, label = load_pairs(dataset, indices[s])
        fidelity.update(image, label)
    return fidelity.compute()["per_mask"].numpy()


@torch.no_grad()
def evaluate_style(nets: Networks, dataset, targets: Sequence[int], references: Sequence[int], seed: int = 0,
                   guided: bool = True, batch: int = 16, device: str | torch.device | None = None,
                   progress: bool = True) -> pd.DataFrame:
    """Style-guided synthesis scored by factors (SynthScenes): mask of item `targets[n]` with the codes
    of reference item `references[n]` for every shared class (and its global code); one row per
    shared class region with colour_match / texture_match against the reference image.
    `guided=False` scores plain prior samples with the same seeds instead: the chance level."""
    from tqdm.auto import tqdm

    if len(targets) != len(references):
        raise ValueError(f"{len(targets)} targets but {len(references)} references; pair them one to one")
    device = next(nets.G.parameters()).device if device is None else torch.device(device)
    targets, references = [int(i) for i in targets], [int(i) for i in references]
    out = []
    for s in tqdm(_chunks(len(targets), batch), desc=f"style {nets.variant}", disable=not progress):
        _, label = load_pairs(dataset, targets[s], device)
        ref_image, ref_label = load_pairs(dataset, references[s], device)
        g = torch.Generator(device=device).manual_seed(mask_seed(seed, targets[s][0]))   # same draws either way
        fake = (style_guided(nets, label, ref_image, ref_label, g, chunk=batch) if guided
                else sample_prior(nets, label, 1, g, batch)[:, 0])
        m = style_match(to_uint8(fake), label.cpu().numpy(), to_uint8(ref_image), ref_label.cpu().numpy())
        pos = m.pop("image").to_numpy()
        m.insert(0, "reference", np.asarray(references[s], dtype=np.int64)[pos])
        m.insert(0, "index", np.asarray(targets[s], dtype=np.int64)[pos])
        out.append(m)
    return pd.concat(out, ignore_index=True)


# ---------------------------------------------------------------------------------------------
# Tables (pandas; the metric and backbone are in every score column's name)


def _metric_of(results: Mapping) -> str:
    names = {r.metric for r in results.values()}
    if len(names) != 1:
        raise ValueError(f"results were scored with different metrics {sorted(names)}; score them with one LPIPS")
    return names.pop()


def _score_columns(row: dict, col: str, values) -> None:
    """Mean, std (over masks) and the 95 % interval's half-width (`smis.stats.mean_ci`) of one score."""
    values = np.asarray(values, np.float64)
    m, lo, hi = mean_ci(values)
    row[col], row[f"{col} std"], row[f"{col} ±95%"] = m, float(np.nanstd(values)), (hi - lo) / 2


def miou_columns(confusion: np.ndarray | None, seed: int = 0) -> dict:
    """{MIOU: pooled mIoU, MIOU + " 95% low" / " 95% high": bootstrap interval over masks} of (masks, C, C)
    per-mask confusion matrices; {} for None (evaluated without a segmenter)."""
    if confusion is None:
        return {}
    r = miou_ci(confusion, seed=seed)
    return {MIOU: r["miou"], f"{MIOU} 95% low": r["low"], f"{MIOU} 95% high": r["high"]}


def reconstruction_table(results: Mapping[str, ReconEval]) -> pd.DataFrame:
    """Table 1 style: GT-similarity of reconstructions (mean, std, 95 % interval; lower is closer), FD and
    mask mIoU (with a segmenter), per variant."""
    m = _metric_of(results)
    col = f"GT-similarity ({m})"
    rows = {}
    for name, r in results.items():
        rows[name] = {}
        _score_columns(rows[name], col, r.per_image[col])
        if r.fd is not None:
            rows[name][f"FD ({r.fd_name})"] = r.fd
        rows[name].update(miou_columns(r.confusion))
        rows[name]["images"] = len(r.per_image)
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("variant")


def diversity_table(results: Mapping[str, PriorEval]) -> pd.DataFrame:
    """Tables 2-4 style: diversity (higher: more varied), Top-1 GT-similarity (lower: closer), each with
    std and 95 % interval over masks, FD and mask mIoU (with a segmenter), per variant."""
    m = _metric_of(results)
    rows = {}
    for name, r in results.items():
        row = {}
        for col in (f"diversity ({m})", f"top-1 GT-similarity ({m})"):
            _score_columns(row, col, r.per_image[col])
        if r.fd is not None:
            row[f"FD ({r.fd_name})"] = r.fd
        row.update(miou_columns(r.confusion))
        row["masks"], row["samples per mask"] = len(r.per_image), r.k
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("variant")


def per_class_table(results: Mapping[str, PriorEval]) -> pd.DataFrame:
    """Per-class diversity (LPIPS restricted to each class region), mean over the masks that hold the
    class: which classes vary. Rows: classes; columns: variants (metric named); plus mask counts."""
    m = _metric_of(results)
    cols = {}
    for name, r in results.items():
        if r.per_class is None:
            raise ValueError(f"{name} was evaluated with per_class=False; rerun evaluate_prior with per_class=True")
        cols[f"{name}: diversity ({m})"] = r.per_class.mean(axis=0, skipna=True)
    table = pd.DataFrame(cols)
    table["masks"] = next(iter(results.values())).per_class.notna().sum(axis=0)
    return table.rename_axis("class")


def factor_table(rows: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Share (%) of class regions whose estimated colour / texture lies in that class's own
    distribution, per source (a variant's samples, or real images)."""
    out = {name: {"colour in class modes (%)": 100 * r["colour_in"].mean(),
                  "texture in class set (%)": 100 * r["texture_in"].mean(),
                  "both (%)": 100 * (r["colour_in"] & r["texture_in"]).mean(), "regions": len(r)}
           for name, r in rows.items()}
    return pd.DataFrame.from_dict(out, orient="index").rename_axis("source")


def style_table(rows: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Share (%) of shared class regions whose estimated colour mode / texture equals the reference's."""
    out = {name: {"colour mode = reference (%)": 100 * r["colour_match"].mean(),
                  "texture = reference (%)": 100 * r["texture_match"].mean(),
                  "both (%)": 100 * (r["colour_match"] & r["texture_match"]).mean(), "regions": len(r)}
           for name, r in rows.items()}
    return pd.DataFrame.from_dict(out, orient="index").rename_axis("method")


def per_mask_factor_rates(factors: pd.DataFrame) -> pd.DataFrame:
    """Share (%) of a mask's class regions (over its K samples) whose colour / texture lies in the class's
    own distribution: per-mask columns for paired intervals. Index: dataset index."""
    g = factors.groupby("index")
    return pd.DataFrame({"colour in class modes (%)": 100 * g["colour_in"].mean(),
                         "texture in class set (%)": 100 * g["texture_in"].mean()})


def paired_comparison(a: PriorEval | ReconEval, b: PriorEval | ReconEval, seed: int = 0) -> pd.DataFrame:
    """Per-mask paired differences a - b (the same masks and seeds) of every per-image score, the factor
    rates (if both were scored with factors) and the mask mIoU (if both had a segmenter): both means, the
    difference and its 95 % interval (normal approximation over masks; paired bootstrap over masks for
    the pooled mIoU). A difference whose interval excludes 0 is one the masks support."""
    if not a.per_image.index.equals(b.per_image.index):
        raise ValueError("a and b were evaluated on different masks; evaluate both on the same indices")
    rows = {}
    pa, pb = a.per_image, b.per_image
    fa, fb = getattr(a, "factors", None), getattr(b, "factors", None)
    if fa is not None and fb is not None and len(fa) and len(fb):
        pa = pa.join(per_mask_factor_rates(fa))
        pb = pb.join(per_mask_factor_rates(fb))
    for col in pa.columns:
        if col not in pb.columns:
            continue
        d, lo, hi = paired_ci(pa[col], pb[col])
        rows[col] = {a.variant: pa[col].mean(), b.variant: pb[col].mean(), "difference": d, "CI low": lo,
                     "CI high": hi, "masks": int((pa[col] - pb[col]).notna().sum())}
    if a.confusion is not None and b.confusion is not None:
        r = miou_ci(a.confusion, b.confusion, seed=seed)           # b's mIoU = a's minus the difference
        rows[MIOU] = {a.variant: r["miou"], b.variant: r["miou"] - r["difference"], "difference": r["difference"],
                      "CI low": r["difference_low"], "CI high": r["difference_high"], "masks": len(a.confusion)}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("score")


def write_table(table: pd.DataFrame, out_dir: str | Path, stem: str, caption: str = "") -> Path:
    """`stem.csv` and `stem.md` (caption, then the Markdown table) under `out_dir`, atomically."""
    from smis.utils import atomic_path, atomic_write_text, markdown_table

    out_dir = Path(out_dir)
    with atomic_path(out_dir / f"{stem}.csv") as tmp:
        table.to_csv(tmp)
    return atomic_write_text((caption.strip() + "\n\n" if caption else "") + markdown_table(table), out_dir / f"{stem}.md")


# ---------------------------------------------------------------------------------------------
# Figures


def example_grid(label: torch.Tensor, image: torch.Tensor | None, columns: Sequence[torch.Tensor],
                 palette: Sequence[Sequence[int]], min_tile: int = 128) -> np.ndarray:
    """One row per mask: the mask, the ground truth (if given), then every image of `columns`, each
    (B, 3, H, W) or (B, n, 3, H, W) (n columns); tiles enlarged to >= `min_tile` px. uint8 (H', W', 3)."""
    from smis.viz import colorize, grid

    masks = colorize(label, palette)
    parts = [c if c.dim() == 5 else c[:, None] for c in columns]
    rows = []
    for b in range(label.shape[0]):                        # figure assembly
        row = [masks[b]] + ([to_uint8(image[b])] if image is not None else [])
        row += [to_uint8(im) for p in parts for im in p[b]]
        rows.append(row)
    return grid(rows, min_tile=min_tile)
