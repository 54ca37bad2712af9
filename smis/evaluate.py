"""The paper's evaluation loops: reconstruction (Sec. 4.2, RQ1), diversity and Top-1 GT-similarity
(Sec. 4.3, RQ2), style-guided synthesis and the ablations, as a sample iterator plus one scorer per metric.

    test, indices = test_set("synthscenes", "", "test", size=64, n=200)
    res = evaluate_prior(nets, test, indices, LPIPS("auto"), PriorOptions(k=40, factors=True), fd_real, seg)
    rec = evaluate_reconstruction(nets, test, indices, LPIPS("auto"), fd_real, segmenter=seg)

    for batch in prior_batches(nets, test, indices, PriorOptions(k=40)):   # Batch: indices, image, label, samples
        scorer.update(batch)                                                 # any Scorer below, then .result()

Scorers (each `update(batch)` per batch, `result()` at the end): `SampleScores` (diversity and Top-1
GT-similarity, or GT-similarity of reconstructions), `PerClassDiversity`, `SampleFD`, `SampleMaskFidelity`,
`SampleFactors` (SynthScenes), `Examples`. `evaluate_prior` / `evaluate_reconstruction` compose them into
`PriorEval` / `ReconEval`, whose score columns `Columns` names (cols = Columns("lpips_alex", "fid"):
cols.diversity, cols.top1, ...); `smis.tables` turns those into the paper's tables, `smis.models` loads the
models, `smis.study` sets up a notebook's whole comparison.

Randomness: the K codes of mask `index` come from a generator seeded with `mask_seed(seed, index)`,
so every variant sees the same seeds on the same masks, whatever the batching. The codes are
bitwise the same for any `chunk` / `masks_per_batch`; the images are not: on a CPU, G at another
batch size runs other oneDNN/MKL kernels, so pixels move in the last bits (~1e-6; see BATCH_NOISE
in tests/test_sampling.py). Compare such images with a tolerance, not bitwise.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Iterator, Protocol, Sequence

import numpy as np
import pandas as pd
import torch

from smis.data import make_dataset
from smis.factors import factor_rows, style_match
from smis.metrics import LPIPS, FrechetDistance, diversity, per_class_diversity, top1_gt_similarity
from smis.networks import VARIANTS, Networks
from smis.networks.ops import label_presence
from smis.progress import Progress
from smis.sampling import chunks, encode_means, generate, reconstruct, sample_prior, style_latents
from smis.segmenter import MaskFidelity, Segmenter
from smis.viz import to_uint8

# ---------------------------------------------------------------------------------------------
# The results' score columns (what `smis.tables` reads)


@dataclass(frozen=True)
class Columns:
    """Names of the score columns for one LPIPS metric and one FD backbone (they name what was measured).
    `ci(col)` and `std(col)` name the interval half-width and spread columns of a score."""

    metric: str                        # LPIPS name, e.g. lpips_alex, lpips_effnet
    fd_name: str | None = None         # FrechetDistance name, e.g. fid, fd_effnet

    @property
    def diversity(self) -> str:
        return f"diversity ({self.metric})"

    @property
    def top1(self) -> str:
        return f"top-1 GT-similarity ({self.metric})"

    @property
    def gt_similarity(self) -> str:
        return f"GT-similarity ({self.metric})"

    @property
    def fd(self) -> str:
        return f"FD ({self.fd_name})"

    @staticmethod
    def ci(col: str) -> str:
        return f"{col} ±95%"

    @staticmethod
    def std(col: str) -> str:
        return f"{col} std"

    @classmethod
    def of(cls, table: pd.DataFrame) -> "Columns":
        """The names a written table uses (e.g. one read back from its CSV)."""
        names = [str(c) for c in (*table.columns, *table.index)]
        metric = next((m.group(1) for c in names if (m := re.fullmatch(r"(?:top-1 )?(?:diversity|GT-similarity) "
                                                                          r"\((.+)\)", c))), None)
        fd = next((m.group(1) for c in names if (m := re.fullmatch(r"FD \((.+)\)", c))), None)
        if metric is None:
            raise ValueError(f"no diversity / GT-similarity column in {names[:8]}...; pass a table of smis.tables")
        return cls(metric, fd)



# ---------------------------------------------------------------------------------------------
# The evaluation data


def test_set(dataset: str, root: str | None, split: str, size, n: int = 0, seed: int = 0,
             object_factor: bool = False):
    """(dataset, indices): the evaluation split at the model's `size` and its first `n` items (0 = all).
    SynthScenes without `root` is generated on the fly: its test split is then `n` images long, with the
    object-scale factor when `object_factor` (`smis.checkpoint.object_factor_of(nets)`: as the model was trained)."""
    if dataset == "synthscenes" and not root:
        if n < 1:
            raise ValueError("on-the-fly SynthScenes needs n >= 1 test images; or pass the root of a written copy")
        ds = make_dataset("synthscenes", None, split, size=size, length=n, seed=seed, object_factor=object_factor)
    else:
        ds = make_dataset(dataset, root or None, split, size=size)
    if len(ds) == 0:
        raise ValueError(f"{dataset} split {split!r} under {root!r} is empty. Fix: check DATA_ROOT and SPLIT")
    return ds, list(range(len(ds) if n < 1 else min(n, len(ds))))


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
    `generator` (`smis.sampling.style_latents`); `global_code`: also the reference's z1, the only
    code `gaugan_vae` has. (B, 3, H, W)."""
    ref = encode_means(nets, ref_image, ref_label, chunk, edit="style-guided synthesis")
    z = style_latents(nets.spec, label, ref, ref_label, generator=generator, global_code=global_code)
    return generate(nets, label, z, chunk)


# ---------------------------------------------------------------------------------------------
# Sample iterators: batches of masks with their generated images


@dataclass
class Batch:
    """B masks of an evaluation, their real images and the images a model made for them."""

    indices: list[int]              # dataset indices of the B masks
    image: torch.Tensor             # (B, 3, H, W) real images in [-1, 1]
    label: torch.Tensor             # (B, H, W) masks
    samples: torch.Tensor           # (B, K, 3, H, W) generated images per mask (K = 1: reconstructions, gaugan)
    _features: dict = field(default_factory=dict, repr=False)   # (id(metric), mask) -> LPIPS features

    def sample_features(self, metric: LPIPS, b: int, batch_size: int = 8) -> list[torch.Tensor]:
        """LPIPS features of mask b's K samples (`metric.features(samples[b], batch_size)`), computed once
        per batch however many scorers read them (diversity, per-class diversity)."""
        key = (id(metric), b, batch_size)
        if key not in self._features:
            self._features[key] = metric.features(self.samples[b], batch_size)
        return self._features[key]


@dataclass(frozen=True)
class PriorOptions:
    """How many prior samples `evaluate_prior` draws, how it batches them, and its optional scores."""

    k: int = 40                     # prior samples per mask (the paper: 40; gaugan draws 1 whatever k)
    seed: int = 0                   # mask i's codes come from mask_seed(seed, i)
    masks_per_batch: int = 8        # masks sampled together (K images each)
    chunk: int = 64                 # images per generator (and segmenter) pass
    per_class: bool = True          # per-class diversity (PerClassDiversity)
    factors: bool = False           # SynthScenes factor rows of every sample (SampleFactors)
    keep: int = 4                   # masks whose samples are kept as examples


@dataclass(frozen=True)
class CPUEvaluation:
    """How one model family's generator runs fastest for evaluation on a CPU. Families not in CPU_EVALUATION keep
    the defaults (PriorOptions.chunk images a pass, NCHW), so their numbers stay those of earlier runs. Measured
    in benchmarks/RESULTS.md, "Notebook 04 with the comparison systems (issue 21)": the GroupDNet and cIMLE
    generators are memory-bound at 64 images a pass, and faster in channels_last (their images move by <= 9e-6)."""

    chunk: int | None = None            # images per generator pass (None: PriorOptions.chunk)
    channels_last: bool = False         # the generator in channels_last


CPU_EVALUATION = {"groupdnet": CPUEvaluation(chunk=16, channels_last=True),
                  "cimle": CPUEvaluation(chunk=8, channels_last=True)}


def cpu_evaluation(nets: Networks) -> CPUEvaluation | None:
    """The CPU evaluation setting of `nets`' family, or None when its generator is not on a CPU."""
    if next(nets.G.parameters()).device.type != "cpu":
        return None
    return CPU_EVALUATION.get(VARIANTS[nets.variant].family, CPUEvaluation())


def evaluation_layout(nets: Networks) -> Networks:
    """`nets` with its generator in channels_last when its family's CPU setting asks for it (in place; returned
    for chaining). Evaluation only: exported weights are untouched."""
    setting = cpu_evaluation(nets)
    if setting is not None and setting.channels_last:
        nets.G.to(memory_format=torch.channels_last)
    return nets


def generator_chunk(nets: Networks, chunk: int) -> int:
    """Images per generator pass for `nets`: `chunk`, capped on a CPU by its family's CPU setting."""
    setting = cpu_evaluation(nets)
    return chunk if setting is None or setting.chunk is None else min(chunk, setting.chunk)


def prior_batches(nets: Networks, dataset, indices: Sequence[int], options: PriorOptions,
                  progress: bool = True) -> Iterator[Batch]:
    """`options.masks_per_batch` masks at a time with their K prior samples (codes of mask i seeded with
    mask_seed(options.seed, i)), on the generator's device; `generator_chunk` images per generator pass."""
    device = next(nets.G.parameters()).device
    chunk = generator_chunk(nets, options.chunk)
    indices = [int(i) for i in indices]
    for s in Progress(chunks(len(indices), options.masks_per_batch), desc=f"prior samples {nets.variant}",
                  disable=not progress):
        idx = indices[s]
        image, label = load_pairs(dataset, idx, device)
        samples = sample_prior(nets, label, options.k, [mask_seed(options.seed, i) for i in idx], chunk)
        yield Batch(idx, image, label, samples)


def reconstruction_batches(nets: Networks, dataset, indices: Sequence[int], batch: int = 16,
                           progress: bool = True) -> Iterator[Batch]:
    """`batch` test pairs at a time with G(M, E(M, I) means) as their one sample, on the generator's device."""
    device = next(nets.G.parameters()).device
    indices = [int(i) for i in indices]
    for s in Progress(chunks(len(indices), batch), desc=f"reconstruct {nets.variant}", disable=not progress):
        image, label = load_pairs(dataset, indices[s], device)
        yield Batch(indices[s], image, label, reconstruct(nets, image, label, batch)[:, None])


# ---------------------------------------------------------------------------------------------
# Scorers: one per metric, updated per batch


class Scorer(Protocol):
    def update(self, batch: Batch) -> None: ...

    def result(self): ...


class SampleScores:
    """Per mask: diversity (mean pairwise LPIPS of its K samples; 0 for one sample) and Top-1
    GT-similarity (LPIPS to the real image of the sample nearest to it in L1); with `reconstruction`,
    the GT-similarity of its one sample (a reconstruction) instead. result(): DataFrame, index dataset index."""

    def __init__(self, metric: LPIPS, reconstruction: bool = False):
        self.metric, self.reconstruction, self.cols = metric, reconstruction, Columns(metric.name)
        self.indices, self.div, self.top1, self.gt, self.k = [], [], [], [], None

    def update(self, batch: Batch) -> None:
        self.indices += batch.indices
        self.k = batch.samples.shape[1]
        if self.reconstruction:                          # the real images' features: once for every model
            fx, fy = self.metric.features(batch.samples[:, 0]), self.metric.cached_features(batch.image)
            self.gt.append(self.metric.distance_from_features(fx, fy).double().cpu())
            return
        for b in range(len(batch.indices)):             # each mask's K samples are one batched metric call
            self.div.append(diversity(batch.samples[b], self.metric, features=batch.sample_features(self.metric, b))
                            if self.k > 1 else 0.0)
            self.top1.append(top1_gt_similarity(batch.samples[b], batch.image[b], self.metric))

    def result(self) -> pd.DataFrame:
        index = pd.Index(self.indices, name="index")
        if self.reconstruction:
            return pd.DataFrame({self.cols.gt_similarity: torch.cat(self.gt).numpy()}, index=index)
        return pd.DataFrame({self.cols.diversity: self.div, self.cols.top1: self.top1}, index=index)


class PerClassDiversity:
    """Per mask and class: diversity restricted to the class region (NaN where the class is absent; 0 where
    present and the model draws one sample). result(): DataFrame (masks, classes)."""

    def __init__(self, metric: LPIPS, class_names: Sequence[str]):
        self.metric, self.names, self.rows, self.indices = metric, list(class_names), [], []

    def update(self, batch: Batch) -> None:
        C, kk = len(self.names), batch.samples.shape[1]
        self.indices += batch.indices
        for b in range(len(batch.indices)):
            self.rows.append(per_class_diversity(batch.samples[b], batch.label[b], C, self.metric,
                                                 features=batch.sample_features(self.metric, b)).cpu().numpy()
                             if kk > 1 else
                             np.where(label_presence(batch.label[b:b + 1], C)[0].cpu().numpy(), 0.0, np.nan))

    def result(self) -> pd.DataFrame:
        return pd.DataFrame(np.stack(self.rows), index=pd.Index(self.indices, name="index"), columns=self.names)


class SampleFD:
    """Fréchet distance of the first sample of every mask to the real images' statistics `fd_real`.
    result(): (fd, backbone name); `features()`: the samples' (masks, D) features, in mask order."""

    def __init__(self, fd_real: FrechetDistance):
        self.real = fd_real
        self.fd = FrechetDistance(fd_real.extractor, batch_size=fd_real.batch_size, keep=True)

    def features(self) -> np.ndarray:
        return self.fd.features

    def update(self, batch: Batch) -> None:
        self.fd.update(batch.samples[:, 0])

    def result(self) -> tuple[float, str]:
        return self.fd.compute(self.real), self.fd.name


class SampleMaskFidelity:
    """The segmenter's confusion of every sample against its mask. result(): (masks, C, C) per-mask
    confusion, the K samples of a mask pooled (`smis.tables.miou_columns` gives the mIoU and its interval)."""

    def __init__(self, segmenter: Segmenter, num_classes: int | None, chunk: int = 64):
        self.fidelity = MaskFidelity(segmenter, num_classes, chunk)

    def update(self, batch: Batch) -> None:
        self.fidelity.update(batch.samples, batch.label)

    def result(self) -> np.ndarray:
        return self.fidelity.compute()["per_mask"].numpy()


class SampleFactors:
    """SynthScenes factor rows (`smis.factors.factor_rows`) of every sample, with columns "index" (dataset
    index of its mask) and "sample" (0..K-1). result(): DataFrame, or None when nothing was scored.
    `object_factor`: the masks are SynthScenes' with its object-scale factor (read shading-aware)."""

    def __init__(self, object_factor: bool = False):
        self.rows = []
        self.object_factor = bool(object_factor)

    def update(self, batch: Batch) -> None:
        kk = batch.samples.shape[1]
        f = factor_rows(to_uint8(batch.samples.flatten(0, 1)), batch.label.repeat_interleave(kk, 0).cpu().numpy(),
                        object_factor=self.object_factor)
        pos = f.pop("image").to_numpy()                                      # b K' + j
        f.insert(0, "sample", pos % kk)
        f.insert(0, "index", np.asarray(batch.indices, dtype=np.int64)[pos // kk])
        self.rows.append(f)

    def result(self) -> pd.DataFrame | None:
        return pd.concat(self.rows, ignore_index=True) if self.rows else None


class Examples:
    """The samples of the first `keep` masks, on the CPU. result(): (keep, K, 3, H, W), or None for keep 0."""

    def __init__(self, keep: int):
        self.keep, self.kept = keep, []

    def update(self, batch: Batch) -> None:
        if sum(len(x) for x in self.kept) < self.keep:
            self.kept.append(batch.samples.cpu())

    def result(self) -> torch.Tensor | None:
        return torch.cat(self.kept)[:self.keep] if self.kept else None


def run_scorers(batches: Iterator[Batch], scorers: Sequence[Scorer | None]) -> None:
    """Feed every batch to every scorer (None: skipped)."""
    live = [s for s in scorers if s is not None]
    for batch in batches:
        for s in live:
            s.update(batch)


# ---------------------------------------------------------------------------------------------
# Evaluations: the scorers composed


def real_frechet(dataset, indices: Sequence[int], backbone: str | torch.nn.Module = "auto",
                 device: str | torch.device | None = None, batch: int = 32, progress: bool = True) -> FrechetDistance:
    """Feature statistics of the real images `indices` (the reference of every FD)."""
    fd = FrechetDistance(backbone, device)
    for s in Progress(chunks(len(indices), batch), desc="FD real", disable=not progress):
        fd.update(load_pairs(dataset, list(indices)[s])[0])
    return fd


@torch.no_grad()
def real_mask_fidelity(segmenter: Segmenter, dataset, indices: Sequence[int], batch: int = 64,
                       progress: bool = True) -> np.ndarray:
    """(masks, C, C) confusion of the segmenter on the real images `indices`: the ceiling row of the
    mIoU column (what a generator that reproduced the real images exactly would score)."""
    indices = [int(i) for i in indices]
    fidelity = MaskFidelity(segmenter, None, batch)
    for s in Progress(chunks(len(indices), batch), desc="mask fidelity real", disable=not progress):
        image, label = load_pairs(dataset, indices[s])
        fidelity.update(image, label)
    return fidelity.compute()["per_mask"].numpy()


@dataclass
class ReconEval:
    """Reconstructions of one variant: per-image GT-similarity, FD, a few examples."""

    variant: str
    metric: str                             # LPIPS name (lpips_alex or a fallback)
    per_image: pd.DataFrame                 # index: dataset index; column Columns(metric).gt_similarity
    fd: float | None = None
    fd_name: str | None = None
    examples: torch.Tensor | None = None    # (n, 3, H, W) first reconstructions, CPU
    confusion: np.ndarray | None = None     # (images, C, C) segmenter confusion per mask (mask fidelity)


@torch.no_grad()
def evaluate_reconstruction(nets: Networks, dataset, indices: Sequence[int], metric: LPIPS,
                            fd_real: FrechetDistance | None = None, batch: int = 16, keep: int = 8,
                            progress: bool = True, segmenter: Segmenter | None = None) -> ReconEval:
    """GT-similarity (LPIPS to I) of G(M, E(M, I) means) on every test pair, its FD to real and (with a
    `segmenter`) its mask fidelity."""
    scores, examples = SampleScores(metric, reconstruction=True), Examples(keep)
    fd = SampleFD(fd_real) if fd_real is not None else None
    fidelity = SampleMaskFidelity(segmenter, nets.spec.num_classes, batch) if segmenter is not None else None
    run_scorers(reconstruction_batches(nets, dataset, indices, batch, progress), [scores, fd, fidelity, examples])
    fd_value, fd_name = fd.result() if fd is not None else (None, None)
    kept = examples.result()
    return ReconEval(nets.variant, metric.name, scores.result(), fd_value, fd_name,
                     kept[:, 0] if kept is not None else None, fidelity.result() if fidelity is not None else None)


@dataclass
class PriorEval:
    """K prior samples per mask of one variant, scored."""

    variant: str
    metric: str                             # LPIPS name
    k: int                                  # samples per mask actually drawn (1 for gaugan)
    per_image: pd.DataFrame                 # index: dataset index; Columns(metric).diversity and .top1
    per_class: pd.DataFrame | None = None   # (masks, classes) per-class diversity, NaN where absent
    factors: pd.DataFrame | None = None     # factor_rows of every sample (+ column "index", "sample")
    fd: float | None = None                 # FD of the first sample per mask to the real images
    fd_name: str | None = None
    examples: torch.Tensor | None = None    # (n, K, 3, H, W) samples of the first masks, CPU
    seconds: float = field(default=0.0)     # wall time of the evaluation
    confusion: np.ndarray | None = None     # (masks, C, C) segmenter confusion per mask, its K samples pooled
    fd_features: np.ndarray | None = None   # (masks, D) FD features of each mask's first sample (paired bootstrap)


@torch.no_grad()
def evaluate_prior(nets: Networks, dataset, indices: Sequence[int], metric: LPIPS,
                   options: PriorOptions = PriorOptions(), fd_real: FrechetDistance | None = None,
                   segmenter: Segmenter | None = None, progress: bool = True) -> PriorEval:
    """Diversity (mean pairwise LPIPS of K samples), Top-1 GT-similarity and, as `options` and the
    arguments ask, per-class diversity, FD (with `fd_real`), SynthScenes factor rows and mask fidelity
    (with a `segmenter`) of every prior sample on the masks `indices`.

    `gaugan` has no latents: one image per mask, diversity 0 by construction.
    """
    t0 = time.perf_counter()
    C = nets.spec.num_classes
    names = list(dataset.info.class_names) if hasattr(dataset, "info") else [str(c) for c in range(C)]
    scores, examples = SampleScores(metric), Examples(options.keep)
    per_class = PerClassDiversity(metric, names[:C]) if options.per_class else None
    fd = SampleFD(fd_real) if fd_real is not None else None
    fidelity = SampleMaskFidelity(segmenter, C, options.chunk) if segmenter is not None else None
    factors = SampleFactors(getattr(dataset, "object_factor", False)) if options.factors else None
    run_scorers(prior_batches(nets, dataset, indices, options, progress),
                [scores, per_class, fd, fidelity, factors, examples])
    fd_value, fd_name = fd.result() if fd is not None else (None, None)
    return PriorEval(nets.variant, metric.name, scores.k, scores.result(),
                     per_class.result() if per_class is not None else None,
                     factors.result() if factors is not None else None, fd_value, fd_name, examples.result(),
                     time.perf_counter() - t0, fidelity.result() if fidelity is not None else None,
                     fd.features() if fd is not None else None)


@torch.no_grad()
def evaluate_style(nets: Networks, dataset, targets: Sequence[int], references: Sequence[int], seed: int = 0,
                   guided: bool = True, batch: int = 16, progress: bool = True) -> pd.DataFrame:
    """Style-guided synthesis scored by factors (SynthScenes): mask of item `targets[n]` with the codes
    of reference item `references[n]` for every shared class (and its global code); one row per
    shared class region with colour_match / texture_match against the reference image.
    `guided=False` scores plain prior samples with the same seeds instead: the chance level."""
    if len(targets) != len(references):
        raise ValueError(f"{len(targets)} targets but {len(references)} references; pair them one to one")
    device = next(nets.G.parameters()).device
    targets, references = [int(i) for i in targets], [int(i) for i in references]
    out = []
    for s in Progress(chunks(len(targets), batch), desc=f"style {nets.variant} ({'guided' if guided else 'prior'})",
                      disable=not progress):
        _, label = load_pairs(dataset, targets[s], device)
        ref_image, ref_label = load_pairs(dataset, references[s], device)
        g = torch.Generator(device=device).manual_seed(mask_seed(seed, targets[s][0]))   # same draws either way
        chunk = generator_chunk(nets, batch)
        fake = (style_guided(nets, label, ref_image, ref_label, g, chunk=chunk) if guided
                else sample_prior(nets, label, 1, g, chunk)[:, 0])
        m = style_match(to_uint8(fake), label.cpu().numpy(), to_uint8(ref_image), ref_label.cpu().numpy())
        pos = m.pop("image").to_numpy()
        m.insert(0, "reference", np.asarray(references[s], dtype=np.int64)[pos])
        m.insert(0, "index", np.asarray(targets[s], dtype=np.int64)[pos])
        out.append(m)
    return pd.concat(out, ignore_index=True)
